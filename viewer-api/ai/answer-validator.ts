import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { SchemaIssue } from '../../ingest/fhir/schema.js';

/**
 * FHIR R4 schema validation of AI answers. The schemas are compiled in a worker thread
 * (answer-schema.worker.mjs: compiling a type costs up to seconds of CPU, which must not stop the
 * event loop). The types named in `warm()` (those the registered services answer with) come back
 * from the worker as standalone validator code and are then checked in the caller's thread, with
 * no round trip (posting each answer to the worker and back cost more than the check itself);
 * any other type is checked in the worker. One worker per process, started on first use;
 * `close()` ends it.
 */
export interface AnswerValidator {
  /** The issues (none: valid); synchronous for a type already loaded here. */
  validate(resource: unknown): SchemaIssue[] | Promise<SchemaIssue[]>;
  /** Compiles the schemas of these types ahead of the first answer, and loads them here. */
  warm(types: string[]): void;
  /** Resolves when the types asked for in `warm()` are checked in this thread (tests). */
  warmed(): Promise<void>;
  close(): Promise<void>;
}

interface AjvError {
  instancePath: string;
  message?: string;
  params?: unknown;
}
type ValidateFunction = ((data: unknown) => boolean) & { errors?: AjvError[] | null };

const requireHere = createRequire(import.meta.url);

/** Runs ajv's standalone code (CommonJS; it requires ajv's runtime helpers). */
function loadStandalone(source: string): ValidateFunction {
  const module = { exports: {} as { default?: ValidateFunction } };
  // The code is the worker's own output for a schema of the exchange, never outside input.
  new Function('require', 'module', 'exports', source)(requireHere, module, module.exports);
  const f = (module.exports.default ?? module.exports) as ValidateFunction;
  if (typeof f !== 'function') throw new Error('the FHIR validation worker sent no validator');
  return f;
}

/** Issues as the worker words them. */
function issuesOf(v: ValidateFunction, resource: unknown): SchemaIssue[] {
  if (v(resource)) return [];
  return (v.errors ?? []).map((e) => ({ path: e.instancePath || '/', message: `${e.message ?? 'invalid'}${e.params ? ' ' + JSON.stringify(e.params) : ''}` }));
}

export function createAnswerValidator(): AnswerValidator {
  let worker: Worker | undefined;
  let next = 0;
  const pending = new Map<number, { resolve: (v: SchemaIssue[]) => void; reject: (e: Error) => void }>();
  const local = new Map<string, ValidateFunction>();
  const wanted = new Set<string>();
  const warmWaiters: (() => void)[] = [];
  const settleWarm = () => {
    if ([...wanted].every((t) => local.has(t))) for (const w of warmWaiters.splice(0)) w();
  };
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  const start = (): Worker => {
    if (worker) return worker;
    const w = new Worker(new URL('./answer-schema.worker.mjs', import.meta.url));
    w.unref();
    w.on('message', (m: { id: number; issues: SchemaIssue[] } | { code: { type: string; source: string | null } }) => {
      if ('code' in m) {
        try {
          if (m.code.source === null) wanted.delete(m.code.type);
          else local.set(m.code.type, loadStandalone(m.code.source));
        } catch {
          // Left to the worker.
          wanted.delete(m.code.type);
        }
        settleWarm();
        return;
      }
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
      const type = resource && typeof resource === 'object' ? (resource as { resourceType?: unknown }).resourceType : undefined;
      const v = typeof type === 'string' ? local.get(type) : undefined;
      if (v) return issuesOf(v, resource);
      const w = start();
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        w.postMessage({ id, resource });
      });
    },
    warm(types) {
      const todo = types.filter((t) => !local.has(t) && !wanted.has(t));
      for (const t of todo) wanted.add(t);
      if (todo.length) start().postMessage({ warm: todo, code: true });
    },
    warmed() {
      return new Promise((resolve) => {
        warmWaiters.push(resolve);
        settleWarm();
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      for (const r of warmWaiters.splice(0)) r();
      if (w) await w.terminate();
    },
  };
}
