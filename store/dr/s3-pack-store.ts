import { createHash } from 'node:crypto';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
  type ObjectLockMode,
} from '@aws-sdk/client-s3';
import { PackObjectMissing, type PackStore } from '../backup/pack-store.js';

export interface S3PackStoreOptions {
  /** Endpoint URL of an S3-compatible service; unset: AWS S3 of the region. */
  endpoint?: string;
  bucket: string;
  region: string;
  /** Static credentials; unset: the SDK's default chain (environment, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Key prefix inside the bucket (no leading or trailing "/"), e.g. "site-a/packs". */
  prefix?: string;
  /** Attempts per request, the first included (the SDK's standard retry mode, with backoff). */
  maxAttempts?: number;
  /** One attempt is abandoned (and retried) when its socket is idle this long. */
  attemptTimeoutMs?: number;
  /** Deadline of one whole operation, retries included (an AbortSignal). */
  operationTimeoutMs?: number;
  /**
   * Object Lock retention set on every put (WORM: the object cannot be deleted or overwritten
   * before the date, by anyone in COMPLIANCE mode). Needs a bucket created with Object Lock.
   */
  objectLock?: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number };
  /** Keys per LIST page (S3 answers at most 1000). */
  listPageSize?: number;
}

/** A request to the object store failed for good (after retries), or was refused. */
export class PackStoreError extends Error {
  override name = 'PackStoreError';
  constructor(
    message: string,
    readonly operation: string,
    readonly objectName: string,
    readonly status: number | undefined,
    readonly attempts: number | undefined,
  ) {
    super(message);
  }
}

/** Metadata that a complete put writes: how a later put recognises its own object. */
const SHA_META = 'hakobune-sha256';

const NAME = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_.-]+)*$/;

function checkName(name: string): void {
  if (!NAME.test(name) || name.split('/').some((s) => s === '.' || s === '..')) {
    throw new Error(`invalid pack object name ${JSON.stringify(name)}`);
  }
}

interface SdkErrorShape {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $response?: { statusCode?: number };
}

function statusOf(e: unknown): number | undefined {
  const x = e as SdkErrorShape;
  return x?.$metadata?.httpStatusCode ?? x?.$response?.statusCode;
}

/**
 * Pack objects in an S3-compatible bucket. Objects are immutable: a put never replaces an
 * existing object (`If-None-Match: *`, RFC 9110 §13.1.2, where the service honours it; a HEAD
 * before the PUT everywhere), reads are ranged GETs (RFC 9110 §14), and every request has a
 * per-attempt timeout, an overall deadline and bounded retries with backoff on 5xx, throttling,
 * timeouts and network errors.
 */
export class S3PackStore implements PackStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly operationTimeoutMs: number;
  private readonly objectLock: S3PackStoreOptions['objectLock'];
  private readonly listPageSize: number;
  private readonly attemptTimeoutMs: number;
  private closed = false;

  constructor(opts: S3PackStoreOptions) {
    if (!opts.bucket) throw new Error('an S3 pack store needs a bucket');
    const prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
    if (prefix && !NAME.test(prefix)) throw new Error(`invalid S3 key prefix ${JSON.stringify(opts.prefix)}`);
    this.bucket = opts.bucket;
    this.prefix = prefix ? `${prefix}/` : '';
    this.operationTimeoutMs = opts.operationTimeoutMs ?? 120_000;
    this.objectLock = opts.objectLock;
    this.listPageSize = Math.min(Math.max(opts.listPageSize ?? 1000, 1), 1000);
    const attempt = opts.attemptTimeoutMs ?? 30_000;
    this.attemptTimeoutMs = attempt;
    this.client = new S3Client({
      region: opts.region,
      endpoint: opts.endpoint,
      // Most S3-compatible services (and the test server) address buckets by path, not by host.
      forcePathStyle: opts.endpoint !== undefined,
      credentials: opts.credentials,
      maxAttempts: opts.maxAttempts ?? 4,
      retryMode: 'standard',
      // An attempt is abandoned (and retried) when its socket stays idle for attemptTimeoutMs,
      // or when it takes four times that in all (a trickle that never finishes).
      requestHandler: {
        connectionTimeout: 10_000,
        socketTimeout: attempt,
        requestTimeout: attempt * 4,
        throwOnRequestTimeout: true,
      },
      // Checksums only where S3 requires them: the body's integrity is covered by the SigV4
      // payload hash and Content-MD5, which every S3-compatible service understands, and
      // ranged reads are checked by the blob store's own hashes.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private key(name: string): string {
    checkName(name);
    return this.prefix + name;
  }

  private signal(): AbortSignal {
    if (this.closed) throw new Error('the S3 pack store is closed');
    return AbortSignal.timeout(this.operationTimeoutMs);
  }

  private fail(op: string, name: string, e: unknown): PackStoreError {
    const x = e as SdkErrorShape;
    const status = statusOf(e);
    const attempts = x?.$metadata?.attempts;
    const code = (e as { code?: string })?.code;
    // The SDK names a reset or broken connection a TimeoutError too; say which it was.
    const what =
      x?.name === 'AbortError'
        ? `timed out (the deadline of ${this.operationTimeoutMs} ms passed)`
        : x?.name === 'TimeoutError'
          ? code === 'ECONNRESET' || code === 'EPIPE'
            ? `lost its connection (${code})`
            : `timed out (no answer within ${this.attemptTimeoutMs} ms)`
          : status
            ? `answered ${status} ${x?.name ?? ''}`.trim()
            : `failed: ${x?.message ?? String(e)}`;
    return new PackStoreError(
      `S3 ${op} of ${op === 'LIST' ? 'prefix' : 'pack object'} ${name} in bucket ${this.bucket} ${what}${attempts ? ` after ${attempts} attempt(s)` : ''}`,
      op,
      name,
      status,
      attempts,
    );
  }

  private async head(name: string): Promise<{ size: number; sha256: string | undefined } | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(name) }), { abortSignal: this.signal() });
      return { size: r.ContentLength ?? 0, sha256: r.Metadata?.[SHA_META] };
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw this.fail('HEAD', name, e);
    }
  }

  async put(name: string, data: Buffer): Promise<void> {
    const key = this.key(name);
    const sha256 = createHash('sha256').update(data).digest('hex');
    // HEAD first: it works on every service. A service that ignores If-None-Match leaves a race
    // between this HEAD and the PUT (two writers of one name in that window both write); names
    // are content addresses, so both write the same bytes.
    const existing = await this.head(name);
    if (existing) {
      if (existing.size === data.length && existing.sha256 === sha256) return;
      if (existing.sha256 === undefined && existing.size === data.length) return; // written by another tool; same length
      throw new PackStoreError(
        `pack object ${name} already exists in bucket ${this.bucket} with other content (${existing.size} bytes, ${data.length} expected); it is left as it is`,
        'PUT',
        name,
        undefined,
        undefined,
      );
    }
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: data,
          ContentLength: data.length,
          ContentType: 'application/octet-stream',
          ContentMD5: createHash('md5').update(data).digest('base64'),
          Metadata: { [SHA_META]: sha256 },
          IfNoneMatch: '*',
          ...(this.objectLock
            ? { ObjectLockMode: this.objectLock.mode as ObjectLockMode, ObjectLockRetainUntilDate: new Date(Date.now() + this.objectLock.days * 86_400_000) }
            : {}),
        }),
        { abortSignal: this.signal() },
      );
    } catch (e) {
      const status = statusOf(e);
      // 412: another writer created the object between our HEAD and PUT; 409: a conditional
      // write raced with another one. Either way the object now exists; check it is ours.
      if (status === 412 || status === 409) {
        const now = await this.head(name);
        if (now && now.size === data.length) return;
      }
      await this.removeLeftover(name, data.length, sha256);
      throw this.fail('PUT', name, e);
    }
  }

  /**
   * After a failed PUT: a service whose PUT is not atomic (the test server is one) can keep the
   * bytes that arrived under the final name. Such a leftover lacks the metadata a complete put
   * writes, or has the wrong size; it is removed so that no partial object is ever taken for a
   * pack. Best effort: if this fails too, the next put of the name reports the damaged object.
   */
  private async removeLeftover(name: string, size: number, sha256: string): Promise<void> {
    try {
      const now = await this.head(name);
      if (now && (now.sha256 !== sha256 || now.size !== size)) {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) }), { abortSignal: this.signal() });
      }
    } catch {
      // the PUT's own error is the one to report
    }
  }

  async get(name: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const key = this.key(name);
    if (range && (!Number.isSafeInteger(range.offset) || !Number.isSafeInteger(range.length) || range.offset < 0 || range.length < 0)) {
      throw new Error(`invalid range ${JSON.stringify(range)} for pack object ${name}`);
    }
    if (range && range.length === 0) {
      if ((await this.head(name)) === undefined) throw new PackObjectMissing(`pack object ${name} does not exist`);
      return Buffer.alloc(0);
    }
    try {
      const r = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined,
        }),
        { abortSignal: this.signal() },
      );
      if (!r.Body) return Buffer.alloc(0);
      const bytes = Buffer.from(await r.Body.transformToByteArray());
      return range ? cutToRange(bytes, r.ContentRange, range) : bytes;
    } catch (e) {
      const status = statusOf(e);
      if (status === 404 || (e as SdkErrorShape)?.name === 'NoSuchKey') {
        throw new PackObjectMissing(`pack object ${name} does not exist in bucket ${this.bucket}`);
      }
      // 416: the range starts at or after the end; like a short read of a local file.
      if (status === 416) return Buffer.alloc(0);
      throw this.fail('GET', name, e);
    }
  }

  async stat(name: string): Promise<number | undefined> {
    return (await this.head(name))?.size;
  }

  async *list(prefix: string): AsyncIterable<{ name: string; size: number }> {
    // As for the local store, a prefix names a folder: "data" lists "data/…", not "database/…".
    if (prefix) checkName(prefix);
    const keyPrefix = this.prefix + (prefix ? `${prefix}/` : '');
    // ListObjects (v1) paged by Marker = the last key seen: every S3-compatible service has it,
    // while ListObjectsV2's continuation tokens are broken on some (the test server makes them
    // with DES, which OpenSSL 3 no longer offers, and answers 500 to any truncated listing).
    let after: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsCommand({ Bucket: this.bucket, Prefix: keyPrefix, Marker: after, MaxKeys: this.listPageSize }),
          { abortSignal: this.signal() },
        );
      } catch (e) {
        throw this.fail('LIST', prefix || '(all)', e);
      }
      const contents = page.Contents ?? [];
      for (const o of contents) {
        if (!o.Key) continue;
        const name = o.Key.slice(this.prefix.length);
        if (!NAME.test(name)) continue; // not a pack object (e.g. a folder marker)
        yield { name, size: o.Size ?? 0 };
      }
      const last = contents.at(-1)?.Key;
      if (!page.IsTruncated || last === undefined) break;
      if (after !== undefined && last <= after) {
        throw new PackStoreError(`S3 LIST of ${prefix || '(all)'} in bucket ${this.bucket} did not move forward past ${after}`, 'LIST', prefix, undefined, undefined);
      }
      after = last;
    }
  }

  async delete(name: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) }), { abortSignal: this.signal() });
    } catch (e) {
      if (statusOf(e) === 404) return;
      throw this.fail('DELETE', name, e);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }
}

/**
 * The requested part of a GET answer. A service may ignore the Range header (200, the whole
 * object) or answer a wider range than asked (the test server answers all of `bytes=0-0`), so
 * the answer's own Content-Range (RFC 9110 §14.4) says where its bytes start.
 */
export function cutToRange(bytes: Buffer, contentRange: string | undefined, range: { offset: number; length: number }): Buffer {
  let start = 0;
  if (contentRange) {
    const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(contentRange.trim());
    if (!m) throw new Error(`unexpected Content-Range ${JSON.stringify(contentRange)}`);
    start = Number(m[1]);
  }
  if (start > range.offset) throw new Error(`the service answered bytes from ${start}, not from ${range.offset}`);
  const from = range.offset - start;
  return bytes.subarray(from, from + range.length);
}
