import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle, type Db } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { LocalPackStore, type PackStore } from '../store/backup/pack-store.js';
import { BlobStore, type BlobFrame } from '../store/backup/blob-store.js';
import { CHUNK, DbPackKeys, EncryptedPackStore, PackDecryptionError, cipherSize, plainSizeOf } from '../store/dr/encrypted-pack-store.js';
import { ConfiguredKeyProvider, MasterKeyUnavailable, WrongMasterKey, parseMasterKeys, type KeyProvider, type MasterKey } from '../store/dr/key-provider.js';
import { rotatePackKeys, type RotationProgress } from '../store/dr/key-rotation.js';
import * as keysRepo from '../store/dr/pack-key.repository.js';
import { packStoreContract } from './dr.contract.js';
import { s3Store, startS3Server, type S3Server } from './dr.support.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

const key = (id: string): MasterKey => ({ id, key: randomBytes(32) });

let s3: S3Server;
const work = tempDir('hakobune-enc-');
let stores = 0;
const opened: { handle: DatabaseHandle; pg?: TestDatabase }[] = [];

/**
 * A private, migrated database: the pack_key table holds the keys of one pack store, and a
 * rotation moves every key in it, so each store under test gets its own. `embedded` uses PGlite.
 */
async function freshDb(kind: 'postgres' | 'embedded' = 'postgres'): Promise<Db> {
  const pg = kind === 'postgres' ? await createTestDatabase('hkdr') : undefined;
  const handle = await openDatabase({ dataDir: path.join(work.dir, `db-${opened.length}`), databaseUrl: pg?.url });
  opened.push({ handle, pg });
  await migrateToLatest(handle.db);
  return handle.db;
}

beforeAll(async () => {
  s3 = await startS3Server(path.join(work.dir, 's3'));
});
afterAll(async () => {
  for (const o of opened) {
    await o.handle.close();
    await o.pg?.drop();
  }
  await s3?.stop();
  work.remove();
});

/** A fresh folder of packs behind encryption; the inner store is returned for tampering. */
function encryptedLocal(db: Db, provider: KeyProvider) {
  const dir = path.join(work.dir, `packs-${++stores}`);
  const inner = new LocalPackStore(dir);
  return { dir, inner, store: new EncryptedPackStore(inner, new DbPackKeys(db), provider) };
}

packStoreContract('encrypted, over a local folder (keys in PostgreSQL)', async () => {
  const { store } = encryptedLocal(await freshDb(), new ConfiguredKeyProvider([key('k1')]));
  return { store, cleanup: async () => {} };
});

packStoreContract('encrypted, over S3 (s3rver on 127.0.0.1)', async () => {
  const store = new EncryptedPackStore(s3Store(s3, { prefix: `enc-${++stores}` }), new DbPackKeys(await freshDb('embedded')), new ConfiguredKeyProvider([key('k1')]));
  return { store, cleanup: async () => {} };
});

describe('encrypted pack store', () => {
  let db: Db;
  beforeAll(async () => {
    db = await freshDb();
  });
  it('stores ciphertext of the expected size and reads the plaintext back', async () => {
    const { store, inner } = encryptedLocal(db, new ConfiguredKeyProvider([key('k1')]));
    const marker = Buffer.from('MSH|^~\\&|HAKOBUNE|patient 山田太郎|');
    const data = Buffer.concat([marker, randomBytes(3 * CHUNK + 17), marker]);
    await store.put('data/aa/one', data);
    const raw = await inner.get('data/aa/one');
    expect(raw.length).toBe(cipherSize(data.length));
    expect(raw.includes(marker)).toBe(false);
    expect((await store.get('data/aa/one')).equals(data)).toBe(true);
    expect(await store.stat('data/aa/one')).toBe(data.length);
    const listed = [];
    for await (const o of store.list('data')) listed.push(o);
    expect(listed).toEqual([{ name: 'data/aa/one', size: data.length }]);
  });

  it('maps stored sizes to plaintext sizes and rejects sizes no plaintext has', () => {
    for (const n of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 3]) expect(plainSizeOf(cipherSize(n))).toBe(n);
    expect(plainSizeOf(0)).toBeUndefined();
    expect(plainSizeOf(cipherSize(CHUNK) + 1)).toBeUndefined(); // a chunk of 1 byte needs 29 more
  });

  it('reads ranges across chunk boundaries, decrypting only the chunks that cover them', async () => {
    const requests: { offset: number; length: number }[] = [];
    const dir = path.join(work.dir, `packs-${++stores}`);
    const local = new LocalPackStore(dir);
    const counting: PackStore = {
      put: (n, d) => local.put(n, d),
      get: (n, r) => {
        if (r) requests.push(r);
        return local.get(n, r);
      },
      stat: (n) => local.stat(n),
      list: (p) => local.list(p),
      delete: (n) => local.delete(n),
      close: () => local.close(),
    };
    const store = new EncryptedPackStore(counting, new DbPackKeys(db), new ConfiguredKeyProvider([key('k1')]));
    const data = randomBytes(4 * CHUNK + 1000);
    await store.put('data/bb/ranges', data);
    for (const offset of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 3, 4 * CHUNK, 4 * CHUNK + 999]) {
      for (const length of [1, 2, 7, CHUNK, CHUNK + 2, 3 * CHUNK]) {
        requests.length = 0;
        const got = await store.get('data/bb/ranges', { offset, length });
        expect(got.equals(data.subarray(offset, offset + length)), `offset ${offset} length ${length}`).toBe(true);
        const chunks = Math.floor((Math.min(offset + length, data.length) - 1) / CHUNK) - Math.floor(offset / CHUNK) + 1;
        expect(requests).toHaveLength(1);
        expect(requests[0]!.length).toBeLessThanOrEqual(chunks * (CHUNK + 28));
      }
    }
    expect((await store.get('data/bb/ranges', { offset: data.length, length: 5 })).length).toBe(0);
  });

  it('stores blobs of real SS-MIX2 messages through the blob store and reads each back exactly', async () => {
    const { store, inner } = encryptedLocal(db, new ConfiguredKeyProvider([key('k1')]));
    const files: Buffer[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) files.push(fs.readFileSync(p));
      }
    };
    walk(SAMPLES_ROOT);
    expect(files.length).toBeGreaterThan(10);
    const frames: BlobFrame[] = files.map((data) => ({ sha256: createHash('sha256').update(data).digest(), data }));
    const blobs = new BlobStore(db, store, { packTarget: 40_000 });
    const r = await blobs.store(frames);
    expect(r.stored).toBeGreaterThan(0);
    let packs = 0;
    for await (const o of inner.list('data')) {
      packs += 1;
      expect((await inner.get(o.name)).subarray(0, 4).toString()).toBe('HKBE');
    }
    expect(packs).toBeGreaterThan(0);
    let read = 0;
    for await (const b of blobs.readMany(frames.map((f) => f.sha256))) {
      if ('error' in b) throw new Error(b.error);
      expect(createHash('sha256').update(b.data).digest().equals(b.sha256)).toBe(true);
      read += 1;
    }
    expect(read).toBe(new Set(frames.map((f) => f.sha256.toString('hex'))).size);
  });
});

describe('encrypted pack store: tampering and wrong keys', () => {
  let db: Db;
  const k1 = key('k1');
  let dir: string;
  let store: EncryptedPackStore;
  const data = randomBytes(3 * CHUNK + 500);
  const file = (name: string) => path.join(dir, ...name.split('/'));

  beforeAll(async () => {
    db = await freshDb();
    const s = encryptedLocal(db, new ConfiguredKeyProvider([k1]));
    dir = s.dir;
    store = s.store;
    for (const n of ['victim', 'bytes', 'tag', 'swap', 'cut', 'source', 'keyless']) await store.put(`data/cc/${n}`, data);
  });
  const fresh = () => new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([k1]));
  const CH = CHUNK + 28;

  it('detects a flipped ciphertext byte, naming the object and chunk, while other chunks still read', async () => {
    const f = file('data/cc/bytes');
    const raw = fs.readFileSync(f);
    raw[8 + CH + 100] ^= 0x01; // chunk 1
    fs.writeFileSync(f, raw);
    const s = fresh();
    await expect(s.get('data/cc/bytes')).rejects.toThrow(/encrypted pack object data\/cc\/bytes: chunk 1 fails authentication/);
    await expect(s.get('data/cc/bytes', { offset: CHUNK + 5, length: 10 })).rejects.toBeInstanceOf(PackDecryptionError);
    expect((await s.get('data/cc/bytes', { offset: 10, length: 100 })).equals(data.subarray(10, 110))).toBe(true);
  });

  it('detects an altered tag', async () => {
    const f = file('data/cc/tag');
    const raw = fs.readFileSync(f);
    raw[8 + CH - 1] ^= 0x80; // last byte of chunk 0's tag
    fs.writeFileSync(f, raw);
    await expect(fresh().get('data/cc/tag', { offset: 0, length: 10 })).rejects.toThrow(/chunk 0 fails authentication/);
  });

  it('detects chunks swapped within an object (the index is bound)', async () => {
    const f = file('data/cc/swap');
    const raw = fs.readFileSync(f);
    const c0 = Buffer.from(raw.subarray(8, 8 + CH));
    raw.copy(raw, 8, 8 + CH, 8 + 2 * CH);
    c0.copy(raw, 8 + CH);
    fs.writeFileSync(f, raw);
    await expect(fresh().get('data/cc/swap', { offset: 0, length: 10 })).rejects.toThrow(/chunk 0 fails authentication/);
  });

  it('detects a truncated object (the size is bound), even when whole chunks are cut', async () => {
    const f = file('data/cc/cut');
    const raw = fs.readFileSync(f);
    fs.writeFileSync(f, raw.subarray(0, 8 + 2 * CH));
    await expect(fresh().get('data/cc/cut')).rejects.toThrow(/data\/cc\/cut: is truncated/);
  });

  it('detects an object copied under another name with its key record (the name is bound)', async () => {
    // Same data key and ciphertext under another name: only the name in the additional data differs.
    const rec = (await keysRepo.findPackKey(db, 'data/cc/source'))!;
    const copy = 'data/cc/copy';
    fs.mkdirSync(path.dirname(file(copy)), { recursive: true });
    fs.copyFileSync(file('data/cc/source'), file(copy));
    const dek = await new ConfiguredKeyProvider([k1]).unwrap('k1', rec.wrappedDek, 'pack object data/cc/source');
    await keysRepo.insertPackKey(db, { ...rec, objectName: copy, wrappedDek: await new ConfiguredKeyProvider([k1]).wrap('k1', dek, `pack object ${copy}`) });
    await expect(fresh().get(copy, { offset: 0, length: 5 })).rejects.toThrow(/data\/cc\/copy: chunk 0 fails authentication/);
  });

  it('refuses a key record moved from another object, naming the master key', async () => {
    const other = (await keysRepo.findPackKey(db, 'data/cc/source'))!;
    await db.updateTable('pack_key').set({ wrapped_dek: other.wrappedDek }).where('object_name', '=', 'data/cc/victim').execute();
    await expect(fresh().get('data/cc/victim')).rejects.toThrow(/master key "k1" does not open the data key of pack object data\/cc\/victim/);
  });

  it('refuses a wrong master key under the right id, and names the id', async () => {
    const wrong = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([{ id: 'k1', key: randomBytes(32) }]));
    const err = await wrong.get('data/cc/source').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrongMasterKey);
    expect((err as WrongMasterKey).keyId).toBe('k1');
  });

  it('says which master key is missing when the configuration lacks it', async () => {
    const missing = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([key('k9')]));
    const err = await missing.get('data/cc/source').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MasterKeyUnavailable);
    expect((err as Error).message).toBe('master key "k1" is not configured (HAKOBUNE_MASTER_KEYS holds "k9")');
  });

  it('refuses an object that has no key record, rather than passing its bytes through', async () => {
    await keysRepo.deletePackKey(db, 'data/cc/keyless');
    await expect(fresh().get('data/cc/keyless')).rejects.toThrow(/data\/cc\/keyless: has no data key in pack_key/);
  });
});

describe('master key rotation', () => {
  it('re-wraps every data key without touching a pack; reads then need only the new key (embedded database)', async () => {
    const db = await freshDb('embedded');
    const k1 = key('rot1');
    const k2 = key('rot2');
    const { dir, store } = encryptedLocal(db, new ConfiguredKeyProvider([k1]));
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 25; i++) {
      const d = randomBytes(1000 + i * 5000);
      objects.set(`rot/a/${String(i).padStart(3, '0')}`, d);
      await store.put(`rot/a/${String(i).padStart(3, '0')}`, d);
    }
    const fingerprint = () => {
      const out: string[] = [];
      const walk = (d: string) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) walk(p);
          else out.push(`${p}:${fs.statSync(p).mtimeMs}:${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
        }
      };
      walk(dir);
      return out;
    };
    const before = fingerprint();
    const seen: RotationProgress[] = [];
    const r = await rotatePackKeys(db, new ConfiguredKeyProvider([k2, k1]), { batch: 7, onProgress: (p) => seen.push(p) });
    expect(r.keyId).toBe('rot2');
    expect(r.rewrapped).toBe(25);
    expect(r.byKey.find((k) => k.keyId === 'rot1')).toBeUndefined();
    expect(seen[0]).toEqual({ rewrapped: 0, total: expect.any(Number) });
    expect(seen.at(-1)!.rewrapped).toBe(25);
    expect(fingerprint()).toEqual(before);

    const onlyNew = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([k2]));
    for (const [name, d] of objects) expect((await onlyNew.get(name)).equals(d)).toBe(true);
    const onlyOld = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([k1]));
    await expect(onlyOld.get('rot/a/000')).rejects.toThrow(/master key "rot2" is not configured/);
  });

  it('an interrupted rotation leaves every key usable, and a rerun finishes it', async () => {
    const db = await freshDb();
    const k3 = key('int3');
    const k4 = key('int4');
    const { dir, store } = encryptedLocal(db, new ConfiguredKeyProvider([k3]));
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 30; i++) {
      const d = randomBytes(2000);
      objects.set(`int/x/${i}`, d);
      await store.put(`int/x/${i}`, d);
    }
    // The key service fails after 12 wraps (an outage in the middle of a long rotation).
    const real = new ConfiguredKeyProvider([k4, k3]);
    let wraps = 0;
    const failing: KeyProvider = {
      currentKeyId: () => real.currentKeyId(),
      keyIds: () => real.keyIds(),
      unwrap: (id, w, c) => real.unwrap(id, w, c),
      wrap: async (id, dek, c) => {
        if (++wraps > 12) throw new Error('key service unavailable');
        return real.wrap(id, dek, c);
      },
    };
    await expect(rotatePackKeys(db, failing, { batch: 5 })).rejects.toThrow(/key service unavailable/);
    const counts = await keysRepo.countKeysByMasterKey(db);
    expect(counts.find((c) => c.keyId === 'int4')?.objects).toBe(12);
    expect(counts.find((c) => c.keyId === 'int3')?.objects).toBe(18);
    // Half-rotated: every object still reads with both keys configured.
    const both = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([k4, k3]));
    for (const [name, d] of objects) expect((await both.get(name)).equals(d)).toBe(true);

    const r = await rotatePackKeys(db, real, { batch: 5 });
    expect(r.rewrapped).toBe(18);
    expect(r.total).toBe(18);
    expect((await keysRepo.countKeysByMasterKey(db)).find((c) => c.keyId === 'int3')).toBeUndefined();
    const onlyNew = new EncryptedPackStore(new LocalPackStore(dir), new DbPackKeys(db), new ConfiguredKeyProvider([k4]));
    for (const [name, d] of objects) expect((await onlyNew.get(name)).equals(d)).toBe(true);
    // A third run has nothing left to do.
    expect((await rotatePackKeys(db, real)).rewrapped).toBe(0);
  });
});

describe('HAKOBUNE_MASTER_KEYS', () => {
  const b64 = randomBytes(32).toString('base64');
  it('parses a list whose first key is current', () => {
    const keys = parseMasterKeys(`new:${b64}, old:${randomBytes(32).toString('base64')}`);
    expect(keys.map((k) => k.id)).toEqual(['new', 'old']);
    expect(new ConfiguredKeyProvider(keys).currentKeyId()).toBe('new');
  });
  it.each([
    ['', /no master key given/],
    [`nocolon${b64}`, /entry 1: a master key id is/],
    [`bad id:${b64}`, /entry 1: a master key id is/],
    [`k1:not*base64`, /entry 1 \("k1"\): the key is not base64/],
    [`k1:${randomBytes(16).toString('base64')}`, /entry 1 \("k1"\): the key is 16 bytes; AES-256 needs 32/],
    [`k1:${b64},k1:${b64}`, /entry 2: master key id "k1" is given twice/],
  ])('refuses %j', (value, message) => {
    expect(() => parseMasterKeys(value)).toThrow(message);
  });
  it('never puts the key itself in an error message', () => {
    const shortKey = randomBytes(20).toString('base64');
    try {
      parseMasterKeys(`k1:${shortKey}`);
    } catch (e) {
      expect((e as Error).message).not.toContain(shortKey);
    }
    expect(() => parseMasterKeys(`k1:${shortKey}`)).toThrow();
  });
});
