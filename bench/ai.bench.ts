/**
 * AI services through the exchange: a stand-in service answering in 200 ms, at least 100
 * analysis requests in flight, and the exchange's own overhead per request (from the start of
 * the clinician's POST to the result stored, minus the time the service took), p50/p95/p99;
 * plus the viewer's timeline latency before and while the load runs.
 *
 *   npx tsx bench/ai.bench.ts [--requests 600] [--inflight 120] [--backend postgres|embedded]
 *
 * Needs the machine's PostgreSQL (postgres backend). Prints JSON.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { readStoredFile } from '../ingest/records/read.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import type { Db } from '../store/db.js';
import { startStandIn } from '../viewer-api/ai/standin.js';
import { SAMPLES_ROOT, tempDir } from '../test/support/tmp.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { totpCode } from '../viewer-api/auth/totp.js';

type Backend = 'postgres' | 'embedded';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const REQUESTS = Number(arg('requests', '600'));
const INFLIGHT = Number(arg('inflight', '120'));
const BACKEND = arg('backend', 'postgres') as Backend;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10 : NaN;
};
const summary = (xs: number[]) => ({ n: xs.length, p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), max: pct(xs, 100) });

async function indexPatient(db: Db, facilityId: string): Promise<void> {
  const root = path.join(SAMPLES_ROOT, '999/901/9999013');
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  for (const abs of walk(root)) {
    const bytes = fs.readFileSync(abs);
    const out = readStoredFile({ facilityId, path: path.relative(SAMPLES_ROOT, abs), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
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
}

async function main() {
  // The exchange on the real clock: request times are read back from its database.
  const tmp = tempDir('hakobune-ai-bench-');
  const pg = BACKEND === 'postgres' ? await createTestDatabase('aibench') : undefined;
  const base = testConfig(tmp.dir, pg ? { databaseUrl: pg.url } : {});
  const exchange = await createExchange({ ...base, auth: { ...base.auth, loginAttemptsPerMinute: 10_000 } });
  const url = await exchange.listen();
  const cli = { actor: { username: 'cli:bench' }, address: null, endpoint: 'bench' };
  const h = { exchange, url, cli, clock: { ms: Date.now() } };
  const get = (p: string, token: string) => fetch(`${url}${p}`, { headers: { authorization: `Bearer ${token}` } });
  const stand = await startStandIn({ delayMs: 200 });
  try {
    const db = h.exchange.db;
    const consent = h.exchange.consent;
    const actor = 'bench';
    for (const id of ['FA', 'FB']) {
      await insertFacility(db, { id, name: `Facility ${id}`, kind: 'hospital' });
      await consent.consent.setParticipation(actor, { facilityId: id, kind: 'hospital', discloses: true, views: true }, 'bench');
      await indexPatient(db, id);
    }
    const regional = (await consent.identity.enrol(actor, { facilityId: 'FA', localId: '9999013' }, { evidence: 'bench' })).regionalId;
    await consent.identity.enrol(actor, { facilityId: 'FB', localId: '9999013' }, { regionalId: regional, evidence: 'bench' });
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
    await h.exchange.ai.registry.register(h.cli, {
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
    const u = await exchange.viewer.admin.addUser(cli, { facilityId: 'FB', username: 'doctor', displayName: 'doctor', role: 'physician', password: 'a long bench passphrase' });
    const device = await exchange.viewer.admin.registerDevice(cli, 'FB', 'bench terminal');
    const login = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-credential': device.credential },
      body: JSON.stringify({ facilityId: 'FB', username: 'doctor', password: 'a long bench passphrase', totp: await totpCode(u.totpSecret, Date.now()) }),
    });
    if (login.status !== 200) throw new Error(`login: ${login.status} ${await login.text()}`);
    const token = ((await login.json()) as { token: string }).token;

    const submit = async (): Promise<{ id: string; start: number; submitMs: number }> => {
      const start = Date.now();
      const res = await fetch(`${h.url}/api/ai/requests`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ serviceId: 'bench-model', patientId: regional }),
      });
      if (res.status !== 202) throw new Error(`submit: ${res.status} ${await res.text()}`);
      const { id } = (await res.json()) as { id: string };
      return { id, start, submitMs: Date.now() - start };
    };
    const settle = async (id: string) => {
      for (;;) {
        const row = await db.selectFrom('ai_request').select(['status', 'completed_at']).where('id', '=', id).executeTakeFirstOrThrow();
        if (row.status === 'done') return row.completed_at!.getTime();
        if (row.status === 'failed' || row.status === 'denied') throw new Error(`request ${id} ${row.status}`);
        // Polling only keeps the number in flight; times come from the exchange's own records.
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const timeline = async (samples: number[], until: () => boolean) => {
      while (!until()) {
        const t = performance.now();
        const r = await get(`/api/patients/${regional}/timeline?limit=50`, token);
        await r.arrayBuffer();
        if (r.status !== 200) throw new Error(`timeline: ${r.status}`);
        samples.push(performance.now() - t);
      }
    };

    // Warm-up (first FHIR schema compilation, connections).
    for (let i = 0; i < 5; i++) await settle((await submit()).id);

    const baseline: number[] = [];
    let n = 0;
    await timeline(baseline, () => ++n > 200);

    const overhead: number[] = [];
    const submitMs: number[] = [];
    const endToEnd: number[] = [];
    let inflight = 0;
    let maxInflight = 0;
    const inflightSamples: number[] = [];
    let started = 0;
    let done = false;
    const during: number[] = [];
    const sampler = setInterval(() => inflightSamples.push(inflight), 50);
    const t0 = Date.now();
    const worker = async () => {
      while (started < REQUESTS) {
        started++;
        inflight++;
        maxInflight = Math.max(maxInflight, inflight);
        const s = await submit();
        const completed = await settle(s.id);
        inflight--;
        submitMs.push(s.submitMs);
        endToEnd.push(completed - s.start);
        const audit = await db
          .selectFrom('audit_event')
          .select('detail')
          .where('action', '=', 'ai.request.send')
          .where('detail', 'like', `%"request":"${s.id}"%`)
          .executeTakeFirstOrThrow();
        const serviceMs = (JSON.parse(String(audit.detail)) as { serviceMs: number }).serviceMs;
        overhead.push(completed - s.start - serviceMs);
      }
    };
    const timelineRun = timeline(during, () => done);
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
    done = true;
    await timelineRun;
    clearInterval(sampler);
    const seconds = (Date.now() - t0) / 1000;
    const steady = inflightSamples.slice(Math.floor(inflightSamples.length * 0.1), Math.floor(inflightSamples.length * 0.9));
    const result = {
      backend: BACKEND,
      queue: h.exchange.ai.queue.kind,
      requests: REQUESTS,
      workers: INFLIGHT,
      inFlight: { max: maxInflight, medianWhileRunning: pct(steady, 50) },
      standInDelayMs: 200,
      seconds: Math.round(seconds * 10) / 10,
      requestsPerSecond: Math.round((REQUESTS / seconds) * 10) / 10,
      overheadMs: summary(overhead),
      submitMs: summary(submitMs),
      endToEndMs: summary(endToEnd),
      timelineMs: { before: summary(baseline), during: summary(during) },
      standInReceived: stand.received.length,
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    await stand.close();
    await exchange.stop();
    await pg?.drop();
    tmp.remove();
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
