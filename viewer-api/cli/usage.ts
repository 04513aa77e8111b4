// Imports nothing: the facility uploader (`hakobune upload`) loads this without the exchange.

/** Options every reporting command accepts. */
export interface OutputOptions {
  json?: boolean;
}

/** Prints a command's result: as JSON for scripts with --json, else as the given human text. */
export function report(opts: OutputOptions, value: unknown, human: () => string): void {
  if (opts.json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else process.stdout.write(human() + '\n');
}

/** A usage or input error of a CLI command: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Prints an error of a command that knows only usage errors (2) and failures (1); returns the exit code. */
export function usageExitCode(err: unknown): number {
  const e = err as Error;
  process.stderr.write(`hakobune: ${e?.message ?? String(err)}\n`);
  if (err instanceof UsageError) return 2;
  if (process.env.HAKOBUNE_DEBUG) process.stderr.write(`${e?.stack}\n`);
  return 1;
}
