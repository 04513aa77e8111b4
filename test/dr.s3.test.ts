import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPackStore, PackObjectMissing } from '../store/backup/pack-store.js';
import { PackStoreError } from '../store/dr/s3-pack-store.js';
import { packStoreContract } from './dr.contract.js';
import { s3Store, startFaultProxy, startS3Server, type FaultProxy, type S3Server } from './dr.support.js';
import { tempDir } from './support/tmp.js';
import { createTestDatabase } from './support/postgres.js';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import fs from 'node:fs';
import path from 'node:path';

let server: S3Server;
const serverDir = tempDir('hakobune-s3-');
let prefixes = 0;

beforeAll(async () => {
  server = await startS3Server(serverDir.dir);
});
afterAll(async () => {
  await server?.stop();
  serverDir.remove();
});

packStoreContract('local folder', async () => {
  const t = tempDir();
  return { store: new LocalPackStore(t.dir), cleanup: async () => t.remove() };
});

// Each store gets its own key prefix in the one bucket: separate stores, one server.
packStoreContract('S3 (s3rver on 127.0.0.1)', async () => ({ store: s3Store(server, { prefix: `contract-${++prefixes}` }), cleanup: async () => {} }));

describe('S3 pack store', () => {
  it('lists across pages', async () => {
    const store = s3Store(server, { prefix: 'paged', listPageSize: 7 });
    const names: string[] = [];
    for (let i = 0; i < 23; i++) {
      const name = `data/p${String(i).padStart(2, '0')}`;
      names.push(name);
      await store.put(name, Buffer.from(name));
    }
    const listed: string[] = [];
    for await (const o of store.list('data')) listed.push(o.name);
    expect(listed.sort()).toEqual(names);
    await store.close();
    await store.close(); // twice is safe
  });

  it('keeps the objects of two prefixes apart', async () => {
    const a = s3Store(server, { prefix: 'site-a/packs' });
    const b = s3Store(server, { prefix: 'site-b/packs' });
    await a.put('data/x', Buffer.from('from a'));
    expect(await b.stat('data/x')).toBeUndefined();
    await expect(b.get('data/x')).rejects.toBeInstanceOf(PackObjectMissing);
    await a.close();
    await b.close();
  });

  it('names the bucket and object when the bucket does not exist', async () => {
    const store = s3Store({ endpoint: server.endpoint, bucket: 'no-such-bucket' }, { maxAttempts: 1 });
    await expect(store.put('data/x', Buffer.from('x'))).rejects.toThrow(/PUT of pack object data\/x in bucket no-such-bucket answered 404/);
    await store.close();
  });

  it('refuses a put over an object of the same name with other content, and says so', async () => {
    const store = s3Store(server, { prefix: 'clash' });
    await store.put('data/c', Buffer.from('first'));
    await expect(store.put('data/c', Buffer.from('second, longer'))).rejects.toThrow(/already exists .* with other content/);
    expect((await store.get('data/c')).toString()).toBe('first');
    await store.close();
  });

  it('reports an unreachable endpoint as a clear error after bounded retries', async () => {
    const store = s3Store({ endpoint: 'http://127.0.0.1:1', bucket: 'packs' }, { maxAttempts: 2 });
    const err = await store.put('data/x', Buffer.from('x')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PackStoreError);
    expect((err as Error).message).toMatch(/S3 HEAD of pack object data\/x in bucket packs failed: .*ECONNREFUSED/);
    await store.close();
  });
});

describe('S3 pack store behind a faulty network', () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy(server.endpoint);
  });
  afterAll(async () => {
    await proxy?.stop();
  });
  const through = (prefix: string, opts: Parameters<typeof s3Store>[1] = {}) =>
    s3Store({ endpoint: proxy.endpoint, bucket: server.bucket }, { prefix, attemptTimeoutMs: 1500, ...opts });
  const direct = (prefix: string) => s3Store(server, { prefix });
  const puts = () => proxy.seen.filter((r) => r.method === 'PUT');

  it('retries a PUT answered 500 and 503, then stores the object whole', async () => {
    proxy.seen = [];
    let failures = 0;
    proxy.rule = (r) => (r.method === 'PUT' && failures < 2 ? (failures++ === 0 ? { kind: 'status', status: 500 } : { kind: 'status', status: 503, code: 'SlowDown' }) : undefined);
    const store = through('retry-500');
    const data = randomBytes(300_000);
    await store.put('data/r', data);
    expect(puts().map((r) => r.fault)).toEqual(['status', 'status', 'none']);
    expect((await direct('retry-500').get('data/r')).equals(data)).toBe(true);
    await store.close();
  });

  it('retries a PUT whose connection is cut mid-body; the object is whole', async () => {
    proxy.seen = [];
    let cut = false;
    proxy.rule = (r) => (r.method === 'PUT' && !cut ? ((cut = true), { kind: 'cut-body', afterBytes: 100_000 }) : undefined);
    const store = through('retry-cut');
    const data = randomBytes(400_000);
    await store.put('data/c', data);
    expect(puts().map((r) => r.fault)).toEqual(['cut-body', 'none']);
    const stored = await direct('retry-cut').get('data/c');
    expect(createHash('sha256').update(stored).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    await store.close();
  });

  it('retries a PUT that gets no answer in time (a per-attempt timeout)', async () => {
    proxy.seen = [];
    let slow = false;
    proxy.rule = (r) => (r.method === 'PUT' && !slow ? ((slow = true), { kind: 'delay', ms: 5000 }) : undefined);
    const store = through('retry-slow');
    const data = randomBytes(10_000);
    const started = Date.now();
    await store.put('data/s', data);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(puts().map((r) => r.fault)).toEqual(['delay', 'none']);
    expect((await direct('retry-slow').get('data/s')).equals(data)).toBe(true);
    await store.close();
  });

  it('a PUT stored but whose answer was lost is retried and accepted, the object once and whole', async () => {
    proxy.seen = [];
    let lost = false;
    proxy.rule = (r) => (r.method === 'PUT' && !lost ? ((lost = true), { kind: 'lose-response' }) : undefined);
    const store = through('lost-answer');
    const data = randomBytes(50_000);
    await store.put('data/l', data);
    expect((await direct('lost-answer').get('data/l')).equals(data)).toBe(true);
    await store.close();
  });

  it('gives up after the bounded attempts with a clear error and leaves no partial object under the name', async () => {
    proxy.seen = [];
    proxy.rule = (r) => (r.method === 'PUT' ? { kind: 'cut-body', afterBytes: 64 * 1024 } : undefined);
    const store = through('give-up', { maxAttempts: 3 });
    const err = await store.put('data/g', randomBytes(500_000)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PackStoreError);
    expect((err as Error).message).toMatch(/S3 PUT of pack object data\/g in bucket packs lost its connection \((ECONNRESET|EPIPE)\) after 3 attempt\(s\)/);
    expect(puts()).toHaveLength(3);
    // The test server writes a cut upload's bytes under the final name; the store removed them.
    expect(await direct('give-up').stat('data/g')).toBeUndefined();
    await store.close();
  });

  it('gives up on a server that keeps answering 500, naming the status', async () => {
    proxy.seen = [];
    proxy.rule = (r) => (r.method === 'PUT' ? { kind: 'status', status: 500 } : undefined);
    const store = through('always-500', { maxAttempts: 3 });
    await expect(store.put('data/e', randomBytes(1000))).rejects.toThrow(/answered 500 InternalError after 3 attempt\(s\)/);
    expect(puts()).toHaveLength(3);
    expect(await direct('always-500').stat('data/e')).toBeUndefined();
    await store.close();
  });

  it('retries a ranged GET answered 500, and stops at the operation deadline when the server hangs', async () => {
    const data = randomBytes(100_000);
    await direct('get-faults').put('data/d', data);
    proxy.seen = [];
    let once = false;
    proxy.rule = (r) => (r.method === 'GET' && !once ? ((once = true), { kind: 'status', status: 500 }) : undefined);
    const store = through('get-faults');
    expect((await store.get('data/d', { offset: 70_000, length: 100 })).equals(data.subarray(70_000, 70_100))).toBe(true);
    await store.close();

    proxy.rule = (r) => (r.method === 'GET' ? { kind: 'delay', ms: 10_000 } : undefined);
    const hung = through('get-faults', { attemptTimeoutMs: 5000, operationTimeoutMs: 800 });
    const started = Date.now();
    await expect(hung.get('data/d')).rejects.toThrow(/GET of pack object data\/d in bucket packs timed out \(the deadline of 800 ms passed\)/);
    expect(Date.now() - started).toBeLessThan(4000);
    await hung.close();
  });
});

describe('the exchange with HAKOBUNE_S3_BUCKET set', () => {
  it('stores its packs in the bucket, not in the local folder, and reads blobs back from there', async () => {
    const pg = await createTestDatabase('hks3ex');
    const dir = tempDir('hakobune-s3ex-');
    const exchange = await createExchange(
      testConfig(dir.dir, {
        databaseUrl: pg.url,
        s3: {
          endpoint: server.endpoint,
          bucket: server.bucket,
          region: 'us-east-1',
          credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
          prefix: 'exchange-packs',
          objectLock: undefined,
        },
      }),
    );
    try {
      await exchange.backup.addFacility({ id: 'F-S3', name: 'Sendai Pharmacy', kind: 'pharmacy' });
      const open = await exchange.backup.openUpload('F-S3', { facilityId: 'F-S3', clientSession: 's3' });
      const uploadId = String(open.body.uploadId);
      const data = Buffer.from('MSH|^~\\&|PHARMACY|F-S3|||20260101120000||RDE^O11|1|P|2.5\r');
      const sha256 = createHash('sha256').update(data).digest('hex');
      await exchange.backup.addManifest('F-S3', uploadId, [{ path: 'standard/000/000/0000001/20260101/RDE-01/x_1', size: data.length, mtime: 1_767_225_600_000, sha256 }]);
      const head = Buffer.alloc(36);
      Buffer.from(sha256, 'hex').copy(head);
      head.writeUInt32BE(data.length, 32);
      await exchange.backup.addBlobs('F-S3', uploadId, Buffer.concat([head, data]));
      await exchange.backup.commit('F-S3', uploadId, 1);
      expect((await exchange.backup.readBlob(sha256)).equals(data)).toBe(true);
      const inBucket: string[] = [];
      for await (const o of s3Store(server, { prefix: 'exchange-packs' }).list('data')) inBucket.push(o.name);
      expect(inBucket).toHaveLength(1);
      expect(fs.existsSync(path.join(dir.dir, 'packs', 'data'))).toBe(false);
    } finally {
      await exchange.stop();
      await pg.drop();
      dir.remove();
    }
  });
});
