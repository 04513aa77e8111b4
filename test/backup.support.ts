import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';


// --- a small protocol client (PROTOCOL.md), written from the contract --------------------

export interface LocalFile {
  path: string;
  abs: string;
  size: number;
  mtime: number;
  sha256: string;
}

export function scan(root: string, prefix = 'standard/'): LocalFile[] {
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

export function frames(files: { data: Buffer; sha256?: string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const head = Buffer.alloc(36);
    Buffer.from(f.sha256 ?? createHash('sha256').update(f.data).digest('hex'), 'hex').copy(head);
    head.writeUInt32BE(f.data.length, 32);
    parts.push(head, f.data);
  }
  return Buffer.concat(parts);
}

export class Client {
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
    let commit = await this.call('POST', `/uploads/${id}/commit`, { entries: entries.length });
    // A resumed client whose journal of missing hashes was lost learns them from the commit's
    // 409 answer (PROTOCOL.md §4), a hundred at a time, and sends only those.
    for (let round = 0; commit.status === 409 && commit.body.missing?.length && round < 100; round++) {
      const chunk = (commit.body.missing as string[]).map((h) => ({ data: fs.readFileSync(byHash.get(h)!.abs) }));
      const r = await this.call('POST', `/uploads/${id}/blobs`, undefined, frames(chunk));
      if (r.status !== 200) throw new Error(`blobs: ${r.status} ${JSON.stringify(r.body)}`);
      this.blobsSent += chunk.length;
      commit = await this.call('POST', `/uploads/${id}/commit`, { entries: entries.length });
    }
    return { opened, id, missing, commit };
  }
}

export function readTree(root: string): Map<string, { data: string; mtime: number }> {
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

export function copyTree(from: string, to: string) {
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

