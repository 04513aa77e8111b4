import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small exchange that implements store/backup/PROTOCOL.md in memory, for the uploader's
 * client tests: a real HTTP server on 127.0.0.1 with fault injection (answer 503, drop the
 * answer after doing the work, hold a request). It checks the contract strictly, so a client
 * that breaks it fails here.
 */

export interface SnapshotEntry {
  size: number;
  mtime: number;
  sha256: string;
}

export type FaultAction =
  /** Answer this status without doing anything. */
  | { status: number; retryAfter?: number }
  /** Do the work, then cut the connection: the client never sees the answer. */
  | { drop: true }
  /** Never answer (until the server closes). */
  | { hang: true };

export interface Fault {
  method: string;
  path: RegExp;
  /** How many matching requests it applies to. */
  times: number;
  action: FaultAction;
  /** Called when it fires (e.g. to kill the client). */
  onFire?: () => void;
}

interface Upload {
  id: string;
  clientSession: string;
  base: string | null;
  state: 'open' | 'committed' | 'aborted';
  entries: Map<string, SnapshotEntry | null>;
  received: number;
  snapshotId: string | null;
}

export interface ContractServer {
  url: string;
  token: string;
  facilityId: string;
  blobs: Map<string, Buffer>;
  snapshots: Map<string, Map<string, SnapshotEntry>>;
  latest(): string | null;
  /** Every blob hash stored, in order, once per time it was newly stored or re-sent. */
  blobArrivals: string[];
  /** method + path + status of every request. */
  log: string[];
  faults: Fault[];
  uploads: Map<string, Upload>;
  close(): Promise<void>;
}

const SHA = /^[0-9a-f]{64}$/;

function badPath(p: unknown): boolean {
  if (typeof p !== 'string' || p.length === 0 || p.includes('\0') || p.startsWith('/')) return true;
  return p.split('/').some((s) => s === '' || s === '.' || s === '..');
}

export async function startContractServer(opts: { token?: string; facilityId?: string } = {}): Promise<ContractServer> {
  const token = opts.token ?? 'secret-token';
  const facilityId = opts.facilityId ?? 'F001';
  const blobs = new Map<string, Buffer>();
  const snapshots = new Map<string, Map<string, SnapshotEntry>>();
  const uploads = new Map<string, Upload>();
  const blobArrivals: string[] = [];
  const log: string[] = [];
  const faults: Fault[] = [];
  const held: http.ServerResponse[] = [];
  let latest: string | null = null;
  let seq = 0;

  const handle = (method: string, url: string, body: Buffer, auth: string | undefined): { status: number; json: unknown } => {
    const problem = (status: number, detail: string, extra: Record<string, unknown> = {}) => ({
      status,
      json: { title: String(status), status, detail, ...extra },
    });
    if (auth !== `Bearer ${token}`) return problem(401, 'the uploader token is not valid');
    const json = (): Record<string, unknown> => {
      try {
        return JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      } catch {
        return {};
      }
    };
    if (method === 'POST' && url === '/ingest/v1/uploads') {
      const b = json();
      if (b.facilityId !== facilityId) return problem(403, `this token belongs to another facility than ${String(b.facilityId)}`);
      if (typeof b.clientSession !== 'string') return problem(400, 'clientSession');
      const open = [...uploads.values()].find((u) => u.state === 'open');
      if (open) {
        if (open.clientSession === b.clientSession) {
          return { status: 200, json: { uploadId: open.id, resumed: true, base: open.base, received: { entries: open.received, blobs: 0 } } };
        }
        return problem(409, 'another upload is open');
      }
      const base = typeof b.baseSnapshotId === 'string' ? b.baseSnapshotId : null;
      if (base !== null && base !== latest) return problem(409, 'base is not latest', { latestSnapshotId: latest });
      const u: Upload = { id: `U${++seq}`, clientSession: b.clientSession, base, state: 'open', entries: new Map(), received: 0, snapshotId: null };
      uploads.set(u.id, u);
      return { status: 201, json: { uploadId: u.id, resumed: false, base } };
    }
    const m = /^\/ingest\/v1\/uploads\/([^/]+)(?:\/(manifest|blobs|commit))?$/.exec(url);
    const u = m ? uploads.get(decodeURIComponent(m[1]!)) : undefined;
    if (!m || !u) return problem(404, 'no such upload');
    const step = m[2];
    if (method === 'GET' && !step) {
      return { status: 200, json: { uploadId: u.id, state: u.state, received: { entries: u.received, blobs: 0 }, snapshotId: u.snapshotId } };
    }
    if (method === 'DELETE' && !step) {
      if (u.state === 'committed') return problem(409, 'committed');
      u.state = 'aborted';
      return { status: 200, json: { uploadId: u.id, state: 'aborted' } };
    }
    if (method === 'POST' && step === 'commit') {
      if (u.state === 'committed') return { status: 200, json: commitAnswer(u) };
      if (u.state !== 'open') return problem(409, `upload is ${u.state}`);
      const n = json().entries;
      if (n !== u.received) return problem(409, `the client sent ${String(n)} entries but the exchange received ${u.received}`, { receivedEntries: u.received });
      const missing = [...new Set([...u.entries.values()].filter((e) => e && !blobs.has(e.sha256)).map((e) => e!.sha256))];
      if (missing.length > 0) return problem(409, `${missing.length} blob(s) missing`, { missingBlobs: missing.length, missing: missing.slice(0, 100) });
      if (u.base !== null && u.base !== latest) return problem(409, 'base no longer latest', { latestSnapshotId: latest });
      const tree = new Map(u.base ? snapshots.get(u.base)! : []);
      for (const [p, e] of u.entries) {
        if (e === null) tree.delete(p);
        else tree.set(p, e);
      }
      const id = `S${++seq}`;
      snapshots.set(id, tree);
      latest = id;
      u.state = 'committed';
      u.snapshotId = id;
      return { status: 200, json: commitAnswer(u) };
    }
    if (u.state !== 'open') return problem(409, `upload is ${u.state}`);
    if (method === 'POST' && step === 'manifest') {
      const entries = json().entries;
      if (!Array.isArray(entries) || entries.length > 10_000) return problem(400, 'entries: at most 10,000');
      const seen = new Set<string>();
      for (const e of entries as Record<string, unknown>[]) {
        if (badPath(e.path)) return problem(400, `bad path ${String(e.path)}`);
        const p = e.path as string;
        if (!p.startsWith('standard/') && !p.startsWith('extended/')) return problem(400, `path outside standard/ and extended/: ${p}`);
        if (u.entries.has(p) || seen.has(p)) return problem(400, `path sent twice: ${p}`);
        seen.add(p);
        if (e.deleted === true) {
          if (u.base === null) return problem(400, 'deleted entries only in a delta upload');
        } else if (!(Number.isInteger(e.size) && Number.isInteger(e.mtime) && typeof e.sha256 === 'string' && SHA.test(e.sha256))) {
          return problem(400, `bad entry ${p}`);
        }
      }
      const missing = new Set<string>();
      for (const e of entries as Record<string, unknown>[]) {
        const p = e.path as string;
        if (e.deleted === true) u.entries.set(p, null);
        else {
          u.entries.set(p, { size: e.size as number, mtime: e.mtime as number, sha256: e.sha256 as string });
          if (!blobs.has(e.sha256 as string)) missing.add(e.sha256 as string);
        }
      }
      u.received += entries.length;
      return { status: 200, json: { missing: [...missing] } };
    }
    if (method === 'POST' && step === 'blobs') {
      if (body.length > 32 * 1024 * 1024) return problem(413, 'too large');
      const frames: [string, Buffer][] = [];
      let at = 0;
      while (at < body.length) {
        if (at + 36 > body.length) return problem(422, 'truncated frame');
        const sha = body.subarray(at, at + 32).toString('hex');
        const len = body.readUInt32BE(at + 32);
        if (at + 36 + len > body.length) return problem(422, `truncated frame ${sha}`);
        const bytes = Buffer.from(body.subarray(at + 36, at + 36 + len));
        if (createHash('sha256').update(bytes).digest('hex') !== sha) return problem(422, `hash mismatch ${sha}`, { sha256: sha });
        frames.push([sha, bytes]);
        at += 36 + len;
      }
      let stored = 0;
      for (const [sha, bytes] of frames) {
        blobArrivals.push(sha);
        if (!blobs.has(sha)) stored++;
        blobs.set(sha, bytes);
      }
      return { status: 200, json: { stored, alreadyPresent: frames.length - stored } };
    }
    return problem(404, 'no such endpoint');
  };

  const commitAnswer = (u: Upload) => {
    const tree = snapshots.get(u.snapshotId!)!;
    let bytes = 0;
    for (const e of tree.values()) bytes += e.size;
    return { snapshotId: u.snapshotId, facilityId, files: tree.size, bytes, newBlobs: 0, newBytes: 0, createdAt: new Date(0).toISOString() };
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const url = req.url ?? '/';
      const fault = faults.find((f) => f.times > 0 && f.method === method && f.path.test(url));
      if (fault) {
        fault.times--;
        fault.onFire?.();
        const a = fault.action;
        if ('hang' in a) {
          log.push(`${method} ${url} hang`);
          held.push(res);
          return;
        }
        if ('status' in a) {
          log.push(`${method} ${url} ${a.status}`);
          res.writeHead(a.status, { 'content-type': 'application/problem+json', ...(a.retryAfter !== undefined ? { 'retry-after': String(a.retryAfter) } : {}) });
          res.end(JSON.stringify({ title: String(a.status), status: a.status, detail: 'injected' }));
          return;
        }
      }
      const out = handle(method, url, Buffer.concat(chunks), req.headers.authorization);
      log.push(`${method} ${url} ${out.status}`);
      if (fault && 'drop' in fault.action) {
        req.socket.destroy();
        return;
      }
      res.writeHead(out.status, { 'content-type': out.status >= 400 ? 'application/problem+json' : 'application/json' });
      res.end(JSON.stringify(out.json));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    facilityId,
    blobs,
    snapshots,
    latest: () => latest,
    blobArrivals,
    log,
    faults,
    uploads,
    close: () =>
      new Promise<void>((r) => {
        for (const h of held) h.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
