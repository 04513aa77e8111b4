import type { Db } from '../db.js';
import type { KeyProvider } from './key-provider.js';
import * as keysRepo from './pack-key.repository.js';

export interface RotationProgress {
  /** Data keys moved to the current master key so far in this run. */
  rewrapped: number;
  /** Data keys under another master key when this run started. */
  total: number;
}

export interface RotationResult extends RotationProgress {
  /** The master key every data key is now wrapped by. */
  keyId: string;
  /** Data keys per master key after the run. */
  byKey: { keyId: string; objects: number }[];
}

/**
 * Re-wraps every data key that is not under the provider's current master key; no pack object
 * is read or rewritten. Each key is replaced with a compare-and-set on its old key id, one at a
 * time, so an interrupted rotation leaves every record valid (under the old key or the new
 * one) and a rerun finishes the rest. Old master keys can be retired once `byKey` shows only
 * the current one.
 */
export async function rotatePackKeys(
  db: Db,
  provider: KeyProvider,
  opts: { batch?: number; onProgress?: (p: RotationProgress) => void } = {},
): Promise<RotationResult> {
  const target = provider.currentKeyId();
  const batch = opts.batch ?? 500;
  const progress: RotationProgress = { rewrapped: 0, total: await keysRepo.countKeysNotUnder(db, target) };
  opts.onProgress?.({ ...progress });
  let after: string | undefined;
  for (;;) {
    const page = await keysRepo.pageKeysNotUnder(db, target, after, batch);
    if (page.length === 0) break;
    for (const rec of page) {
      const context = `pack object ${rec.objectName}`;
      const dek = await provider.unwrap(rec.keyId, rec.wrappedDek, context);
      try {
        const wrapped = await provider.wrap(target, dek, context);
        if (await keysRepo.rewrapPackKey(db, rec.objectName, rec.keyId, target, wrapped)) progress.rewrapped += 1;
      } finally {
        dek.fill(0);
      }
    }
    after = page.at(-1)!.objectName;
    opts.onProgress?.({ ...progress });
  }
  return { keyId: target, ...progress, byKey: await keysRepo.countKeysByMasterKey(db) };
}
