/**
 * Child process of index.kill.test.ts: indexes one snapshot slowly, page by page, announcing
 * each written page on stdout, until the parent kills it with SIGKILL.
 * Usage: tsx test/index.kill-child.ts <dataDir> <databaseUrl> <snapshotId>
 */
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { indexSnapshot } from '../jobs/index-snapshot.js';
import { backupSource } from '../jobs/jobs.js';

const [dataDir, databaseUrl, snapshotId] = process.argv.slice(2) as [string, string, string];
const ex = await createExchange(testConfig(dataDir, { databaseUrl }), { migrate: false });
await indexSnapshot({ db: ex.db, source: backupSource(ex.backup), log: ex.log }, snapshotId, { progress: async () => {} }, {
  pageSize: 10,
  afterPage: async ({ checkpoint }) => {
    process.stdout.write(`page ${checkpoint}\n`);
    await new Promise((r) => setTimeout(r, 300));
  },
});
process.stdout.write('finished\n');
await ex.stop();
