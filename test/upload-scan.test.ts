import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CacheCorruptError, CacheReader, CacheWriter, type CacheBlock } from '../ingest/uploader/cache.js';
import { compareDirs, escapeField, unescapeField } from '../ingest/uploader/order.js';
import { scanTree, type Mount } from '../ingest/uploader/scan.js';
import { hashFile } from '../ingest/uploader/hash.js';
import { nodeTreeFs, walkDirs, type Problem, type TreeFs } from '../ingest/uploader/walk.js';
import { blocksOf, manifestEntries } from '../ingest/uploader/manifest.js';
import { tempDir } from './support/tmp.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function write(root: string, rel: string, content: string | Buffer, mtime = new Date('2024-01-02T03:04:05.678Z')) {
  const abs = path.join(root, rel);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.writeFileSync(abs, content);
  fs.utimesSync(abs, mtime, mtime);
}

function countingFs(): TreeFs & { opened: string[]; listed: string[] } {
  const opened: string[] = [];
  const listed: string[] = [];
  return {
    ...nodeTreeFs,
    opened,
    listed,
    readdir: (d, o) => {
      listed.push(d);
      return nodeTreeFs.readdir(d, o);
    },
    open: (f) => {
      opened.push(f);
      return nodeTreeFs.open(f);
    },
  };
}

async function readAll(file: string): Promise<CacheBlock[]> {
  const r = await CacheReader.open(file);
  const out: CacheBlock[] = [];
  for (let b = await r!.next(); b; b = await r!.next()) out.push(b);
  return out;
}

describe('walk order', () => {
  it('orders directories in preorder, segment by segment', () => {
    const dirs = ['a/b', 'a-b', 'a', 'a/b/c', 'a.b', 'a/a', 'b', '', 'a/b-c', 'a/b/c/d', 'A'];
    expect([...dirs].sort(compareDirs)).toEqual(['', 'A', 'a', 'a/a', 'a/b', 'a/b/c', 'a/b/c/d', 'a/b-c', 'a-b', 'a.b', 'b']);
  });

  it('escapes the characters that would break a cache line, and only those', () => {
    for (const s of ['plain', 'tab\there', 'new\nline', 'cr\rx', '100%', '%09 literal', '日本語^~\\']) {
      expect(unescapeField(escapeField(s))).toBe(s);
      expect(escapeField(s)).not.toMatch(/[\t\n\r]/);
    }
    expect(escapeField('a^b')).toBe('a^b');
  });

  it('walks a directory, then its subdirectories, each sorted by name', async () => {
    const t = tempDir();
    try {
      for (const f of ['b/x', 'a-b/y', 'a/z', 'a/b/w', 'top', 'a.b/v']) write(t.dir, f, f);
      const seen: string[] = [];
      for (const d of walkDirs('standard', t.dir, nodeTreeFs, () => undefined)) seen.push(`${d.dir}:${d.names.join(',')}`);
      expect(seen).toEqual(['standard:top', 'standard/a:z', 'standard/a/b:w', 'standard/a-b:y', 'standard/a.b:v', 'standard/b:x']);
      const dirs = seen.map((s) => s.split(':')[0]!);
      expect([...dirs].sort(compareDirs)).toEqual(dirs);
    } finally {
      t.remove();
    }
  });
});

describe('cache file', () => {
  let t: { dir: string; remove: () => void };
  beforeEach(() => {
    t = tempDir();
  });
  afterEach(() => t.remove());

  const block = (dir: string, names: string[]): CacheBlock => ({
    dir,
    files: names.map((name, i) => ({ name, size: i, mtimeMs: 1700000000123.456 + i, ino: 1000 + i, sha256: sha(name) })),
  });

  it('round-trips blocks, odd names and the header', async () => {
    const file = path.join(t.dir, 'c');
    const w = await CacheWriter.create(file, { facilityId: 'F001', server: 'http://x', feedPosition: 'TR_20250101000000000_00001.DAT' });
    const blocks = [block('standard', ['a', 'b\tc']), block('standard/a', ['%x', 'new\nline']), block('standard/a-b', ['z'])];
    for (const b of blocks) await w.writeBlock(b);
    await w.writeBlock({ dir: 'standard/b', files: [] }); // empty blocks are not written
    await w.finish();
    const r = await CacheReader.open(file);
    expect(r!.header).toEqual({ facilityId: 'F001', server: 'http://x', snapshotId: null, feedPosition: 'TR_20250101000000000_00001.DAT' });
    expect(r!.totals).toEqual({ files: 5, bytes: 0 + 1 + 0 + 1 + 0 });
    r!.close();
    expect(await readAll(file)).toEqual(blocks);
  });

  it('refuses blocks out of order when writing', async () => {
    const w = await CacheWriter.create(path.join(t.dir, 'c'), { facilityId: 'F', server: '', feedPosition: null });
    await w.writeBlock(block('standard/b', ['x']));
    await expect(w.writeBlock(block('standard/a', ['x']))).rejects.toThrow(/out of order/);
    await w.abandon();
  });

  it('answers null for a missing cache and a typed error for a damaged one', async () => {
    expect(await CacheReader.open(path.join(t.dir, 'none'))).toBeNull();
    const file = path.join(t.dir, 'c');
    const w = await CacheWriter.create(file, { facilityId: 'F', server: '', feedPosition: null });
    await w.writeBlock(block('standard/a', ['x', 'y']));
    await w.writeBlock(block('standard/b', ['x']));
    await w.finish();
    const good = fs.readFileSync(file, 'utf8');

    fs.writeFileSync(file, good.slice(0, -10));
    await expect(CacheReader.open(file)).rejects.toThrow(CacheCorruptError);
    fs.writeFileSync(file, 'garbage\n//end\t0\t0\n');
    await expect(CacheReader.open(file)).rejects.toThrow(/no header|unknown format/);
    fs.writeFileSync(file, good.replace('/standard/b', '/standard/0'));
    await expect(readAll(file)).rejects.toThrow(/out of order/);
    fs.writeFileSync(file, good.replace(sha('y'), 'nothex'));
    await expect(readAll(file)).rejects.toThrow(/bad field/);
    fs.writeFileSync(file, good.replace(/\ny\t1\t/, '\ny\t'));
    await expect(readAll(file)).rejects.toThrow(/expected 5 fields/);
  });
  it('reads blocks across read chunks: multi-byte names split at a chunk edge, and a line longer than a chunk', async () => {
    const file = path.join(t.dir, 'c');
    const w = await CacheWriter.create(file, { facilityId: 'F', server: '', feedPosition: null });
    const blocks: CacheBlock[] = [];
    // ~3 MiB of lines of varying length, so chunk edges fall inside names, numbers and hashes.
    for (let i = 0; i < 12_000; i++) {
      const b = block(`standard/${String(i).padStart(5, '0')}/日本語-${'x'.repeat(i % 97)}`, [`z${i}%\t`, `名前-${i}-${'y'.repeat(i % 131)}`]);
      blocks.push(b);
    }
    // A directory path longer than one read chunk (1 MiB).
    blocks.push(block(`standard/99999/${'l'.repeat(1_200_000)}`, ['after-long']));
    blocks.push(block('standard/99999z', ['last']));
    for (const b of blocks) await w.writeBlock(b);
    await w.finish();
    expect(fs.statSync(file).size).toBeGreaterThan(4 << 20);
    expect(await readAll(file)).toEqual(blocks);
  });

  it('hands out strings that do not keep its read buffer alive', async () => {
    // A delta manifest keeps entries from all over both caches until its batch is sent: if each
    // kept a 1 MiB read chunk alive, a 10,000-entry batch could hold the whole cache.
    const v8 = await import('node:v8');
    const vm = await import('node:vm');
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const file = path.join(t.dir, 'c');
    const w = await CacheWriter.create(file, { facilityId: 'F', server: '', feedPosition: null });
    const name = (i: number) => `${String(i).padStart(7, '0')}_${'n'.repeat(200)}`;
    for (let i = 0; i < 60_000; i++) await w.writeBlock(block(`standard/${String(i).padStart(6, '0')}`, [name(i)]));
    await w.finish();
    expect(fs.statSync(file).size).toBeGreaterThan(16 << 20);
    const used = () => {
      gc();
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.external;
    };
    const kept: { dir: string; name: string; sha256: string }[] = [];
    const before = used();
    const r = await CacheReader.open(file);
    let i = 0;
    for (let b = await r!.next(); b; b = await r!.next()) {
      // One entry in every 2,000 blocks: one from each ~0.5 MiB of the file.
      if (i++ % 2_000 === 0) kept.push({ dir: b.dir, name: b.files[0]!.name, sha256: b.files[0]!.sha256 });
    }
    const retained = used() - before;
    expect(kept).toHaveLength(30);
    expect(kept[29]!.name).toBe(name(58_000));
    // 30 small entries (a few KiB); a view of each chunk they came from would be ~16 MiB.
    expect(retained).toBeLessThan(4 << 20);
  });
});

describe('scanTree beside the cache', () => {
  let t: { dir: string; remove: () => void };
  let root: string;
  let mounts: Mount[];
  let n = 0;
  beforeEach(() => {
    t = tempDir();
    root = path.join(t.dir, 'tree');
    mounts = [{ prefix: 'standard', root }];
  });
  afterEach(() => t.remove());

  async function scan(opts: { fs?: TreeFs; problems?: Problem[]; walkRoots?: { dir: string; abs: string }[] } = {}) {
    const prevFile = path.join(t.dir, `cache`);
    const nextFile = path.join(t.dir, `cache.${++n}`);
    const previous = await CacheReader.open(prevFile);
    const out = await CacheWriter.create(nextFile, { facilityId: 'F', server: '', feedPosition: null });
    const stats = await scanTree({
      mounts,
      walkRoots: opts.walkRoots,
      previous,
      out,
      fs: opts.fs ?? nodeTreeFs,
      maxBlobBytes: 1 << 20,
      onProblem: (p) => opts.problems?.push(p),
    });
    await out.finish();
    await fsp.rename(nextFile, prevFile);
    const flat = new Map<string, string>();
    for (const b of await readAll(prevFile)) for (const f of b.files) flat.set(`${b.dir}/${f.name}`, f.sha256);
    return { stats, flat };
  }

  it('hashes everything once, then reads nothing when nothing changed', async () => {
    for (let i = 0; i < 30; i++) write(root, `p${i % 7}/d${i % 3}/f${i}`, `content ${i}`);
    write(root, 'rootfile', 'r');
    const first = await scan();
    expect(first.stats).toMatchObject({ files: 31, hashed: 31, unchanged: 0 });
    expect(first.flat.get('standard/p3/d1/f10')).toBe(sha('content 10'));
    const cfs = countingFs();
    const second = await scan({ fs: cfs });
    expect(cfs.opened).toEqual([]);
    expect(second.stats).toMatchObject({ files: 31, hashed: 0, unchanged: 31 });
    expect(second.flat).toEqual(first.flat);
  });

  it('finds changed, added, removed and renamed files and removed folders', async () => {
    write(root, 'a/x_1', 'X');
    write(root, 'a/y', 'Y');
    write(root, 'b/z', 'Z');
    write(root, 'c/d/w', 'W');
    await scan();
    fs.renameSync(path.join(root, 'a/x_1'), path.join(root, 'a/x_2')); // rename: same inode, size, mtime
    write(root, 'a/y', 'Y2'); // changed
    write(root, 'a/new', 'N'); // added
    fs.rmSync(path.join(root, 'b'), { recursive: true }); // removed folder
    fs.rmSync(path.join(root, 'c/d/w')); // removed file, empty folder stays
    const cfs = countingFs();
    const { stats, flat } = await scan({ fs: cfs });
    expect(cfs.opened.map((f) => path.relative(root, f)).sort()).toEqual(['a/new', 'a/y']);
    expect(stats).toMatchObject({ files: 3, hashed: 2, renamed: 1, unchanged: 0 });
    expect(flat).toEqual(new Map([['standard/a/new', sha('N')], ['standard/a/x_2', sha('X')], ['standard/a/y', sha('Y2')]]));
  });

  it('re-reads a file whose mtime alone changed, and one whose inode changed', async () => {
    write(root, 'a/f', 'same');
    write(root, 'a/g', 'same2');
    await scan();
    fs.utimesSync(path.join(root, 'a/f'), new Date(), new Date('2030-01-01'));
    fs.copyFileSync(path.join(root, 'a/g'), path.join(root, 'a/g.tmp'));
    fs.renameSync(path.join(root, 'a/g.tmp'), path.join(root, 'a/g'));
    fs.utimesSync(path.join(root, 'a/g'), new Date('2024-01-02T03:04:05.678Z'), new Date('2024-01-02T03:04:05.678Z'));
    const cfs = countingFs();
    const { stats } = await scan({ fs: cfs });
    expect(cfs.opened.map((f) => path.basename(f)).sort()).toEqual(['f', 'g']);
    expect(stats.hashed).toBe(2);
  });

  it('rescans only the given subtrees and keeps the rest of the cache as it was', async () => {
    write(root, 'p/1/f', '1');
    write(root, 'p/2/f', '2');
    write(root, 'p/3/f', '3');
    await scan();
    write(root, 'p/2/f', 'two'); // named by the caller
    write(root, 'p/2/g', 'new');
    write(root, 'p/3/f', 'three'); // not named: not seen (the feed's limit)
    fs.rmSync(path.join(root, 'p/1'), { recursive: true }); // not named: not seen either
    const cfs = countingFs();
    const { stats, flat } = await scan({ fs: cfs, walkRoots: [{ dir: 'standard/p/2', abs: path.join(root, 'p/2') }] });
    expect(cfs.listed).toEqual([path.join(root, 'p/2')]);
    expect(stats).toMatchObject({ copied: 2, hashed: 2 });
    expect(flat).toEqual(
      new Map([['standard/p/1/f', sha('1')], ['standard/p/2/f', sha('two')], ['standard/p/2/g', sha('new')], ['standard/p/3/f', sha('3')]]),
    );
    // A named folder that is gone drops its entries.
    fs.rmSync(path.join(root, 'p/2'), { recursive: true });
    const again = await scan({ walkRoots: [{ dir: 'standard/p/2', abs: path.join(root, 'p/2') }] });
    expect([...again.flat.keys()]).toEqual(['standard/p/1/f', 'standard/p/3/f']);
  });

  it('drops cached entries of a storage root that is no longer given', async () => {
    const ext = path.join(t.dir, 'ext');
    write(ext, 'e/doc.xml', 'E');
    write(root, 's/f', 'S');
    mounts = [{ prefix: 'extended', root: ext }, { prefix: 'standard', root }];
    expect((await scan()).flat.size).toBe(2);
    mounts = [{ prefix: 'standard', root }];
    expect([...(await scan()).flat.keys()]).toEqual(['standard/s/f']);
  });

  it('reports a file that keeps changing while it is read, and re-reads one that changed once', async () => {
    write(root, 'a/steady', 'steady');
    write(root, 'a/once', 'once');
    write(root, 'a/always', 'always');
    const changes = new Map([['once', 1], ['always', 99]]);
    // Grow the file after its first stat, as a writer appending to it would.
    const growing = new Map<number, string>();
    const flaky: TreeFs = {
      ...nodeTreeFs,
      open: (f) => {
        const fd = nodeTreeFs.open(f);
        const left = changes.get(path.basename(f)) ?? 0;
        if (left > 0) {
          changes.set(path.basename(f), left - 1);
          growing.set(fd, f);
        }
        return fd;
      },
      read: (fd, buf, offset, length, position) => {
        const f = growing.get(fd);
        if (f !== undefined) fs.appendFileSync(f, '+');
        return nodeTreeFs.read(fd, buf, offset, length, position);
      },
      close: (fd) => {
        growing.delete(fd);
        nodeTreeFs.close(fd);
      },
    };
    const problems: Problem[] = [];
    const { flat } = await scan({ fs: flaky, problems });
    expect(problems).toEqual([expect.objectContaining({ kind: 'unstable', path: 'standard/a/always' })]);
    expect(flat.get('standard/a/once')).toBe(sha(fs.readFileSync(path.join(root, 'a/once'))));
    expect(flat.get('standard/a/steady')).toBe(sha('steady'));
    expect(flat.has('standard/a/always')).toBe(false);
  });

  it('hashFile reports unreadable and vanished files', async () => {
    const denied: TreeFs = {
      ...nodeTreeFs,
      open: () => {
        throw Object.assign(new Error('permission denied'), { code: 'EACCES' });
      },
    };
    expect(hashFile(denied, '/x', 100)).toMatchObject({ ok: false, reason: 'unreadable' });
    expect(hashFile(nodeTreeFs, path.join(t.dir, 'nope'), 100)).toMatchObject({ ok: false, reason: 'vanished' });
  });
});

describe('manifestEntries', () => {
  it('lists everything without a base, and only the differences with one', async () => {
    const t = tempDir();
    try {
      const mk = async (name: string, blocks: CacheBlock[]) => {
        const w = await CacheWriter.create(path.join(t.dir, name), { facilityId: 'F', server: '', feedPosition: null });
        for (const b of blocks) await w.writeBlock(b);
        await w.finish();
        return path.join(t.dir, name);
      };
      const f = (name: string, content: string, mtimeMs = 1000.5) => ({ name, size: content.length, mtimeMs, ino: 1, sha256: sha(content) });
      const base = await mk('base', [
        { dir: 'standard/a', files: [f('changed', 'c'), f('gone', 'g'), f('same', 's'), f('touched', 't')] },
        { dir: 'standard/b', files: [f('x', 'x')] },
      ]);
      const next = await mk('next', [
        { dir: 'standard/a', files: [f('added', 'a'), f('changed', 'C'), f('same', 's', 1000.9), f('touched', 't', 5000)] },
        { dir: 'standard/c', files: [f('y', 'y')] },
      ]);
      const list = async (b: string | null) => {
        const out = [];
        for await (const e of manifestEntries(blocksOf((await CacheReader.open(next))!), b ? await CacheReader.open(b) : null)) out.push(e);
        return out;
      };
      expect((await list(null)).map((e) => e.path)).toEqual([
        'standard/a/added', 'standard/a/changed', 'standard/a/same', 'standard/a/touched', 'standard/c/y',
      ]);
      expect(await list(base)).toEqual([
        { path: 'standard/a/added', size: 1, mtime: 1000, sha256: sha('a') },
        { path: 'standard/a/changed', size: 1, mtime: 1000, sha256: sha('C') },
        { path: 'standard/a/gone', deleted: true },
        // 'same' differs only below the millisecond the protocol carries: not sent.
        { path: 'standard/a/touched', size: 1, mtime: 5000, sha256: sha('t') },
        { path: 'standard/b/x', deleted: true },
        { path: 'standard/c/y', size: 1, mtime: 1000, sha256: sha('y') },
      ]);
    } finally {
      t.remove();
    }
  });
});
