import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isUniqueViolation, type Db } from '../db.js';
import { ExchangeError, badRequest, conflict, notFound, unauthorized } from '../errors.js';
import type { PackStore } from './pack-store.js';
import { BlobStore } from './blob-store.js';
import { ingestPool } from './ingest-pool.js';
import * as repo from './backup.repository.js';
import { StreamingBuild, TreeLoader, buildFromDelta, buildFromStaging, diffTrees, walkFiles, type SnapshotFile } from './tree-store.js';
import { TreeConflict, pathProblem } from './tree.js';

import { FACILITY_KINDS } from '../facility-kind.js';

export interface BackupOptions {
  /** Largest single blob (file) accepted; the request limit is 32 MiB (PROTOCOL.md §3). */
  maxBlobBytes?: number;
  /** An open upload idle this long may be replaced by another client session. */
  staleUploadMs?: number;
  packTarget?: number;
  trainDictionaryAfter?: number;
  /** Clock, for the nightly date. */
  now?: () => Date;
  /** Called once a snapshot is committed (the exchange queues its indexing). */
  onCommitted?: (snapshotId: string) => Promise<void>;
}

export const MAX_BLOB_BATCH_BYTES = 32 * 1024 * 1024;
export const MAX_MANIFEST_BATCH = 10_000;

export type ManifestEntry =
  | { path: string; size: number; mtime: number; sha256: string }
  | { path: string; deleted: true };

export interface CommitResult {
  snapshotId: string;
  facilityId: string;
  files: number;
  bytes: number;
  newBlobs: number;
  newBytes: number;
  createdAt: string;
}

/** The Asia/Tokyo calendar date of an instant: what Japanese operators call "that night". */
export function tokyoDate(d: Date): string {
  return new Date(d.getTime() + 9 * 3600_000).toISOString().slice(0, 10);
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function snapshotId(now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `S${t}-${randomBytes(3).toString('hex')}`;
}

/**
 * The backup store's operations: facilities and their uploader tokens, the upload protocol
 * (PROTOCOL.md), snapshots, and the narrow read API the indexer uses.
 */
export class BackupService {
  readonly blobs: BlobStore;
  readonly trees: TreeLoader;
  readonly maxBlobBytes: number;
  private readonly staleUploadMs: number;
  private readonly now: () => Date;
  private readonly onCommitted: ((snapshotId: string) => Promise<void>) | undefined;
  /**
   * Full uploads opened in this process whose trees are being built as their manifest arrives
   * (StreamingBuild). Only a shortcut: an upload resumed elsewhere, or after a restart, has none
   * here and its commit builds from the staging table.
   */
  private readonly building = new Map<string, StreamingBuild>();
  private static readonly MAX_BUILDING = 8;
  /** Commits whose trees were built while the manifest arrived (the rest built them from the staging table). */
  treesBuiltWhileReceiving = 0;

  constructor(
    readonly db: Db,
    readonly packs: PackStore,
    opts: BackupOptions = {},
  ) {
    this.blobs = new BlobStore(db, packs, { packTarget: opts.packTarget, trainAfter: opts.trainDictionaryAfter });
    // The blob ingest workers start now (a second or so on a busy machine), not at the first batch.
    ingestPool();
    this.trees = new TreeLoader(db);
    this.maxBlobBytes = Math.min(opts.maxBlobBytes ?? MAX_BLOB_BATCH_BYTES - 36, MAX_BLOB_BATCH_BYTES - 36);
    this.staleUploadMs = opts.staleUploadMs ?? 12 * 3600_000;
    this.now = opts.now ?? (() => new Date());
    this.onCommitted = opts.onCommitted;
  }

  // --- facilities -------------------------------------------------------------------------

  /** Registers a facility; returns its uploader token, which is stored only as a hash. */
  async addFacility(f: { id: string; name: string; kind: repo.FacilityKind }): Promise<{ facility: repo.FacilityRow; token: string }> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(f.id)) throw badRequest('a facility id is 1-32 letters, digits, "-" or "_", e.g. F001');
    if (!FACILITY_KINDS.includes(f.kind)) throw badRequest(`a facility kind is one of ${FACILITY_KINDS.join(', ')}`);
    if (!f.name.trim() || f.name.length > 200) throw badRequest('a facility name is 1-200 characters');
    const token = `hkb_${randomBytes(32).toString('base64url')}`;
    const facility = await this.db.transaction().execute(async (trx) => {
      if (await repo.findFacility(trx, f.id)) throw conflict(`facility ${f.id} already exists`);
      const row = await repo.insertFacility(trx, { ...f, name: f.name.trim() });
      await repo.insertCredential(trx, f.id, hashToken(token));
      return row;
    });
    return { facility, token };
  }

  /** Revokes the facility's tokens and issues a new one. */
  async rotateToken(facilityId: string): Promise<{ token: string; revoked: number }> {
    const token = `hkb_${randomBytes(32).toString('base64url')}`;
    const revoked = await this.db.transaction().execute(async (trx) => {
      if (!(await repo.findFacility(trx, facilityId))) throw notFound(`no facility ${facilityId}`);
      const n = await repo.revokeCredentials(trx, facilityId);
      await repo.insertCredential(trx, facilityId, hashToken(token));
      return n;
    });
    return { token, revoked };
  }

  async revokeTokens(facilityId: string): Promise<number> {
    if (!(await repo.findFacility(this.db, facilityId))) throw notFound(`no facility ${facilityId}`);
    return repo.revokeCredentials(this.db, facilityId);
  }

  listFacilities() {
    return repo.listFacilities(this.db);
  }

  /** The facility a bearer token belongs to; a wrong, unknown or revoked token is a 401. */
  async authenticate(authorization: string | undefined): Promise<string> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw unauthorized('an uploader token is required (Authorization: Bearer <token>)');
    const presented = hashToken(m[1]!);
    const cred = await repo.findCredential(this.db, presented);
    // The lookup is by hash; comparing again in constant time keeps the check itself free of
    // timing differences whatever the index does.
    if (!cred || !timingSafeEqual(cred.token_hash, presented)) throw unauthorized('the uploader token is not valid');
    if (cred.revoked_at) throw unauthorized('the uploader token has been revoked');
    return cred.facility_id;
  }

  // --- uploads (PROTOCOL.md) --------------------------------------------------------------

  async openUpload(
    facilityId: string,
    req: { facilityId: string; clientSession: string; baseSnapshotId?: string | null },
  ): Promise<{ status: 200 | 201; body: Record<string, unknown> }> {
    if (req.facilityId !== facilityId) throw new ExchangeError('forbidden', `this token belongs to another facility than ${req.facilityId}`);
    const base = req.baseSnapshotId ?? null;
    try {
      return await this.db.transaction().execute(async (trx) => {
        // A session that already committed (its client lost the answer, or runs again with
        // the same session) gets that upload back, committed: committing it again answers the
        // same snapshot, so a retry never makes a second one.
        const earlier = await repo.findUploadBySession(trx, facilityId, req.clientSession);
        if (earlier?.state === 'committed') {
          return {
            status: 200 as const,
            body: {
              uploadId: earlier.id,
              resumed: true,
              state: 'committed',
              snapshotId: earlier.snapshotId,
              base: earlier.baseSnapshotId,
              received: { entries: earlier.entries, blobs: earlier.blobsStored },
            },
          };
        }
        const open = await repo.findOpenUpload(trx, facilityId);
        if (open) {
          if (open.clientSession === req.clientSession) {
            return {
              status: 200 as const,
              body: { uploadId: open.id, resumed: true, base: open.baseSnapshotId, received: { entries: open.entries, blobs: open.blobsStored } },
            };
          }
          if (this.now().getTime() - open.updatedAt.getTime() < this.staleUploadMs) {
            throw conflict(`facility ${facilityId} already has an upload open (since ${open.createdAt.toISOString()}) from another client session`, {
              openSince: open.createdAt.toISOString(),
            });
          }
          // Abandoned for longer than staleUploadMs: the new session takes over.
          await repo.finishUpload(trx, open.id, 'aborted', null);
          await repo.deleteStagedEntries(trx, open.id);
        }
        const latest = await repo.latestSnapshot(trx, facilityId);
        if (base !== null && base !== latest?.id) {
          throw conflict('the base snapshot is not the facility\'s latest snapshot; send a full manifest without a base', {
            latestSnapshotId: latest?.id ?? null,
          });
        }
        const u = await repo.insertUpload(trx, {
          id: `U${randomBytes(12).toString('hex')}`,
          facilityId,
          clientSession: req.clientSession,
          baseSnapshotId: base,
        });
        return { status: 201 as const, body: { uploadId: u.id, resumed: false, base: u.baseSnapshotId } };
      }).then((res) => {
        if (res.status === 201 && base === null) this.startBuilding(res.body.uploadId as string);
        return res;
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw conflict(`facility ${facilityId} already has an upload open`);
      throw e;
    }
  }

  private startBuilding(uploadId: string): void {
    // Abandoned uploads (never committed nor aborted here) must not hold memory for ever.
    while (this.building.size >= BackupService.MAX_BUILDING) this.building.delete(this.building.keys().next().value!);
    this.building.set(uploadId, new StreamingBuild(this.db));
  }

  private async ownUpload(db: Db, facilityId: string, uploadId: string, opts: { forUpdate?: boolean } = {}): Promise<repo.UploadRow> {
    const u = await repo.findUpload(db, uploadId, opts);
    // Another facility's upload is answered as absent: a token learns nothing beyond its own.
    if (!u || u.facilityId !== facilityId) throw notFound(`no upload ${uploadId}`);
    return u;
  }

  private requireOpen(u: repo.UploadRow): void {
    if (u.state !== 'open') throw conflict(`upload ${u.id} is ${u.state}`, { state: u.state });
  }

  async uploadState(facilityId: string, uploadId: string) {
    const u = await this.ownUpload(this.db, facilityId, uploadId);
    return {
      uploadId: u.id,
      facilityId: u.facilityId,
      state: u.state,
      base: u.baseSnapshotId,
      received: { entries: u.entries, blobs: u.blobsStored },
      snapshotId: u.snapshotId,
      createdAt: u.createdAt.toISOString(),
      updatedAt: u.updatedAt.toISOString(),
    };
  }

  /** Stages one manifest batch; answers the hashes the store lacks. All or nothing. */
  async addManifest(facilityId: string, uploadId: string, entries: ManifestEntry[]): Promise<{ missing: string[] }> {
    if (entries.length > MAX_MANIFEST_BATCH) throw badRequest(`at most ${MAX_MANIFEST_BATCH} entries a batch`);
    const upload = await this.ownUpload(this.db, facilityId, uploadId);
    this.requireOpen(upload);
    const seen = new Set<string>();
    const staged: repo.StagedEntry[] = [];
    entries.forEach((e, i) => {
      const problem = pathProblem(e.path);
      if (problem) throw badRequest(`entries[${i}]: path ${JSON.stringify(e.path)} ${problem}`, { index: i, path: e.path });
      if (seen.has(e.path)) throw badRequest(`entries[${i}]: path ${JSON.stringify(e.path)} is listed twice`, { index: i, path: e.path });
      seen.add(e.path);
      if ('deleted' in e) {
        if (!upload.baseSnapshotId) throw badRequest(`entries[${i}]: deleted entries belong to a delta upload (one with a base snapshot)`, { index: i });
        staged.push({ path: e.path, size: null, mtime: null, sha256: null, deleted: true });
      } else {
        if (e.size > this.maxBlobBytes) {
          throw new ExchangeError('unprocessable', `entries[${i}]: ${e.path} is ${e.size} bytes, over the ${this.maxBlobBytes}-byte limit for one file`, {
            index: i,
            path: e.path,
            limit: this.maxBlobBytes,
          });
        }
        staged.push({ path: e.path, size: e.size, mtime: e.mtime, sha256: Buffer.from(e.sha256, 'hex'), deleted: false });
      }
    });
    await this.db.transaction().execute(async (trx) => {
      const u = await this.ownUpload(trx, facilityId, uploadId, { forUpdate: true });
      this.requireOpen(u);
      const { inserted, clashes } = await repo.stageEntries(trx, uploadId, staged);
      const sent = new Map(staged.map((s) => [s.path, s]));
      for (const c of clashes) {
        const s = sent.get(c.path)!;
        const same =
          s.deleted === c.deleted &&
          s.size === c.size &&
          s.mtime === c.mtime &&
          (s.sha256 === null ? c.sha256 === null : c.sha256 !== null && s.sha256.equals(c.sha256));
        // A batch sent again after a lost answer is accepted as is; a second, different entry
        // for a path is a client error and nothing of this batch is kept.
        if (!same) throw badRequest(`path ${JSON.stringify(c.path)} was already sent in this upload with other content`, { path: c.path });
      }
      await repo.touchUpload(trx, uploadId, { entries: inserted });
      return inserted;
    }).then((inserted) => {
      // The stored batch goes on to the tree build, which runs behind the answer. A batch sent
      // again (nothing new) adds nothing; one only partly new means the build cannot know the
      // order of what it holds.
      const b = this.building.get(uploadId);
      if (!b || inserted === 0) return;
      if (inserted === staged.length) void b.feed(staged);
      else b.giveUp('a manifest batch was partly stored before');
    });
    const wanted = new Map<string, Buffer>();
    for (const s of staged) if (s.sha256) wanted.set(s.sha256.toString('hex'), s.sha256);
    const present = new Set((await repo.presentBlobs(this.db, [...wanted.values()])).map((h) => h.toString('hex')));
    return { missing: [...wanted.keys()].filter((h) => !present.has(h)) };
  }

  /** Stores a framed blob batch (every frame re-hashed; one bad frame rejects the batch). */
  async addBlobs(facilityId: string, uploadId: string, body: Buffer): Promise<{ stored: number; alreadyPresent: number }> {
    const upload = await this.ownUpload(this.db, facilityId, uploadId);
    this.requireOpen(upload);
    const r = await this.blobs.storeBatch(body, this.maxBlobBytes, async (trx, stored) => {
      const u = await this.ownUpload(trx, facilityId, uploadId, { forUpdate: true });
      this.requireOpen(u);
      await repo.touchUpload(trx, uploadId, { blobs: stored.blobs, bytes: stored.bytes });
    });
    return { stored: r.stored, alreadyPresent: r.alreadyPresent };
  }

  /**
   * Commits: checks the count and that every blob is stored, builds the trees, then makes the
   * snapshot visible in one transaction with the upload's state. Idempotent.
   */
  async commit(facilityId: string, uploadId: string, sentEntries: number): Promise<CommitResult> {
    const upload = await this.ownUpload(this.db, facilityId, uploadId);
    if (upload.state === 'committed') return this.commitResult(upload.snapshotId!);
    this.requireOpen(upload);
    if (sentEntries !== upload.entries) {
      throw conflict(`the client sent ${sentEntries} entries but the exchange received ${upload.entries}`, {
        receivedEntries: upload.entries,
      });
    }
    const missing = await repo.missingBlobsOfUpload(this.db, uploadId, 100);
    if (missing.count > 0) {
      throw conflict(`${missing.count} blob(s) of the manifest have not been sent`, {
        missingBlobs: missing.count,
        missing: missing.first.map((h) => h.toString('hex')),
      });
    }
    let built;
    try {
      if (upload.baseSnapshotId) {
        const base = await repo.findSnapshot(this.db, upload.baseSnapshotId);
        const latest = await repo.latestSnapshot(this.db, facilityId);
        if (!base || latest?.id !== base.id) {
          throw conflict('the base snapshot is no longer the facility\'s latest; start a full upload', { latestSnapshotId: latest?.id ?? null });
        }
        built = await buildFromDelta(this.db, uploadId, base.rootTree);
      } else {
        const streaming = this.building.get(uploadId);
        const streamed = await streaming?.result(upload.entries);
        if (streamed) this.treesBuiltWhileReceiving++;
        built = streamed ?? (await buildFromStaging(this.db, uploadId));
      }
    } catch (e) {
      if (e instanceof TreeConflict) throw new ExchangeError('unprocessable', e.message, { path: e.path });
      throw e;
    }
    const snapshot = await this.db.transaction().execute(async (trx) => {
      const u = await this.ownUpload(trx, facilityId, uploadId, { forUpdate: true });
      if (u.state === 'committed') return undefined; // a concurrent commit of the same upload won
      this.requireOpen(u);
      const now = this.now();
      const s = await repo.insertSnapshot(trx, {
        id: snapshotId(now),
        facilityId,
        rootTree: built.root,
        files: built.files,
        bytes: built.bytes,
        newBlobs: u.blobsStored,
        newBytes: u.bytesStored,
        uploadId,
        nightlyDate: tokyoDate(u.createdAt),
      });
      await repo.finishUpload(trx, uploadId, 'committed', s.id);
      return s;
    });
    this.building.delete(uploadId);
    if (!snapshot) {
      const u = await this.ownUpload(this.db, facilityId, uploadId);
      return this.commitResult(u.snapshotId!);
    }
    await repo.deleteStagedEntries(this.db, uploadId);
    await repo.vacuumStaging(this.db).catch(() => {}); // space reuse only: never fails a commit
    await this.onCommitted?.(snapshot.id);
    return toCommitResult(snapshot);
  }

  private async commitResult(snapshotId: string): Promise<CommitResult> {
    const s = await repo.findSnapshot(this.db, snapshotId);
    if (!s) throw new Error(`snapshot ${snapshotId} of a committed upload is missing`);
    return toCommitResult(s);
  }

  async abort(facilityId: string, uploadId: string): Promise<{ uploadId: string; state: string }> {
    await this.db.transaction().execute(async (trx) => {
      const u = await this.ownUpload(trx, facilityId, uploadId, { forUpdate: true });
      if (u.state === 'committed') throw conflict(`upload ${uploadId} is already committed`);
      if (u.state === 'open') {
        await repo.finishUpload(trx, uploadId, 'aborted', null);
        await repo.deleteStagedEntries(trx, uploadId);
      }
    });
    this.building.delete(uploadId);
    return { uploadId, state: 'aborted' };
  }

  // --- snapshots and the read API ---------------------------------------------------------

  async listSnapshots(facilityId: string) {
    if (!(await repo.findFacility(this.db, facilityId))) throw notFound(`no facility ${facilityId}`);
    return repo.listSnapshots(this.db, facilityId);
  }

  async getSnapshot(id: string): Promise<repo.SnapshotRow> {
    const s = await repo.findSnapshot(this.db, id);
    if (!s) throw notFound(`no snapshot ${id}`);
    return s;
  }

  /** The snapshot to restore: by id, the last of a night (`YYYY-MM-DD`, Asia/Tokyo), or the latest. */
  async chooseSnapshot(facilityId: string, pick: { snapshotId?: string; at?: string }): Promise<repo.SnapshotRow> {
    if (!(await repo.findFacility(this.db, facilityId))) throw notFound(`no facility ${facilityId}`);
    if (pick.snapshotId) {
      const s = await this.getSnapshot(pick.snapshotId);
      if (s.facilityId !== facilityId) throw notFound(`snapshot ${pick.snapshotId} is not one of facility ${facilityId}`);
      return s;
    }
    const s = pick.at ? await repo.snapshotAt(this.db, facilityId, pick.at) : await repo.latestSnapshot(this.db, facilityId);
    if (!s) throw notFound(pick.at ? `facility ${facilityId} has no snapshot on or before ${pick.at}` : `facility ${facilityId} has no snapshot`);
    return s;
  }

  /** A page of a snapshot's files in path order (byte order), after `afterPath`. */
  async listSnapshotFiles(snapshotId: string, opts: { afterPath?: string; limit: number }): Promise<{ path: string; sha256: string; size: number; mtime: number }[]> {
    const s = await this.getSnapshot(snapshotId);
    const out: { path: string; sha256: string; size: number; mtime: number }[] = [];
    if (opts.limit <= 0) return out;
    for await (const f of walkFiles(this.trees, s.rootTree, { afterPath: opts.afterPath })) {
      out.push({ path: f.path, sha256: f.sha256.toString('hex'), size: f.size, mtime: f.mtime });
      if (out.length >= opts.limit) break;
    }
    return out;
  }

  /**
   * The files of a snapshot whose content is new relative to the facility's previous snapshot:
   * added or changed paths, leaving out those whose bytes only moved from a path the previous
   * snapshot had (a `_1` -> `_2` rename). Found by comparing trees, so unchanged folders are
   * never read.
   */
  async *changedFiles(snapshotId: string): AsyncGenerator<{ path: string; sha256: string; size: number; mtime: number }> {
    const s = await this.getSnapshot(snapshotId);
    const prev = await repo.previousSnapshot(this.db, s);
    const gone = new Set<string>();
    const added: SnapshotFile[] = [];
    for await (const c of diffTrees(this.trees, prev?.rootTree, s.rootTree)) {
      if (c.before && (!c.now || !c.now.sha256.equals(c.before.sha256))) gone.add(c.before.sha256.toString('hex'));
      if (c.now && (!c.before || !c.before.sha256.equals(c.now.sha256))) added.push({ path: c.path, ...c.now });
      if (added.length >= 50_000) {
        // Bounded memory: flush early (a rename whose source sorts later is then reported).
        for (const f of added.splice(0)) if (!gone.has(f.sha256.toString('hex'))) yield toFile(f);
      }
    }
    for (const f of added) if (!gone.has(f.sha256.toString('hex'))) yield toFile(f);
  }

  /** The exact bytes of a blob. */
  async readBlob(sha256: string | Buffer): Promise<Buffer> {
    const h = typeof sha256 === 'string' ? Buffer.from(sha256, 'hex') : sha256;
    if (h.length !== 32) throw badRequest('a blob is named by 64 hex characters of SHA-256');
    return this.blobs.read(h);
  }
}

function toFile(f: SnapshotFile) {
  return { path: f.path, sha256: f.sha256.toString('hex'), size: f.size, mtime: f.mtime };
}

function toCommitResult(s: repo.SnapshotRow): CommitResult {
  return {
    snapshotId: s.id,
    facilityId: s.facilityId,
    files: s.files,
    bytes: s.bytes,
    newBlobs: s.newBlobs,
    newBytes: s.newBytes,
    createdAt: s.createdAt.toISOString(),
  };
}
