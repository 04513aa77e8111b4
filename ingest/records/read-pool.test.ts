import path from 'node:path';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { SAMPLES_ROOT } from '../../test/support/tmp.js';
import { scanTree } from '../../test/index.support.js';
import { createReadPool } from './read-pool.js';
import { readStoredFile } from './read.js';

/** The worker threads read exactly what the indexing thread reads, file for file, in order. */
describe('record reading on worker threads', () => {
  const pool = createReadPool(2);
  afterAll(() => pool.close());

  // Every sample (valid and broken, standard and extended storage), each file's bytes a view
  // into one shared buffer at an odd offset, as the store's pack reads hand them over.
  const roots = [
    { dir: SAMPLES_ROOT, prefix: 'standard/' },
    { dir: path.join(SAMPLES_ROOT, '..', 'extended'), prefix: 'extended/' },
  ].filter((r) => fs.existsSync(r.dir));
  const files = roots.flatMap((r) => scanTree(r.dir, r.prefix));
  const all = Buffer.concat([Buffer.alloc(3), ...files.map((f) => fs.readFileSync(f.abs))]);
  let at = 3;
  const items = files.map((f) => {
    const bytes = all.subarray(at, at + f.size);
    at += f.size;
    return { path: f.path, sha256: f.sha256, bytes };
  });

  it('gives the same outcomes as readStoredFile, with the record as its JSON text', async () => {
    expect(items.length).toBeGreaterThan(20);
    const pooled = await pool.read('F001', items);
    expect(pooled).toHaveLength(items.length);
    let flagged = 0;
    items.forEach((f, i) => {
      const o = readStoredFile({ facilityId: 'F001', ...f });
      const p = pooled[i]!;
      expect({ path: f.path, status: p.status, category: p.category, source: p.source, findings: p.findings }).toEqual({
        path: f.path, status: o.status, category: o.category, source: o.source, findings: o.findings,
      });
      expect(p.contentJson).toBe(o.status === 'ok' ? JSON.stringify(o.record) : undefined);
      if (o.status === 'flagged') flagged++;
    });
    // The broken samples are there and come back flagged with their findings.
    expect(flagged).toBeGreaterThanOrEqual(3);
    expect(pooled.some((p) => p.status === 'ok' && JSON.parse(p.contentJson!).content.kind === 'patient')).toBe(true);
  });

  it('cuts a page into one slice per worker and keeps file order', async () => {
    const one = await pool.read('F001', items.slice(0, 1));
    expect(one.map((o) => o.source?.path)).toEqual([items[0]!.path]);
    const pooled = await pool.read('F002', [...items].reverse());
    expect(pooled.map((o) => o.source?.path ?? null)).toEqual(
      [...items].reverse().map((f) => readStoredFile({ facilityId: 'F002', ...f }).source?.path ?? null),
    );
    expect(pooled.every((o) => o.source === undefined || o.source.facilityId === 'F002')).toBe(true);
  });

  it('refuses work once closed', async () => {
    const p = createReadPool(1);
    await p.close();
    await p.close();
    await expect(p.read('F001', items.slice(0, 2))).rejects.toThrow(/closed/);
  });
});
