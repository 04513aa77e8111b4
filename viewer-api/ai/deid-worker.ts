import { parentPort, workerData } from 'node:worker_threads';
import { SecretBox } from '../auth/secret-box.js';
import { failureOf, FhirPoster, type PostTarget } from './fhir-post.js';
import { PatientBundleCache, type PatientRecords, type PrepareRequest } from './prepare.js';

/**
 * The body of a de-identification worker thread. Protocol (structured clone):
 *   in:  { id, request: PrepareRequest, records?, hold? }
 *   out: { id, prepared } | { id, miss: true } | { id, error }
 * A request without records is answered `miss` when the patient's Bundle is not cached here;
 * the pool then sends it again with the records. With `hold`, the body's bytes stay here under a
 * handle (prepared.body is then `{ handle, sha256, byteLength, operation }`), and this thread
 * sends them when asked:
 *   in:  { id, post: { handle, target, headers } }  out: { id, answer } | { id, failure } | { id, error }
 *        (after an answer the body is let go: a request is not sent again once answered)
 *   in:  { abort: id }       the post `id` is cancelled (its caller gave up)
 *   in:  { release: handle } the body is no longer needed
 * workerData: { secret, capacity, keyFile? } (the exchange's secret key file: re-identification
 * keys are sealed here).
 */
export type WorkerIn =
  | { id: number; request: PrepareRequest; records?: PatientRecords; hold?: boolean }
  | { id: number; post: { handle: number; target: PostTarget; headers: Record<string, string> } }
  | { abort: number }
  | { release: number };

/**
 * Milliseconds of preparations in one turn of the worker's event loop before its I/O gets a turn.
 * Measured (bench/README.md, eleventh round): one preparation a turn left the queue of them long
 * (the Bundle ready p95 ~30 ms), no turns left the answers waiting (the service's p95 +20 ms).
 */
const PREPARE_TURN_MS = 1;

/** Bodies held at most; beyond it the oldest is dropped (its request then fails clearly, nothing leaks). */
const MAX_HELD = 4096;

export function serveDeidentification(): void {
  const port = parentPort;
  if (!port) throw new Error('serveDeidentification runs in a worker thread');
  const { secret, capacity, keyFile } = workerData as { secret: Uint8Array; capacity?: number; keyFile?: string };
  const cache = new PatientBundleCache(secret, capacity, keyFile ? SecretBox.fromKeyFile(keyFile) : undefined);
  const poster = new FhirPoster();
  const held = new Map<number, Uint8Array>();
  const posting = new Map<number, AbortController>();
  let nextHandle = 1;

  async function post(id: number, m: { handle: number; target: PostTarget; headers: Record<string, string> }): Promise<void> {
    const bytes = held.get(m.handle);
    if (!bytes) return port!.postMessage({ id, error: 'the request body is no longer held by its de-identification worker' });
    const abort = new AbortController();
    posting.set(id, abort);
    const started = performance.now();
    const took = () => Math.round((performance.now() - started) * 10) / 10;
    try {
      const answer = await poster.post(m.target, bytes, m.headers, abort.signal);
      // An answer ends the request's calls (it is never sent again after one): the body goes now,
      // without a release message.
      held.delete(m.handle);
      port!.postMessage({ id, answer: { ...answer, ms: took() } });
    } catch (e) {
      port!.postMessage({ id, failure: failureOf(e, took()) });
    } finally {
      posting.delete(id);
    }
  }

  // Preparations take turns of about PREPARE_TURN_MS, with the thread's I/O between them: an answer
  // to a call in flight (see post) waits for one such turn, not for a whole burst of preparations.
  const preparing: Extract<WorkerIn, { request: PrepareRequest }>[] = [];
  const drain = () => {
    const until = performance.now() + PREPARE_TURN_MS;
    do {
      const m = preparing.shift();
      if (m) prepare(m);
    } while (preparing.length && performance.now() < until);
    if (preparing.length) setImmediate(drain);
  };
  port.on('message', (m: WorkerIn) => {
    if ('abort' in m) return posting.get(m.abort)?.abort(new DOMException('cancelled by the caller', 'AbortError'));
    if ('release' in m) return void held.delete(m.release);
    if ('post' in m) return void post(m.id, m.post);
    preparing.push(m);
    if (preparing.length === 1) setImmediate(drain);
  });

  function prepare(m: Extract<WorkerIn, { request: PrepareRequest }>): void {
    try {
      if (m.records) cache.load(m.request, m.records);
      const prepared = cache.prepare(m.request);
      const sealed = prepared?.sealedKey ? [prepared.sealedKey.buffer as ArrayBuffer] : [];
      if (!prepared) port!.postMessage({ id: m.id, miss: true });
      else if (m.hold) {
        const handle = nextHandle++;
        held.set(handle, prepared.body.bytes);
        if (held.size > MAX_HELD) held.delete(held.keys().next().value!);
        const { bytes, ...body } = prepared.body;
        port!.postMessage({ id: m.id, prepared: { ...prepared, body: { ...body, handle, byteLength: bytes.byteLength } } }, sealed);
      }
      // The body's bytes are handed over, not copied.
      else port!.postMessage({ id: m.id, prepared }, [prepared.body.bytes.buffer as ArrayBuffer, ...sealed]);
    } catch (e) {
      port!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
    }
  }
  port.postMessage({ ready: true });
}
