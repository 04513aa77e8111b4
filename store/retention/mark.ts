import type { TreeLoader } from '../backup/tree-store.js';

/**
 * The blobs a set of snapshot trees names (hex SHA-256). Each distinct tree is loaded once, a
 * level at a time in batches, so shared folders between nights cost nothing extra. A missing or
 * altered tree throws (MissingTree, or a hash mismatch): prune must not run on a store whose
 * kept snapshots it cannot fully read.
 */
export async function markBlobs(loader: TreeLoader, roots: Buffer[], onTrees?: (n: number) => void): Promise<Set<string>> {
  const live = new Set<string>();
  const seen = new Set<string>();
  let level = roots;
  while (level.length) {
    const fresh = level.filter((h) => {
      const k = h.toString('hex');
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    const next: Buffer[] = [];
    for (let i = 0; i < fresh.length; i += 5000) {
      const trees = await loader.loadMany(fresh.slice(i, i + 5000));
      for (const entries of trees.values()) {
        for (const e of entries) {
          if (e.kind === 'dir') next.push(e.hash);
          else live.add(e.sha256.toString('hex'));
        }
      }
    }
    onTrees?.(seen.size);
    level = next;
  }
  return live;
}
