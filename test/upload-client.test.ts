import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uploadTree, UploadFailedError, UploadInputError, type UploadDeps, type UploadOptions } from '../ingest/uploader/upload.js';
import { httpTransport } from '../ingest/uploader/transport.js';
import { CacheReader } from '../ingest/uploader/cache.js';
import { nodeTreeFs, type Problem, type TreeFs } from '../ingest/uploader/walk.js';
import { startContractServer, type ContractServer } from './upload-contract-server.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function write(root: string, rel: string, content: string | Buffer, mtime = new Date('2024-01-02T03:04:05.678Z')) {
  const abs = path.join(root, rel);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.writeFileSync(abs, content);
  fs.utimesSync(abs, mtime, mtime);
}

function copyTree(from: string, to: string) {
  fs.cpSync(from, to, { recursive: true, preserveTimestamps: true });
  // The samples are read-only; the copies must be writable for the tests that change them.
  const chmod = (d: string) => {
    fs.chmodSync(d, 0o755);
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) chmod(p);
      else fs.chmodSync(p, 0o644);
    }
  };
  chmod(to);
}

/** Counts the files the uploader opens for reading. */
function countingFs(): TreeFs & { opened: string[] } {
  const opened: string[] = [];
  return {
    ...nodeTreeFs,
    opened,
    open: (f) => {
      opened.push(f);
      return nodeTreeFs.open(f);
    },
  };
}

const fastRetry = { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 5, maxTotalMs: 10_000 };

describe('uploadTree against a server implementing PROTOCOL.md', () => {
  let server: ContractServer;
  let tmp: { dir: string; remove: () => void };
  let root: string;
  let opts: UploadOptions;
  let problems: Problem[];
  let notes: string[];
  let deps: (extra?: Partial<UploadDeps>) => UploadDeps;

  beforeEach(async () => {
    server = await startContractServer();
    tmp = tempDir('hakobune-upload-');
    root = path.join(tmp.dir, 'standard');
    copyTree(SAMPLES_ROOT, root);
    opts = { server: server.url, facilityId: server.facilityId, root, cacheFile: path.join(tmp.dir, 'cache', 'F001.cache'), retry: fastRetry };
    problems = [];
    notes = [];
    deps = (extra = {}) => ({
      transport: httpTransport({ server: server.url, token: server.token }),
      onProblem: (p) => problems.push(p),
      onNote: (n) => notes.push(n),
      ...extra,
    });
  });
  afterEach(async () => {
    await server.close();
    tmp.remove();
  });

  function snapshotMatchesDisk(snapshotId: string) {
    const snap = server.snapshots.get(snapshotId)!;
    const onDisk = new Map<string, string>();
    const walk = (d: string, rel: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(path.join(d, e.name), r);
        else if (e.isFile()) onDisk.set(`standard/${r}`, sha(fs.readFileSync(path.join(d, e.name))));
      }
    };
    walk(root, '');
    expect(new Map([...snap].map(([p, e]) => [p, e.sha256]))).toEqual(onDisk);
    for (const e of snap.values()) expect(sha(server.blobs.get(e.sha256)!)).toBe(e.sha256);
  }

  it('sends the whole sample tree, broken files included, and the bytes arrive intact', async () => {
    const s = await uploadTree(opts, deps());
    expect(s.files).toBe(22);
    expect(s.manifest).toBe('full');
    expect(s.hashedFiles).toBe(22);
    expect(s.blobsSent).toBe(new Set([...server.snapshots.get(s.snapshotId)!.values()].map((e) => e.sha256)).size);
    snapshotMatchesDisk(s.snapshotId);
    const mtime = server.snapshots.get(s.snapshotId)!.get('standard/999/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1')!.mtime;
    expect(mtime).toBe(Math.floor(fs.statSync(path.join(root, '999/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1')).mtimeMs));
    // The session and journal are gone; the cache names the snapshot.
    expect(fs.readdirSync(path.dirname(opts.cacheFile)).sort()).toEqual(['F001.cache']);
    const cache = await CacheReader.open(opts.cacheFile);
    expect(cache!.header.snapshotId).toBe(s.snapshotId);
    expect(cache!.totals.files).toBe(22);
    cache!.close();
  });

  it('backs up an empty file, with and without overlap', async () => {
    write(root, '999/901/9999013/-/ADT-00/empty', '');
    for (const overlap of [false, true]) {
      fs.rmSync(path.dirname(opts.cacheFile), { recursive: true, force: true });
      const s = await uploadTree({ ...opts, overlap }, deps());
      expect(server.snapshots.get(s.snapshotId)!.get('standard/999/901/9999013/-/ADT-00/empty')!.size).toBe(0);
      snapshotMatchesDisk(s.snapshotId);
    }
  });

  it('a second run of an unchanged tree reads no file and sends no blob and no entry', async () => {
    const first = await uploadTree(opts, deps());
    const arrivals = server.blobArrivals.length;
    const cfs = countingFs();
    const s = await uploadTree(opts, deps({ fs: cfs }));
    expect(cfs.opened).toEqual([]);
    expect(s.manifest).toBe('delta');
    expect(s.baseSnapshotId).toBe(first.snapshotId);
    expect(s.manifestEntries).toBe(0);
    expect(s.blobsSent).toBe(0);
    expect(server.blobArrivals.length).toBe(arrivals);
    expect(server.snapshots.get(s.snapshotId)).toEqual(server.snapshots.get(first.snapshotId));
  });

  it('a delta sends changed and added files, deletions, and no bytes for a _1 -> _2 rename', async () => {
    await uploadTree(opts, deps());
    const dir = path.join(root, '999/901/9999013/20111220/OMG-01');
    const old1 = path.join(dir, '9999013_20111220_OMG-01_000201101200100_20111220224447339_-_1');
    const renamed = old1.replace(/_1$/, '_2');
    fs.renameSync(old1, renamed);
    write(root, '999/901/9999013/20111220/OMG-01/9999013_20111220_OMG-01_000201101200100_20111221000000000_-_1', 'MSH|new version\r');
    fs.rmSync(path.join(root, '999/901/9999013/20111013'), { recursive: true });
    const arrivalsBefore = server.blobArrivals.length;
    const cfs = countingFs();
    const s = await uploadTree(opts, deps({ fs: cfs }));
    expect(s.manifest).toBe('delta');
    expect(s.renamedFiles).toBe(1);
    // Only the new file was read (hashed, then sent): the renamed one was recognised by inode, size and mtime.
    const added = '9999013_20111220_OMG-01_000201101200100_20111221000000000_-_1';
    expect(cfs.opened.map((f) => path.basename(f))).toEqual([added, added]);
    expect(s.blobsSent).toBe(1);
    expect(server.blobArrivals.slice(arrivalsBefore)).toEqual([sha('MSH|new version\r')]);
    // old name deleted, new name, new file, deleted OMD
    expect(s.deletedEntries).toBe(2);
    expect(s.manifestEntries).toBe(4);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('re-hashes a file whose mtime changed though its size did not', async () => {
    await uploadTree(opts, deps());
    const f = path.join(root, '999/901/9999013/20111013/OMD/9999013_20111013_OMD_123456789012345_20111014232213000_01_1');
    const st = fs.statSync(f);
    const bytes = fs.readFileSync(f);
    bytes[10] = bytes[10]! ^ 1; // same size, different content
    fs.writeFileSync(f, bytes);
    fs.utimesSync(f, st.atime, new Date(st.mtimeMs + 2000));
    const cfs = countingFs();
    const s = await uploadTree(opts, deps({ fs: cfs }));
    expect(cfs.opened).toEqual([f, f]); // hashed in the scan, read again to send
    expect(s.manifestEntries).toBe(1);
    snapshotMatchesDisk(s.snapshotId);
    // With overlap, sent from the bytes the scan read.
    bytes[10] = bytes[10]! ^ 2;
    fs.writeFileSync(f, bytes);
    fs.utimesSync(f, st.atime, new Date(st.mtimeMs + 4000));
    const once = countingFs();
    const s2 = await uploadTree({ ...opts, overlap: true }, deps({ fs: once }));
    expect(once.opened).toEqual([f]);
    snapshotMatchesDisk(s2.snapshotId);
    // Without kept bytes, read again to send.
    bytes[10] = bytes[10]! ^ 4;
    fs.writeFileSync(f, bytes);
    fs.utimesSync(f, st.atime, new Date(st.mtimeMs + 6000));
    const twice = countingFs();
    const s3 = await uploadTree({ ...opts, overlap: true, keepBytesUpTo: 0 }, deps({ fs: twice }));
    expect(twice.opened).toEqual([f, f]);
    snapshotMatchesDisk(s3.snapshotId);
  });

  it('a touched file (mtime only) is re-read but sends no bytes', async () => {
    await uploadTree(opts, deps());
    const f = path.join(root, '999/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1');
    fs.utimesSync(f, new Date(), new Date('2030-01-01T00:00:00Z'));
    const cfs = countingFs();
    const arrivals = server.blobArrivals.length;
    const s = await uploadTree(opts, deps({ fs: cfs }));
    expect(cfs.opened).toEqual([f]);
    expect(s.manifestEntries).toBe(1);
    expect(server.blobArrivals.length).toBe(arrivals);
    expect(server.snapshots.get(s.snapshotId)!.get(`standard/999/901/9999013/-/ADT-00/${path.basename(f)}`)!.mtime).toBe(Date.parse('2030-01-01T00:00:00Z'));
  });

  it('falls back to a full manifest when the base is not the latest snapshot (409)', async () => {
    await uploadTree(opts, deps());
    // Another client commits a snapshot: the cache's base is now stale.
    const other = path.join(tmp.dir, 'other.cache');
    await uploadTree({ ...opts, cacheFile: other }, deps());
    write(root, '999/901/9999013/-/ADT-61/extra', 'x');
    const s = await uploadTree(opts, deps());
    expect(s.manifest).toBe('full');
    expect(s.manifestEntries).toBe(23);
    expect(notes.some((n) => /not the facility's latest/.test(n))).toBe(true);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('sends the manifest in batches of at most the batch size and blobs in bounded batches', async () => {
    const s = await uploadTree({ ...opts, manifestBatch: 5, blobBatchBytes: 8192 }, deps());
    expect(server.log.filter((l) => /manifest 200/.test(l)).length).toBe(Math.ceil(22 / 5));
    expect(server.log.filter((l) => /blobs 200/.test(l)).length).toBeGreaterThan(1);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('retries 503 and 429 with backoff, then succeeds', async () => {
    server.faults.push({ method: 'POST', path: /manifest$/, times: 3, action: { status: 503 } });
    server.faults.push({ method: 'POST', path: /blobs$/, times: 1, action: { status: 429, retryAfter: 0 } });
    const sleeps: number[] = [];
    const s = await uploadTree(opts, deps({ sleep: async (ms) => void sleeps.push(ms), random: () => 1 }));
    expect(server.log.filter((l) => / 503$/.test(l)).length).toBe(3);
    // Full jitter with random() = 1: the caps, doubling from the base delay.
    expect(sleeps.slice(0, 3)).toEqual([1, 2, 4]);
    expect(notes.filter((n) => /retry/.test(n)).length).toBe(4);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('gives up after the bounded attempts with a message that says re-running resumes', async () => {
    server.faults.push({ method: 'POST', path: /commit$/, times: 100, action: { status: 502 } });
    const err = await uploadTree(opts, deps()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadFailedError);
    expect((err as Error).message).toMatch(/commit: the exchange answered 502.*gave up after 5 attempts.*again resumes/);
    expect(server.log.filter((l) => /commit 502/.test(l)).length).toBe(5);
    // The session is kept: the next run resumes and only commits.
    server.faults.length = 0;
    const arrivals = server.blobArrivals.length;
    const s = await uploadTree(opts, deps());
    expect(s.resumed).toBe(true);
    expect(s.scan).toBe('none');
    expect(server.blobArrivals.length).toBe(arrivals);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('does not retry a 401 and says the token was refused', async () => {
    const err = await uploadTree(opts, { ...deps(), transport: httpTransport({ server: server.url, token: 'wrong' }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadInputError);
    expect((err as Error).message).toMatch(/refused the uploader token for facility F001 \(401\)/);
    expect(server.log.filter((l) => / 401$/.test(l)).length).toBe(1);
  });

  it('does not resend a manifest batch whose answer was lost, and still gets every blob across', async () => {
    server.faults.push({ method: 'POST', path: /manifest$/, times: 1, action: { drop: true } });
    const s = await uploadTree(opts, deps());
    expect(server.log.filter((l) => /manifest 400/.test(l))).toEqual([]);
    expect(server.log.filter((l) => /manifest 200/.test(l)).length).toBe(1);
    // The lost "missing" answer is recovered from the commit's 409.
    expect(server.log.some((l) => /commit 409/.test(l))).toBe(true);
    expect(new Set(server.blobArrivals).size).toBe(server.blobArrivals.length);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('reads the next blob batch while one is in flight, and a run that fails mid-way resumes without resending', async () => {
    const http = httpTransport({ server: server.url, token: server.token });
    let blobCalls = 0;
    const transport = {
      ...http,
      blobs: (id: string, body: Buffer) => {
        // From the third batch on, the exchange fails for good: the run gives up with batches already stored.
        if (++blobCalls === 3) server.faults.push({ method: 'POST', path: /blobs$/, times: 1000, action: { status: 502 } });
        return http.blobs(id, body);
      },
    };
    const small = { ...opts, manifestBatch: 5, blobBatchBytes: 12_000 };
    const err = await uploadTree(small, deps({ transport })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadFailedError);

    const stored = server.blobArrivals.length;
    expect(stored).toBeGreaterThanOrEqual(2);
    server.faults.length = 0;
    const s = await uploadTree(small, deps());
    expect(s.resumed).toBe(true);
    expect(server.blobArrivals.length).toBeGreaterThan(stored);
    // Every blob crossed exactly once over both runs.
    expect(new Set(server.blobArrivals).size).toBe(server.blobArrivals.length);
    expect(problems).toEqual([]);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('starts over when a file changes between the scan and reading it again to send its bytes', async () => {
    const f = path.join(root, '999/901/9999013/20111013/OMD/9999013_20111013_OMD_123456789012345_20111014232213000_01_1');
    let changed = false;
    server.faults.push({
      method: 'POST',
      path: /manifest$/,
      times: 1,
      action: { status: 503 },
      onFire: () => {
        if (changed) return;
        changed = true;
        write(root, path.relative(root, f), 'changed after the scan', new Date('2025-05-05T00:00:00Z'));
      },
    });
    const s = await uploadTree(opts, deps());
    expect(notes.some((n) => /OMD_123456789012345_20111014232213000_01_1: the file is now .*; starting the upload over/.test(n))).toBe(true);
    expect([...server.uploads.values()].map((u) => u.state)).toEqual(['aborted', 'committed']);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('with overlap, sends the bytes the scan hashed when the file changes before they are sent, and the next run the new version', async () => {
    const rel = '999/901/9999013/20111013/OMD/9999013_20111013_OMD_123456789012345_20111014232213000_01_1';
    const scanned = fs.readFileSync(path.join(root, rel));
    server.faults.push({
      method: 'POST',
      path: /manifest$/,
      times: 1,
      action: { status: 503 },
      onFire: () => write(root, rel, 'changed after the scan', new Date('2025-05-05T00:00:00Z')),
    });
    const s = await uploadTree({ ...opts, overlap: true }, deps());
    expect([...server.uploads.values()].map((u) => u.state)).toEqual(['committed']);
    // The snapshot is the tree as scanned: that file's entry and blob are its bytes before the change.
    const e = server.snapshots.get(s.snapshotId)!.get(`standard/${rel}`)!;
    expect(e.sha256).toBe(sha(scanned));
    expect(server.blobs.get(e.sha256)!.equals(scanned)).toBe(true);
    const next = await uploadTree(opts, deps());
    expect(next.manifestEntries).toBe(1);
    snapshotMatchesDisk(next.snapshotId);
  });

  it('with overlap, sends manifest batches and blobs while the scan is still running', async () => {
    const http = httpTransport({ server: server.url, token: server.token });
    const seen: { nextExists: boolean; partialExists: boolean }[] = [];
    const transport = {
      ...http,
      manifest: (id: string, entries: Parameters<typeof http.manifest>[1]) => {
        seen.push({ nextExists: fs.existsSync(`${opts.cacheFile}.next`), partialExists: fs.existsSync(`${opts.cacheFile}.next.partial`) });
        return http.manifest(id, entries);
      },
    };
    const s = await uploadTree({ ...opts, manifestBatch: 2, overlap: true }, deps({ transport }));
    expect(seen.length).toBe(11);
    // The first batches went out before the scan had written its cache.
    expect(seen[0]).toEqual({ nextExists: false, partialExists: true });
    expect(s.hashedFiles).toBe(22);
    snapshotMatchesDisk(s.snapshotId);
  });

  /** A first upload whose exchange fails for good from the second manifest batch on, while the scan runs. */
  async function failDuringScan(small: UploadOptions) {
    const http = httpTransport({ server: server.url, token: server.token });
    let calls = 0;
    const transport = {
      ...http,
      manifest: (id: string, entries: Parameters<typeof http.manifest>[1]) => {
        if (++calls === 2) server.faults.push({ method: 'POST', path: /manifest$/, times: 1000, action: { status: 502 } });
        return http.manifest(id, entries);
      },
    };
    const err = await uploadTree(small, deps({ transport })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UploadFailedError);
    server.faults.length = 0;
    // Interrupted while scanning: the session has no finished scan, the cache is not written.
    const session = JSON.parse(fs.readFileSync(`${small.cacheFile}.session`, 'utf8')) as { next: unknown; uploadId: string };
    expect(session.next).toBeNull();
    expect(fs.existsSync(`${small.cacheFile}.next`)).toBe(false);
    expect(server.uploads.get(session.uploadId)!.received).toBe(2);
  }

  it('resumes an upload interrupted during its scan: scans again and resends no entry and no blob', async () => {
    const small = { ...opts, manifestBatch: 2, overlap: true };
    await failDuringScan(small);
    const arrivals = server.blobArrivals.length;
    const s = await uploadTree(small, deps());
    expect(s).toMatchObject({ resumed: true, scan: 'full', files: 22, manifestEntries: 22 });
    expect(notes.some((n) => /its scan did not finish: scanning again/.test(n))).toBe(true);
    expect(server.log.filter((l) => /manifest 400/.test(l))).toEqual([]);
    expect([...server.uploads.values()].map((u) => u.state)).toEqual(['committed']);
    expect(server.blobArrivals.length).toBeGreaterThan(arrivals);
    expect(new Set(server.blobArrivals).size).toBe(server.blobArrivals.length);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('starts over when the tree changed under the entries an interrupted scan had sent', async () => {
    const small = { ...opts, manifestBatch: 2, overlap: true };
    await failDuringScan(small);
    // Change a file whose entry the exchange already has.
    const first = [...[...server.uploads.values()][0]!.entries.keys()][0]!;
    write(root, first.slice('standard/'.length), 'changed before the resumed run', new Date('2025-06-06T00:00:00Z'));
    const s = await uploadTree(small, deps());
    expect(notes.some((n) => /the tree changed since the interrupted upload sent its first 2 manifest entries; starting the upload over/.test(n))).toBe(true);
    expect([...server.uploads.values()].map((u) => u.state)).toEqual(['aborted', 'committed']);
    snapshotMatchesDisk(s.snapshotId);
  });

  it('reports symlinks and special files instead of skipping them silently', async () => {
    fs.symlinkSync('/etc/passwd', path.join(root, '999/901/9999013/-/ADT-00/link'));
    fs.symlinkSync('/etc', path.join(root, '999/901/linkdir'));
    const s = await uploadTree(opts, deps());
    expect(problems.map((p) => [p.kind, p.path]).sort()).toEqual([
      ['symlink', 'standard/999/901/9999013/-/ADT-00/link'],
      ['symlink', 'standard/999/901/linkdir'],
    ]);
    expect(s.problems).toEqual({ symlink: 2 });
    expect(s.files).toBe(22);
  });

  it('backs up an extended storage root beside the standard one', async () => {
    const ext = path.join(tmp.dir, 'ext');
    write(ext, '999/901/9999013/20111220/L-OBSERVATIONS^OBSERVATIONS^99ZL01/9999013_20111220_OMG-13_1_20111220224447339_01_1/main_document.hl7', 'MSH|x\r');
    const s = await uploadTree({ ...opts, extended: ext }, deps());
    const paths = [...server.snapshots.get(s.snapshotId)!.keys()];
    expect(paths.filter((p) => p.startsWith('extended/'))).toEqual([
      'extended/999/901/9999013/20111220/L-OBSERVATIONS^OBSERVATIONS^99ZL01/9999013_20111220_OMG-13_1_20111220224447339_01_1/main_document.hl7',
    ]);
    expect(paths.filter((p) => p.startsWith('standard/')).length).toBe(22);
  });

  it('reports a file too large for one blob batch instead of failing the upload', async () => {
    write(root, '999/901/9999013/-/ADT-00/big', Buffer.alloc(9000, 1));
    const s = await uploadTree({ ...opts, blobBatchBytes: 8192 }, deps());
    expect(problems).toEqual([expect.objectContaining({ kind: 'too-large', path: 'standard/999/901/9999013/-/ADT-00/big' })]);
    expect(s.files).toBe(22);
  });

  it('refuses bad input before touching the exchange', async () => {
    await expect(uploadTree({ ...opts, root: path.join(tmp.dir, 'nope') }, deps())).rejects.toThrow(/--root .*no such folder/);
    await expect(uploadTree({ ...opts, facilityId: '../x' }, deps())).rejects.toBeInstanceOf(UploadInputError);
    await expect(uploadTree({ ...opts, extended: path.join(root, '999') }, deps())).rejects.toThrow(/separate folders/);
    await expect(uploadTree({ ...opts, facilityId: 'F002' }, deps())).rejects.toThrow(/refused the uploader token for facility F002 \(403\)/);
    expect(server.log.filter((l) => !/ 403$/.test(l))).toEqual([]);
  });

  it('refuses to run beside another uploader of the same cache, and takes over a dead one\'s lock', async () => {
    fs.mkdirSync(path.dirname(opts.cacheFile), { recursive: true });
    fs.writeFileSync(`${opts.cacheFile}.lock`, `${process.ppid}\n`);
    await expect(uploadTree(opts, deps())).rejects.toThrow(new RegExp(`another upload with the cache .* is running \\(process ${process.ppid}\\)`));
    expect(server.log).toEqual([]);
    fs.writeFileSync(`${opts.cacheFile}.lock`, '2147483646\n');
    const s = await uploadTree(opts, deps());
    expect(s.files).toBe(22);
    expect(fs.existsSync(`${opts.cacheFile}.lock`)).toBe(false);
  });

  it('rebuilds a damaged cache with a full scan instead of trusting it', async () => {
    await uploadTree(opts, deps());
    const text = fs.readFileSync(opts.cacheFile, 'utf8');
    fs.writeFileSync(opts.cacheFile, text.slice(0, text.length - 30));
    const s = await uploadTree(opts, deps());
    expect(notes.some((n) => /damaged \(no end marker/.test(n))).toBe(true);
    expect(s.manifest).toBe('full');
    expect(s.hashedFiles).toBe(22);
    snapshotMatchesDisk(s.snapshotId);
  });
});
