import { Worker } from 'node:worker_threads';
import type { SerialisedOutcome } from './read.js';

/**
 * Reading (decode, parse, checks, mapping) and the JSON of the records on worker threads, so
 * that indexing uses every core: on the indexing thread alone it is the slowest step of the
 * pipeline (bench/README.md#indexing). A page is cut into one slice per worker; results come
 * back in file order. The bytes of a slice travel in one transferred buffer (no copy).
 */
export interface ReadItem {
  path: string;
  sha256: string;
  bytes: Uint8Array;
}

export interface ReadPool {
  readonly size: number;
  read(facilityId: string, files: readonly ReadItem[]): Promise<SerialisedOutcome[]>;
  /** Ends the workers; safe to call twice. */
  close(): Promise<void>;
}

export interface SliceRequest {
  id: number;
  facilityId: string;
  paths: string[];
  sha256s: string[];
  /** End offsets of each file's bytes in `bytes`. */
  ends: number[];
  bytes: ArrayBuffer;
}

export type SliceReply = { id: number; outcomes: SerialisedOutcome[] } | { id: number; error: string };

export function createReadPool(size: number): ReadPool {
  if (!Number.isInteger(size) || size < 1) throw new Error(`a read pool needs at least one worker (got ${size})`);
  const pending = new Map<number, { resolve: (o: SerialisedOutcome[]) => void; reject: (e: Error) => void }>();
  let next = 0;
  let closed = false;
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  const workers = Array.from({ length: size }, () => {
    // A plain JavaScript entry that loads the TypeScript reader through tsx itself, so the
    // worker starts the same way under the CLI, the tests and the benches.
    // A larger young generation: reading a page allocates much short-lived garbage (split
    // strings, mapped objects turned into JSON), which then dies young instead of being promoted.
    const w = new Worker(new URL('./read.worker.mjs', import.meta.url), { execArgv: [], resourceLimits: { maxYoungGenerationSizeMb: 96 } });
    w.on('message', (m: SliceReply) => {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (!p) return;
      if ('error' in m) p.reject(new Error(m.error));
      else p.resolve(m.outcomes);
    });
    w.on('error', (e) => failAll(e));
    w.on('exit', (code) => {
      if (!closed) failAll(new Error(`a record reading worker stopped (exit ${code})`));
    });
    return w;
  });

  const readSlice = (w: Worker, facilityId: string, files: readonly ReadItem[]) =>
    new Promise<SerialisedOutcome[]>((resolve, reject) => {
      if (closed) return reject(new Error('the read pool is closed'));
      const id = next++;
      let total = 0;
      for (const f of files) total += f.bytes.byteLength;
      const bytes = new Uint8Array(total);
      const ends: number[] = [];
      let at = 0;
      for (const f of files) {
        bytes.set(f.bytes, at);
        at += f.bytes.byteLength;
        ends.push(at);
      }
      pending.set(id, { resolve, reject });
      const req: SliceRequest = { id, facilityId, paths: files.map((f) => f.path), sha256s: files.map((f) => f.sha256), ends, bytes: bytes.buffer };
      w.postMessage(req, [bytes.buffer]);
    });

  return {
    size,
    async read(facilityId, files) {
      const per = Math.ceil(files.length / size);
      const slices: Promise<SerialisedOutcome[]>[] = [];
      for (let i = 0; i < size && i * per < files.length; i++) slices.push(readSlice(workers[i]!, facilityId, files.slice(i * per, (i + 1) * per)));
      return (await Promise.all(slices)).flat();
    },
    async close() {
      if (closed) return;
      closed = true;
      failAll(new Error('the read pool is closed'));
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
