import cluster, { type Worker } from 'node:cluster';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import inspector from 'node:inspector/promises';
import type { Config } from './config.js';
import { createExchange, type Exchange, type ExchangeOptions } from './exchange.js';
import { UsageError } from './cli/output.js';

/**
 * `hakobune serve --workers N`: N processes of the exchange serve HTTP on one port (node:cluster;
 * the primary hands each new connection to a worker in turn), so that the API uses every core.
 * The primary holds no exchange: it starts the workers, restarts one that dies and stops them.
 *
 * What must happen once, happens in ONE worker (slot 0, also after a restart): the AI queue's
 * worker and, in the embedded mode, the in-process jobs (see ExchangeOptions.background). The other
 * workers serve requests only and queue work through Redis, which a multi-process exchange
 * therefore needs, as it needs PostgreSQL (the embedded PGlite belongs to one process). Shared
 * state lives in PostgreSQL (sessions, lockouts, one-time TOTP steps, the audit chain, whose head
 * is compared-and-swapped) or in Redis (queues, the per-address rate limits); each worker keeps
 * only caches with a short lifetime (facility participation: 2 s, facility kinds: 60 s).
 */

/** The `hakobune` entry the workers run (`hakobune serve` in a cluster worker). */
export const HAKOBUNE_ENTRY = path.resolve(import.meta.dirname, '..', 'hakobune.js');

const SLOT_ENV = 'HAKOBUNE_WORKER_SLOT';
const OPTIONS_ENV = 'HAKOBUNE_WORKER_OPTIONS';

/**
 * The number of HTTP processes: `--workers N`; `auto`: one per core where the deployment allows
 * several (PostgreSQL and Redis), else 1; by default 1. (On the 2-core development machine, with
 * PostgreSQL on the same cores, two processes cost more CPU per request than they free: see
 * bench/README.md, Viewer API. They pay where the API has cores of its own.)
 */
export function resolveWorkers(value: string | undefined, config: Pick<Config, 'databaseUrl' | 'redisUrl'>, cores = os.availableParallelism()): number {
  const shared = !!config.databaseUrl && !!config.redisUrl;
  if (value === undefined) return 1;
  if (value === 'auto') return shared ? Math.max(1, cores) : 1;
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 256) {
    throw new UsageError(`--workers must be a number of processes from 1 to 256, or auto (got ${JSON.stringify(value)})`);
  }
  const n = Number(value);
  if (n > 1 && !config.databaseUrl) {
    throw new UsageError('--workers above 1 needs PostgreSQL (DATABASE_URL): the embedded database can be opened by one process only');
  }
  if (n > 1 && !config.redisUrl) {
    throw new UsageError('--workers above 1 needs Redis (REDIS_URL): the processes share their queues and rate limits there');
  }
  return n;
}

/** Messages between the primary and a worker (over the cluster's IPC channel). */
type WorkerMessage =
  | { hakobune: 'ready'; slot: number; url: string }
  | { hakobune: 'profile-start' }
  | { hakobune: 'profile-stop'; file: string }
  | { hakobune: 'profile-written'; file: string };

export interface ClusterOptions {
  workers: number;
  /** Environment of the workers besides the primary's own (configuration variables). */
  env?: Record<string, string>;
  /** Options each worker gives createExchange (tests and benches: a unique queue prefix). */
  exchange?: Pick<ExchangeOptions, 'jobs'>;
  /** Where lines about restarts go (default stderr). */
  warn?: (line: string) => void;
}

export interface RunningCluster {
  /** The URL the workers answer on. */
  readonly url: string;
  /** Process ids of the workers now running. */
  pids(): number[];
  /** CPU profiles of every worker over a window (open them in Chrome's DevTools). */
  startProfiles(): void;
  stopProfiles(dir: string, name: string): Promise<string[]>;
  /** Stops every worker (each stops its exchange cleanly). Safe to call twice. */
  stop(): Promise<void>;
}

/** Starts the workers (in the primary); resolves once every one of them listens. */
export async function startCluster(opts: ClusterOptions): Promise<RunningCluster> {
  if (!cluster.isPrimary) throw new Error('startCluster runs in the primary process');
  const warn = opts.warn ?? ((line: string) => process.stderr.write(`${line}\n`));
  cluster.setupPrimary({ exec: HAKOBUNE_ENTRY, args: ['serve'] });
  const slots = new Map<number, Worker>();
  let stopping: Promise<void> | undefined;
  let url: string | undefined;
  const written = new Map<number, (file: string) => void>();

  function fork(slot: number): Promise<string> {
    const env: Record<string, string> = { ...opts.env, [SLOT_ENV]: String(slot) };
    if (opts.exchange) env[OPTIONS_ENV] = JSON.stringify(opts.exchange);
    const w = cluster.fork(env);
    slots.set(slot, w);
    return new Promise<string>((resolve, reject) => {
      let ready = false;
      w.on('message', (m: WorkerMessage) => {
        if (m?.hakobune === 'ready') {
          ready = true;
          resolve(m.url);
        } else if (m?.hakobune === 'profile-written') written.get(w.id)?.(m.file);
      });
      w.once('exit', (code, signal) => {
        if (slots.get(slot) === w) slots.delete(slot);
        if (!ready) reject(new Error(`exchange worker ${slot} exited before it listened (${signal ?? `code ${code}`})`));
        else if (!stopping && !(code === 0 && signal === null) && signal !== 'SIGINT' && signal !== 'SIGTERM') {
          // A worker that died is replaced in its slot: slot 0 keeps the work that runs once.
          warn(`hakobune: exchange worker ${slot} (pid ${w.process.pid}) exited (${signal ?? `code ${code}`}); starting another`);
          setTimeout(() => {
            if (!stopping) fork(slot).catch((e: Error) => warn(`hakobune: exchange worker ${slot} did not restart: ${e.message}`));
          }, 1000).unref();
        }
      });
    });
  }

  const stop = () =>
    (stopping ??= (async () => {
      const exits = [...slots.values()].map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once('exit', () => resolve());
            w.process.kill('SIGTERM');
            // A worker that does not stop in time is killed.
            setTimeout(() => w.process.kill('SIGKILL'), 30_000).unref();
          }),
      );
      await Promise.all(exits);
    })());

  try {
    const urls = await Promise.all(Array.from({ length: opts.workers }, (_, i) => fork(i)));
    url = urls[0]!;
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    url,
    pids: () => [...slots.values()].map((w) => w.process.pid!).filter((p) => p !== undefined),
    startProfiles() {
      for (const w of slots.values()) w.send({ hakobune: 'profile-start' } satisfies WorkerMessage);
    },
    async stopProfiles(dir, name) {
      fs.mkdirSync(dir, { recursive: true });
      return Promise.all(
        [...slots.entries()].map(
          ([slot, w]) =>
            new Promise<string>((resolve) => {
              written.set(w.id, resolve);
              w.send({ hakobune: 'profile-stop', file: path.join(dir, `${name}.worker${slot}.cpuprofile`) } satisfies WorkerMessage);
            }),
        ),
      );
    },
    stop,
  };
}

/** Whether this process is a worker started by startCluster. */
export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[SLOT_ENV] !== undefined;
}

/**
 * The life of one worker (`hakobune serve` in a cluster worker): its exchange, with the work that
 * runs once only in slot 0; it listens, tells the primary, and stops on SIGTERM/SIGINT or when the
 * primary goes away.
 */
export async function runClusterWorker(config: Config): Promise<void> {
  const slot = Number(process.env[SLOT_ENV]);
  const extra = process.env[OPTIONS_ENV] ? (JSON.parse(process.env[OPTIONS_ENV]) as Pick<ExchangeOptions, 'jobs'>) : {};
  let exchange: Exchange;
  let url: string;
  try {
    exchange = await createExchange(config, { ...extra, background: slot === 0 });
    try {
      url = await exchange.listen();
    } catch (e) {
      await exchange.stop();
      throw e;
    }
  } catch (e) {
    // The IPC channel would keep a worker that failed to start alive, and its primary waiting. A
    // disconnect the worker asks for (unlike process.disconnect, which exits at once with 0) lets
    // the CLI report the error and exit with its code; the primary then reports that exit.
    cluster.worker?.disconnect();
    throw e;
  }
  let profiler: inspector.Session | undefined;
  const onMessage = (m: WorkerMessage) => {
    if (m?.hakobune === 'profile-start') {
      profiler = new inspector.Session();
      profiler.connect();
      void profiler.post('Profiler.enable').then(() => profiler!.post('Profiler.start'));
    } else if (m?.hakobune === 'profile-stop' && profiler) {
      const s = profiler;
      profiler = undefined;
      void s.post('Profiler.stop').then(({ profile }) => {
        fs.writeFileSync(m.file, JSON.stringify(profile));
        s.disconnect();
        process.send!({ hakobune: 'profile-written', file: m.file } satisfies WorkerMessage);
      });
    }
  };
  process.on('message', onMessage);
  process.send!({ hakobune: 'ready', slot, url } satisfies WorkerMessage);
  await untilStopped(['disconnect']);
  process.off('message', onMessage);
  try {
    await exchange.stop();
  } catch (e) {
    exchange.log.error({ err: e }, 'error while stopping');
  }
  // The IPC channel would keep the process alive.
  if (process.connected) process.disconnect();
}

/**
 * Resolves at the first SIGINT or SIGTERM, or the first of the other process events named (a
 * cluster worker also stops when its primary goes away: 'disconnect').
 */
export function untilStopped(also: 'disconnect'[] = []): Promise<void> {
  const events = ['SIGINT', 'SIGTERM', ...also] as const;
  return new Promise<void>((resolve) => {
    const done = () => {
      for (const e of events) process.off(e, done);
      resolve();
    };
    for (const e of events) process.on(e, done);
  });
}
