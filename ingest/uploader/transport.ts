import type { ManifestEntry } from './manifest.js';

/**
 * The exchange side of the upload protocol (store/backup/PROTOCOL.md, `/ingest/v1`), as the
 * uploader needs it. One call is one HTTP request: retrying is the caller's policy (retry.ts),
 * because what is safe to retry differs per step.
 */
export interface UploadTransport {
  open(req: { facilityId: string; clientSession: string; baseSnapshotId?: string }): Promise<OpenAnswer>;
  manifest(uploadId: string, entries: ManifestEntry[]): Promise<{ missing: string[] }>;
  blobs(uploadId: string, body: Buffer): Promise<{ stored: number; alreadyPresent: number }>;
  commit(uploadId: string, entries: number): Promise<CommitAnswer>;
  /** What the exchange knows of an upload: to tell whether a lost answer's batch or commit arrived. */
  state(uploadId: string): Promise<UploadState>;
  abort(uploadId: string): Promise<void>;
}

export interface OpenAnswer {
  uploadId: string;
  resumed: boolean;
  base: string | null;
  received: { entries: number; blobs: number } | null;
  /** True when this session's upload was already committed (commit it again: same snapshot). */
  committed: boolean;
}

export interface UploadState {
  /** open, committed, aborted (as the exchange names it), or null when it does not say. */
  state: string | null;
  entries: number | null;
  snapshotId: string | null;
}

export interface CommitAnswer {
  snapshotId: string;
  facilityId: string;
  files: number;
  bytes: number;
  newBlobs: number;
  newBytes: number;
  createdAt: string;
}

/** An answer with an error status: `problem` is the exchange's problem+json document. */
export class UploadHttpError extends Error {
  override name = 'UploadHttpError';
  constructor(
    readonly status: number,
    readonly problem: Record<string, unknown>,
    readonly step: string,
    readonly retryAfterMs: number | null = null,
  ) {
    const detail = typeof problem.detail === 'string' ? problem.detail : typeof problem.title === 'string' ? problem.title : '';
    super(`${step}: the exchange answered ${status}${detail ? `: ${detail}` : ''}`);
  }
}

/** The request never got an answer (connection refused or reset, DNS, timeout). */
export class UploadNetworkError extends Error {
  override name = 'UploadNetworkError';
  constructor(
    readonly step: string,
    cause: unknown,
  ) {
    const c = cause as { message?: string; cause?: { code?: string; message?: string } };
    const why = c?.cause?.code ?? c?.cause?.message ?? c?.message ?? String(cause);
    super(`${step}: no answer from the exchange (${why})`);
  }
}

/** A 2xx answer that does not say what the protocol promises. */
export class UploadProtocolError extends Error {
  override name = 'UploadProtocolError';
}

export interface HttpTransportOptions {
  /** Base URL of the exchange, e.g. `https://exchange.example.jp`. */
  server: string;
  token: string;
  /** Per-request time limit (blob batches of 32 MiB over slow links need minutes). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

function parseRetryAfter(v: string | null): number | null {
  if (!v) return null;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

/** The protocol over HTTP with fetch. */
export function httpTransport(opts: HttpTransportOptions): UploadTransport {
  const base = opts.server.replace(/\/+$/, '') + '/ingest/v1';
  const doFetch = opts.fetch ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 5 * 60_000;

  async function call(step: string, method: string, path: string, body?: { json: unknown } | { bytes: Buffer }): Promise<{ status: number; json: Record<string, unknown> }> {
    const headers: Record<string, string> = { authorization: `Bearer ${opts.token}`, accept: 'application/json' };
    let payload: string | Uint8Array<ArrayBuffer> | undefined;
    if (body && 'json' in body) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body.json);
    } else if (body) {
      headers['content-type'] = 'application/octet-stream';
      payload = new Uint8Array(body.bytes.buffer as ArrayBuffer, body.bytes.byteOffset, body.bytes.byteLength);
    }
    let res: Response;
    try {
      res = await doFetch(base + path, { method, headers, body: payload, signal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      throw new UploadNetworkError(step, e);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw new UploadNetworkError(step, e);
    }
    let json: Record<string, unknown> = {};
    if (text.length > 0) {
      try {
        const parsed: unknown = JSON.parse(text);
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
      } catch {
        // A proxy's HTML error page: keep the start of it for the message.
        json = { detail: text.slice(0, 200) };
      }
    }
    if (res.status >= 400) throw new UploadHttpError(res.status, json, step, parseRetryAfter(res.headers.get('retry-after')));
    return { status: res.status, json };
  }

  const num = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UploadProtocolError(`the exchange's answer has no number ${what}`);
    return v;
  };
  const str = (v: unknown, what: string): string => {
    if (typeof v !== 'string' || v.length === 0) throw new UploadProtocolError(`the exchange's answer has no ${what}`);
    return v;
  };
  const enc = encodeURIComponent;

  return {
    async open(req) {
      const { json } = await call('open upload', 'POST', '/uploads', { json: req });
      const received = json.received as Record<string, unknown> | undefined;
      return {
        uploadId: str(json.uploadId, 'uploadId'),
        resumed: json.resumed === true,
        base: typeof json.base === 'string' ? json.base : null,
        received: received ? { entries: num(received.entries, 'received.entries'), blobs: Number(received.blobs ?? 0) } : null,
        committed: json.state === 'committed',
      };
    },
    async manifest(uploadId, entries) {
      const { json } = await call('send manifest', 'POST', `/uploads/${enc(uploadId)}/manifest`, { json: { entries } });
      if (!Array.isArray(json.missing) || !json.missing.every((h) => typeof h === 'string' && SHA256_HEX.test(h))) {
        throw new UploadProtocolError('the exchange answered a manifest batch without a list of missing SHA-256 hashes');
      }
      return { missing: json.missing as string[] };
    },
    async blobs(uploadId, body) {
      const { json } = await call('send blobs', 'POST', `/uploads/${enc(uploadId)}/blobs`, { bytes: body });
      return { stored: Number(json.stored ?? 0), alreadyPresent: Number(json.alreadyPresent ?? 0) };
    },
    async commit(uploadId, entries) {
      const { json } = await call('commit', 'POST', `/uploads/${enc(uploadId)}/commit`, { json: { entries } });
      return {
        snapshotId: str(json.snapshotId, 'snapshotId'),
        facilityId: String(json.facilityId ?? ''),
        files: Number(json.files ?? 0),
        bytes: Number(json.bytes ?? 0),
        newBlobs: Number(json.newBlobs ?? 0),
        newBytes: Number(json.newBytes ?? 0),
        createdAt: String(json.createdAt ?? ''),
      };
    },
    async state(uploadId) {
      const { json } = await call('upload state', 'GET', `/uploads/${enc(uploadId)}`);
      // The contract says "its state" without fixing a shape: read what is there, tolerantly.
      const r = json.received as Record<string, unknown> | undefined;
      const v = r?.entries ?? json.entries;
      return {
        state: typeof json.state === 'string' ? json.state : null,
        entries: typeof v === 'number' && Number.isFinite(v) ? v : null,
        snapshotId: typeof json.snapshotId === 'string' ? json.snapshotId : null,
      };
    },
    async abort(uploadId) {
      await call('abort upload', 'DELETE', `/uploads/${enc(uploadId)}`);
    },
  };
}

/**
 * Writes one blob's frame head at `offset` for a `/blobs` request: 32 raw bytes of SHA-256, then
 * a 4-byte big-endian length; the blob's bytes follow it.
 */
export function writeFrameHead(buf: Buffer, offset: number, sha256: string, length: number): void {
  buf.write(sha256, offset, 32, 'hex');
  buf.writeUInt32BE(length, offset + 32);
}

export const FRAME_OVERHEAD = 36;
