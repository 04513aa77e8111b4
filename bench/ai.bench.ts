/**
 * AI services through the exchange: a stand-in service answering in 200 ms, at least 100
 * analysis requests in flight, and the exchange's own overhead per request: from the start of
 * the clinician's POST to the result stored (the exchange's completed_at), minus the time the
 * exchange spent waiting for the service (its HTTP round trips, as audited in serviceMs);
 * p50/p95/p99. Plus the viewer's timeline latency before and while the load runs, and the CPU
 * the exchange (its process with its worker threads, and its PostgreSQL backends) spent per
 * request.
 *
 *   npx tsx bench/ai.bench.ts [--requests 1500] [--inflight 100] [--patients 10] [--warmup 0] [--probe-interval 50] [--profile out.cpuprofile] [--heap-profile out.heapprofile] [--child-profile out.cpuprofile] [--statements] [--redis redis://127.0.0.1:6379]
 *
 * --profile / --heap-profile: the event loop's CPU profile, or a sampling profile of what it
 * allocates (Chrome DevTools formats), over the load. --child-profile: the CPU profile of the
 * bench's child process (clients, stand-in, completion polls) over the load.
 *
 * --warmup N: N requests at the same concurrency before the measured load, not measured: the
 * exchange's code is then compiled by V8's optimising compiler (on a 2-core machine, TurboFan
 * compiling the request path takes about a fifth of the exchange's CPU over the first 3,000
 * requests and much less after). Its rows stay in the tables the measured load then uses, and
 * the database is analysed after it (as autovacuum does for a running exchange).
 *
 * --probe-interval MS: the timeline client sends one request every MS milliseconds (default 50;
 * 0: each as soon as the one before has answered, as before 2026-11-22 06:00 UTC, when it made
 * 64-180 timeline requests a second and its load was counted in the exchange's CPU per request).
 *
 * --redis: the AI queue (and the exchange's other jobs) through BullMQ on that Redis, under a key
 * prefix of its own removed at the end; without it, the in-process queue.
 *
 * Two processes: this one runs the exchange (PostgreSQL backend, in-process AI queue, the
 * de-identification worker threads); a child process runs the load clients, the timeline client
 * and the stand-in service, so that their CPU is not counted as the exchange's. The child sees
 * a request finish by polling the database for its completed_at (one query for all pending
 * requests every 20 ms) instead of asking the exchange; the clients use node:http over keep-alive
 * connections (fetch before 2026-11-21 15:20 UTC: about twice their CPU). The child shares the
 * machine's cores with the exchange, so its CPU (clientProcessCpuMs) is kept small without
 * changing what is measured: the stand-in answers from a scan of each body read as Latin-1 (since
 * 2026-11-21 23:20 UTC; a UTF-8 decode before), checked against a parse of the first 40. Needs
 * the machine's PostgreSQL. Prints JSON, with the machine and its load average.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execSync, fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import pg from 'pg';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};

/** A whole-number option of at least `min`; anything else stops the bench with a message (exit 2). */
function countArg(name: string, def: number, min: number): number {
  const raw = arg(name, String(def));
  const n = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(n) || n < min) {
    process.stderr.write(`ai.bench: --${name} must be a whole number of at least ${min} (got ${JSON.stringify(raw)})\n`);
    process.exit(2);
  }
  return n;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10 : NaN;
};
const summary = (xs: number[]) => ({ n: xs.length, p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), max: pct(xs, 100) });
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

interface Go {
  type: 'go';
  url: string;
  token: string;
  patients: string[];
  dbUrl: string;
  requests: number;
  inflight: number;
  /** Requests run before the measured load (--warmup). */
  warmup: number;
  /** Milliseconds from the start of one timeline probe to the start of the next (--probe-interval; 0: back to back). */
  probeIntervalMs: number;
  /** The child's own CPU profile over the load, written there (--child-profile). */
  profile?: string;
}

/** The clients' PostgreSQL connections name themselves so: their CPU is not the exchange's. */
const CLIENTS_APP = 'ai-bench-clients';

type ToParent = { type: 'standin'; base: string } | { type: 'mark'; what: 'load-start' | 'load-end' } | { type: 'result'; result: Record<string, unknown> } | { type: 'error'; message: string };

// ---------------------------------------------------------------------------------------------
// The exchange's side

async function exchangeMain() {
  const REQUESTS = countArg('requests', 1500, 1);
  const INFLIGHT = countArg('inflight', 100, 1);
  const PATIENTS = countArg('patients', 10, 1);
  const WARMUP = countArg('warmup', 0, 0);
  const PROBE_INTERVAL = countArg('probe-interval', 50, 0);
  const { readStoredFile } = await import('../ingest/records/read.js');
  const { insertFacility } = await import('../store/backup/backup.repository.js');
  const { SAMPLES_ROOT, tempDir } = await import('../test/support/tmp.js');
  const { createTestDatabase } = await import('../test/support/postgres.js');
  const { createExchange } = await import('../viewer-api/exchange.js');
  const { testConfig } = await import('../viewer-api/config.js');
  const { totpCode } = await import('../viewer-api/auth/totp.js');
  type Db = import('../store/db.js').Db;

  const sampleFiles = (() => {
    const root = path.join(SAMPLES_ROOT, '999/901/9999013');
    const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
    return walk(root).map((abs) => ({ rel: path.relative(SAMPLES_ROOT, abs), bytes: fs.readFileSync(abs) }));
  })();
  const indexPatient = async (db: Db, facilityId: string) => {
    for (const f of sampleFiles) {
      const out = readStoredFile({ facilityId, path: f.rel, sha256: createHash('sha256').update(f.bytes).digest('hex'), bytes: f.bytes });
      if (out.status !== 'ok' || !out.record) continue;
      const s = out.record.source;
      await db
        .insertInto('record')
        .values({
          facility_id: facilityId, path: s.path, sha256: s.sha256, added_seq: 1, snapshot_id: `snap-${facilityId}`, patient_id: s.patientId,
          data_type: s.dataType, category: out.record.category, care_date: s.careDate, order_no: s.orderNo, message_ts: s.timestamp,
          department: s.department, condition_flag: s.condition, status: 'ok', content: JSON.stringify(out.record),
        })
        .execute();
    }
    await db.insertInto('record_index_state').values({ facility_id: facilityId, published_seq: 1, published_snapshot_id: `snap-${facilityId}`, published_at: new Date() }).execute();
  };

  // --statements: every statement the exchange sends during the load, counted by its first words.
  const statements = new Map<string, number>();
  let counting = false;
  if (process.argv.includes('--statements')) {
    const query = pg.Client.prototype.query as (...a: unknown[]) => unknown;
    pg.Client.prototype.query = function (this: pg.Client, ...a: unknown[]) {
      const q = a[0] as string | { text?: string };
      const text = typeof q === 'string' ? q : (q?.text ?? '');
      if (counting) {
        const k = text.replace(/\s+/g, ' ').trim().slice(0, 70);
        statements.set(k, (statements.get(k) ?? 0) + 1);
      }
      return query.apply(this, a);
    } as typeof pg.Client.prototype.query;
  }
  const tmp = tempDir('hakobune-ai-bench-');
  const pgdb = await createTestDatabase('aibench');
  const base = testConfig(tmp.dir, { databaseUrl: pgdb.url });
  const REDIS = arg('redis', '');
  const queuePrefix = `ai-bench-${Date.now().toString(36)}`;
  const exchange = await createExchange({ ...base, redisUrl: REDIS || undefined, auth: { ...base.auth, loginAttemptsPerMinute: 10_000 } }, REDIS ? { jobs: { queuePrefix } } : {});
  const url = await exchange.listen();
  const cli = { actor: { username: 'cli:bench' }, address: null, endpoint: 'bench' };
  const child = fork(fileURLToPath(import.meta.url), ['--role', 'clients'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  // Every message is kept until asked for: one sent while this process was busy is not lost.
  const inbox: ToParent[] = [];
  const waiters: (() => void)[] = [];
  child.on('message', (m: ToParent) => {
    inbox.push(m);
    for (const w of waiters.splice(0)) w();
  });
  child.on('exit', (code) => {
    inbox.push({ type: 'error', message: `the clients' process ended (exit code ${code})` });
    for (const w of waiters.splice(0)) w();
  });
  const fromChild = async <T extends ToParent['type']>(type: T): Promise<Extract<ToParent, { type: T }>> => {
    for (;;) {
      const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
      if (i >= 0) {
        const [m] = inbox.splice(i, 1);
        if (m!.type === 'error') throw new Error(`clients: ${(m as { message: string }).message}`);
        return m as Extract<ToParent, { type: T }>;
      }
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  try {
    const db = exchange.db;
    const consent = exchange.consent;
    const actor = 'bench';
    const patients: string[] = [];
    for (let i = 0; i < PATIENTS; i++) {
      const [fa, fb] = [`A${i}`, `B${i}`];
      for (const id of [fa, fb]) {
        await insertFacility(db, { id, name: `Facility ${id}`, kind: 'hospital' });
        await consent.consent.setParticipation(actor, { facilityId: id, kind: 'hospital', discloses: true, views: true }, 'bench');
        await indexPatient(db, id);
      }
      const regional = (await consent.identity.enrol(actor, { facilityId: fa, localId: '9999013' }, { evidence: 'bench' })).regionalId;
      await consent.identity.enrol(actor, { facilityId: fb, localId: '9999013' }, { regionalId: regional, evidence: 'bench' });
      await consent.consent.record(actor, regional, {
        terms: {
          status: 'opted-in',
          disclosing: { mode: 'all' },
          receiving: { kinds: ['hospital'], facilities: [], exclude: [] },
          categories: { mode: 'all' },
          purposes: { treatment: true, emergency: 'unspecified', aiServices: ['bench-model'], research: false },
          validFrom: Date.now() - 86_400_000,
          validTo: null,
        },
      });
      patients.push(regional);
    }
    const stand = await fromChild('standin');
    await exchange.ai.registry.register(cli, {
      id: 'bench-model',
      name: 'bench stand-in (200 ms)',
      baseUrl: stand.base,
      operation: '$analyze',
      auth: { kind: 'none' },
      categories: ['demographics', 'prescriptions', 'injections', 'labs'],
      facilities: 'all',
      timeoutMs: 10_000,
      rateLimit: { perMinute: 1_000_000, burst: 10_000 },
      location: { country: 'JP', region: 'loopback' },
      birthDate: 'age',
    });
    const u = await exchange.viewer.admin.addUser(cli, { facilityId: 'B0', username: 'doctor', displayName: 'doctor', role: 'physician', password: 'a long bench passphrase' });
    const device = await exchange.viewer.admin.registerDevice(cli, 'B0', 'bench terminal');
    const login = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-credential': device.credential },
      body: JSON.stringify({ facilityId: 'B0', username: 'doctor', password: 'a long bench passphrase', totp: await totpCode(u.totpSecret, Date.now()) }),
    });
    if (login.status !== 200) throw new Error(`login: ${login.status} ${await login.text()}`);
    const token = ((await login.json()) as { token: string }).token;

    // CPU of the exchange: this process (event loop and worker threads) and its PostgreSQL backends.
    const tick = Number(execSync('getconf CLK_TCK').toString().trim()) || 100;
    const admin = new pg.Client({ connectionString: pgdb.url });
    // Ended by the database's drop when the run failed: the run's own error is the one to print.
    admin.on('error', () => undefined);
    await admin.connect();
    const backendsCpu = async () => {
      // Not the clients' own connections (their completion polls): only the exchange's.
      const { rows } = await admin.query<{ pid: number }>(
        `select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid() and application_name is distinct from '${CLIENTS_APP}'`,
        [pgdb.name],
      );
      const out = new Map<number, number>();
      for (const { pid } of rows) {
        try {
          const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
          out.set(pid, ((Number(f[11]) + Number(f[12])) / tick) * 1000);
        } catch {
          // The backend ended meanwhile.
        }
      }
      return out;
    };
    // The event loop's own thread (its id is the process id): the rest of the process's CPU is
    // the worker threads (de-identification, answer schemas) and V8's helpers (GC).
    const mainThreadMs = () => {
      const f = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return ((Number(f[11]) + Number(f[12])) / tick) * 1000;
    };
    const PROFILE = arg('profile', '');
    const HEAP = arg('heap-profile', '');
    const inspector = PROFILE || HEAP ? new (await import('node:inspector/promises')).Session() : undefined;
    inspector?.connect();
    // Node's histogram records the interval between its timer's runs (10 ms when the loop is idle):
    // the loop's lag is that less the resolution.
    const LAG_RESOLUTION_MS = 10;
    const loop = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    const lag = (ns: number) => round(Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS));
    const childProfile = arg('child-profile', '');
    child.send({ type: 'go', url, token, patients, dbUrl: pgdb.url, requests: REQUESTS, inflight: INFLIGHT, warmup: WARMUP, probeIntervalMs: PROBE_INTERVAL, ...(childProfile ? { profile: path.resolve(childProfile) } : {}) } satisfies Go);
    await fromChild('mark'); // load-start
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadMs();
    const load0 = os.loadavg();
    const t0 = performance.now();
    loop.enable();
    const elu0 = performance.eventLoopUtilization();
    const pg0 = await backendsCpu();
    const xacts = async () => Number((await admin.query<{ n: string }>('select xact_commit + xact_rollback as n from pg_stat_database where datname = $1', [pgdb.name])).rows[0]!.n);
    const xact0 = await xacts();
    counting = true;
    if (inspector && PROFILE) {
      await inspector.post('Profiler.enable');
      await inspector.post('Profiler.start');
    }
    if (inspector && HEAP) {
      await inspector.post('HeapProfiler.enable');
      await inspector.post('HeapProfiler.startSampling', { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
    }
    await fromChild('mark'); // load-end
    const wall = performance.now() - t0;
    counting = false;
    loop.disable();
    const elu = performance.eventLoopUtilization(elu0);
    if (inspector && PROFILE) fs.writeFileSync(PROFILE, JSON.stringify((await inspector.post('Profiler.stop')).profile));
    if (inspector && HEAP) fs.writeFileSync(HEAP, JSON.stringify((await inspector.post('HeapProfiler.stopSampling')).profile));
    const cpu = process.cpuUsage(cpu0);
    const mainMs = mainThreadMs() - main0;
    const pg1 = await backendsCpu();
    let pgMs = 0;
    for (const [pid, ms] of pg1) pgMs += ms - (pg0.get(pid) ?? 0);
    const load1 = os.loadavg();
    const { result } = await fromChild('result');
    // Statistics reach pg_stat_database within a second of each transaction.
    await new Promise((r) => setTimeout(r, 1500));
    const xact1 = await xacts();
    const n = Number((result as { requests: number }).requests);
    const exchangeMs = (cpu.user + cpu.system) / 1000;
    process.stdout.write(
      JSON.stringify(
        {
          machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
          loadAverage: { atStart: load0.map((x) => round(x, 2)), atEnd: load1.map((x) => round(x, 2)) },
          queue: exchange.ai.queue.kind,
          ...result,
          exchangeCpu: {
            processMs: round(exchangeMs, 0),
            postgresMs: round(pgMs, 0),
            perRequestMs: { process: round(exchangeMs / n, 2), postgres: round(pgMs / n, 2), total: round((exchangeMs + pgMs) / n, 2) },
            // Of the process: the event loop's thread, and the others (workers, GC helpers).
            processPerRequestMs: { eventLoopThread: round(mainMs / n, 2), otherThreads: round((exchangeMs - mainMs) / n, 2) },
            coresBusy: round((exchangeMs + pgMs) / wall, 2),
            // Less the clients' own queries (completion polls, the audit read).
            postgresTransactionsPerRequest: round((xact1 - xact0 - Number((result as { clientQueries: number }).clientQueries)) / n, 1),
          },
          ...(statements.size
            ? { statementsPerRequest: Object.fromEntries([...statements].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, round(v / n, 2)])) }
            : {}),
          eventLoopLagMs: { p50: lag(loop.percentile(50)), p99: lag(loop.percentile(99)), max: lag(loop.max) },
          // The share of the load's wall time the event loop was running callbacks (not waiting in epoll).
          eventLoopUtilization: round(elu.utilization, 2),
        },
        null,
        2,
      ) + '\n',
    );
    await admin.end();
  } finally {
    child.kill();
    await exchange.stop();
    await pgdb.drop();
    tmp.remove();
    if (REDIS) {
      // The bench's queues and counters only (its own prefix).
      const { Redis } = await import('ioredis');
      const r = new Redis(REDIS);
      let cursor = '0';
      do {
        const [next, keys] = await r.scan(cursor, 'MATCH', `${queuePrefix}:*`, 'COUNT', 1000);
        if (keys.length) await r.del(...keys);
        cursor = next;
      } while (cursor !== '0');
      await r.quit();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The clients' side (a child process): the stand-in, the load, the timeline

async function clientsMain() {
  const { startStandIn } = await import('../viewer-api/ai/standin.js');
  const send = (m: ToParent) => process.send!(m);
  const stand = await startStandIn({ delayMs: 200, countOnly: true, scanAnswers: { checkScans: 40 } });
  send({ type: 'standin', base: stand.base });
  const go = await new Promise<Go>((resolve) => process.on('message', (m: Go) => m.type === 'go' && resolve(m)));
  const db = new pg.Pool({ connectionString: go.dbUrl, max: 2, application_name: CLIENTS_APP });
  const auth = { authorization: `Bearer ${go.token}` };

  // Completion times come from the exchange's own records, read in one query for all.
  const waiting = new Map<string, (r: { status: string; doneMs: number }) => void>();
  let polling = true;
  let ownQueries = 0;
  const poller = (async () => {
    while (polling) {
      if (waiting.size) {
        ownQueries++;
        const { rows } = await db.query<{ id: string; status: string; done_ms: number }>(
          `select id, status, extract(epoch from completed_at) * 1000 as done_ms from ai_request where id = any($1) and status in ('done', 'failed', 'denied')`,
          [[...waiting.keys()]],
        );
        for (const r of rows) {
          waiting.get(r.id)?.({ status: r.status, doneMs: Number(r.done_ms) });
          waiting.delete(r.id);
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const settled = (id: string) => new Promise<{ status: string; doneMs: number }>((resolve) => waiting.set(id, resolve));

  // node:http over keep-alive connections (not fetch): the clients' own CPU per request is about
  // half, so they take less of the machine from the exchange; what is measured is the same.
  // A socket left idle for 5 s is closed by the clients, before the exchange closes it (10 s: its
  // keepAliveTimeout), so that a request is never written to a socket the exchange is closing.
  const agent = new http.Agent({ keepAlive: true, maxSockets: go.inflight + 10, timeout: 5000 });
  const target = new URL(go.url);
  const request = (method: string, path: string, body?: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(
        { host: target.hostname, port: target.port, method, path, agent, headers: { ...auth, ...(body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const one = async (patientId: string) => {
    const start = Date.now();
    const res = await request('POST', '/api/ai/requests', JSON.stringify({ serviceId: 'bench-model', patientId }));
    if (res.status !== 202) throw new Error(`submit: ${res.status} ${res.text}`);
    const { id } = JSON.parse(res.text) as { id: string };
    const submitMs = Date.now() - start;
    const s = await settled(id);
    if (s.status !== 'done') throw new Error(`request ${id} ${s.status}`);
    return { id, start, submitMs, doneMs: s.doneMs };
  };
  // One clinician's timeline, probed every probeIntervalMs (a probe that answers late is followed
  // by the next at once): a sample of the viewer's latency that adds little load of its own.
  const timeline = async (samples: number[], until: () => boolean) => {
    while (!until()) {
      const t = performance.now();
      const r = await request('GET', `/api/patients/${go.patients[0]}/timeline?limit=50`);
      if (r.status !== 200) throw new Error(`timeline: ${r.status}`);
      const took = performance.now() - t;
      samples.push(took);
      if (go.probeIntervalMs > took) await new Promise((resolve) => setTimeout(resolve, go.probeIntervalMs - took));
    }
  };
  // Attempts that failed and were retried (by kind), over the whole run.
  const failedAttempts = new Map<string, number>();
  const serviceMsOf = async (ids: string[]) => {
    ownQueries++;
    const { rows } = await db.query<{ detail: string }>(`select detail from audit_event where action = 'ai.request.send' and outcome = 'success'`);
    const by = new Map<string, number>();
    failedAttempts.clear(); // every call reads all the sends so far
    for (const r of rows) {
      const d = JSON.parse(r.detail) as { request: string; serviceMs: number; attempts: { outcome: string }[] };
      by.set(d.request, d.serviceMs);
      for (const a of d.attempts) if (a.outcome !== 'ok') failedAttempts.set(a.outcome, (failedAttempts.get(a.outcome) ?? 0) + 1);
    }
    return ids.map((id) => by.get(id)!);
  };

  // Cold: the first request for each patient (records read and mapped, scrubber compiled), one at a time.
  const cold: { id: string; start: number; doneMs: number }[] = [];
  for (const p of go.patients) cold.push(await one(p));
  const coldService = await serviceMsOf(cold.map((c) => c.id));
  const coldOverhead = cold.map((c, i) => c.doneMs - c.start - coldService[i]!);
  // Warm, one at a time.
  const single: { id: string; start: number; submitMs: number; doneMs: number }[] = [];
  for (let i = 0; i < 20; i++) single.push(await one(go.patients[i % go.patients.length]!));
  const singleService = await serviceMsOf(single.map((c) => c.id));

  // Unmeasured, at the load's concurrency (--warmup).
  let warmed = 0;
  await Promise.all(
    Array.from({ length: go.inflight }, async () => {
      while (warmed < go.warmup) await one(go.patients[warmed++ % go.patients.length]!);
    }),
  );
  // What autovacuum's analyze (a minute apart by default) does for a running exchange: the
  // tables' statistics as they now are, so that the prepared statements' plans are made again
  // for tables of that size (a plan made on the fresh, empty ai_request scans it whole).
  if (go.warmup) await db.query('analyze');

  const before: number[] = [];
  let n = 0;
  await timeline(before, () => ++n > (go.probeIntervalMs ? 60 : 200));

  const results: { id: string; start: number; submitMs: number; doneMs: number }[] = [];
  let started = 0;
  let inflight = 0;
  let maxInflight = 0;
  const inflightSamples: number[] = [];
  let done = false;
  const during: number[] = [];
  const inspector = go.profile ? new (await import('node:inspector/promises')).Session() : undefined;
  if (inspector) {
    inspector.connect();
    await inspector.post('Profiler.enable');
    await inspector.post('Profiler.start');
  }
  const cpu0 = process.cpuUsage();
  // Give the exchange's process time to take its starting measurements.
  send({ type: 'mark', what: 'load-start' });
  await new Promise((r) => setTimeout(r, 200));
  const queries0 = ownQueries;
  const sampler = setInterval(() => inflightSamples.push(inflight), 50);
  const t0 = Date.now();
  const worker = async () => {
    while (started < go.requests) {
      const p = go.patients[started++ % go.patients.length]!;
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      results.push(await one(p));
      inflight--;
    }
  };
  const timelineRun = timeline(during, () => done);
  await Promise.all(Array.from({ length: go.inflight }, worker));
  done = true;
  await timelineRun;
  const seconds = (Date.now() - t0) / 1000;
  send({ type: 'mark', what: 'load-end' });
  clearInterval(sampler);
  const clientCpu = process.cpuUsage(cpu0);
  if (inspector) fs.writeFileSync(go.profile!, JSON.stringify((await inspector.post('Profiler.stop')).profile));
  polling = false;
  await poller;
  const service = await serviceMsOf(results.map((r) => r.id));
  const overhead = results.map((r, i) => r.doneMs - r.start - service[i]!);
  const steady = inflightSamples.slice(Math.floor(inflightSamples.length * 0.1), Math.floor(inflightSamples.length * 0.9));
  send({
    type: 'result',
    result: {
      requests: go.requests,
      clients: go.inflight,
      patients: go.patients.length,
      standInDelayMs: 200,
      inFlight: { max: maxInflight, medianWhileRunning: pct(steady, 50) },
      seconds: round(seconds),
      requestsPerSecond: round(go.requests / seconds),
      overheadMs: summary(overhead),
      submitMs: summary(results.map((r) => r.submitMs)),
      endToEndMs: summary(results.map((r) => r.doneMs - r.start)),
      serviceMs: summary(service),
      single: { overheadMs: summary(single.map((r, i) => r.doneMs - r.start - singleService[i]!)), submitMs: summary(single.map((r) => r.submitMs)) },
      coldFirstRequestPerPatient: { overheadMs: summary(coldOverhead) },
      timelineMs: { before: summary(before), during: summary(during) },
      standInReceived: stand.received.length,
      retriedAttempts: Object.fromEntries(failedAttempts),
      clientProcessCpuMs: round((clientCpu.user + clientCpu.system) / 1000, 0),
      clientQueries: ownQueries - queries0,
    },
  });
  await db.end();
  agent.destroy();
  await stand.close();
}

if (process.argv.includes('--role') && arg('role', '') === 'clients') {
  clientsMain().catch((e) => {
    process.send?.({ type: 'error', message: String((e as Error).stack ?? e) } satisfies ToParent);
    process.exit(1);
  });
} else {
  exchangeMain().then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(`${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
