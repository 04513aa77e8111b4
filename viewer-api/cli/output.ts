import { ExchangeError } from '../../store/errors.js';
import { ConfigError } from '../config.js';
import { UsageError } from './usage.js';

export { report, UsageError, type OutputOptions } from './usage.js';

/**
 * Turns what a command threw into a message on stderr and an exit code:
 * 2 for bad input (usage, configuration, a 4xx ExchangeError), 1 for a failure of the exchange.
 */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError || err instanceof ConfigError) {
    process.stderr.write(`hakobune: ${err.message}\n`);
    return 2;
  }
  if (err instanceof ExchangeError) {
    process.stderr.write(`hakobune: ${err.message}\n`);
    return err.status < 500 ? 2 : 1;
  }
  const e = err as Error;
  process.stderr.write(`hakobune: ${e?.message ?? String(err)}\n`);
  if (process.env.HAKOBUNE_DEBUG) process.stderr.write(`${e?.stack}\n`);
  return 1;
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
