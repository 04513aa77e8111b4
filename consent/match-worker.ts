import { parentPort, workerData } from 'node:worker_threads';
import { findCandidates, type IdentityRecord, type MatchConfig } from './match.js';

/**
 * The body of the matcher's worker thread (match-search.ts). Protocol (structured clone):
 *   in:  { page: IdentityRecord[] } as the local patients are read, then { end: true }
 *   out: { progress: { blocksSearched, blocks, candidates } } at most every PROGRESS_MS,
 *        { candidates: Candidate[] } in chunks, then { done: true }; or { error }
 * workerData: { config: MatchConfig }. The records live only here: the thread that reads them
 * from the database hands each page over and keeps nothing.
 */
export type MatchWorkerIn = { page: IdentityRecord[] } | { end: true };

const PROGRESS_MS = 200;
const CHUNK = 10_000;

export function serveMatching(): void {
  const port = parentPort;
  if (!port) throw new Error('serveMatching runs in a worker thread');
  const { config } = workerData as { config: MatchConfig };
  const records: IdentityRecord[] = [];
  port.on('message', (m: MatchWorkerIn) => {
    if ('page' in m) {
      for (const r of m.page) records.push(r);
      return;
    }
    try {
      let last = 0;
      const { candidates } = findCandidates(records, config, (done, total, found) => {
        const t = Date.now();
        if (t - last < PROGRESS_MS && done !== total) return;
        last = t;
        port.postMessage({ progress: { blocksSearched: done, blocks: total, candidates: found } });
      });
      records.length = 0;
      for (let i = 0; i < candidates.length; i += CHUNK) port.postMessage({ candidates: candidates.slice(i, i + CHUNK) });
      port.postMessage({ done: true });
    } catch (e) {
      port.postMessage({ error: e instanceof Error ? e.message : String(e) });
    }
  });
}
