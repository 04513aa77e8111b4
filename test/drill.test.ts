import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { readConfig } from '../viewer-api/config.js';
import { blobLocations } from '../store/backup/backup.repository.js';
import { listDrills } from '../store/dr/drill.repository.js';
import { runRestoreDrill, runVerifyDrill } from '../jobs/drill.js';
import { InProcessRunner } from '../jobs/in-process.js';
import { BullmqRunner } from '../jobs/bullmq.js';
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { backdateSnapshot, hashOf, randomFiles, uploadTree, type TreeFile } from './retention.support.js';

const CLI = path.resolve(import.meta.dirname, '../hakobune.js');
const work = tempDir('hakobune-drill-');
const scratchDir = path.join(work.dir, 'scratch');
let pg: TestDatabase;
let ex: Exchange;
const snaps: Record<string, string> = {};
let nights: TreeFile[][];
const env = () => ({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: work.dir, LOG_LEVEL: 'silent' });

beforeAll(async () => {
  pg = await createTestDatabase('hkdrill');
  ex = await createExchange(readConfig(env()));
  await ex.backup.addFacility({ id: 'F1', name: 'Rikuzentakata Hospital', kind: 'hospital' });
  await ex.backup.addFacility({ id: 'F2', name: 'Ofunato Pharmacy', kind: 'pharmacy' });
  const shared = randomFiles('shared', 4, 3000);
  nights = [[...shared, ...randomFiles('a', 2, 3000)], [...shared, ...randomFiles('b', 3, 3000)]];
  snaps.f1a = await uploadTree(ex.backup, 'F1', nights[0]!);
  await backdateSnapshot(ex.db, snaps.f1a, 2);
  snaps.f1b = await uploadTree(ex.backup, 'F1', nights[1]!);
  await backdateSnapshot(ex.db, snaps.f1b, 1);
  snaps.f2 = await uploadTree(ex.backup, 'F2', randomFiles('c', 2, 3000));
});
afterAll(async () => {
  await ex?.stop();
  await pg?.drop();
  work.remove();
});

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HAKOBUNE_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL'));
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...clean, ...env() }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('restore drills', () => {
  it('a drill of a healthy store picks with the given randomness, checks every file and records it', async () => {
    // 0.0 picks the first facility (F1) and its first night.
    const d = await runRestoreDrill({ backup: ex.backup, scratchDir, random: () => 0 });
    expect(d).toMatchObject({ kind: 'restore', facilityId: 'F1', snapshotId: snaps.f1a, outcome: 'passed', files: 6, bytes: 6 * 3000, damage: null });
    const last = await runRestoreDrill({ backup: ex.backup, scratchDir, random: () => 0.99 });
    expect(last).toMatchObject({ facilityId: 'F2', snapshotId: snaps.f2, outcome: 'passed', files: 2 });
    expect(fs.readdirSync(scratchDir)).toEqual([]);
    expect((await listDrills(ex.db, 10)).map((x) => x.id)).toEqual([last.id, d.id]);
    await expect(runRestoreDrill({ backup: ex.backup, scratchDir }, { facilityId: 'F1', night: '1999-01-01' })).rejects.toThrow('facility F1 has no snapshot of night 1999-01-01');
    await expect(runRestoreDrill({ backup: ex.backup, scratchDir }, { facilityId: 'NOPE' })).rejects.toThrow('facility NOPE has no snapshot to drill');
  });

  it('after a bit flip in a pack the drill fails and names the damaged file and every snapshot holding it', async () => {
    const victim = nights[1]![0]!; // a shared file: both nights of F1 hold it
    const [loc] = await blobLocations(ex.db, [Buffer.from(hashOf(victim.data), 'hex')]);
    const file = path.join(ex.config.packDir, ...loc!.objectName.split('/'));
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, loc!.offset + 10);
    b[0] ^= 0x01;
    fs.writeSync(fd, b, 0, 1, loc!.offset + 10);
    fs.closeSync(fd);

    const d = await runRestoreDrill({ backup: ex.backup, scratchDir }, { facilityId: 'F1', night: (await ex.backup.getSnapshot(snaps.f1b)).nightlyDate });
    expect(d.outcome).toBe('damaged');
    expect(d.damage!.files).toEqual([{ path: victim.path, sha256: hashOf(victim.data), reason: expect.stringMatching(/damaged|does not match/) }]);
    expect(d.damage!.snapshots.map((s) => s.snapshotId).sort()).toEqual([snaps.f1a, snaps.f1b].sort());
    expect(d.damage!.snapshots[0]!.paths).toEqual([victim.path]);
    expect(d.files).toBe(6); // the other files came back whole

    const v = await runVerifyDrill({ backup: ex.backup }, 1);
    expect(v.outcome).toBe('damaged');
    expect(v.damage!.files.map((f) => f.path)).toEqual([victim.path, victim.path]);
    expect(v.damage!.snapshots.map((s) => s.snapshotId).sort()).toEqual([snaps.f1a, snaps.f1b].sort());

    // The command line: run one now, exit 1, the history in JSON.
    const cli = await run(['drills', '--run', '--facility', 'F1', '--json']);
    expect(cli.code, cli.stderr).toBe(1);
    const out = JSON.parse(cli.stdout) as { ran: { outcome: string; damage: { files: { path: string }[] } }[]; history: unknown[] };
    expect(out.ran[0]).toMatchObject({ outcome: 'damaged', damage: { files: [{ path: victim.path }] } });
    expect(out.history).toHaveLength(5); // two healthy drills, the damaged one, the verify, this one
    const usage = await run(['drills', '--night', '2026-01-01']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--facility and --night choose what --run drills');
  }, 120_000);
});

describe('scheduled drills', () => {
  const log = pino({ level: 'silent' });
  const until = async (cond: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    return cond();
  };

  it('in-process: a timer queues the drill until the schedule is removed', async () => {
    let runs = 0;
    const runner = new InProcessRunner({ 'index-snapshot': async () => undefined, 'restore-drill': async () => void runs++ }, log);
    await runner.startWorkers();
    await runner.schedule('restore-drill', {}, 30);
    expect(await until(() => runs >= 3, 5000)).toBe(true);
    await runner.schedule('restore-drill', {}, 0);
    await runner.idle();
    const stopped = runs;
    await new Promise((r) => setTimeout(r, 150));
    expect(runs).toBe(stopped);
    await runner.close();
  });

  it('BullMQ: a job scheduler runs the drill repeatedly, and idle() does not wait for the next run', async () => {
    let runs = 0;
    const runner = new BullmqRunner({ 'index-snapshot': async () => undefined, 'verify-sample': async (p) => void (runs += p.subset === 0.25 ? 1 : 0) }, log, {
      redisUrl: TEST_REDIS_URL,
      prefix: `hkdrill-${process.pid}-${Date.now()}`,
    });
    try {
      await runner.startWorkers();
      await runner.schedule('verify-sample', { subset: 0.25 }, 200);
      expect(await until(() => runs >= 2, 10_000)).toBe(true);
      await runner.idle();
      await runner.schedule('verify-sample', { subset: 0.25 }, 0);
    } finally {
      await runner.obliterate();
      await runner.close();
    }
  });
});
