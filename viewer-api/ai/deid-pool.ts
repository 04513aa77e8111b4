import os from 'node:os';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import type { WorkerIn } from './deid-worker.js';
import type { PseudonymEntry } from './deidentify.js';
import { PatientBundleCache, type PatientRecords, type Prepared, type PrepareRequest, type Sealer } from './prepare.js';

/**
 * Where AI requests are prepared (records -> FHIR Bundle -> de-identified JSON): a pool of
 * worker threads, so that this CPU work never holds the event loop that serves the viewer, or,
 * without workers (tests, a one-core machine if asked), the caller's thread. Each worker keeps
 * its own cache of patients' mapped Bundles; a patient always goes to the same worker (by its
 * cache key), so a patient asked about again is not mapped again.
 *
 * A worker that dies (out of memory, a crash) or does not answer within `timeoutMs` fails the
 * requests it held with a PreparationError (a clear status for the clinician, never a hang) and
 * is replaced on the next request.
 */
export interface Preparer {
  readonly kind: 'worker-threads' | 'inline';
  /** `load` reads the patient's records: called only when they are not cached. */
  prepare(req: PrepareRequest, load: () => Promise<PatientRecords>): Promise<Prepared>;
  close(): Promise<void>;
}

export class PreparationError extends Error {
  override name = 'PreparationError';
}

/** Worker threads by default: the machine's cores less one (the event loop's), at least one. */
export const defaultPreparerThreads = () => Math.max(1, os.availableParallelism() - 1);

export function createInlinePreparer(secret: Uint8Array, capacity?: number, sealer?: Sealer): Preparer {
  const cache = new PatientBundleCache(secret, capacity, sealer);
  return {
    kind: 'inline',
    async prepare(req, load) {
      const hit = cache.prepare(req);
      if (hit) return hit;
      cache.load(req, await load());
      return cache.prepare(req)!;
    },
    async close() {},
  };
}

type Reply = { id: number; prepared: Prepared } | { id: number; miss: true } | { id: number; error: string };

class Slot {
  private worker: Worker | undefined;
  private next = 0;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    private readonly opts: { secret: Uint8Array; capacity?: number; keyFile?: string; timeoutMs: number; resourceLimits?: ResourceLimits },
  ) {}

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./deid.worker.mjs', import.meta.url), {
      workerData: { secret: this.opts.secret, capacity: this.opts.capacity, keyFile: this.opts.keyFile },
      ...(this.opts.resourceLimits ? { resourceLimits: this.opts.resourceLimits } : {}),
    });
    w.unref();
    w.on('message', (m: Reply | { ready: true }) => {
      if (!('id' in m)) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m);
    });
    w.on('error', (e) => this.fail(w, `the de-identification worker failed: ${e.message}`));
    w.on('exit', (code) => this.fail(w, `the de-identification worker stopped (exit code ${code})`));
    this.worker = w;
    return w;
  }

  /** Fails everything the worker held; the next request starts a new one. */
  private fail(w: Worker, message: string): void {
    if (this.worker !== w) return;
    this.worker = undefined;
    void w.terminate().catch(() => undefined);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new PreparationError(message));
    }
    this.pending.clear();
  }

  ask(msg: Omit<WorkerIn, 'id'>): Promise<Reply> {
    const w = this.start();
    const id = this.next++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(w, `the de-identification worker did not answer within ${this.opts.timeoutMs} ms`), this.opts.timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
      try {
        w.postMessage({ id, ...msg } satisfies WorkerIn);
      } catch (e) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new PreparationError(`the request could not be handed to the de-identification worker: ${(e as Error).message}`));
      }
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    if (w) {
      this.fail(w, 'the de-identification workers were stopped');
      await w.terminate().catch(() => undefined);
    }
  }
}

function unwrap(r: Reply): Prepared | undefined {
  if ('error' in r) throw new PreparationError(`de-identification failed: ${r.error}`);
  return 'miss' in r ? undefined : r.prepared;
}

/** FNV-1a: the same patient always to the same worker. */
function slotOf(key: string, n: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % n;
}

export function createWorkerPreparer(opts: {
  secret: Uint8Array;
  /** The exchange's secret key file: the workers seal re-identification keys (PrepareRequest.seal). */
  keyFile?: string;
  threads?: number;
  /** Patients cached per worker. */
  capacity?: number;
  timeoutMs?: number;
  resourceLimits?: ResourceLimits;
}): Preparer {
  const n = opts.threads ?? defaultPreparerThreads();
  if (!Number.isInteger(n) || n < 1) throw new Error('the de-identification pool needs at least one thread');
  const slots = Array.from({ length: n }, () => new Slot({ secret: opts.secret, capacity: opts.capacity, keyFile: opts.keyFile, timeoutMs: opts.timeoutMs ?? 60_000, resourceLimits: opts.resourceLimits }));
  // The pseudonyms of each patient's key are the same request after request: a worker sends
  // them once, and this thread keeps them (by cache key and birth-date need; at most 1024).
  const pseudonyms = new Map<string, { id: string; entries: Record<string, PseudonymEntry> }>();
  const ask = async (slot: Slot, req: PrepareRequest, records?: PatientRecords): Promise<Prepared | undefined> => {
    const k = `${req.cacheKey}\u0000${req.birthDate}`;
    const held = pseudonyms.get(k);
    const got = unwrap(await slot.ask({ request: { ...req, pseudonymsHeld: held?.id }, ...(records ? { records } : {}) }));
    if (!got) return undefined;
    let entries = got.key.pseudonyms;
    if (held && got.pseudonymsId === held.id) entries = held.entries;
    else {
      pseudonyms.delete(k);
      pseudonyms.set(k, { id: got.pseudonymsId, entries });
      if (pseudonyms.size > 1024) pseudonyms.delete(pseudonyms.keys().next().value!);
    }
    // Structured clone gives Uint8Arrays: Buffers again, over the same memory.
    const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
    return {
      ...got,
      body: { ...got.body, bytes: buf(got.body.bytes) },
      key: { ...got.key, pseudonyms: entries },
      ...(got.sealedKey ? { sealedKey: buf(got.sealedKey) } : {}),
    };
  };
  // One load of a patient's records at a time per cache key: a burst of requests for the same
  // patient maps its records once.
  const loading = new Map<string, Promise<Prepared | undefined>>();
  let closed = false;
  return {
    kind: 'worker-threads',
    async prepare(req, load) {
      if (closed) throw new PreparationError('the de-identification workers were stopped');
      const slot = slots[slotOf(req.cacheKey, n)]!;
      const first = await ask(slot, req);
      if (first) return first;
      const running = loading.get(req.cacheKey);
      if (!running) {
        const p = (async () => ask(slot, req, await load()))();
        loading.set(req.cacheKey, p);
        const done = () => {
          if (loading.get(req.cacheKey) === p) loading.delete(req.cacheKey);
        };
        p.then(done, done);
        return (await p)!;
      }
      await running.catch(() => undefined);
      const again = await ask(slot, req);
      if (again) return again;
      return (await ask(slot, req, await load()))!;
    },
    async close() {
      closed = true;
      await Promise.all(slots.map((s) => s.close()));
    },
  };
}
