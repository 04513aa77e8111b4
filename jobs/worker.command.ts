import type { Command } from 'commander';
import { readConfig } from '../viewer-api/config.js';
import { createExchange } from '../viewer-api/exchange.js';
import { report, type OutputOptions } from '../viewer-api/cli/output.js';

/**
 * `hakobune worker`: runs background jobs. With REDIS_URL it takes jobs from the BullMQ queues
 * until SIGINT/SIGTERM (run as many as needed, on any machine reaching PostgreSQL and Redis);
 * with --once, or in the embedded mode (no Redis: the exchange process is the worker), it runs
 * what is pending, including snapshots whose indexing never finished, and exits.
 */
export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run background jobs (snapshot indexing): BullMQ with REDIS_URL, else what is pending, then exit')
    .option('--once', 'exit when no job is left')
    .option('--json', 'print the summary as JSON')
    .action(async (opts: OutputOptions & { once?: boolean }) => {
      const config = readConfig();
      const exchange = await createExchange(config);
      try {
        const queued = await exchange.jobs.start();
        const kind = exchange.jobs.runner.kind;
        if (kind === 'bullmq' && !opts.once) {
          exchange.log.info({ queued }, 'worker running; stop with Ctrl+C');
          process.stderr.write(`hakobune worker: taking jobs from Redis (${queued} unindexed snapshot(s) queued); Ctrl+C to stop\n`);
          await new Promise<void>((resolve) => {
            process.once('SIGINT', resolve);
            process.once('SIGTERM', resolve);
          });
        } else {
          await exchange.jobs.runner.idle();
        }
        report(opts, { runner: kind, queuedAtStart: queued }, () => `worker (${kind}) done: ${queued} snapshot(s) were waiting to be indexed`);
      } finally {
        await exchange.stop();
      }
    });
}
