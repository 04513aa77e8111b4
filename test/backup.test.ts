import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { verifyStore } from '../store/backup/verify.js';

// --- a small protocol client (PROTOCOL.md), written from the contract --------------------

interface LocalFile {
  path: string;
  abs: string;
  size: number;
  mtime: number;
  sha256: string;
}

function scan(root: string, prefix = 'standard/'): LocalFile[] {
  const out: LocalFile[] = [];
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else if (e.isFile()) {
        const data = fs.readFileSync(abs);
        const st = fs.statSync(abs);
        out.push({ path: rel + e.name, abs, size: data.length, mtime: Math.floor(st.mtimeMs), sha256: createHash('sha256').update(data).digest('hex') });
      }
    }
  };
  walk(root, prefix);
  return out;
}

function frames(files: { data: Buffer; sha256?: string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const head = Buffer.alloc(36);
    Buffer.from(f.sha256 ?? createHash('sha256').update(f.data).digest('hex'), 'hex').copy(head);
    head.writeUInt32BE(f.data.length, 32);
    parts.push(head, f.data);
  }
  return Buffer.concat(parts);
}

class Client {
  blobsSent = 0;
  constructor(
    readonly url: string,
    readonly facility: string,
    readonly token: string,
  ) {}
  async call(method: string, p: string, body?: unknown, raw?: Buffer): Promise<{ status: number; body: any }> {
    const res = await fetch(`${this.url}/ingest/v1${p}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(raw ? { 'content-type': 'application/octet-stream' } : body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: raw ? new Uint8Array(raw) : body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
  open(clientSession: string, baseSnapshotId?: string) {
    return this.call('POST', '/uploads', { facilityId: this.facility, clientSession, ...(baseSnapshotId ? { baseSnapshotId } : {}) });
  }
  /** A whole upload: manifest in batches, the missing blobs, commit. */
  async upload(
    files: LocalFile[],
    opts: { base?: string; deleted?: string[]; session?: string; batch?: number; stopAfter?: 'manifest' | 'blobs' } = {},
  ) {
    const opened = await this.open(opts.session ?? randomBytes(8).toString('hex'), opts.base);
    if (opened.status >= 300) return { opened };
    const id = opened.body.uploadId as string;
    const skip = opened.body.resumed ? opened.body.received.entries : 0;
    const entries: any[] = [
      ...files.map((f) => ({ path: f.path, size: f.size, mtime: f.mtime, sha256: f.sha256 })),
      ...(opts.deleted ?? []).map((p) => ({ path: p, deleted: true })),
    ];
    const missing = new Set<string>();
    const batch = opts.batch ?? 50;
    for (let i = skip; i < entries.length; i += batch) {
      const r = await this.call('POST', `/uploads/${id}/manifest`, { entries: entries.slice(i, i + batch) });
      if (r.status !== 200) throw new Error(`manifest: ${r.status} ${JSON.stringify(r.body)}`);
      for (const h of r.body.missing) missing.add(h);
    }
    if (opts.stopAfter === 'manifest') return { opened, id, missing };
    const byHash = new Map(files.map((f) => [f.sha256, f]));
    const todo = [...missing];
    for (let i = 0; i < todo.length; i += 7) {
      const chunk = todo.slice(i, i + 7).map((h) => ({ data: fs.readFileSync(byHash.get(h)!.abs) }));
      const r = await this.call('POST', `/uploads/${id}/blobs`, undefined, frames(chunk));
      if (r.status !== 200) throw new Error(`blobs: ${r.status} ${JSON.stringify(r.body)}`);
      this.blobsSent += chunk.length;
    }
    if (opts.stopAfter === 'blobs') return { opened, id, missing };
    const commit = await this.call('POST', `/uploads/${id}/commit`, { entries: entries.length });
    return { opened, id, missing, commit };
  }
}

function readTree(root: string): Map<string, { data: string; mtime: number }> {
  const out = new Map<string, { data: string; mtime: number }>();
  const walk = (dir: string, rel: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, e.name);
      if (e.isDirectory()) walk(abs, `${rel}${e.name}/`);
      else out.set(rel + e.name, { data: fs.readFileSync(abs).toString('base64'), mtime: Math.floor(fs.statSync(abs).mtimeMs) });
    }
  };
  walk(root, '');
  return out;
}

function copyTree(from: string, to: string) {
  fs.cpSync(from, to, { recursive: true, preserveTimestamps: true });
  // The samples are read-only; the copies must be writable to be evolved.
  const walk = (d: string) => {
    fs.chmodSync(d, 0o755);
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else fs.chmodSync(p, 0o644);
    }
  };
  walk(to);
}

// --- the core path, on both databases -----------------------------------------------------

const backends: [string, () => Promise<{ databaseUrl?: string; done: () => Promise<void> }>][] = [
  ['PGlite', async () => ({ done: async () => {} })],
  [
    'PostgreSQL',
    async () => {
      const pg: TestDatabase = await createTestDatabase('hkbk');
      return { databaseUrl: pg.url, done: () => pg.drop() };
    },
  ],
];

describe.each(backends)('backup store on %s', (_name, backend) => {
  const tmp = tempDir('hakobune-backup-');
  let exchange: Exchange;
  let url: string;
  let done: () => Promise<void>;
  let token: string;
  let client: Client;
  const tree = path.join(tmp.dir, 'tree');

  beforeAll(async () => {
    const b = await backend();
    done = b.done;
    exchange = await createExchange(testConfig(path.join(tmp.dir, 'data'), b.databaseUrl ? { databaseUrl: b.databaseUrl } : {}));
    url = await exchange.listen();
    ({ token } = await exchange.backup.addFacility({ id: 'F001', name: '海辺総合病院', kind: 'hospital' }));
    client = new Client(url, 'F001', token);
    copyTree(SAMPLES_ROOT, tree);
  });
  afterAll(async () => {
    await exchange?.stop();
    await done?.();
    tmp.remove();
  });

  let first: string;
  it('uploads the real samples and restores them byte for byte, broken files included', async () => {
    const files = scan(tree);
    expect(files.length).toBeGreaterThan(20);
    const r = await client.upload(files);
    expect(r.opened.status).toBe(201);
    expect(r.commit!.status).toBe(200);
    expect(r.commit!.body).toMatchObject({ facilityId: 'F001', files: files.length, bytes: files.reduce((a, f) => a + f.size, 0) });
    first = r.commit!.body.snapshotId;
    // Identical files are one blob.
    expect(r.commit!.body.newBlobs).toBe(new Set(files.map((f) => f.sha256)).size);

    const out = path.join(tmp.dir, 'restore1');
    const snap = await exchange.backup.getSnapshot(first);
    const res = await restoreSnapshot(exchange.backup, snap, { to: out });
    expect(res.failed).toEqual([]);
    expect(readTree(path.join(out, 'standard'))).toEqual(readTree(tree));
  });

  it('sends no blob for an unchanged tree, and commits the same content as a new snapshot', async () => {
    const before = client.blobsSent;
    const r = await client.upload(scan(tree));
    expect(r.missing!.size).toBe(0);
    expect(client.blobsSent).toBe(before);
    expect(r.commit!.body).toMatchObject({ newBlobs: 0, newBytes: 0 });
    const a = await exchange.backup.getSnapshot(first);
    const b = await exchange.backup.getSnapshot(r.commit!.body.snapshotId);
    expect(b.rootTree.equals(a.rootTree)).toBe(true);
  });

  let renamed: string;
  it('sends no blob for a _1 -> _2 rename (delta manifest) and an older snapshot still restores that night', async () => {
    const latest = (await exchange.backup.listSnapshots('F001')).at(-1)!;
    const files = scan(tree);
    const victim = files.find((f) => f.path.endsWith('_1'))!;
    const newPath = victim.abs.replace(/_1$/, '_2');
    fs.renameSync(victim.abs, newPath);
    const moved = scan(tree).find((f) => f.abs === newPath)!;
    const before = client.blobsSent;
    const r = await client.upload([moved], { base: latest.id, deleted: [victim.path] });
    expect(r.commit!.status).toBe(200);
    expect(r.missing!.size).toBe(0);
    expect(client.blobsSent).toBe(before);
    renamed = r.commit!.body.snapshotId;
    expect(r.commit!.body.files).toBe(files.length);

    const outNew = path.join(tmp.dir, 'restore-new');
    await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(renamed), { to: outNew });
    expect(readTree(path.join(outNew, 'standard'))).toEqual(readTree(tree));
    const outOld = path.join(tmp.dir, 'restore-old');
    await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(first), { to: outOld });
    const old = readTree(path.join(outOld, 'standard'));
    expect(old.has(victim.path.slice('standard/'.length))).toBe(true);
    expect(old.has(moved.path.slice('standard/'.length))).toBe(false);

    // The indexer's read API: the renamed file carries no new content.
    const changed = [];
    for await (const c of exchange.backup.changedFiles(renamed)) changed.push(c);
    expect(changed).toEqual([]);
    const page1 = await exchange.backup.listSnapshotFiles(renamed, { limit: 5 });
    const page2 = await exchange.backup.listSnapshotFiles(renamed, { afterPath: page1.at(-1)!.path, limit: 1000 });
    const all = [...page1, ...page2].map((f) => f.path);
    expect(all).toEqual(scan(tree).map((f) => f.path).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    expect((await exchange.backup.readBlob(moved.sha256)).equals(fs.readFileSync(newPath))).toBe(true);
  });

  it('reports a changed file as changed, and restores only one patient with --patient', async () => {
    const latest = (await exchange.backup.listSnapshots('F001')).at(-1)!;
    const f = scan(tree).find((x) => x.path.includes('/9999013/') && x.path.includes('ADT-00'))!;
    fs.appendFileSync(f.abs, 'ZZZ|changed\r');
    const changedFile = scan(tree).find((x) => x.abs === f.abs)!;
    const r = await client.upload([changedFile], { base: latest.id });
    expect(r.missing!.size).toBe(1);
    const changed = [];
    for await (const c of exchange.backup.changedFiles(r.commit!.body.snapshotId)) changed.push(c.path);
    expect(changed).toEqual([f.path]);
    const out = path.join(tmp.dir, 'restore-patient');
    const res = await restoreSnapshot(exchange.backup, await exchange.backup.getSnapshot(r.commit!.body.snapshotId), { to: out, patients: ['9999013'] });
    expect(res.failed).toEqual([]);
    const got = [...readTree(out).keys()];
    expect(got.length).toBeGreaterThan(5);
    expect(got.every((p) => p.startsWith('standard/999/901/9999013/'))).toBe(true);
  });

  it('refuses a non-empty target unless forced', async () => {
    const out = path.join(tmp.dir, 'busy');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'x'), 'x');
    const snap = await exchange.backup.getSnapshot(first);
    await expect(restoreSnapshot(exchange.backup, snap, { to: out })).rejects.toThrow(/not empty/);
    const res = await restoreSnapshot(exchange.backup, snap, { to: out, force: true });
    expect(res.files).toBe(snap.files);
  });

  it('verifies a healthy store', async () => {
    const rep = await verifyStore(exchange.backup, { readData: 1 });
    expect(rep.ok).toBe(true);
    expect(rep.blobsRead).toBeGreaterThan(0);
  });
});
