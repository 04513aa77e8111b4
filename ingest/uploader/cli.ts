import { Command, CommanderError } from 'commander';
import { usageExitCode } from '../../viewer-api/cli/usage.js';
import { configureUploadCommand } from './upload.command.js';

/**
 * `hakobune upload`, as `hakobune.js` runs it: the facility uploader on its own, without loading
 * the rest of the exchange (database drivers, PGlite, koa, queues), which roughly halves the
 * agent's memory on the facility's machine.
 */
export async function uploadMain(argv: string[]): Promise<number> {
  const program = configureUploadCommand(new Command('hakobune upload')).showHelpAfterError().exitOverride();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    return usageExitCode(err);
  }
}
