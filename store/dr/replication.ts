import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Db } from '../db.js';
import { ExchangeError } from '../errors.js';
import { PackObjectMissing, type PackStore } from '../backup/pack-store.js';
import { BackupService } from '../backup/backup.service.js';
import { restoreSnapshot, type RestoreOptions, type RestoreResult } from '../backup/restore.js';
import { DbPackKeys, EncryptedPackStore, decryptObject, encryptObject } from './encrypted-pack-store.js';
import { ConfiguredKeyProvider, type KeyProvider, type MasterKey } from './key-provider.js';
import * as rep from './replica.repository.js';

/**
 * Replication to a second site. The second site is any PackStore (a folder, another bucket):
 * it receives the pack objects exactly as stored (ciphertext when the store is encrypted) and,
 * per run, a generation of metadata: a consistent export of the tables a restore needs, under
 * `meta/<generation>/`, whose manifest is written last, so a generation exists whole or not at
 * all. The second site alone, with the master keys, can then restore any facility.
 */

export const FORMAT = 'hakobune-replica-v1';
const ROWS_PER_OBJECT = 20_000;

export interface ManifestObject {
  name: string;
  size: number;
  sha256: string;
}

export interface ReplicaManifest {
  format: typeof FORMAT;
  generation: string;
  createdAt: string;
  tables: Record<string, { rows: number; objects: ManifestObject[] }>;
  packs: { count: number; bytes: number };
  /** Whether pack objects are encrypted (the master keys are then needed to restore). */
  encrypted: boolean;
  /**
   * The data key of this generation's metadata objects, wrapped by a master key: trees name
   * patients' folders and dictionaries hold fragments of messages, so they are encrypted like
   * packs whenever a key provider is given. The manifest itself holds only counts and hashes.
   */
  metadataKey?: { keyId: string; wrappedDek: string };
}

export interface ReplicateProgress {
  stage: 'metadata' | 'packs';
  done: number;
  total: number;
  bytes: number;
}

export interface ReplicateResult {
  generation: string;
  packs: number;
  packsCopied: number;
  bytesCopied: number;
  packsAlreadyThere: number;
  /** Objects at the second site whose size differs from the first site's: left as they are. */
  damagedAtReplica: string[];
  /** Packs the index names that the first site itself lacks (its own damage; verify reports it). */
  missingAtSource: string[];
  metadataObjects: number;
  metadataBytes: number;
}

function generationName(now: Date): string {
  return `G${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(3).toString('hex')}`;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * A whole object by an explicit range: a whole-object get through the local store's cached file
 * handle starts where the previous whole read ended (and returns nothing the second time).
 */
async function readWhole(store: PackStore, name: string, size: number): Promise<Buffer> {
  return store.get(name, { offset: 0, length: size });
}

async function sizes(store: PackStore, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list(prefix)) out.set(o.name, o.size);
  return out;
}

/**
 * Copies to `target` the packs it lacks and a new metadata generation. `source` is the first
 * site's store as stored (the inner store under encryption): bytes are copied, never decrypted.
 * Each copied pack is verified: its hash when stored in clear, and a read-back at the target.
 */
export async function replicate(
  db: Db,
  source: PackStore,
  target: PackStore,
  opts: { verify?: boolean; now?: () => Date; onProgress?: (p: ReplicateProgress) => void; keys?: KeyProvider } = {},
): Promise<ReplicateResult> {
  const verify = opts.verify ?? true;
  const generation = generationName((opts.now ?? (() => new Date()))());
  const manifest: ReplicaManifest = {
    format: FORMAT,
    generation,
    createdAt: new Date().toISOString(),
    tables: {},
    packs: { count: 0, bytes: 0 },
    encrypted: false,
  };
  const packKeys = rep.REPLICATED_TABLES.find((t) => t.table === 'pack_key')!;
  if (!opts.keys && (await rep.countRows(db, packKeys)) > 0) {
    throw new ExchangeError('bad-request', 'the packs are encrypted but no master keys were given: the metadata would go to the second site in clear');
  }
  let metaDek: Buffer | undefined;
  if (opts.keys) {
    metaDek = randomBytes(32);
    const keyId = opts.keys.currentKeyId();
    manifest.metadataKey = { keyId, wrappedDek: (await opts.keys.wrap(keyId, metaDek, `replica generation ${generation}`)).toString('base64') };
  }
  const packs: { name: string; hash: string; size: number }[] = [];
  const keyed = new Set<string>();
  let metadataBytes = 0;

  // One repeatable-read transaction: every table is exported as of the same instant, so the
  // export never names a snapshot whose trees, blobs or packs it lacks.
  await db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (trx) => {
      let done = 0;
      for (const t of rep.REPLICATED_TABLES) {
        const entry = { rows: 0, objects: [] as ManifestObject[] };
        manifest.tables[t.table] = entry;
        let after: unknown;
        for (let part = 1; ; part++) {
          const page = await rep.pageRows(trx, t, after, ROWS_PER_OBJECT);
          if (page.rows.length === 0) break;
          after = page.last;
          if (t.table === 'pack') for (const r of page.rows) packs.push({ name: String(r.object_name), hash: String(r.hash), size: Number(r.size) });
          if (t.table === 'pack_key') for (const r of page.rows) keyed.add(String(r.object_name));
          const name = `meta/${generation}/${t.table}-${String(part).padStart(6, '0')}.jsonl.gz${metaDek ? '.enc' : ''}`;
          const gz = gzipSync(Buffer.from(page.rows.map((r) => JSON.stringify(r)).join('\n') + '\n'));
          const body = metaDek ? encryptObject(name, metaDek, gz) : gz;
          await target.put(name, body);
          entry.rows += page.rows.length;
          entry.objects.push({ name, size: body.length, sha256: sha(body) });
          metadataBytes += body.length;
          done += page.rows.length;
          opts.onProgress?.({ stage: 'metadata', done, total: 0, bytes: metadataBytes });
        }
      }
    });
  manifest.encrypted = keyed.size > 0;

  const atSource = await sizes(source, 'data');
  const atTarget = await sizes(target, 'data');
  const result: ReplicateResult = {
    generation,
    packs: packs.length,
    packsCopied: 0,
    bytesCopied: 0,
    packsAlreadyThere: 0,
    damagedAtReplica: [],
    missingAtSource: [],
    metadataObjects: 0,
    metadataBytes,
  };
  let done = 0;
  for (const p of packs) {
    done += 1;
    const srcSize = atSource.get(p.name);
    const tgtSize = atTarget.get(p.name);
    if (srcSize === undefined) {
      result.missingAtSource.push(p.name);
    } else if (tgtSize === srcSize) {
      result.packsAlreadyThere += 1;
    } else if (tgtSize !== undefined) {
      result.damagedAtReplica.push(p.name);
    } else {
      const bytes = await readWhole(source, p.name, srcSize);
      if (bytes.length !== srcSize) throw new Error(`pack ${p.name} changed size while it was read (${bytes.length} of ${srcSize} bytes)`);
      if (!keyed.has(p.name) && sha(bytes) !== p.hash) {
        throw new ExchangeError('unavailable', `pack ${p.name} at the first site does not match its hash; it was not copied (run hakobune verify)`);
      }
      await target.put(p.name, bytes);
      if (verify) {
        const back = await readWhole(target, p.name, bytes.length);
        if (back.length !== bytes.length || sha(back) !== sha(bytes)) {
          throw new ExchangeError('unavailable', `pack ${p.name} reads back differently from the second site after the copy`);
        }
      }
      result.packsCopied += 1;
      result.bytesCopied += bytes.length;
    }
    manifest.packs.count += 1;
    manifest.packs.bytes += srcSize ?? 0;
    opts.onProgress?.({ stage: 'packs', done, total: packs.length, bytes: result.bytesCopied });
  }

  // Written last: a generation without its manifest is an interrupted run, and is ignored.
  const body = Buffer.from(JSON.stringify(manifest, null, 1));
  await target.put(`meta/${generation}/manifest.json`, body);
  result.metadataObjects = Object.values(manifest.tables).reduce((n, t) => n + t.objects.length, 0) + 1;
  result.metadataBytes += body.length;
  return result;
}

/** The generations of metadata a second site holds whole (with a manifest), oldest first. */
export async function listGenerations(replica: PackStore): Promise<string[]> {
  const out: string[] = [];
  for await (const o of replica.list('meta')) {
    const m = /^meta\/(G[0-9TZ]+-[0-9a-f]{6})\/manifest\.json$/.exec(o.name);
    if (m) out.push(m[1]!);
  }
  return out.sort();
}

export async function readManifest(replica: PackStore, generation?: string): Promise<ReplicaManifest> {
  const gens = await listGenerations(replica);
  const gen = generation ?? gens.at(-1);
  if (!gen) throw new ExchangeError('not-found', 'the second site holds no complete metadata generation: run hakobune replicate first');
  if (!gens.includes(gen)) throw new ExchangeError('not-found', `the second site holds no complete generation ${gen} (it has ${gens.join(', ') || 'none'})`);
  const name = `meta/${gen}/manifest.json`;
  const m = JSON.parse((await readWhole(replica, name, (await replica.stat(name)) ?? 0)).toString('utf8')) as ReplicaManifest;
  if (m.format !== FORMAT) throw new ExchangeError('unprocessable', `generation ${gen} is in format ${String(m.format)}, not ${FORMAT}`);
  return m;
}

export interface ImportResult {
  generation: string;
  rows: Record<string, number>;
  encrypted: boolean;
}

/**
 * Loads a metadata generation into an empty, migrated database (the second site's scratch
 * database). Every object is checked against the manifest's hash before a row of it is used.
 */
export async function importGeneration(replica: PackStore, db: Db, generation?: string, keys?: KeyProvider): Promise<ImportResult> {
  const manifest = await readManifest(replica, generation);
  let metaDek: Buffer | undefined;
  if (manifest.metadataKey) {
    if (!keys) throw new ExchangeError('bad-request', 'the metadata at the second site is encrypted: set HAKOBUNE_MASTER_KEYS to the master keys of the first site');
    metaDek = await keys.unwrap(manifest.metadataKey.keyId, Buffer.from(manifest.metadataKey.wrappedDek, 'base64'), `replica generation ${manifest.generation}`);
  }
  const busy = await rep.nonEmptyTables(db);
  if (busy.length) throw new ExchangeError('conflict', `the database to import into is not empty (${busy.join(', ')}); use a fresh one`);
  const rows: Record<string, number> = {};
  await db.transaction().execute(async (trx) => {
    for (const t of rep.REPLICATED_TABLES) {
      const entry = manifest.tables[t.table];
      if (!entry) throw new ExchangeError('unprocessable', `generation ${manifest.generation} has no table ${t.table}`);
      rows[t.table] = 0;
      for (const o of entry.objects) {
        let body: Buffer;
        try {
          body = await readWhole(replica, o.name, o.size);
        } catch (e) {
          if (e instanceof PackObjectMissing) throw new ExchangeError('unavailable', `metadata object ${o.name} of generation ${manifest.generation} is missing at the second site`);
          throw e;
        }
        if (body.length !== o.size || sha(body) !== o.sha256) {
          throw new ExchangeError('unavailable', `metadata object ${o.name} of generation ${manifest.generation} is damaged at the second site`);
        }
        const parsed = gunzipSync(metaDek ? decryptObject(o.name, metaDek, body) : body)
          .toString('utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as rep.Row);
        for (let i = 0; i < parsed.length; i += 500) await rep.insertRows(trx, t, parsed.slice(i, i + 500));
        rows[t.table]! += parsed.length;
      }
      if (rows[t.table] !== entry.rows) {
        throw new ExchangeError('unavailable', `generation ${manifest.generation}: table ${t.table} holds ${rows[t.table]} rows, the manifest says ${entry.rows}`);
      }
    }
    await rep.resetSequences(trx);
  });
  return { generation: manifest.generation, rows, encrypted: manifest.encrypted };
}

/** Packs the imported index names that the second site does not hold. */
export async function missingPacks(replica: PackStore, db: Db): Promise<string[]> {
  const present = await sizes(replica, 'data');
  const missing: string[] = [];
  let after: unknown;
  const packTable = rep.REPLICATED_TABLES.find((t) => t.table === 'pack')!;
  for (;;) {
    const page = await rep.pageRows(db, packTable, after, 10_000);
    if (page.rows.length === 0) break;
    after = page.last;
    for (const r of page.rows) if (!present.has(String(r.object_name))) missing.push(String(r.object_name));
  }
  return missing;
}

export interface ReplicaRestoreOptions extends RestoreOptions {
  facilityId: string;
  snapshotId?: string;
  at?: string;
  generation?: string;
  /** Needed when the packs are encrypted. */
  masterKeys?: MasterKey[];
}

export interface ReplicaRestoreResult extends RestoreResult {
  generation: string;
  /** Packs missing at the second site (each file they hold is in `failed`). */
  missingPacks: string[];
}

/**
 * Restores a facility from the second site alone: imports its latest (or a chosen) metadata
 * generation into `db` (empty, migrated), then runs the backup store's own restore over the
 * second site's packs, decrypting with the master keys when the packs are encrypted.
 */
export async function restoreFromReplica(replica: PackStore, db: Db, opts: ReplicaRestoreOptions): Promise<ReplicaRestoreResult> {
  const keys = opts.masterKeys?.length ? new ConfiguredKeyProvider(opts.masterKeys) : undefined;
  const imported = await importGeneration(replica, db, opts.generation, keys);
  let packs: PackStore = replica;
  if (imported.encrypted) {
    if (!keys) throw new ExchangeError('bad-request', 'the packs at the second site are encrypted: set HAKOBUNE_MASTER_KEYS to the master keys that wrap their data keys');
    packs = new EncryptedPackStore(replica, new DbPackKeys(db), keys);
  }
  const missing = await missingPacks(replica, db);
  const backup = new BackupService(db, packs);
  const snapshot = await backup.chooseSnapshot(opts.facilityId, { snapshotId: opts.snapshotId, at: opts.at });
  const result = await restoreSnapshot(backup, snapshot, opts);
  return { ...result, generation: imported.generation, missingPacks: missing };
}
