import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange } from '../viewer-api/exchange.js';
import { ConfigError, readConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

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

const k1 = `k1:${randomBytes(32).toString('base64')}`;
const k2 = `k2:${randomBytes(32).toString('base64')}`;
const work = tempDir('hakobune-drcli-');
const firstSite = path.join(work.dir, 'first-site');
const secondSite = path.join(work.dir, 'second-site');
let pg: TestDatabase;
const files: { path: string; data: Buffer; mtime: number }[] = [];

beforeAll(async () => {
  pg = await createTestDatabase('hkdrcli');
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else files.push({ path: rel + e.name, data: fs.readFileSync(abs), mtime: Math.floor(fs.statSync(abs).mtimeMs) });
    }
  };
  walk(SAMPLES_ROOT, 'standard/');
  // The first site: an exchange with encrypted packs, one facility backed up once.
  const ex = await createExchange(readConfig({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: firstSite, HAKOBUNE_MASTER_KEYS: k1, LOG_LEVEL: 'silent' }));
  try {
    await ex.backup.addFacility({ id: 'F100', name: 'Ishinomaki Clinic', kind: 'clinic' });
    const open = await ex.backup.openUpload('F100', { facilityId: 'F100', clientSession: 'cli-test' });
    const uploadId = String(open.body.uploadId);
    const entries = files.map((f) => ({ path: f.path, size: f.data.length, mtime: f.mtime, sha256: createHash('sha256').update(f.data).digest('hex') }));
    const { missing } = await ex.backup.addManifest('F100', uploadId, entries);
    const parts: Buffer[] = [];
    for (const h of missing) {
      const f = files[entries.findIndex((e) => e.sha256 === h)]!;
      const head = Buffer.alloc(36);
      Buffer.from(h, 'hex').copy(head);
      head.writeUInt32BE(f.data.length, 32);
      parts.push(head, f.data);
    }
    await ex.backup.addBlobs('F100', uploadId, Buffer.concat(parts));
    await ex.backup.commit('F100', uploadId, entries.length);
  } finally {
    await ex.stop();
  }
});
afterAll(async () => {
  await pg?.drop();
  work.remove();
});

// Each command is a separate process (tsx loading the whole program): few of them, generous time.
describe('disaster-recovery commands', () => {
  const site = (keys: string) => ({ DATABASE_URL: pg.url, HAKOBUNE_DATA_DIR: firstSite, HAKOBUNE_MASTER_KEYS: keys });

  it('keys status, keys rotate, replicate, then replica restore from the second site alone', async () => {
    const before = await run(['keys', 'status', '--json'], site(k1));
    expect(before.code, before.stderr).toBe(0);
    const objects = (JSON.parse(before.stdout) as { byKey: { keyId: string; objects: number }[] }).byKey;
    expect(objects).toEqual([{ keyId: 'k1', objects: expect.any(Number) }]);

    const rotated = await run(['keys', 'rotate', '--json'], site(`${k2},${k1}`));
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(JSON.parse(rotated.stdout)).toMatchObject({ keyId: 'k2', rewrapped: objects[0]!.objects, byKey: [{ keyId: 'k2', objects: objects[0]!.objects }] });

    const rep = await run(['replicate', '--to', secondSite, '--json'], site(k2));
    expect(rep.code, rep.stderr).toBe(0);
    expect(JSON.parse(rep.stdout)).toMatchObject({ to: secondSite, damagedAtReplica: [], missingAtSource: [] });

    // The first site is lost.
    await pg.drop();
    fs.rmSync(firstSite, { recursive: true, force: true });
    const to = path.join(work.dir, 'restored');
    const restored = await run(['replica', 'restore', '--from', `file:${secondSite}`, '--facility', 'F100', '--to', to], { HAKOBUNE_MASTER_KEYS: k2, HAKOBUNE_DATA_DIR: path.join(work.dir, 'ops') });
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(new RegExp(`restored ${files.length} file\\(s\\)`));
    for (const f of files) {
      const p = path.join(to, ...f.path.split('/'));
      expect(fs.readFileSync(p).equals(f.data), f.path).toBe(true);
      expect(Math.floor(fs.statSync(p).mtimeMs)).toBe(f.mtime);
    }
  }, 300_000);

  it('refuses bad input with exit code 2 and a clear message', async () => {
    const ops = { HAKOBUNE_DATA_DIR: path.join(work.dir, 'ops2') };
    const badSpec = await run(['replica', 'restore', '--from', 'ftp://somewhere/x', '--facility', 'F100', '--to', path.join(work.dir, 'z')], ops);
    expect(badSpec.code, badSpec.stderr).toBe(2);
    expect(badSpec.stderr).toMatch(/"ftp:\/\/somewhere\/x" is not a store/);
    const noKeys = await run(['keys', 'rotate'], ops);
    expect(noKeys.code, noKeys.stderr).toBe(2);
    expect(noKeys.stderr).toMatch(/HAKOBUNE_MASTER_KEYS is not set/);
  }, 120_000);
});

describe('configuration of disaster-recovery storage', () => {
  const base = { HAKOBUNE_DATA_DIR: '/tmp/x' };
  it('reads the S3 settings and the master keys', () => {
    const c = readConfig({
      ...base,
      HAKOBUNE_S3_BUCKET: 'hakobune-packs',
      HAKOBUNE_S3_ENDPOINT: 'http://127.0.0.1:9000',
      HAKOBUNE_S3_PREFIX: 'site-a/packs',
      HAKOBUNE_S3_ACCESS_KEY_ID: 'id',
      HAKOBUNE_S3_SECRET_ACCESS_KEY: 'secret',
      HAKOBUNE_S3_LOCK_MODE: 'COMPLIANCE',
      HAKOBUNE_S3_LOCK_DAYS: '400',
      HAKOBUNE_MASTER_KEYS: `${k2},${k1}`,
    });
    expect(c.s3).toEqual({
      endpoint: 'http://127.0.0.1:9000',
      bucket: 'hakobune-packs',
      region: 'us-east-1',
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
      prefix: 'site-a/packs',
      objectLock: { mode: 'COMPLIANCE', days: 400 },
    });
    expect(c.masterKeys?.map((k) => k.id)).toEqual(['k2', 'k1']);
    expect(readConfig(base).s3).toBeUndefined();
    expect(readConfig(base).masterKeys).toBeUndefined();
  });
  it.each([
    [{ HAKOBUNE_S3_ENDPOINT: 'http://127.0.0.1:9000' }, /HAKOBUNE_S3_BUCKET: the S3 settings need HAKOBUNE_S3_BUCKET/],
    [{ HAKOBUNE_S3_BUCKET: 'Bad_Bucket' }, /HAKOBUNE_S3_BUCKET: must be an S3 bucket name/],
    [{ HAKOBUNE_S3_BUCKET: 'packs', HAKOBUNE_S3_ACCESS_KEY_ID: 'id' }, /must be set together/],
    [{ HAKOBUNE_S3_BUCKET: 'packs', HAKOBUNE_S3_LOCK_MODE: 'COMPLIANCE' }, /HAKOBUNE_S3_LOCK_MODE and HAKOBUNE_S3_LOCK_DAYS must be set together/],
    [{ HAKOBUNE_S3_BUCKET: 'packs', HAKOBUNE_S3_ENDPOINT: 'ftp://x' }, /HAKOBUNE_S3_ENDPOINT: must be a URL/],
    [{ HAKOBUNE_MASTER_KEYS: 'k1' }, /HAKOBUNE_MASTER_KEYS: entry 1: a master key id is/],
  ])('refuses %j', (env, message) => {
    expect(() => readConfig({ ...base, ...env })).toThrow(ConfigError);
    expect(() => readConfig({ ...base, ...env })).toThrow(message);
  });
});
