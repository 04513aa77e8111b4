import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ingestPool } from './ingest-pool.js';
import { frameHeaders } from './blob-store.js';
import { compressBlob, decompressBlob } from './compression.js';

const frame = (data: Buffer, sha256 = createHash('sha256').update(data).digest()) => {
  const head = Buffer.alloc(36);
  sha256.copy(head);
  head.writeUInt32BE(data.length, 32);
  return Buffer.concat([head, data]);
};

describe('the blob ingest workers', () => {
  // ~1 MB in 40 frames: cut into one slice per worker.
  const blobs = Array.from({ length: 40 }, (_, i) => Buffer.concat([Buffer.from(`MSH|^~\\&|blob ${i}|`.repeat(500)), randomBytes(i * 50)]));

  it('check every frame and give back each marked one compressed, in frame order', async () => {
    const body = Buffer.concat(blobs.map((b) => frame(b)));
    const frames = frameHeaders(body, 1 << 20);
    const r = await ingestPool().run(body, frames.map((f, i) => ({ start: f.start, length: f.length, compress: i % 3 !== 1 })), undefined);
    if (!('blobs' in r)) throw new Error('a frame was refused');
    expect(r.blobs).toHaveLength(40);
    r.blobs.forEach((c, i) => {
      if (i % 3 === 1) return expect(c).toBeUndefined();
      expect(c!.data.length).toBeLessThan(blobs[i]!.length);
      expect(decompressBlob(c!.data, c!.codec, undefined, blobs[i]!.length)).toEqual(blobs[i]);
    });
  });

  it('name the first frame that does not match its hash, in whichever slice it is', async () => {
    for (const badAt of [3, 33]) {
      const body = Buffer.concat(blobs.map((b, i) => frame(b, i === badAt ? createHash('sha256').update('other').digest() : undefined)));
      const frames = frameHeaders(body, 1 << 20);
      const r = await ingestPool().run(body, frames.map((f) => ({ start: f.start, length: f.length, compress: true })), undefined);
      expect(r).toEqual({ bad: badAt });
    }
  });
});

describe('blob frames (PROTOCOL.md §3)', () => {
  it('locates frames, the empty blob included', () => {
    const body = Buffer.concat([frame(Buffer.from('a')), frame(Buffer.alloc(0))]);
    const frames = frameHeaders(body, 100);
    expect(frames.map((f) => body.subarray(f.start + 36, f.start + 36 + f.length).toString())).toEqual(['a', '']);
    expect(frames.map((f) => f.sha256.equals(body.subarray(f.start, f.start + 32)))).toEqual([true, true]);
  });
  it('refuses a mismatch (on the workers), a truncated header or body, an oversized blob', async () => {
    const bad = frame(Buffer.from('a'), createHash('sha256').update('b').digest());
    const r = await ingestPool().run(bad, frameHeaders(bad, 100).map((f) => ({ ...f, compress: false })), undefined);
    expect(r).toEqual({ bad: 0 });
    expect(() => frameHeaders(frame(Buffer.from('abc')).subarray(0, 37), 100)).toThrow(/truncated/);
    expect(() => frameHeaders(Buffer.alloc(20), 100)).toThrow(/truncated frame header/);
    expect(() => frameHeaders(frame(Buffer.alloc(101)), 100)).toThrow(/over the limit/);
  });

  it('restore a span: each blob checked and written to all its files with their mtimes; a damaged blob named, a failed write an error', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hk-pool-restore-'));
    const blobs = [0, 1, 2].map((i) => Buffer.from(`MSH|^~\\&|blob ${i}|`.repeat(20 + i)));
    try {
      const dict = { id: 7, hash: '', content: Buffer.from('MSH|^~\\&|blob '.repeat(100)) };
      const stored = blobs.slice(0, 3).map((b) => compressBlob(b, dict));
      const span = Buffer.concat(stored.map((c) => c.data));
      let at = 0;
      const locs = stored.map((c, i) => {
        const l = { from: at, length: c.data.length, size: blobs[i]!.length, codec: c.codec, dictionaryId: c.dictionaryId, sha256: createHash('sha256').update(blobs[i]!).digest(), objectName: 'data/xx/x', files: [] as { path: string; mtime: number }[] };
        at += c.data.length;
        return l;
      });
      locs[0]!.files = [{ path: 'a/b/one', mtime: 1_700_000_000_123 }, { path: 'a/c/one-again', mtime: 1_600_000_000_000 }];
      locs[1]!.files = [{ path: 'a/b/two', mtime: 1_700_000_000_000 }];
      locs[2]!.files = [{ path: 'a/b/three', mtime: 1_700_000_000_000 }];
      locs[2]!.sha256 = createHash('sha256').update('something else').digest();
      const dicts = new Map([[7, dict.content]]);
      const run = () => ingestPool().restore(root, span, locs, dicts);
      const r = await run();
      expect(r).toMatchObject({ files: 3, failed: [{ blob: 2, reason: 'content does not match its hash' }] });
      expect(fs.readFileSync(path.join(root, 'a/b/one'))).toEqual(blobs[0]);
      expect(fs.readFileSync(path.join(root, 'a/c/one-again'))).toEqual(blobs[0]);
      expect(Math.floor(fs.statSync(path.join(root, 'a/b/one')).mtimeMs)).toBe(1_700_000_000_123);
      expect(fs.existsSync(path.join(root, 'a/b/three'))).toBe(false);
      // The folders are gone since the worker made them: made again.
      fs.rmSync(path.join(root, 'a'), { recursive: true });
      expect(await run()).toMatchObject({ files: 3 });
      expect(fs.readFileSync(path.join(root, 'a/b/two'))).toEqual(blobs[1]);
      // A file where a folder should be: the write fails and says why.
      fs.rmSync(path.join(root, 'a'), { recursive: true });
      fs.writeFileSync(path.join(root, 'a'), 'in the way');
      expect(await run()).toMatchObject({ error: expect.stringMatching(/ENOTDIR|EEXIST|ENOENT/) });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
