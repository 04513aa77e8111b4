import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange } from '../viewer-api/exchange.js';
import { readConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { backdatePacks, backdateSnapshot, randomFiles, uploadTree } from './retention.support.js';

const CLI = path.resolve(import.meta.dirname, '../hakobune.js');

function run(args: string[], env: Record<string, string | undefined>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HAKOBUNE_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL'));
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...clean, LOG_LEVEL: 'silent', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const work = tempDir('hakobune-retcli-');
let pg: TestDatabase;
const snaps: string[] = [];
const keyFile = path.join(work.dir, 'operator-delete.pem');
const publicKeyFile = path.join(work.dir, 'delete.pub');

beforeAll(async () => {
  pg = await createTestDatabase('hkretcli');
  const ex = await createExchange(readConfig({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: work.dir, LOG_LEVEL: 'silent' }));
  try {
    await ex.backup.addFacility({ id: 'F1', name: 'Minamisanriku Clinic', kind: 'clinic' });
    for (let i = 0; i < 3; i++) {
      const id = await uploadTree(ex.backup, 'F1', randomFiles(`n${i}`, 3, 5000));
      await backdateSnapshot(ex.db, id, 60 - i);
      snaps.push(id);
    }
    await backdatePacks(ex.db, 90);
  } finally {
    await ex.stop();
  }
});
afterAll(async () => {
  await pg?.drop();
  work.remove();
});

describe('hakobune forget and prune', () => {
  const env = (more: Record<string, string> = {}) => ({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: work.dir, HAKOBUNE_RETENTION: 'daily=7', ...more });

  it('shows the plan, refuses bad input with exit code 2, then forgets and prunes with the operator key', async () => {
    const dry = await run(['forget', '--dry-run', '--facility', 'F1'], env());
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('retention daily=7, delete lock 30 days');
    expect(dry.stdout).toMatch(new RegExp(`forget ${snaps[0]}  night \\d{4}-\\d\\d-\\d\\d  night \\S+ is outside every rule \\(daily=7\\)`));
    expect(dry.stdout).toMatch(new RegExp(`keep   ${snaps[2]}  night \\S+  the latest snapshot of the facility`));
    expect(dry.stdout).toContain('2 snapshot(s) would be forgotten, 1 kept (dry run: nothing changed)');

    const unknownFacility = await run(['forget', '--dry-run', '--facility', 'NOPE'], env());
    expect(unknownFacility.code).toBe(2);
    expect(unknownFacility.stderr).toContain('no facility NOPE');
    const unknownSnapshot = await run(['forget', '--dry-run', '--snapshot', 'S-nope'], env());
    expect(unknownSnapshot.code).toBe(2);
    expect(unknownSnapshot.stderr).toContain('no snapshot S-nope');
    const kept = await run(['forget', '--snapshot', snaps[2]!], env());
    expect(kept.code).toBe(2);
    expect(kept.stderr).toContain(`snapshot ${snaps[2]} is kept and cannot be forgotten: the latest snapshot of the facility`);
    const badPolicy = await run(['forget', '--dry-run'], env({ HAKOBUNE_RETENTION: 'daily=30,weekly=4' }));
    expect(badPolicy.code).toBe(2);
    expect(badPolicy.stderr).toMatch(/HAKOBUNE_RETENTION: unknown retention rule "weekly"/);
    const noKey = await run(['forget'], env());
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('deleting needs the operator delete key');

    const gen = await run(['delete-key', 'generate', '--out', keyFile, '--public-out', publicKeyFile], {});
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stdout).toContain('BEGIN PUBLIC KEY');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const again = await run(['delete-key', 'generate', '--out', keyFile], {});
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('it exists already');

    // The exchange does not know the public key yet: deletes are refused.
    const disabled = await run(['forget', '--key-file', keyFile], env());
    expect(disabled.code).toBe(2);
    expect(disabled.stderr).toContain('deletes are not enabled on this exchange');

    const keyed = env({ HAKOBUNE_DELETE_PUBLIC_KEY_FILE: publicKeyFile, HAKOBUNE_DELETE_KEY_FILE: keyFile });
    const forgot = await run(['forget', '--json'], keyed);
    expect(forgot.code, forgot.stderr).toBe(0);
    expect((JSON.parse(forgot.stdout) as { forget: { id: string }[] }).forget.map((d) => d.id)).toEqual(snaps.slice(0, 2));

    const pruneDry = await run(['prune', '--dry-run', '--json'], keyed);
    expect(pruneDry.code, pruneDry.stderr).toBe(0);
    expect(JSON.parse(pruneDry.stdout)).toMatchObject({ dryRun: true, packs: { delete: 2 }, blobsRemoved: 6 });
    const pruned = await run(['prune'], keyed);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toMatch(/6 blob\(s\) removed; reclaimed 0\.0 MiB \(30000 bytes: 30000 deleted, 0 rewritten in 0 new pack\(s\)\)/);
    const verify = await run(['verify', '--read-data'], env());
    expect(verify.code, verify.stderr).toBe(0);
  }, 240_000);
});
