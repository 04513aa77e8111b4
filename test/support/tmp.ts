import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A private temporary folder, removed by the returned function. */
export function tempDir(prefix = 'hakobune-'): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The real SS-MIX2 samples written by the standard's authors (read only). */
export const SAMPLES_ROOT = path.resolve(import.meta.dirname, '../../../shared/ssmix2-samples/standard');
