import type { Command } from 'commander';
import { readConfig } from '../config.js';
import { createExchange, type Exchange } from '../exchange.js';
import { openDatabase } from '../../store/db.js';
import { migrateToLatest } from '../../store/migrate.js';
import { report, type OutputOptions } from './output.js';
import { isClusterWorker, resolveWorkers, runClusterWorker, startCluster, untilStopped } from '../cluster.js';

/** Runs until SIGINT/SIGTERM, then stops the exchange cleanly. */
export async function serveUntilSignal(exchange: Exchange): Promise<void> {
  await untilStopped();
  exchange.log.info('stopping');
  try {
    await exchange.stop();
  } catch (e) {
    exchange.log.error({ err: e }, 'error while stopping');
  }
}

export function registerServerCommands(program: Command): void {
  program
    .command('serve')
    .description('run the exchange (HTTP API, upload protocol and, in the embedded mode, jobs)')
    .option('--workers <n>', 'HTTP processes sharing the port: a number, or auto (one per core with PostgreSQL and Redis); default 1')
    .action(async (opts: { workers?: string }) => {
      const config = readConfig();
      if (isClusterWorker()) return runClusterWorker(config);
      const workers = resolveWorkers(opts.workers, config);
      if (workers > 1) {
        const running = await startCluster({ workers });
        process.stdout.write(`Hakobune exchange listening on ${running.url} (database: postgres, ${workers} processes)\n`);
        await untilStopped();
        await running.stop();
        return;
      }
      const exchange = await createExchange(config);
      try {
        const url = await exchange.listen();
        process.stdout.write(`Hakobune exchange listening on ${url} (database: ${exchange.databaseKind})\n`);
      } catch (e) {
        await exchange.stop();
        throw e;
      }
      await serveUntilSignal(exchange);
    });

  program
    .command('migrate')
    .description('bring the database schema up to date')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const config = readConfig();
      const database = await openDatabase(config);
      try {
        const result = await migrateToLatest(database.db);
        report(opts, { database: database.kind, ...result }, () =>
          result.applied.length
            ? `applied ${result.applied.length} migration(s): ${result.applied.join(', ')}`
            : 'the schema is up to date',
        );
      } finally {
        await database.close();
      }
    });
}
