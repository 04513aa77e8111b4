import os from 'node:os';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { LocalSendError } from './ai-client.js';
import type { WorkerIn } from './deid-worker.js';
import type { PseudonymEntry } from './deidentify.js';
import { failureError, type PostAnswer, type PostFailure, type PostTarget } from './fhir-post.js';
import { PatientBundleCache, type HeldBody, type PatientRecords, type Prepared, type PrepareRequest, type Sealer } from './prepare.js';

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
  /**
   * As prepare, but the body stays in the worker thread that made it, which sends it when asked
   * (HeldBody): the bytes and the call's HTTP work never reach the caller's event loop. Worker
   * pools only.
   */
  prepareHeld?(req: PrepareRequest, load: () => Promise<PatientRecords>): Promise<Prepared<HeldBody>>;
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

/** A held body as the worker answers it: its bytes stay there, under `handle`. */
type HeldReply = Omit<HeldBody, 'held' | 'post' | 'release'> & { handle: number };
type Reply =
  | { id: number; prepared: Prepared | Prepared<HeldReply> }
  | { id: number; miss: true }
  | { id: number; error: string }
  | { id: number; answer: PostAnswer }
  | { id: number; failure: PostFailure };
type Ask = Extract<WorkerIn, { id: number }> extends infer M ? (M extends unknown ? Omit<M, 'id'> : never) : never;

class Slot {
  private worker: Worker | undefined;
  /** Counts the workers this slot started: a held body belongs to one of them only. */
  generation = 0;
  private next = 0;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    private readonly opts: { secret: Uint8Array; capacity?: number; keyFile?: string; timeoutMs: number; resourceLimits?: ResourceLimits },
  ) {}

  private start(): Worker {
    if (this.worker) return this.worker;
    this.generation++;
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

  /**
   * `timeoutMs`: this message's own limit (a post waits for the service), else the pool's.
   * `sent`: told the message's id and the generation of the worker it went to.
   */
  ask(msg: Ask, timeoutMs = this.opts.timeoutMs, sent?: (id: number, generation: number) => void): Promise<Reply> {
    const w = this.start();
    const id = this.next++;
    sent?.(id, this.generation);
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(w, `the de-identification worker did not answer within ${timeoutMs} ms`), timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
      this.post({ id, ...msg } as WorkerIn);
    });
  }

  private post(msg: WorkerIn): void {
    try {
      this.worker!.postMessage(msg);
    } catch (e) {
      if (!('id' in msg)) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (p) clearTimeout(p.timer);
      p?.reject(new PreparationError(`the request could not be handed to the de-identification worker: ${(e as Error).message}`));
    }
  }

  /** A message with no answer, to the running worker of `generation` only (a replaced one held nothing of the new one's). */
  tell(generation: number, msg: Extract<WorkerIn, { abort: number } | { release: number }>): void {
    if (this.runs(generation)) this.post(msg);
  }

  /** Whether the worker of `generation` is the one running. */
  runs(generation: number): boolean {
    return !!this.worker && this.generation === generation;
  }

  async close(): Promise<void> {
    const w = this.worker;
    if (w) {
      this.fail(w, 'the de-identification workers were stopped');
      await w.terminate().catch(() => undefined);
    }
  }
}

function unwrap(r: Reply): Prepared | Prepared<HeldReply> | undefined {
  if ('error' in r) throw new PreparationError(`de-identification failed: ${r.error}`);
  if ('miss' in r) return undefined;
  if (!('prepared' in r)) throw new PreparationError('the de-identification worker answered out of turn');
  return r.prepared;
}

/** The post's answer, or its failure as fhir-kit-client would throw it; a worker that fails is the exchange's trouble (LocalSendError). */
async function postFrom(slot: Slot, generation: number, handle: number, target: PostTarget, headers: Record<string, string>, signal?: AbortSignal): Promise<PostAnswer> {
  if (!slot.runs(generation)) throw new LocalSendError('the de-identification worker that held the request body stopped');
  let id = -1;
  // The worker's own timeout (target.timeoutMs) ends the call first; this one is for a worker that hangs.
  const asked = slot.ask({ post: { handle, target, headers } }, target.timeoutMs + 30_000, (i) => (id = i));
  const onAbort = () => slot.tell(generation, { abort: id });
  // A signal that aborted before the post went is passed on as well (as fhir-post.ts does in one thread).
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const r = await asked.catch((e: unknown) => {
      throw new LocalSendError(e instanceof Error ? e.message : String(e));
    });
    if ('answer' in r) return r.answer;
    if ('failure' in r) throw failureError(r.failure);
    throw new LocalSendError('error' in r ? r.error : 'the de-identification worker answered out of turn');
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
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
  const ask = async (slot: Slot, req: PrepareRequest, records: PatientRecords | undefined, hold: boolean): Promise<Prepared | Prepared<HeldBody> | undefined> => {
    const k = `${req.cacheKey}\u0000${req.birthDate}`;
    const held = pseudonyms.get(k);
    let owner = 0;
    const got = unwrap(await slot.ask({ request: { ...req, pseudonymsHeld: held?.id }, ...(records ? { records } : {}), ...(hold ? { hold } : {}) }, undefined, (_, g) => (owner = g)));
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
    const rest = { ...got, key: { ...got.key, pseudonyms: entries }, ...(got.sealedKey ? { sealedKey: buf(got.sealedKey) } : {}) };
    if ('bytes' in got.body) return { ...rest, body: { ...got.body, bytes: buf(got.body.bytes) } };
    const { handle, sha256, byteLength, operation } = got.body;
    // Only the worker that made it (`owner`) holds it: a replacement is never asked for it.
    let released = false;
    const body: HeldBody = {
      held: true,
      sha256,
      byteLength,
      operation,
      post: async (target, headers, signal) => {
        if (released) throw new LocalSendError('the request body was released');
        const answer = await postFrom(slot, owner, handle, target, headers, signal);
        // The worker let the body go with its answer.
        released = true;
        return answer;
      },
      release: () => {
        if (released) return;
        released = true;
        slot.tell(owner, { release: handle });
      },
    };
    return { ...rest, body };
  };
  // One load of a patient's records at a time per cache key: a burst of requests for the same
  // patient maps its records once.
  const loading = new Map<string, Promise<Prepared | Prepared<HeldBody> | undefined>>();
  let closed = false;
  const prepareIn = async (req: PrepareRequest, load: () => Promise<PatientRecords>, hold: boolean) => {
    if (closed) throw new PreparationError('the de-identification workers were stopped');
    const slot = slots[slotOf(req.cacheKey, n)]!;
    const first = await ask(slot, req, undefined, hold);
    if (first) return first;
    const running = loading.get(req.cacheKey);
    if (!running) {
      const p = (async () => ask(slot, req, await load(), hold))();
      loading.set(req.cacheKey, p);
      const done = () => {
        if (loading.get(req.cacheKey) === p) loading.delete(req.cacheKey);
      };
      p.then(done, done);
      return (await p)!;
    }
    await running.catch(() => undefined);
    const again = await ask(slot, req, undefined, hold);
    if (again) return again;
    return (await ask(slot, req, await load(), hold))!;
  };
  return {
    kind: 'worker-threads',
    prepare: (req, load) => prepareIn(req, load, false) as Promise<Prepared>,
    prepareHeld: (req, load) => prepareIn(req, load, true) as Promise<Prepared<HeldBody>>,
    async close() {
      closed = true;
      await Promise.all(slots.map((s) => s.close()));
    },
  };
}
