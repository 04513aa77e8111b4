/**
 * Viewer timeline and $everything under load, with the gate and the audit trail on.
 *
 *   npx tsx bench/viewer.bench.ts --records 200000 --patients 20000 --seconds 20 --clients 50
 *
 * Builds, on a fresh PostgreSQL database, 10 hospital facilities, `--patients` regional patients
 * each linked at two facilities and opted in, and `--records` indexed records spread over their
 * local IDs and all categories (bulk SQL: the indexer's own speed is bench/index.bench.ts's
 * business). One physician signs in once (logins are excluded from the figures); then
 * `--clients` concurrent clients on loopback ask for random patients' timelines (limit 50) for
 * `--seconds`, then the same for `Patient/{id}/$everything` (_count 50). The server and the
 * clients share this one Node process, so the clients' CPU is counted against the server.
 */
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { readStoredFile } from '../ingest/records/read.js';
import { totpCode } from '../viewer-api/auth/totp.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { SAMPLES_ROOT, tempDir } from '../test/support/tmp.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const RECORDS = arg('records', 200_000);
const PATIENTS = arg('patients', 20_000);
const SECONDS = arg('seconds', 20);
const CLIENTS = arg('clients', 50);
const FACILITIES = Array.from({ length: 10 }, (_, i) => `F${String(i + 1).padStart(2, '0')}`);
const INDEX_CATEGORIES = ['patient', 'encounter', 'diagnosis', 'allergy', 'prescription', 'injection', 'lab', 'radiology', 'diet', 'document'];

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function main() {
  const tmp = tempDir('hakobune-viewer-bench-');
  const pg = await createTestDatabase('hkvbench');
  const exchange = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url, auth: { ...testConfig(tmp.dir).auth, loginAttemptsPerMinute: 100_000 } }));
  try {
    const db = exchange.db;
    const t0 = performance.now();
    for (const f of FACILITIES) {
      await insertFacility(db, { id: f, name: `Hospital ${f}`, kind: 'hospital' });
      await exchange.consent.consent.setParticipation('bench', { facilityId: f, kind: 'hospital', discloses: true, views: true }, 'bench');
    }
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
    await sql`insert into record (facility_id, path, sha256, added_seq, snapshot_id, patient_id, data_type, category, care_date,
        order_no, message_ts, department, condition_flag, status, content)
      select 'F' || lpad(((p + (n % 2) * 3) % 10 + 1)::text, 2, '0'), 'bench/' || n, md5(n::text) || md5(n::text), 1, 'snap', 'L' || p,
        'OMP-01', (array[${sql.join(INDEX_CATEGORIES.map((c) => sql`${c}`))}])[n % 10 + 1], date '2020-01-01' + (n % 1500),
        lpad(n::text, 15, '0'), '20200101000000000', '01', '1', 'ok', ${content}::jsonb
      from (select n, (n % ${PATIENTS}::int) + 1 as p from generate_series(1, ${RECORDS}::int) n) s`.execute(db);
    await sql`insert into record_index_state (facility_id, published_seq, published_snapshot_id, published_at)
      select f, 1, 'snap', now() from unnest(${FACILITIES}::text[]) f`.execute(db);
    await sql`analyze`.execute(db);
    const setupS = (performance.now() - t0) / 1000;

    const doc = await exchange.viewer.admin.addUser({ actor: { username: 'bench' }, address: null, endpoint: 'bench' }, {
      facilityId: 'F01', username: 'doc', displayName: 'doc', role: 'physician', password: 'a long bench password',
    });
    const device = await exchange.viewer.admin.registerDevice({ actor: { username: 'bench' }, address: null, endpoint: 'bench' }, 'F01', 'bench');
    const url = await exchange.listen();
    const login = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-credential': device.credential },
      body: JSON.stringify({ facilityId: 'F01', username: 'doc', password: 'a long bench password', totp: await totpCode(doc.totpSecret, Date.now()) }),
    });
    const { token } = (await login.json()) as { token: string };

    const results: Record<string, unknown>[] = [];
    for (const [name, pathOf] of [
      ['timeline', (p: number) => `/api/patients/P${p}/timeline?limit=50`],
      ['$everything', (p: number) => `/fhir/Patient/P${p}/$everything?_count=50`],
    ] as const) {
      const lat: number[] = [];
      let errors = 0;
      let records = 0;
      const end = performance.now() + SECONDS * 1000;
      const cpu0 = process.cpuUsage();
      const started = performance.now();
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          while (performance.now() < end) {
            const p = 1 + Math.floor(Math.random() * PATIENTS);
            const s = performance.now();
            const res = await fetch(`${url}${pathOf(p)}`, { headers: { authorization: `Bearer ${token}` } });
            const body = await res.text();
            lat.push(performance.now() - s);
            if (res.status !== 200) errors++;
            else records += (body.match(/"(sourceFacilityId|fullUrl)"/g) ?? []).length;
          }
        }),
      );
      const wall = (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpu0);
      lat.sort((a, b) => a - b);
      results.push({
        endpoint: name,
        requests: lat.length,
        errors,
        'req/s': Math.round(lat.length / wall),
        'p50 ms': +pct(lat, 50).toFixed(1),
        'p95 ms': +pct(lat, 95).toFixed(1),
        'p99 ms': +pct(lat, 99).toFixed(1),
        'items/response': +(records / Math.max(1, lat.length - errors)).toFixed(1),
        'process CPU s': +((cpu.user + cpu.system) / 1e6).toFixed(1),
      });
    }
    const audit = await db.selectFrom('audit_head').select('count').executeTakeFirstOrThrow();
    console.log(JSON.stringify({
      records: RECORDS, patients: PATIENTS, facilities: FACILITIES.length, clients: CLIENTS, seconds: SECONDS,
      setupSeconds: +setupS.toFixed(1), auditEntries: audit.count, loadavg: os.loadavg().map((x) => +x.toFixed(1)),
      cpus: os.cpus().length, node: process.version, results,
    }, null, 2));
  } finally {
    await exchange.stop();
    await pg.drop();
    tmp.remove();
  }
}

await main();
