import type { TreeLoader } from '../backup/tree-store.js';
import type { TreeEntry } from '../backup/tree.js';

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
      // A small folder travels inline in its parent's tree: its entries are at hand.
      const collect = (entries: TreeEntry[]) => {
        for (const e of entries) {
          if (e.kind === 'file') live.add(e.sha256.toString('hex'));
          else if (e.inline) collect(e.inline.entries);
          else next.push(e.hash);
        }
      };
      for (const entries of trees.values()) collect(entries);
    }
    onTrees?.(seen.size);
    level = next;
  }
  return live;
}
