/**
 * Viewer timeline and $everything under load, with the gate and the audit trail on.
 *
 *   npx tsx bench/viewer.bench.ts --records 1000000 --patients 100000 --seconds 20 --clients 50 --reuse
 *
 * Builds a PostgreSQL database named after the sizes (hkvbench_<records>_<patients>): 10
 * hospital facilities, `--patients` regional patients each linked at two facilities and opted in,
 * and `--records` indexed records spread over their local IDs and all categories (bulk SQL
 * straight into the record index, identity and consent tables: the indexer's own speed is
 * bench/index.bench.ts's business). With `--reuse` a database already loaded with the same sizes
 * is used as it is (loading 1M records takes minutes) and kept afterwards; without it the
 * database is loaded afresh and dropped at the end.
 *
 * One physician signs in once (logins are excluded from the figures). The server runs as
 * `hakobune serve` would with this database and Redis (REDIS_URL, default the local one):
 * `--workers N|auto` HTTP processes (default 1, as `serve`) started by the same startCluster, with
 * this process as their primary; with one process the exchange runs in this process.
 * The clients run in a child process, `--clients` keep-alive connections on loopback,
 * each asking for a random patient's timeline (limit 50) or `Patient/{id}/$everything`
 * (_count 50), for `--warmup` then `--seconds` measured seconds. The client is wrk (one thread,
 * bench/viewer.wrk.lua) when /usr/bin/wrk or WRK names it, else (or with `--client node`)
 * bench/viewer.load.ts, a Node client that costs several times more CPU per request.
 * Printed: latency percentiles, requests/s, the server's CPU seconds (this process and the workers) and CPU ms
 * per request, the CPU of this database's PostgreSQL backends (and of PostgreSQL's shared
 * writer processes, which serve every database of the machine), the load average and the machine.
 * `--endpoints timeline` measures one endpoint only. `--cpu-prof-window DIR` writes a CPU profile
 * of the server over the measured window (open it in Chrome's DevTools), one per worker.
 * `--statements` (with `--workers 1`) counts the statements the server sends per request.
 */
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
// A type only: importing the load generator itself would run it.
import type { LoadSpec } from './viewer.load.js';
import inspector from 'node:inspector/promises';
import { sql } from 'kysely';
import pg from 'pg';
import { Redis } from 'ioredis';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { readStoredFile } from '../ingest/records/read.js';
import { totpCode } from '../viewer-api/auth/totp.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import { migrateToLatest } from '../store/migrate.js';
import { openDatabase } from '../store/db.js';
import { SAMPLES_ROOT, tempDir } from '../test/support/tmp.js';
import { resolveWorkers, startCluster, type RunningCluster } from '../viewer-api/cluster.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`--${name} needs a positive number`);
    process.exit(2);
  }
  return v;
}
const RECORDS = arg('records', 1_000_000);
const PATIENTS = arg('patients', 100_000);
const SECONDS = arg('seconds', 20);
const WARMUP = arg('warmup', 3);
const CLIENTS = arg('clients', 50);
const REUSE = process.argv.includes('--reuse');
const workersArg = process.argv.indexOf('--workers');
const WORKERS_OPTION = workersArg >= 0 ? process.argv[workersArg + 1] : undefined;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const clientArg = process.argv.indexOf('--client');
const WRK = process.env.WRK ?? '/usr/bin/wrk';
const CLIENT: 'wrk' | 'node' = clientArg >= 0 ? (process.argv[clientArg + 1] as 'wrk' | 'node') : fs.existsSync(WRK) ? 'wrk' : 'node';
if (CLIENT !== 'wrk' && CLIENT !== 'node') {
  console.error('--client: wrk or node');
  process.exit(2);
}
const endpointsArg = process.argv.indexOf('--endpoints');
const ENDPOINTS = (endpointsArg >= 0 ? process.argv[endpointsArg + 1]! : 'timeline,everything').split(',');
const FACILITIES = Array.from({ length: 10 }, (_, i) => `F${String(i + 1).padStart(2, '0')}`);
const INDEX_CATEGORIES = ['patient', 'encounter', 'diagnosis', 'allergy', 'prescription', 'injection', 'lab', 'radiology', 'diet', 'document'];
const PATHS: Record<string, string> = {
  timeline: '/api/patients/P{p}/timeline?limit=50',
  everything: '/fhir/Patient/P{p}/$everything?_count=50',
};
for (const e of ENDPOINTS) {
  if (!PATHS[e]) {
    console.error(`--endpoints: unknown endpoint ${e} (timeline, everything)`);
    process.exit(2);
  }
}

/** Bumped whenever load() lays the data out differently: a database of another layout is reloaded. */
const LAYOUT = 2;
const ADMIN_URL = process.env.TEST_DATABASE_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const DB_NAME = `hkvbench_${RECORDS}_${PATIENTS}`;
const dbUrl = (() => {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${DB_NAME}`;
  return u.toString();
})();

async function admin<T>(f: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

/** Whether the database exists and holds a finished load of these sizes. */
async function alreadyLoaded(): Promise<boolean> {
  const exists = await admin(async (c) => (await c.query('select 1 from pg_database where datname = $1', [DB_NAME])).rowCount === 1);
  if (!exists) return false;
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    const r = await c.query(`select to_regclass('bench_loaded') is not null as ok`);
    if (!r.rows[0].ok) return false;
    const m = await c.query('select * from bench_loaded');
    const row = m.rows[0] as { records: string; patients: string; layout?: number } | undefined;
    return m.rows.length === 1 && Number(row!.records) === RECORDS && Number(row!.patients) === PATIENTS && row!.layout === LAYOUT;
  } finally {
    await c.end();
  }
}

async function load(): Promise<number> {
  const t0 = performance.now();
  await admin(async (c) => {
    await c.query(`drop database if exists "${DB_NAME}" with (force)`);
    await c.query(`create database "${DB_NAME}"`);
  });
  const handle = await openDatabase({ dataDir: os.tmpdir(), databaseUrl: dbUrl, poolSize: 2 });
  const db = handle.db;
  try {
    await migrateToLatest(db);
    for (const f of FACILITIES) await insertFacility(db, { id: f, name: `Hospital ${f}`, kind: 'hospital' });
    await sql`insert into facility_participation (facility_id, kind, discloses, views, updated_at, updated_by)
      select f, 'hospital', true, true, now(), 'bench' from unnest(${FACILITIES}::text[]) f`.execute(db);
    const sample = path.join(SAMPLES_ROOT, '999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1');
    const bytes = fs.readFileSync(sample);
    const read = readStoredFile({ facilityId: 'F01', path: path.relative(SAMPLES_ROOT, sample), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
    const content = JSON.stringify(read.record);
    const terms = JSON.stringify({
      disclosing: { mode: 'all' },
      receiving: { kinds: ['hospital'], facilities: [], exclude: [] },
      categories: { mode: 'all' },
      purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
    });
    // Patient i: regional P<i>, local id L<i> at facilities i%10 and (i+3)%10.
    await sql`insert into regional_patient (id, created_at, created_by)
      select 'P' || i, now(), 'bench' from generate_series(1, ${PATIENTS}::int) i`.execute(db);
    await sql`insert into identity_link (facility_id, local_id, regional_id, method, linked_by, linked_at)
      select 'F' || lpad(((i + k * 3) % 10 + 1)::text, 2, '0'), 'L' || i, 'P' || i, 'manual', 'bench', now()
      from generate_series(1, ${PATIENTS}::int) i, generate_series(0, 1) k`.execute(db);
    await sql`insert into consent_version (id, regional_id, version, recorded_at, recorded_by, status, terms, valid_from)
      select 'C' || i, 'P' || i, 1, now() - interval '1 day', 'bench', 'opted-in', ${terms}::jsonb, now() - interval '1 day'
      from generate_series(1, ${PATIENTS}::int) i`.execute(db);
    // In slices, so that progress shows and no one statement holds a million rows' worth of WAL.
    const slice = 100_000;
    for (let from = 1; from <= RECORDS; from += slice) {
      const to = Math.min(RECORDS, from + slice - 1);
      await sql`insert into record (facility_id, path, sha256, added_seq, snapshot_id, patient_id, data_type, category, care_date,
          order_no, message_ts, department, condition_flag, status, content)
        select 'F' || lpad(((p + ((n - 1) / ${PATIENTS}::int % 2) * 3) % 10 + 1)::text, 2, '0'), 'bench/' || n, md5(n::text) || md5(n::text), 1, 'snap', 'L' || p,
          'OMP-01', (array[${sql.join(INDEX_CATEGORIES.map((c) => sql`${c}`))}])[n % 10 + 1], date '2020-01-01' + (n % 1500),
          lpad(n::text, 15, '0'), '20200101000000000', '01', '1', 'ok', ${content}::jsonb
        from (select n, (n % ${PATIENTS}::int) + 1 as p from generate_series(${from}::int, ${to}::int) n) s`.execute(db);
      process.stderr.write(`\rloaded ${to.toLocaleString('en')} / ${RECORDS.toLocaleString('en')} records (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
    process.stderr.write('\n');
    await sql`insert into record_index_state (facility_id, published_seq, published_snapshot_id, published_at)
      select f, 1, 'snap', now() from unnest(${FACILITIES}::text[]) f`.execute(db);
    await sql`vacuum analyze`.execute(db);
    await sql`create table bench_loaded (records bigint not null, patients bigint not null, layout int not null)`.execute(db);
    await sql`insert into bench_loaded values (${RECORDS}, ${PATIENTS}, ${LAYOUT})`.execute(db);
  } finally {
    await handle.close();
  }
  return (performance.now() - t0) / 1000;
}

/** utime + stime of a process in seconds (proc(5), fields 14 and 15), 0 when it is gone. */
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
function procCpu(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return 0;
  }
}

/** CPU seconds so far of this database's backends and of PostgreSQL's shared writers. */
async function pgCpu(c: pg.Client): Promise<{ backends: Map<number, number>; shared: Map<number, number> }> {
  const r = await c.query<{ pid: number; kind: string }>(
    `select pid, case when datname = $1 then 'db' else 'shared' end as kind from pg_stat_activity
     where (datname = $1 and pid <> pg_backend_pid()) or backend_type in ('walwriter', 'checkpointer', 'background writer')`,
    [DB_NAME],
  );
  const backends = new Map<number, number>();
  const shared = new Map<number, number>();
  for (const row of r.rows) (row.kind === 'db' ? backends : shared).set(row.pid, procCpu(row.pid));
  return { backends, shared };
}

function delta(before: Map<number, number>, after: Map<number, number>): number {
  let s = 0;
  for (const [pid, v] of after) s += v - (before.get(pid) ?? 0);
  return s;
}

/** A latency from the load generator (null when it had none to give). */
const ms = (v: number | null) => (typeof v === 'number' && Number.isFinite(v) ? +v.toFixed(1) : null);

interface LoadResult {
  requests: number;
  seconds: number;
  statuses: Record<string, number>;
  bytes: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
  clientCpuSeconds: number;
}

/** Runs the child load generator; `onWarm` runs when its warm-up ends (start of the measured window). */
function runLoad(spec: LoadSpec, onWarm: () => Promise<void>): Promise<LoadResult> {
  return CLIENT === 'wrk' ? runWrk(spec, onWarm) : runNodeLoad(spec, onWarm);
}

function runNodeLoad(spec: LoadSpec, onWarm: () => Promise<void>): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'viewer.load.ts'), JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let result: LoadResult | undefined;
    let warm: Promise<void> = Promise.resolve();
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'warm') warm = onWarm();
      else if (line.startsWith('{')) result = JSON.parse(line) as LoadResult;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0 || !result) reject(new Error(`the load generator exited with ${code}`));
      else warm.then(() => resolve(result!), reject);
    });
  });
}

/** CPU seconds of this process's children that have ended and been waited for (proc(5) cutime + cstime). */
function childrenCpu(): number {
  const fields = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[13]) + Number(fields[14])) / TICKS;
}

/** wrk for `seconds` (one thread: the clients cost little CPU); resolves with its closing JSON line. */
function wrkRun(spec: LoadSpec, seconds: number): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const args = ['-t1', `-c${spec.clients}`, `-d${seconds}s`, '--timeout', '30s', '-s', path.join(import.meta.dirname, 'viewer.wrk.lua'),
      `http://127.0.0.1:${spec.port}`, '--', spec.token, spec.template, String(spec.patients)];
    const child = spawn(WRK, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code !== 0 || !line) reject(new Error(`wrk exited with ${code}: ${out}`));
      else resolve(JSON.parse(line) as Record<string, number>);
    });
  });
}

async function runWrk(spec: LoadSpec, onWarm: () => Promise<void>): Promise<LoadResult> {
  await wrkRun(spec, spec.warmupSeconds);
  await onWarm();
  const cpu0 = childrenCpu();
  const r = await wrkRun(spec, spec.seconds);
  const bad = r.non2xx! + r.connect! + r.read! + r.write! + r.timeout!;
  return {
    requests: r.requests!,
    seconds: r.micros! / 1e6,
    // wrk tells only whether a status was 2xx/3xx; socket errors are counted apart.
    statuses: { '2xx/3xx': r.requests! - r.non2xx!, other: r.non2xx!, ...(bad > r.non2xx! ? { 'socket errors': bad - r.non2xx! } : {}) },
    bytes: r.bytes!,
    p50: r.p50!,
    p95: r.p95!,
    p99: r.p99!,
    max: r.max!,
    clientCpuSeconds: childrenCpu() - cpu0,
  };
}

/**
 * `--cpu-prof-window DIR`: a CPU profile of the server over the measured window only (no start-up,
 * loading or warm-up in it), written as DIR/<endpoint>.cpuprofile.
 */
const profArg = process.argv.indexOf('--cpu-prof-window');
const profiler = profArg < 0 ? undefined : (() => {
  const dir = process.argv[profArg + 1]!;
  const session = new inspector.Session();
  session.connect();
  return {
    async start() {
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    },
    async stop(name: string) {
      const { profile } = await session.post('Profiler.stop');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    },
  };
})();

/** `--statements`: the statements the server sends in the measured window, by name or first words. */
const statements = new Map<string, number>();
let countStatements = false;
if (process.argv.includes('--statements')) {
  const query = pg.Client.prototype.query as (...a: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...a: unknown[]) {
    const q = a[0] as string | { text?: string; name?: string };
    if (countStatements) {
      const k = (typeof q === 'string' ? q : (q.name ?? q.text ?? '')).replace(/\s+/g, ' ').trim().slice(0, 60);
      statements.set(k, (statements.get(k) ?? 0) + 1);
    }
    return query.apply(this, a);
  } as typeof pg.Client.prototype.query;
}

async function main() {
  let setupSeconds: number | 'reused' = 'reused';
  if (!(REUSE && (await alreadyLoaded()))) setupSeconds = await load();
  const tmp = tempDir('hakobune-viewer-bench-');
  // The server as `hakobune serve [--workers N]` runs it: N > 1 processes (PostgreSQL and Redis,
  // as here) through the same startCluster; one process is the exchange in this process.
  const queuePrefix = `hkvbench-${process.pid}`;
  const config = testConfig(tmp.dir, { databaseUrl: dbUrl, redisUrl: REDIS_URL, auth: { ...testConfig(tmp.dir).auth, loginAttemptsPerMinute: 100_000 } });
  const workers = resolveWorkers(WORKERS_OPTION, config);
  const exchange = await createExchange(config, { jobs: { queuePrefix } });
  let running: RunningCluster | undefined;
  const probe = new pg.Client({ connectionString: ADMIN_URL });
  await probe.connect();
  const benchDb = new pg.Client({ connectionString: dbUrl });
  await benchDb.connect();
  const auditCount = async () => Number((await benchDb.query('select count from audit_head')).rows[0].count);
  try {
    const username = `doc${Date.now().toString(36)}`;
    const doc = await exchange.viewer.admin.addUser({ actor: { username: 'bench' }, address: null, endpoint: 'bench' }, {
      facilityId: 'F01', username, displayName: 'doc', role: 'physician', password: 'a long bench password',
    });
    const device = await exchange.viewer.admin.registerDevice({ actor: { username: 'bench' }, address: null, endpoint: 'bench' }, 'F01', 'bench');
    let url: string;
    if (workers > 1) {
      await exchange.stop();
      running = await startCluster({
        workers,
        env: { DATABASE_URL: dbUrl, REDIS_URL, HAKOBUNE_DATA_DIR: tmp.dir, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'silent', LOGIN_RATE_PER_MINUTE: '100000' },
        exchange: { jobs: { queuePrefix } },
      });
      url = running.url;
    } else {
      url = await exchange.listen();
    }
    /** CPU seconds of the server: this process, and the workers when there are several. */
    const serverCpu = () => {
      const c = process.cpuUsage();
      return (c.user + c.system) / 1e6 + (running ? running.pids().reduce((a, pid) => a + procCpu(pid), 0) : 0);
    };
    const login = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-credential': device.credential },
      body: JSON.stringify({ facilityId: 'F01', username, password: 'a long bench password', totp: await totpCode(doc.totpSecret, Date.now()) }),
    });
    if (login.status !== 200) throw new Error(`login failed: ${login.status} ${await login.text()}`);
    const { token } = (await login.json()) as { token: string };
    const port = Number(new URL(url).port);

    const results: Record<string, unknown>[] = [];
    for (const name of ENDPOINTS) {
      let cpu0 = serverCpu();
      let pg0 = await pgCpu(probe);
      let load0 = os.loadavg();
      let auditAtWarm = await auditCount();
      const r = await runLoad(
        { port, token, template: PATHS[name], patients: PATIENTS, clients: CLIENTS, warmupSeconds: WARMUP, seconds: SECONDS },
        async () => {
          if (running && profArg >= 0) running.startProfiles();
          else await profiler?.start();
          statements.clear();
          countStatements = true;
          cpu0 = serverCpu();
          pg0 = await pgCpu(probe);
          load0 = os.loadavg();
          auditAtWarm = await auditCount();
        },
      );
      const cpuSeconds = serverCpu() - cpu0;
      if (running && profArg >= 0) await running.stopProfiles(process.argv[profArg + 1]!, name);
      else await profiler?.stop(name);
      countStatements = false;
      const pg1 = await pgCpu(probe);
      const load1 = os.loadavg();
      const auditEnd = await auditCount();
      const pgBackends = delta(pg0.backends, pg1.backends);
      const ok = r.statuses['200'] ?? r.statuses['2xx/3xx'] ?? 0;
      results.push({
        endpoint: name,
        requests: r.requests,
        statuses: r.statuses,
        'req/s': Math.round(r.requests / r.seconds),
        // null: no request finished inside the measured window.
        'p50 ms': ms(r.p50),
        'p95 ms': ms(r.p95),
        'p99 ms': ms(r.p99),
        'max ms': ms(r.max),
        'KB/response': +(r.bytes / Math.max(1, r.requests) / 1024).toFixed(1),
        'server processes': workers,
        'server CPU s': +cpuSeconds.toFixed(2),
        'server CPU ms/request': +((cpuSeconds * 1000) / Math.max(1, r.requests)).toFixed(3),
        'PostgreSQL backends CPU s': +pgBackends.toFixed(2),
        'PostgreSQL backends CPU ms/request': +((pgBackends * 1000) / Math.max(1, r.requests)).toFixed(3),
        'PostgreSQL shared writers CPU s (all databases)': +delta(pg0.shared, pg1.shared).toFixed(2),
        client: CLIENT,
        'client CPU s (child process)': +r.clientCpuSeconds.toFixed(2),
        'client CPU ms/request': +((r.clientCpuSeconds * 1000) / Math.max(1, r.requests)).toFixed(3),
        'audit entries in window (about)': auditEnd - auditAtWarm,
        ...(statements.size
          ? { 'statements/request': Object.fromEntries([...statements].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, +(v / Math.max(1, r.requests)).toFixed(2)])) }
          : {}),
        'ok responses': ok,
        loadavg: { start: load0.map((x) => +x.toFixed(1)), end: load1.map((x) => +x.toFixed(1)) },
      });
      process.stderr.write(`${name}: ${Math.round(r.requests / r.seconds)} req/s, p95 ${ms(r.p95)} ms\n`);
    }
    const cpus = os.cpus();
    console.log(
      JSON.stringify(
        {
          at: new Date().toISOString(),
          records: RECORDS, patients: PATIENTS, facilities: FACILITIES.length, clients: CLIENTS, warmupSeconds: WARMUP, seconds: SECONDS,
          database: DB_NAME, setupSeconds: typeof setupSeconds === 'number' ? +setupSeconds.toFixed(1) : setupSeconds,
          machine: { cpus: cpus.length, model: cpus[0]?.model, memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1), node: process.version,
            postgres: (await probe.query('show server_version')).rows[0].server_version },
          results,
        },
        null,
        2,
      ),
    );
  } finally {
    await probe.end();
    await benchDb.end();
    await running?.stop();
    await exchange.stop();
    // The queues and rate-limit counters of this run's prefix.
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${queuePrefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    tmp.remove();
    if (!REUSE) await admin((c) => c.query(`drop database if exists "${DB_NAME}" with (force)`));
  }
}

await main();
