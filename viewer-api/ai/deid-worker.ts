import { parentPort, workerData } from 'node:worker_threads';
import { SecretBox } from '../auth/secret-box.js';
import { PatientBundleCache, type PatientRecords, type PrepareRequest } from './prepare.js';

/**
 * The body of a de-identification worker thread. Protocol (structured clone):
 *   in:  { id, request: PrepareRequest, records?: PatientRecords }
 *   out: { id, prepared } | { id, miss: true } | { id, error }
 * A request without records is answered `miss` when the patient's Bundle is not cached here;
 * the pool then sends it again with the records. workerData: { secret, capacity, keyFile? }
 * (the exchange's secret key file: re-identification keys are sealed here).
 */
export interface WorkerIn {
  id: number;
  request: PrepareRequest;
  records?: PatientRecords;
}

export function serveDeidentification(): void {
  const port = parentPort;
  if (!port) throw new Error('serveDeidentification runs in a worker thread');
  const { secret, capacity, keyFile } = workerData as { secret: Uint8Array; capacity?: number; keyFile?: string };
  const cache = new PatientBundleCache(secret, capacity, keyFile ? SecretBox.fromKeyFile(keyFile) : undefined);
  port.on('message', (m: WorkerIn) => {
    try {
      if (m.records) cache.load(m.request, m.records);
      const prepared = cache.prepare(m.request);
      // The body's bytes are handed over, not copied.
      if (prepared) port.postMessage({ id: m.id, prepared }, [prepared.body.bytes.buffer as ArrayBuffer, ...(prepared.sealedKey ? [prepared.sealedKey.buffer as ArrayBuffer] : [])]);
      else port.postMessage({ id: m.id, miss: true });
    } catch (e) {
      port.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
    }
  });
  port.postMessage({ ready: true });
}
