import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { tempDir } from './support/tmp.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { generateFixtures } from '../fixtures/generate.js';
import { evolveFacility } from '../fixtures/evolve.js';
import * as records from '../store/records/records.repository.js';
import { FacilityBusy, indexSnapshot } from '../jobs/index-snapshot.js';
import { backupSource } from '../jobs/jobs.js';
import { backupTree, scanTree } from './index.support.js';

/**
 * A worker process killed (SIGKILL) in the middle of indexing a snapshot: nothing of that
 * snapshot is visible, the facility is not indexed twice at once, and the retried job resumes
 * from the last checkpoint and ends with exactly the snapshot's files, each once.
 */
describe('a worker killed mid-job (PostgreSQL, real process kill)', () => {
  const tmp = tempDir();
  const dataDir = path.join(tmp.dir, 'data');
  let pgdb: TestDatabase;
  let ex: Exchange;
  let files: ReturnType<typeof scanTree>;
  let first: string;
  let second: string;
  const index = (id: string) => indexSnapshot({ db: ex.db, source: backupSource(ex.backup), log: ex.log }, id, { progress: async () => {} }, { pageSize: 10 });

  beforeAll(async () => {
    pgdb = await createTestDatabase('hk_kill');
    ex = await createExchange(testConfig(dataDir, { databaseUrl: pgdb.url }));
    await ex.backup.addFacility({ id: 'F001', name: '病院', kind: 'hospital' });
    const gen = path.join(tmp.dir, 'gen');
    await generateFixtures({ out: gen, facilities: 1, patients: 6, days: 10, seed: 'kill' });
    files = scanTree(path.join(gen, 'F001'));
    first = await backupTree(ex.backup, 'F001', files);
    await evolveFacility({ root: path.join(gen, 'F001'), day: 1, seed: 'kill' });
    second = await backupTree(ex.backup, 'F001', scanTree(path.join(gen, 'F001')));
  });
  afterAll(async () => {
    await ex?.stop();
    await pgdb?.drop();
    tmp.remove();
  });

  it('kills the worker after two pages; nothing of the snapshot is visible', async () => {
    expect(files.length).toBeGreaterThan(40);
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'index.kill-child.ts'), dataDir, pgdb.url, first], {
      cwd: path.join(import.meta.dirname, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LOG_LEVEL: 'silent' },
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        out += d;
        if ((out.match(/^page /gm) ?? []).length >= 2) resolve();
      });
      child.on('exit', () => reject(new Error(`the child ended before being killed: ${out} ${err}`)));
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(out).not.toContain('finished');

    const run = await records.findRun(ex.db, first);
    expect(run?.state).toBe('running');
    expect(run!.filesSeen).toBeGreaterThanOrEqual(20);
    expect(run!.filesSeen).toBeLessThan(files.length);
    // Rows of the unfinished run exist but no reader sees them.
    expect(await records.publishedFiles(ex.db, 'F001')).toEqual([]);
    const patients = [...new Set(files.map((f) => f.path.split('/')[3]!))].map((patientId) => ({ facilityId: 'F001', patientId }));
    expect((await records.queryPatientRecords(ex.db, { patients, currentOnly: false, limit: 1000 })).records).toEqual([]);
  });

  it('another night of the same facility waits while the killed run still looks alive', async () => {
    await expect(index(second)).rejects.toBeInstanceOf(FacilityBusy);
  });

  it('the retried job resumes after the checkpoint and publishes exactly the snapshot', async () => {
    const before = await records.findRun(ex.db, first);
    const r = await index(first);
    expect(r).toMatchObject({ outcome: 'indexed', resumed: true, filesSeen: files.length, filesNew: files.length, filesRemoved: 0 });
    expect((await records.findRun(ex.db, first))!.attempts).toBe(before!.attempts + 1);
    const published = await records.publishedFiles(ex.db, 'F001');
    expect(published.map((f) => f.path)).toEqual(files.map((f) => f.path).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    const rows = await ex.db.selectFrom('record').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    expect(Number(rows.n)).toBe(files.length); // each file once: no page was written twice
    // And the next night goes through now.
    expect((await index(second)).outcome).toBe('indexed');
  });
});
