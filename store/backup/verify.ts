import type { BackupService } from './backup.service.js';
import * as repo from './backup.repository.js';
import { MissingTree, walkFiles } from './tree-store.js';
import { decodeTree, type TreeEntry } from './tree.js';

export interface VerifyOptions {
  /** Re-read and re-hash blobs: all of them (1) or a fraction of the packs (0..1). */
  readData?: number;
  onProgress?: (stage: string, done: number) => void;
}

export interface DamagedBlob {
  sha256: string;
  reason: string;
  /** Where the damage shows: each snapshot and path that holds the blob. */
  heldBy: { facilityId: string; snapshotId: string; path: string }[];
}

export interface VerifyReport {
  ok: boolean;
  snapshots: number;
  trees: number;
  blobsReferenced: number;
  packs: number;
  blobsRead: number;
  damagedSnapshots: { snapshotId: string; facilityId: string; reason: string }[];
  damagedBlobs: DamagedBlob[];
  missingPacks: string[];
  /** Packs written but never indexed (a crash between write and commit): harmless. */
  orphanPacks: string[];
}

/**
 * Checks the store: every snapshot's trees are present and match their hashes, every blob they
 * name is in the index, every pack the index names exists with at least the bytes it should;
 * with read-data, blobs are read back and re-hashed. Damaged blobs are then traced to the
 * snapshots and paths that hold them.
 */
export async function verifyStore(backup: BackupService, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const db = backup.db;
  const snapshots = await repo.listSnapshots(db);
  const report: VerifyReport = {
    ok: true,
    snapshots: snapshots.length,
    trees: 0,
    blobsReferenced: 0,
    packs: 0,
    blobsRead: 0,
    damagedSnapshots: [],
    damagedBlobs: [],
    missingPacks: [],
    orphanPacks: [],
  };
  const damaged = new Map<string, string>(); // blob hex -> reason

  // 1. Trees: walk each distinct tree once, collecting the blobs they name.
  const seenTrees = new Set<string>();
  const referenced = new Set<string>();
  for (const s of snapshots) {
    const stack: Buffer[] = [s.rootTree];
    try {
      while (stack.length) {
        const batch = stack.splice(0, 1000).filter((h) => !seenTrees.has(h.toString('hex')));
        if (!batch.length) continue;
        const rows = await repo.loadTrees(db, batch);
        const found = new Map(rows.map((r) => [r.hash.toString('hex'), r]));
        for (const h of batch) {
          const key = h.toString('hex');
          const row = found.get(key);
          if (!row) throw new MissingTree(key);
          seenTrees.add(key);
          const collect = (entries: TreeEntry[]) => {
            for (const e of entries) {
              if (e.kind === 'file') referenced.add(e.sha256.toString('hex'));
              else if (e.inline) collect(e.inline.entries); // travels inside this tree
              else stack.push(e.hash);
            }
          };
          collect(decodeTree(row.hash, row.content));
        }
      }
    } catch (e) {
      report.damagedSnapshots.push({ snapshotId: s.id, facilityId: s.facilityId, reason: (e as Error).message });
    }
    opts.onProgress?.('trees', seenTrees.size);
  }
  report.trees = seenTrees.size;
  report.blobsReferenced = referenced.size;

  // 2. The index holds every referenced blob.
  const refList = [...referenced];
  for (let i = 0; i < refList.length; i += 5000) {
    const chunk = refList.slice(i, i + 5000).map((h) => Buffer.from(h, 'hex'));
    const present = new Set((await repo.presentBlobs(db, chunk)).map((h) => h.toString('hex')));
    for (const h of chunk) if (!present.has(h.toString('hex'))) damaged.set(h.toString('hex'), 'not in the blob index');
  }

  // 3. Packs: each indexed pack exists and is whole; objects no index row names are orphans.
  const packs = await repo.listPacks(db);
  report.packs = packs.length;
  const known = new Set(packs.map((p) => p.object_name));
  const badPacks = new Map<number, string>();
  for (const p of packs) {
    const size = await backup.packs.stat(p.object_name);
    if (size === undefined) {
      report.missingPacks.push(p.object_name);
      badPacks.set(p.id, `its pack ${p.object_name} is missing`);
    } else if (size < p.size) {
      badPacks.set(p.id, `its pack ${p.object_name} is truncated (${size} of ${p.size} bytes)`);
    }
  }
  for await (const o of backup.packs.list('data')) if (!known.has(o.name)) report.orphanPacks.push(o.name);

  // 4. Every indexed blob: in a bad pack, or (with read-data) read back and re-hashed.
  const sample = opts.readData ?? 0;
  // A fresh random choice of packs each run, so repeated subset runs cover the whole store.
  const chosen = new Set(packs.filter(() => sample >= 1 || Math.random() < sample).map((p) => p.id));
  const chosenPack = (id: number) => chosen.has(id);
  for (let range = await repo.nextPackRange(db, 0, 5000); range; range = await repo.nextPackRange(db, range.to, 5000)) {
    const page = await repo.blobLocationsInPacks(db, range);
    for (const loc of page) {
      const hex = loc.sha256.toString('hex');
      const bad = badPacks.get(loc.packId);
      if (bad && loc.offset + loc.length > ((await backup.packs.stat(loc.objectName)) ?? 0)) {
        damaged.set(hex, bad);
        continue;
      }
      if (!chosenPack(loc.packId)) continue;
      try {
        await backup.blobs.readAt(loc);
        report.blobsRead += 1;
      } catch (e) {
        damaged.set(hex, (e as Error).message);
      }
    }
    opts.onProgress?.('blobs', report.blobsRead);
  }

  // 5. Trace the damaged blobs that snapshots hold to their paths.
  const held = new Map<string, DamagedBlob>();
  for (const [hex, reason] of damaged) if (referenced.has(hex)) held.set(hex, { sha256: hex, reason, heldBy: [] });
  if (held.size) {
    for (const s of snapshots) {
      if (report.damagedSnapshots.some((d) => d.snapshotId === s.id)) continue;
      for await (const f of walkFiles(backup.trees, s.rootTree)) {
        const d = held.get(f.sha256.toString('hex'));
        if (d) d.heldBy.push({ facilityId: s.facilityId, snapshotId: s.id, path: f.path });
      }
    }
  }
  // Damaged blobs no snapshot holds (left by an aborted upload) are reported too.
  report.damagedBlobs = [...held.values(), ...[...damaged].filter(([h]) => !referenced.has(h)).map(([sha256, reason]) => ({ sha256, reason, heldBy: [] }))];
  report.ok = report.damagedBlobs.length === 0 && report.damagedSnapshots.length === 0 && report.missingPacks.length === 0;
  return report;
}
