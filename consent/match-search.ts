import { Worker, type ResourceLimits } from 'node:worker_threads';
import { findCandidates, type Candidate, type IdentityRecord, type MatchConfig } from './match.js';
import type { MatchWorkerIn } from './match-worker.js';

/**
 * Where the matcher's candidate search runs. It is CPU work of minutes for a region of a million
 * local patients (bench/README.md, "Consent and matching"): in the exchange it runs in a worker
 * thread, so that the event loop serving clinicians stays free; the command line, a process of
 * its own, may run it inline.
 */
export interface SearchProgress {
  blocksSearched: number;
  blocks: number;
  candidates: number;
}

/** Takes the local patients page by page as they are read; resolves with the candidates, sorted. */
export type CandidateSearch = (pages: AsyncIterable<IdentityRecord[]>, config: MatchConfig, onProgress?: (p: SearchProgress) => void) => Promise<Candidate[]>;

/** The search stopped: the worker failed, ran out of memory or exited. The message is for people. */
export class MatchSearchError extends Error {
  override name = 'MatchSearchError';
}

/** In the caller's thread (the command line; tests of the matcher itself). */
export const inlineSearch: CandidateSearch = async (pages, config, onProgress) => {
  const records: IdentityRecord[] = [];
  for await (const page of pages) for (const r of page) records.push(r);
  return findCandidates(records, config, onProgress && ((blocksSearched, blocks, candidates) => onProgress({ blocksSearched, blocks, candidates }))).candidates;
};

type Out = { progress: SearchProgress } | { candidates: Candidate[] } | { done: true } | { error: string };

/**
 * In a worker thread started for the one search and ended after it. A worker that dies (out of
 * memory under `resourceLimits`, a crash) fails the search with a MatchSearchError; the thread
 * that serves requests is not touched.
 */
export function workerSearch(opts: { resourceLimits?: ResourceLimits } = {}): CandidateSearch {
  return async (pages, config, onProgress) => {
    const w = new Worker(new URL('./match.worker.mjs', import.meta.url), {
      workerData: { config },
      ...(opts.resourceLimits ? { resourceLimits: opts.resourceLimits } : {}),
    });
    const found: Candidate[] = [];
    let settle!: { resolve: (c: Candidate[]) => void; reject: (e: Error) => void };
    const finished = new Promise<Candidate[]>((resolve, reject) => (settle = { resolve, reject }));
    let over = false;
    const end = (e: Error | null) => {
      if (over) return;
      over = true;
      void w.terminate().catch(() => undefined);
      if (e) settle.reject(e);
      else settle.resolve(found);
    };
    w.on('message', (m: Out) => {
      if ('progress' in m) onProgress?.(m.progress);
      else if ('candidates' in m) for (const c of m.candidates) found.push(c);
      else if ('done' in m) end(null);
      else end(new MatchSearchError(`the candidate search failed: ${m.error}`));
    });
    w.on('error', (e) => end(new MatchSearchError(`the candidate search worker failed: ${e.message}`)));
    w.on('exit', (code) => end(new MatchSearchError(`the candidate search worker stopped before it finished (exit code ${code})`)));
    // A failure of the worker while pages are still being read stops the reading too.
    finished.catch(() => undefined);
    try {
      for await (const page of pages) {
        if (over) break;
        w.postMessage({ page } satisfies MatchWorkerIn);
      }
      if (!over) w.postMessage({ end: true } satisfies MatchWorkerIn);
    } catch (e) {
      end(e as Error);
    }
    return finished;
  };
}
