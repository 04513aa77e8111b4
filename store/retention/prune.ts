import { createHash } from 'node:crypto';
import type { Db } from '../db.js';
import type { PackStore } from '../backup/pack-store.js';
import * as backupRepo from '../backup/backup.repository.js';
import { decompressBlob } from '../backup/compression.js';
import { TreeLoader } from '../backup/tree-store.js';
import { markBlobs } from './mark.js';
import * as repo from './retention.repository.js';
import { conflict } from '../errors.js';
import type { AuditActor } from '../../viewer-api/audit/audit.entry.js';
import type { AuditLog } from '../../viewer-api/audit/audit.service.js';
import type { DeleteGuard, SignedDeleteRequest } from './delete-authorization.js';

/** Points where an interrupted prune must leave a consistent store (tests inject faults there). */
export type PruneCheckpoint = 'after-new-pack-written' | 'after-index-switch' | 'mid-delete';

export interface PruneOptions {
  dryRun?: boolean;
  now?: Date;
  /** Packs younger than this many days are neither repacked nor deleted (the delete lock). */
  lockDays: number;
  /** A pack whose live bytes are below this fraction of its size is repacked (default 0.5). */
  repackBelow?: number;
  /** Size of the packs repacking writes (default 4 MiB, as uploads write them). */
  packTarget?: number;
  onProgress?: (p: { stage: 'finish-earlier' | 'mark' | 'plan' | 'repack' | 'delete'; done: number; total: number }) => void;
  /** Called at each checkpoint; an exception there stops the prune as a crash would. */
  checkpoint?: (at: PruneCheckpoint) => void | Promise<void>;
}

export interface PruneReport {
  dryRun: boolean;
  snapshots: number;
  /** Blobs the kept snapshots name, plus those held by open uploads and consent evidence. */
  neededBlobs: number;
  packs: { total: number; young: number; untouched: number; repack: number; delete: number };
  /** Objects an interrupted earlier prune had left to delete, finished by this run. */
  finishedFromEarlierRun: number;
  blobsRemoved: number;
  packsWritten: number;
  objectsDeleted: number;
  bytesWritten: number;
  bytesDeleted: number;
  /** Space given back: bytes deleted less bytes written (estimated in a dry run). */
  bytesReclaimed: number;
  /** Packs left as they were, and why (damage found while repacking, or an upload needing a blob again). */
  skipped: { objectName: string; reason: string }[];
}

interface PackPlan {
  pack: repo.PackInfo;
  live: repo.PackedBlob[];
  liveBytes: number;
}

const hex = (b: Buffer) => b.toString('hex');

/**
 * Reclaims the space of blobs no kept snapshot needs. Mark: walk every snapshot's trees (the
 * snapshots left after forget are the kept ones) and add the blobs held by open uploads and
 * consent evidence. Then per pack older than the delete lock: all dead -> delete; live bytes
 * below `repackBelow` -> copy the live blobs (re-checked) into a new pack. Order of each step:
 * journal the new object, write it, switch the index in one transaction (which also journals the
 * old objects as condemned and re-checks that no upload staged a dropped blob meanwhile), then
 * delete the old objects. A crash anywhere leaves the index naming only whole objects; the next
 * run first finishes what the journal lists.
 */
export async function prune(deps: { db: Db; packs: PackStore }, opts: PruneOptions): Promise<PruneReport> {
  const { db, packs } = deps;
  const now = opts.now ?? new Date();
  const repackBelow = opts.repackBelow ?? 0.5;
  const packTarget = opts.packTarget ?? 4 * 1024 * 1024;
  const progress = opts.onProgress ?? (() => {});
  const checkpoint = opts.checkpoint ?? (() => {});
  const report: PruneReport = {
    dryRun: !!opts.dryRun,
    snapshots: 0,
    neededBlobs: 0,
    packs: { total: 0, young: 0, untouched: 0, repack: 0, delete: 0 },
    finishedFromEarlierRun: 0,
    blobsRemoved: 0,
    packsWritten: 0,
    objectsDeleted: 0,
    bytesWritten: 0,
    bytesDeleted: 0,
    bytesReclaimed: 0,
    skipped: [],
  };

  /** Deletes an object and its journal entry; answers the bytes it held (0 when already gone). */
  const deleteObject = async (name: string): Promise<number> => {
    const size = await packs.stat(name);
    await packs.delete(name);
    await checkpoint('mid-delete');
    await repo.clearJournal(db, [name]);
    return size ?? 0;
  };
  const reclaim = async (name: string) => {
    const size = await deleteObject(name);
    if (size) {
      report.bytesDeleted += size;
      report.objectsDeleted += 1;
    }
  };

  // 0. What an interrupted run left: condemned objects to delete, new objects never indexed.
  const left = await repo.journal(db);
  if (!opts.dryRun) {
    progress({ stage: 'finish-earlier', done: 0, total: left.length });
    for (const [i, j] of left.entries()) {
      if (j.state === 'writing' && (await repo.packIdByObject(db, j.objectName)) !== undefined) await repo.clearJournal(db, [j.objectName]);
      else await reclaim(j.objectName);
      report.finishedFromEarlierRun += 1;
      progress({ stage: 'finish-earlier', done: i + 1, total: left.length });
    }
  }

  // 1. Mark.
  const snapshots = await backupRepo.listSnapshots(db);
  report.snapshots = snapshots.length;
  const marked = new Set(snapshots.map((s) => s.id));
  const needed = await markBlobs(new TreeLoader(db), snapshots.map((s) => s.rootTree), (n) => progress({ stage: 'mark', done: n, total: 0 }));
  for (const h of await repo.blobsHeldOutsideSnapshots(db)) needed.add(hex(h));
  report.neededBlobs = needed.size;

  // 2. Plan, a page of packs at a time.
  const all = await repo.listPacksForPrune(db);
  report.packs.total = all.length;
  const lockedAfter = now.getTime() - opts.lockDays * 86_400_000;
  const toRepack: PackPlan[] = [];
  const toDelete: repo.PackInfo[] = [];
  for (let i = 0; i < all.length; i += 500) {
    const page = all.slice(i, i + 500);
    const blobs = await repo.blobsOfPacks(db, page.map((p) => p.id));
    const byPack = new Map<number, repo.PackedBlob[]>();
    for (const b of blobs) {
      const l = byPack.get(b.packId);
      if (l) l.push(b);
      else byPack.set(b.packId, [b]);
    }
    for (const pack of page) {
      if (pack.createdAt.getTime() > lockedAfter) {
        report.packs.young += 1;
        continue;
      }
      const inPack = byPack.get(pack.id) ?? [];
      const live = inPack.filter((b) => needed.has(hex(b.sha256)));
      const liveBytes = live.reduce((n, b) => n + b.length, 0);
      if (live.length === 0) toDelete.push(pack);
      else if (live.length < inPack.length && liveBytes < repackBelow * pack.size) toRepack.push({ pack, live, liveBytes });
      else report.packs.untouched += 1;
    }
    progress({ stage: 'plan', done: Math.min(i + 500, all.length), total: all.length });
  }
  report.packs.repack = toRepack.length;
  report.packs.delete = toDelete.length;
  if (opts.dryRun) {
    report.bytesReclaimed = toDelete.reduce((n, p) => n + p.size, 0) + toRepack.reduce((n, p) => n + p.pack.size - p.liveBytes, 0);
    report.blobsRemoved = toDelete.reduce((n, p) => n + p.blobCount, 0) + toRepack.reduce((n, p) => n + p.pack.blobCount - p.live.length, 0);
    return report;
  }

  // The switch: one transaction, refused (nothing changes) if a dropped blob is needed again.
  const switchIndex = async (drop: repo.PackInfo[], fresh?: { hash: string; objectName: string; size: number; blobs: repo.PackedBlob[] }) =>
    db.transaction().execute(async (trx) => {
      await repo.lockAgainstNewReferences(trx);
      const moved = new Set((fresh?.blobs ?? []).map((b) => hex(b.sha256)));
      const leaving = (await repo.blobsOfPacks(trx, drop.map((p) => p.id))).filter((b) => !moved.has(hex(b.sha256))).map((b) => b.sha256);
      const again = new Set((await repo.heldAmong(trx, leaving)).map(hex));
      const newer = (await backupRepo.listSnapshots(trx)).filter((s) => !marked.has(s.id));
      if (newer.length) for (const h of await markBlobs(new TreeLoader(trx), newer.map((s) => s.rootTree))) again.add(h);
      const conflicts = leaving.filter((h) => again.has(hex(h)));
      if (conflicts.length) return { ok: false as const, reason: `${conflicts.length} of its blobs became needed again during the prune (e.g. ${hex(conflicts[0]!)}); the next prune looks again` };
      if (fresh) {
        const packId = await backupRepo.insertPack(trx, { hash: fresh.hash, objectName: fresh.objectName, size: fresh.size, blobCount: fresh.blobs.length });
        await repo.moveBlobs(trx, packId, fresh.blobs);
        await repo.clearJournal(trx, [fresh.objectName]);
      }
      const removed = await repo.dropPacks(trx, drop.map((p) => p.id));
      await repo.journalObjects(trx, drop.map((p) => p.objectName), 'condemned');
      return { ok: true as const, removed };
    });

  const condemn = async (drop: repo.PackInfo[]) => {
    for (const p of drop) await reclaim(p.objectName);
  };

  // 3. Repack, grouping several packs' live blobs into new packs of about packTarget bytes.
  const dictionaries = new Map<number, Buffer>();
  const dictionary = async (id: number | null) => {
    if (id === null) return undefined;
    let d = dictionaries.get(id);
    if (!d) {
      const row = await backupRepo.dictionaryById(db, id);
      if (!row) throw new Error(`compression dictionary ${id} is missing`);
      d = row.content;
      dictionaries.set(id, d);
    }
    return d;
  };
  let done = 0;
  let group: { plan: PackPlan; stored: Buffer[] }[] = [];
  let groupBytes = 0;
  const flush = async () => {
    if (!group.length) return;
    const parts: Buffer[] = [];
    const blobs: repo.PackedBlob[] = [];
    let offset = 0;
    for (const g of group) {
      g.plan.live.forEach((b, i) => {
        const data = g.stored[i]!;
        blobs.push({ ...b, offset, length: data.length });
        parts.push(data);
        offset += data.length;
      });
    }
    const data = Buffer.concat(parts, offset);
    const hash = createHash('sha256').update(data).digest('hex');
    const objectName = `data/${hash.slice(0, 2)}/${hash}`;
    const drop = group.map((g) => g.plan.pack);
    group = [];
    groupBytes = 0;
    await repo.journalObjects(db, [objectName], 'writing');
    await packs.put(objectName, data);
    await checkpoint('after-new-pack-written');
    const r = await switchIndex(drop, { hash, objectName, size: data.length, blobs });
    if (!r.ok) {
      for (const p of drop) report.skipped.push({ objectName: p.objectName, reason: r.reason });
      await deleteObject(objectName); // our own unindexed copy: not space given back
      return;
    }
    report.packsWritten += 1;
    report.bytesWritten += data.length;
    report.blobsRemoved += r.removed;
    await checkpoint('after-index-switch');
    await condemn(drop);
  };
  for (const plan of toRepack) {
    // Read the pack once and check every live blob before copying its stored bytes.
    const stored: Buffer[] = [];
    try {
      const whole = await packs.get(plan.pack.objectName);
      for (const b of plan.live) {
        const bytes = whole.subarray(b.offset, b.offset + b.length);
        if (bytes.length !== b.length) throw new Error(`blob ${hex(b.sha256)} is truncated`);
        const plain = decompressBlob(bytes, b.codec, await dictionary(b.dictionaryId), b.size);
        if (!createHash('sha256').update(plain).digest().equals(b.sha256)) throw new Error(`blob ${hex(b.sha256)} does not match its hash`);
        stored.push(Buffer.from(bytes));
      }
    } catch (e) {
      // A damaged live blob: leave the pack as it is (verify names the damage).
      report.skipped.push({ objectName: plan.pack.objectName, reason: `not repacked: ${(e as Error).message}` });
      continue;
    }
    group.push({ plan, stored });
    groupBytes += plan.liveBytes;
    if (groupBytes >= packTarget) await flush();
    progress({ stage: 'repack', done: ++done, total: toRepack.length });
  }
  await flush();

  // 4. Delete the packs nothing needs, a hundred per switch.
  for (let i = 0; i < toDelete.length; i += 100) {
    const drop = toDelete.slice(i, i + 100);
    const r = await switchIndex(drop);
    if (!r.ok) {
      for (const p of drop) report.skipped.push({ objectName: p.objectName, reason: r.reason });
      continue;
    }
    report.blobsRemoved += r.removed;
    await checkpoint('after-index-switch');
    await condemn(drop);
    progress({ stage: 'delete', done: Math.min(i + 100, toDelete.length), total: toDelete.length });
  }
  report.bytesReclaimed = report.bytesDeleted - report.bytesWritten;
  return report;
}

/** A prune authorized by a signed delete request, audited with what it reclaimed. */
export async function authorizedPrune(
  deps: { db: Db; packs: PackStore; guard: DeleteGuard; audit: AuditLog },
  req: SignedDeleteRequest,
  who: { actor: AuditActor; endpoint: string; address?: string | null },
  opts: Omit<PruneOptions, 'dryRun'>,
): Promise<PruneReport> {
  await deps.guard.authorize(req, who);
  const trail = { action: 'retention.prune', actor: who.actor, endpoint: who.endpoint, address: who.address ?? null };
  try {
    if (req.action !== 'prune') throw conflict(`a ${req.action} request cannot prune`);
    const r = await prune(deps, opts);
    await deps.audit.record({
      ...trail,
      outcome: 'success',
      detail: { nonce: req.nonce, packs: r.packs, blobsRemoved: r.blobsRemoved, bytesReclaimed: r.bytesReclaimed, skipped: r.skipped.length },
    });
    return r;
  } catch (e) {
    await deps.audit.record({ ...trail, outcome: 'failure', reason: (e as Error).message, detail: { nonce: req.nonce } });
    throw e;
  }
}
