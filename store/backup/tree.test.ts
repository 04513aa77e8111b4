import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  TreeBuilder,
  TreeConflict,
  addDeltaChange,
  applyDelta,
  compareUtf8,
  decodeTree,
  encodeTree,
  newDeltaNode,
  pathProblem,
  totalsOf,
  type DeltaNode,
  type EncodedTree,
  type TreeEntry,
} from './tree.js';

const h = (s: string) => createHash('sha256').update(s).digest();
type Files = Map<string, { size: number; mtime: number; sha256: Buffer }>;

function build(files: Files): { root: Buffer; trees: Map<string, TreeEntry[]>; files: number; bytes: number } {
  const trees = new Map<string, TreeEntry[]>();
  const emit = (t: EncodedTree) => trees.set(t.hash.toString('hex'), decodeTree(t.hash, t.content));
  const b = new TreeBuilder(emit);
  for (const p of [...files.keys()].sort(compareUtf8)) b.add(p, files.get(p)!);
  const r = b.finish();
  return { ...r, trees };
}

/** Applies a delta with every base tree taken from an in-memory map (what tree-store loads). */
function delta(base: ReturnType<typeof build>, changes: [string, { size: number; mtime: number; sha256: Buffer } | 'delete'][]) {
  const root = newDeltaNode();
  for (const [p, c] of changes) addDeltaChange(root, p, c === 'delete' ? { kind: 'delete' } : { kind: 'put', ...c });
  // As buildFromDelta does: stored trees from the map, inline folders from their parent.
  const visit = (node: DeltaNode, entries: TreeEntry[]) => {
    node.base = entries;
    for (const e of entries) {
      const sub = e.kind === 'dir' ? node.dirs.get(e.name) : undefined;
      if (sub && e.kind === 'dir') visit(sub, e.inline ? e.inline.entries : base.trees.get(e.hash.toString('hex'))!);
    }
  };
  visit(root, base.trees.get(base.root.toString('hex'))!);
  const out: EncodedTree[] = [];
  const entries = applyDelta(root, '', (t) => out.push(t));
  return { root: encodeTree(entries).hash, ...totalsOf(entries), emitted: out.length };
}

function sample(): Files {
  const files: Files = new Map();
  for (let p = 0; p < 30; p++) {
    const pid = String(9999000 + p);
    for (let d = 0; d < 4; d++) {
      const path = `standard/${pid.slice(0, 3)}/${pid.slice(3, 6)}/${pid}/2025040${d + 1}/OMP-01/${pid}_2025040${d + 1}_OMP-01_1_20250401000000000_01_1`;
      files.set(path, { size: 100 + d, mtime: 1_700_000_000_000 + d, sha256: h(path) });
    }
  }
  // A folder too big to travel inline, inside one small enough to.
  for (let i = 0; i < 80; i++) files.set(`standard/deep/wide/f${String(i).padStart(3, '0')}`, { size: i, mtime: i, sha256: h(`w${i}`) });
  files.set('standard/a-b', { size: 1, mtime: 1, sha256: h('x') });
  files.set('standard/a.b', { size: 1, mtime: -5, sha256: h('x') });
  files.set('standard/a/x', { size: 1, mtime: 1, sha256: h('y') });
  files.set('standard/日本/𠮷', { size: 1, mtime: 1, sha256: h('z') });
  return files;
}

describe('manifest paths', () => {
  it.each([
    ['', /empty/],
    ['/etc/passwd', /absolute/],
    ['C:/x', /absolute/],
    ['a/../b', /".."/],
    ['a/./b', /"."/],
    ['a//b', /empty segment/],
    ['a/', /empty segment/],
    ['a\0b', /NUL/],
    ['a/\ud800', /Unicode/],
    ['a/' + 'x'.repeat(256), /255/],
  ])('refuses %j', (p, why) => {
    expect(pathProblem(p)).toMatch(why);
  });
  it('accepts SS-MIX2 paths, including ^ in folder names and non-ASCII', () => {
    expect(pathProblem('extended/999/901/9999013/20111220/L-OBSERVATIONS^OBSERVATIONS^99ZL01/x/main_document.hl7')).toBeUndefined();
    expect(pathProblem('standard/日本/𠮷')).toBeUndefined();
  });
});

describe('ordering', () => {
  it('orders as UTF-8 bytes do (astral characters after the rest of the BMP)', () => {
    const words = ['\uffff', '𠮷', 'a', 'a/b', 'a-b', 'ab', '日'];
    const byBytes = [...words].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...words].sort(compareUtf8)).toEqual(byBytes);
    expect(['\uffff', '𠮷'].sort()).toEqual(['𠮷', '\uffff']); // what JavaScript's own sort would do
  });
});

describe('trees', () => {
  it('round-trips an encoding and refuses a tampered one', () => {
    const entries: TreeEntry[] = [
      { kind: 'file', name: 'a', size: 2 ** 40, mtime: -1, sha256: h('a') },
      { kind: 'dir', name: 'b', hash: h('b'), files: 3, bytes: 9 },
    ];
    const t = encodeTree(entries);
    expect(decodeTree(t.hash, t.content)).toEqual(entries);
    const bad = Buffer.from(t.content);
    bad[bad.length - 1]! ^= 1;
    expect(() => decodeTree(t.hash, bad)).toThrow();
  });

  it('keeps small folders inline in their parent and large ones as trees of their own', () => {
    const files = sample();
    const b = build(files);
    const entriesOf = (e: TreeEntry | undefined) => {
      if (e?.kind !== 'dir') throw new Error('not a folder');
      return e.inline ? e.inline.entries : b.trees.get(e.hash.toString('hex'))!;
    };
    const std = entriesOf(b.trees.get(b.root.toString('hex'))!.find((e) => e.name === 'standard'));
    // 999/900 holds ten patients' 40 files: too big to travel inline; 999 holds three such.
    const big = entriesOf(std.find((e) => e.name === '999')).find((e) => e.name === '900')!;
    expect(big.kind === 'dir' && !big.inline && b.trees.has(big.hash.toString('hex'))).toBe(true);
    const deep = std.find((e) => e.name === 'deep')!;
    expect(deep.kind === 'dir' && deep.inline?.entries.length).toBe(1);
    const wide = entriesOf(deep)[0]!;
    expect(wide.kind === 'dir' && !wide.inline && b.trees.has(wide.hash.toString('hex'))).toBe(true);
    expect(wide.kind === 'dir' && wide.files).toBe(80);
    // An inline folder's hash is that of its own encoding: the same as if it were stored.
    const a = std.find((e) => e.name === 'a')!;
    expect(a.kind === 'dir' && a.inline && a.hash.equals(encodeTree(a.inline.entries).hash)).toBe(true);
    // Fewer stored trees than folders.
    const folders = new Set([...files.keys()].flatMap((p) => p.split('/').slice(0, -1).map((_, i, segs) => segs.slice(0, i + 1).join('/'))));
    expect(b.trees.size).toBeLessThan(folders.size / 2);
  });

  it('still decodes trees of the first encoding (no inline folders)', () => {
    const raw = Buffer.concat([Buffer.from([1, 1, 1, 1]), Buffer.from('a'), Buffer.from([5, 2]), h('a')]);
    const stored = Buffer.concat([Buffer.from([0]), raw]);
    expect(decodeTree(createHash('sha256').update(raw).digest(), stored)).toEqual([{ kind: 'file', name: 'a', size: 5, mtime: 1, sha256: h('a') }]);
  });

  it('builds the same root for the same files whatever the order of arrival of folders', () => {
    const files = sample();
    const a = build(files);
    const b = build(new Map([...files].reverse()));
    expect(a.root.equals(b.root)).toBe(true);
    expect(a.files).toBe(files.size);
  });

  it('refuses paths out of order and a path that is both file and folder', () => {
    const b = new TreeBuilder(() => {});
    b.add('b', { size: 1, mtime: 1, sha256: h('1') });
    expect(() => b.add('a', { size: 1, mtime: 1, sha256: h('1') })).toThrow(/out of order/);
    const c = new TreeBuilder(() => {});
    c.add('x/a', { size: 1, mtime: 1, sha256: h('1') });
    expect(() => c.add('x/a/b', { size: 1, mtime: 1, sha256: h('1') })).toThrow(TreeConflict);
  });

  it('gives a delta on a base the same root as a full build of the result, touching only its folders', () => {
    const files = sample();
    const base = build(files);
    const paths = [...files.keys()].sort(compareUtf8);
    const renamedFrom = paths[5]!;
    const renamedTo = renamedFrom.replace(/_1$/, '_2');
    const changed = paths[40]!;
    const gone = paths[77]!;
    const added = 'standard/999/999/9999999/-/ADT-00/new_1';
    const wideChanged = 'standard/deep/wide/f007';
    const next: Files = new Map(files);
    next.set(renamedTo, files.get(renamedFrom)!);
    next.delete(renamedFrom);
    next.set(changed, { size: 7, mtime: 7, sha256: h('changed') });
    next.delete(gone);
    next.set(added, { size: 3, mtime: 3, sha256: h('new') });
    next.set(wideChanged, { size: 8, mtime: 8, sha256: h('wide') });
    const d = delta(base, [
      [wideChanged, next.get(wideChanged)!],
      [renamedFrom, 'delete'],
      [renamedTo, files.get(renamedFrom)!],
      [changed, next.get(changed)!],
      [gone, 'delete'],
      [added, next.get(added)!],
    ]);
    const full = build(next);
    expect(d.root.equals(full.root)).toBe(true);
    expect(d.files).toBe(next.size);
    // Exactly the stored trees that are new (on the changed paths) are emitted, the root
    // aside (its caller stores it); the untouched ones keep their hashes.
    const fresh = [...full.trees.keys()].filter((k) => !base.trees.has(k));
    expect(d.emitted).toBe(fresh.length - 1);
    expect(fresh.length).toBeLessThan(full.trees.size);
  });

  it('drops folders a delta empties, and refuses deleting what the base lacks', () => {
    const files = sample();
    const base = build(files);
    const d = delta(base, [['standard/a/x', 'delete']]);
    files.delete('standard/a/x');
    expect(d.root.equals(build(files).root)).toBe(true);
    expect(() => delta(base, [['standard/nope', 'delete']])).toThrow(/not in the base/);
    expect(() => delta(base, [['standard/a', { size: 1, mtime: 1, sha256: h('q') }]])).toThrow(/folder/);
  });
});
