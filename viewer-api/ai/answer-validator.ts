import { Worker } from 'node:worker_threads';
import type { SchemaIssue } from '../../ingest/fhir/schema.js';

/**
 * FHIR R4 schema validation of AI answers, off the event loop (answer-schema.worker.mjs). One
 * worker per process, started on first use; `close()` ends it.
 */
export interface AnswerValidator {
  validate(resource: unknown): Promise<SchemaIssue[]>;
  /** Compiles the schemas of these types ahead of the first answer. */
  warm(types: string[]): void;
  close(): Promise<void>;
}

export function createAnswerValidator(): AnswerValidator {
  let worker: Worker | undefined;
  let next = 0;
  const pending = new Map<number, { resolve: (v: SchemaIssue[]) => void; reject: (e: Error) => void }>();
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  const start = (): Worker => {
    if (worker) return worker;
    const w = new Worker(new URL('./answer-schema.worker.mjs', import.meta.url));
    w.unref();
    w.on('message', (m: { id: number; issues: SchemaIssue[] }) => {
      const p = pending.get(m.id);
      pending.delete(m.id);
      p?.resolve(m.issues);
    });
    w.on('error', (e) => {
      failAll(e);
      worker = undefined;
    });
    w.on('exit', (code) => {
      if (worker === w) worker = undefined;
      if (pending.size) failAll(new Error(`the FHIR validation worker stopped (exit ${code})`));
    });
    worker = w;
    return w;
  };
  return {
    validate(resource) {
      const w = start();
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        w.postMessage({ id, resource });
      });
    },
    warm(types) {
      start().postMessage({ warm: types });
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w) await w.terminate();
    },
  };
}
