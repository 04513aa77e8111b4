import { Command, CommanderError } from 'commander';
import { exitCodeFor } from './output.js';
import { registerServerCommands } from './server.commands.js';
import { registerDemoCommand } from './demo.command.js';
import { registerViewerCommands } from './viewer.commands.js';
import { registerFixturesCommands } from '../../fixtures/fixtures.commands.js';
import { registerUploadCommand } from '../../ingest/uploader/upload.command.js';
import { registerBackupCommands } from '../../store/backup/backup.commands.js';
import { registerConsentCommands } from '../../consent/consent.commands.js';
import { registerWorkerCommand } from '../../jobs/worker.command.js';
import { registerQualityCommand } from '../../ingest/quality/quality.command.js';
import { registerDrCommands } from '../../store/dr/dr.commands.js';
import { registerAiCommands } from '../ai/ai.commands.js';
import { registerRetentionCommands } from '../../store/retention/retention.commands.js';
import { registerDrillCommand } from '../../jobs/drill.command.js';

/** Builds the `hakobune` command line from each feature's commands. */
export function buildProgram(): Command {
  const program = new Command('hakobune')
    .description('Hakobune regional health information exchange')
    .showHelpAfterError()
    .exitOverride();
  registerServerCommands(program);
  registerDemoCommand(program);
  registerViewerCommands(program);
  registerFixturesCommands(program);
  registerUploadCommand(program);
  registerBackupCommands(program);
  registerConsentCommands(program);
  registerWorkerCommand(program);
  registerQualityCommand(program);
  registerDrCommands(program);
  registerAiCommands(program);
  registerRetentionCommands(program);
  registerDrillCommand(program);
  return program;
}

/** Runs the CLI; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has already printed its message (or the help/version text).
      return err.exitCode === 0 ? 0 : 2;
    }
    return exitCodeFor(err);
  }
}
