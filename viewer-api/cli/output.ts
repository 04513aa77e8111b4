import { ExchangeError } from '../../store/errors.js';
import { ConfigError } from '../config.js';
import { UsageError, usageExitCode } from './usage.js';

export { report, UsageError, type OutputOptions } from './usage.js';

/**
 * Turns what a command threw into a message on stderr and an exit code:
 * 2 for bad input (usage, configuration, a 4xx ExchangeError), 1 for a failure of the exchange.
 */
export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`hakobune: ${err.message}\n`);
    return 2;
  }
  if (err instanceof ExchangeError) {
    process.stderr.write(`hakobune: ${err.message}\n`);
    return err.status < 500 ? 2 : 1;
  }
  // Usage errors (2) and anything else (1).
  return usageExitCode(err);
}

/** Parses a positive integer option, or throws a UsageError naming the option. */
export function positiveInt(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new UsageError(`${name} must be a whole number of at least ${min}, got "${value}"`);
    }
    return n;
  };
}
