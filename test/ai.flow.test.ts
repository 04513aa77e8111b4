import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStoredFile } from '../ingest/records/read.js';
import type { ClinicalRecord } from '../ingest/records/types.js';
import { patientResourceId } from '../ingest/fhir/to-fhir.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import type { Db } from '../store/db.js';
import type { ConsentModule } from '../consent/consent.module.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { startStandIn, type StandIn } from '../viewer-api/ai/standin.js';
import { createAiFlow, REDECIDE_AFTER_MS } from '../viewer-api/ai/ai.service.js';
import { createInlinePreparer, createWorkerPreparer } from '../viewer-api/ai/deid-pool.js';
import { pseudonymKeyFrom } from '../viewer-api/ai/ai.module.js';
import { SecretBox } from '../viewer-api/auth/secret-box.js';
import { SAMPLES_ROOT } from './support/tmp.js';
import { TEST_REDIS_URL } from './support/postgres.js';
import { enrol, get, startViewer, tokenFor, type TestUser, type ViewerHarness } from './viewer.support.js';
import { identifierForms, scanForIdentifiers, type KnownPatient } from './ai.support.js';

/**
 * End to end over HTTP: a physician asks for an analysis of a patient linked across two
 * facilities; the exchange gates it on consent for that AI service, sends a de-identified Bundle
 * of the declared categories to a real stand-in service on 127.0.0.1 through the queue, and
 * shows the re-identified result. What the stand-in received is scanned for every identifier of
 * the patient; refusals send nothing and are audited; a failing service ends in a clear status
 * and an open circuit without slowing the rest of the API.
 */

const SAMPLE_PATIENT = path.join(SAMPLES_ROOT, '999/901/9999013');
const NOTE = '患者 太郎様（カンジャ タロウ、昭和23年4月5日生、S23.4.5）静岡県静岡市登呂1-3-5 在住、TEL 054-000-0000、ID 9999013、保険者番号 67999991。2011-12-20 紹介。';

const KNOWN: KnownPatient = {
  names: [
    { family: '患者', given: '太郎' },
    { family: 'カンジャ', given: 'タロウ' },
  ],
  birthDates: ['1948-04-05'],
  addresses: ['静岡県静岡市登呂１－３－５'],
  postalCodes: ['422-8033'],
  phones: ['054-000-0000', '03-5999-9999', '03-3599-9993'],
  localIds: ['9999013'],
  insuranceNumbers: ['67999991'],
};

async function insertRecord(db: Db, rec: ClinicalRecord, status: 'ok' = 'ok') {
  await db
    .insertInto('record')
    .values({
      facility_id: rec.source.facilityId,
      path: rec.source.path,
      sha256: rec.source.sha256,
      added_seq: 1,
      snapshot_id: `snap-${rec.source.facilityId}`,
      patient_id: rec.source.patientId,
      data_type: rec.source.dataType,
      category: rec.category,
      care_date: rec.source.careDate,
      order_no: rec.source.orderNo,
      message_ts: rec.source.timestamp,
      department: rec.source.department,
      condition_flag: rec.source.condition,
      status,
      content: JSON.stringify(rec),
    })
    .execute();
}

/** The sample patient's good files as one facility's published records, plus a referral letter. */
async function indexPatient(db: Db, facilityId: string): Promise<number> {
  let n = 0;
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  for (const abs of walk(SAMPLE_PATIENT)) {
    const bytes = fs.readFileSync(abs);
    const out = readStoredFile({ facilityId, path: path.relative(SAMPLES_ROOT, abs), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
    if (out.status !== 'ok' || !out.record) continue;
    await insertRecord(db, out.record);
    n++;
  }
  await insertRecord(db, {
    source: { facilityId, patientId: '9999013', dataType: 'CDA', careDate: '2011-12-20', orderNo: '1', timestamp: '20111220103000000', department: null, condition: '1', sha256: 'e'.repeat(64), path: 'extended/9999013/20111220/CDA/letter.xml' },
    category: 'document',
    content: { kind: 'document', title: '診療情報提供書 患者太郎様', text: NOTE, attachments: [] },
  });
  await db.insertInto('record_index_state').values({ facility_id: facilityId, published_seq: 1, published_snapshot_id: `snap-${facilityId}`, published_at: new Date() }).execute();
  return n + 1;
}

interface RequestView {
  id: string;
  status: string;
  detail: string | null;
  attempts: number;
  categories: string[];
}

describe.each([
  ['embedded', 'in-process'],
  ['postgres', 'bullmq'],
] as const)('AI analysis through the exchange (%s, %s queue)', (backend, queueKind) => {
  let h: ViewerHarness;
  let consent: ConsentModule;
  let stand: StandIn;
  let flaky: StandIn;
  let hanging: StandIn;
  let regional: string;
  let noAiConsent: string;
  let doctor: TestUser;
  let nurse: TestUser;
  const tokens: Record<string, string> = {};
  const actor = 'test:admin';

  beforeAll(async () => {
    // A BullMQ key prefix of this run's own: another run on the same Redis must not take its jobs.
    h = await startViewer(backend, (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 }, ...(queueKind === 'bullmq' ? { redisUrl: TEST_REDIS_URL } : {}) }), {
      jobs: { queuePrefix: `hk-ai-flow-${randomBytes(4).toString('hex')}` },
    });
    expect(h.exchange.ai.queue.kind).toBe(queueKind);
    stand = await startStandIn({ oauth: { clientId: 'hakobune', clientSecret: 'stand-in-secret', expiresIn: 600 } });
    flaky = await startStandIn();
    hanging = await startStandIn();
    hanging.fallback = { kind: 'hang' };
    const db = h.exchange.db;
    consent = h.exchange.consent;
    for (const [id, kind] of Object.entries({ FA: 'hospital', FB: 'hospital', FC: 'hospital' } as const)) {
      await insertFacility(db, { id, name: `Facility ${id}`, kind });
      await consent.consent.setParticipation(actor, { facilityId: id, kind, discloses: true, views: true }, 'joins the network');
    }
    for (const f of ['FA', 'FB', 'FC']) expect(await indexPatient(db, f)).toBeGreaterThan(5);
    regional = (await consent.identity.enrol(actor, { facilityId: 'FA', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;
    await consent.identity.enrol(actor, { facilityId: 'FB', localId: '9999013' }, { regionalId: regional, evidence: 'ID card checked' });
    await consent.consent.record(actor, regional, { terms: terms(['cv-risk', 'flaky', 'hanging']) });
    // Another patient consented to treatment, but to no AI service.
    noAiConsent = (await consent.identity.enrol(actor, { facilityId: 'FC', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;
    await consent.consent.record(actor, noAiConsent, { terms: terms([]) });

    await h.exchange.ai.registry.register(h.cli, {
      id: 'cv-risk',
      name: '心血管リスク (stand-in)',
      baseUrl: stand.base,
      operation: '$analyze',
      auth: { kind: 'oauth2', tokenUrl: stand.tokenUrl, clientId: 'hakobune', clientSecret: 'stand-in-secret' },
      categories: ['demographics', 'prescriptions', 'injections', 'labs', 'diagnoses', 'documents'],
      facilities: 'all',
      timeoutMs: 3000,
      location: { country: 'JP', region: 'Tokyo' },
      birthDate: 'age',
    });
    // Two plain services that ask for labs only: one failing now and then, one that never answers.
    const labsService = (id: string, name: string, baseUrl: string, timeoutMs: number) =>
      h.exchange.ai.registry.register(h.cli, { id, name, baseUrl, operation: 'Bundle', auth: { kind: 'none' }, categories: ['labs'], facilities: 'all', timeoutMs, location: { country: 'JP', region: null } });
    await labsService('flaky', 'flaky stand-in', flaky.base, 800);
    // Far longer than the test needs: the call is outstanding until the test ends it.
    await labsService('hanging', 'hanging stand-in', hanging.base, 60_000);
    doctor = await enrol(h, 'FB', 'doctor', 'physician');
    nurse = await enrol(h, 'FB', 'nurse', 'nurse');
    for (const u of [doctor, nurse]) tokens[u.username] = await tokenFor(h, u);
  }, 120_000);

  afterAll(async () => {
    await h?.close();
    await stand?.close();
    await flaky?.close();
    await hanging?.close();
  });

  const submit = (u: TestUser, serviceId: string, patientId: string) =>
    fetch(`${h.url}/api/ai/requests`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens[u.username]}`, 'content-type': 'application/json' },
      body: JSON.stringify({ serviceId, patientId }),
    });

  async function settled(u: TestUser, id: string): Promise<RequestView> {
    for (let i = 0; i < 300; i++) {
      const v = (await (await get(h, `/api/ai/requests/${id}`, tokens[u.username])).json()) as RequestView;
      if (v.status === 'done' || v.status === 'failed' || v.status === 'denied') return v;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`request ${id} did not settle`);
  }

  /** Opted in, treatment and these AI services. */
  const terms = (aiServices: string[]) => ({
    status: 'opted-in' as const,
    disclosing: { mode: 'all' as const },
    receiving: { kinds: ['hospital' as const], facilities: [], exclude: [] },
    categories: { mode: 'all' as const },
    purposes: { treatment: true, emergency: 'unspecified' as const, aiServices, research: false },
    validFrom: h.clock.ms - 86_400_000,
    validTo: null,
  });

  /** The exchange's AI flow built again around a queue (and preparer) of the test's. */
  const flowWith = (parts: Partial<Pick<Parameters<typeof createAiFlow>[0], 'queue' | 'preparer' | 'audit'>>) => {
    const ex = h.exchange;
    return createAiFlow({
      queue: () => ex.ai.queue,
      db: ex.db,
      box: SecretBox.fromKeyFile(ex.config.auth.secretKeyFile),
      audit: ex.viewer.audit,
      clock: h.clock.now,
      log: ex.log,
      registry: ex.ai.registry,
      client: ex.ai.client,
      contexts: ex.consent.contexts,
      // The job's decision context is read with its claim, as in the exchange.
      consent: ex.consent,
      roles: ex.viewer.roles,
      pseudonymKey: pseudonymKeyFrom(ex.config.auth.secretKeyFile),
      ...parts,
    });
  };
  const doctorPrincipal = () => ({ userId: doctor.userId, username: 'doctor', displayName: 'doctor', facilityId: 'FB', role: 'physician' as const, sessionId: 's', deviceId: 'd', address: '127.0.0.1', expiresAt: new Date(h.clock.ms + 3_600_000) });

  const audits = (action: string) =>
    h.exchange.db.selectFrom('audit_event').select(['action', 'outcome', 'reason', 'detail', 'patient', 'user_id']).where('action', '=', action).orderBy('seq').execute();

  it('sends a de-identified Bundle of the declared categories, and shows the re-identified result', async () => {
    const res = await submit(doctor, 'cv-risk', regional);
    expect(res.status).toBe(202);
    const queued = (await res.json()) as RequestView;
    expect(res.headers.get('location')).toBe(`/api/ai/requests/${queued.id}`);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const done = await settled(doctor, queued.id);
    expect(done).toMatchObject({ status: 'done', attempts: 1 });
    expect(done.categories).toEqual(['demographics', 'diagnoses', 'prescriptions', 'injections', 'labs', 'documents']);

    expect(stand.received).toHaveLength(1);
    const got = stand.received[0]!;
    expect(got.headers.authorization).toMatch(/^Bearer tok-/);
    const body = JSON.parse(got.body) as { parameter: { resource: { entry: { resource: Record<string, unknown> }[] } }[] };
    // Not one identifier of the patient, in any form, anywhere in what left the exchange.
    expect(scanForIdentifiers(body, identifierForms(KNOWN))).toEqual([]);
    expect(got.body).not.toContain('9999013');
    const types = new Set(body.parameter[0]!.resource.entry.map((e) => e.resource['resourceType']));
    expect(types).toContain('MedicationRequest');
    expect(types).toContain('DocumentReference');
    expect(types).not.toContain('Encounter'); // not declared by the service
    // Both facilities' records went (linked and consented), each once.
    expect(body.parameter[0]!.resource.entry.filter((e) => e.resource['resourceType'] === 'Patient')).toHaveLength(2);

    // The audit trail has the hash and size of exactly those bytes.
    const sent = (await audits('ai.request.send')).at(-1)!;
    expect(sent.outcome).toBe('success');
    const detail = JSON.parse(String(sent.detail)) as Record<string, unknown>;
    expect(detail['sentSha256']).toBe(createHash('sha256').update(got.body).digest('hex'));
    expect(detail['sentBytes']).toBe(Buffer.byteLength(got.body));
    expect(sent.patient).toBe(regional);
    const submitted = (await audits('ai.request.submit')).at(-1)!;
    expect(submitted).toMatchObject({ outcome: 'success', user_id: doctor.userId, patient: regional });

    const r = await get(h, `/api/ai/requests/${queued.id}/result`, tokens['doctor']);
    expect(r.status).toBe(200);
    const { result } = (await r.json()) as { result: Record<string, any> };
    expect(result['resourceType']).toBe('RiskAssessment');
    // Re-identified inside the exchange: the real Patient, the real (unshifted) dates.
    expect([patientResourceId('FA', '9999013'), patientResourceId('FB', '9999013')].map((id) => `Patient/${id}`)).toContain(result['subject'].reference);
    expect(result['occurrenceDateTime']).toMatch(/^2011-/);
    const row = await h.exchange.db.selectFrom('ai_request').select(['regional_id', 'outgoing_enc', 'sent_bytes']).where('id', '=', queued.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ regional_id: regional, outgoing_enc: null, sent_bytes: Buffer.byteLength(got.body) });
  });

  it('without consent for that service nothing is sent, and the denial is audited', async () => {
    const before = stand.received.length;
    const res = await submit(doctor, 'cv-risk', noAiConsent);
    expect(res.status).toBe(403);
    const text = await res.text();
    expect(text).toContain('may not be sent to this AI service');
    expect(text).not.toMatch(/consent|ai-service-not-consented|FC/);
    expect(stand.received.length).toBe(before);
    const denial = (await audits('ai.request.submit')).at(-1)!;
    expect(denial).toMatchObject({ outcome: 'denied', patient: noAiConsent, user_id: doctor.userId });
    expect(denial.reason).toMatch(/ai-service-not-consented/);
  });

  it('a role that may not request analyses, an unknown service and bad bodies are refused', async () => {
    const before = stand.received.length;
    const nurseRes = await submit(nurse, 'cv-risk', regional);
    expect(nurseRes.status).toBe(403);
    expect((await audits('ai.request.submit')).at(-1)).toMatchObject({ outcome: 'denied', user_id: nurse.userId });
    expect((await submit(doctor, 'no-such-service', regional)).status).toBe(404);
    expect((await submit(doctor, 'BAD ID', regional)).status).toBe(400);
    const extra = await fetch(`${h.url}/api/ai/requests`, { method: 'POST', headers: { authorization: `Bearer ${tokens['doctor']}`, 'content-type': 'application/json' }, body: '{"serviceId":"cv-risk","patientId":"x","more":1}' });
    expect(extra.status).toBe(400);
    expect((await fetch(`${h.url}/api/ai/requests`, { method: 'POST', body: '{}' })).status).toBe(401);
    // Another user's request is not found, and results of unfinished requests are refused.
    const mine = (await (await submit(doctor, 'cv-risk', regional)).json()) as RequestView;
    expect((await get(h, `/api/ai/requests/${mine.id}`, tokens['nurse'])).status).toBe(404);
    await settled(doctor, mine.id);
    expect(stand.received.length).toBe(before + 1);
  });

  it('a newly published night is sent from the next request on, never before (the prepared Bundle follows the index version)', async () => {
    const db = h.exchange.db;
    const lastBody = () => stand.received.at(-1)!.body;
    // First a request that fills the patient's cache for this service.
    expect((await settled(doctor, ((await (await submit(doctor, 'cv-risk', regional)).json()) as RequestView).id)).status).toBe('done');
    await db
      .insertInto('record')
      .values({
        facility_id: 'FA', path: 'extended/9999013/20261120/CDA/night2.xml', sha256: 'f'.repeat(64), added_seq: 2, snapshot_id: 'snap-FA-2', patient_id: '9999013',
        data_type: 'CDA', category: 'document', care_date: '2026-11-20', order_no: '2', message_ts: '20261120100000000', department: null, condition_flag: '1', status: 'ok',
        content: JSON.stringify({
          source: { facilityId: 'FA', patientId: '9999013', dataType: 'CDA', careDate: '2026-11-20', orderNo: '2', timestamp: '20261120100000000', department: null, condition: '1', sha256: 'f'.repeat(64), path: 'extended/9999013/20261120/CDA/night2.xml' },
          category: 'document',
          content: { kind: 'document', title: 'second night letter', text: 'MARKER-OF-NIGHT-TWO', attachments: [] },
        }),
      })
      .execute();
    // Stored but not yet published: not visible, so not sent.
    expect((await settled(doctor, ((await (await submit(doctor, 'cv-risk', regional)).json()) as RequestView).id)).status).toBe('done');
    expect(lastBody().includes('second night letter')).toBe(false);
    await db.updateTable('record_index_state').set({ published_seq: 2, published_snapshot_id: 'snap-FA-2' }).where('facility_id', '=', 'FA').execute();
    const v = await settled(doctor, ((await (await submit(doctor, 'cv-risk', regional)).json()) as RequestView).id);
    expect(v.status).toBe('done');
    expect(lastBody().includes('second night letter')).toBe(true);
    expect(scanForIdentifiers(JSON.parse(lastBody()), identifierForms(KNOWN))).toEqual([]);
  });

  it('while a call to a service hangs, the rest of the viewer API answers; the call ends clearly when the service goes', async () => {
    const v = (await (await submit(doctor, 'hanging', regional)).json()) as RequestView;
    for (let i = 0; i < 800 && hanging.received.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(hanging.received.length).toBe(1);
    // The call is outstanding (its timeout is a minute away) and the API answers meanwhile: the
    // wait holds nothing the viewer needs.
    for (let i = 0; i < 10; i++) expect((await get(h, '/api/auth/me', tokens['doctor'])).status).toBe(200);
    expect(await (await get(h, `/api/ai/requests/${v.id}`, tokens['doctor'])).json()).toMatchObject({ status: 'sending' });
    expect(hanging.received.length).toBe(1);
    await hanging.close();
    expect(await settled(doctor, v.id)).toMatchObject({ status: 'failed', detail: 'the AI service is unavailable' });
  }, 60_000);

  it('a failing service: retries, a clear status, then an open circuit', async () => {
    flaky.fallback = { kind: 'hang' };
    const first = (await (await submit(doctor, 'flaky', regional)).json()) as RequestView;
    const v1 = await settled(doctor, first.id);
    expect(v1).toMatchObject({ status: 'failed', detail: 'the AI service did not answer in time', attempts: 4 });
    flaky.fallback = { kind: 'error', status: 500 };
    const second = await settled(doctor, ((await (await submit(doctor, 'flaky', regional)).json()) as RequestView).id);
    // The 5th consecutive failure opened the circuit: no further attempt went out.
    expect(second).toMatchObject({ status: 'failed', detail: 'the AI service is failing; the exchange has paused calls to it' });
    const calls = flaky.received.length;
    expect(calls).toBe(5);
    const third = await settled(doctor, ((await (await submit(doctor, 'flaky', regional)).json()) as RequestView).id);
    expect(third.status).toBe('failed');
    expect(flaky.received.length).toBe(calls);
    expect(h.exchange.ai.client.circuitState('flaky')).toBe('open');
    const failures = (await audits('ai.request.send')).filter((a) => a.outcome === 'failure' && JSON.parse(String(a.detail)).service === 'flaky');
    expect(failures.length).toBeGreaterThanOrEqual(3);
    expect(JSON.parse(String(failures[0]!.detail))).toMatchObject({ kind: 'timeout', sentSha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    // The healthy service is unaffected.
    const ok = await settled(doctor, ((await (await submit(doctor, 'cv-risk', regional)).json()) as RequestView).id);
    expect(ok.status).toBe('done');
  }, 60_000);

  it('with a free place among its requests the exchange sends at once, claimed at submit; a BullMQ exchange queues', async () => {
    const before = stand.received.length;
    const res = await submit(doctor, 'cv-risk', regional);
    expect(res.status).toBe(202);
    const v = (await res.json()) as RequestView;
    // In-process: the row was inserted claimed (no separate claim), and is being sent.
    expect(v.status).toBe(queueKind === 'in-process' ? 'sending' : 'queued');
    expect((await settled(doctor, v.id)).status).toBe('done');
    await h.exchange.ai.queue.idle();
    // Sent exactly once, whichever way it went.
    expect(stand.received.length).toBe(before + 1);
    const trail = (await audits('ai.request.send')).filter((a) => (JSON.parse(String(a.detail)) as { request?: string }).request === v.id);
    expect(trail.map((a) => a.outcome)).toEqual(['success']);
  });

  it('without a session a bad body is refused as unauthenticated, and a good one reads nothing for the caller', async () => {
    const post = (body: string, token?: string) =>
      fetch(`${h.url}/api/ai/requests`, { method: 'POST', headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' }, body });
    expect((await post('{not json')).status).toBe(401);
    expect((await post(JSON.stringify({ serviceId: 'cv-risk', patientId: regional }))).status).toBe(401);
    expect((await post(JSON.stringify({ serviceId: 'cv-risk', patientId: regional }), `hks_${'A'.repeat(43)}`)).status).toBe(401);
    // With a session, the body's own problems are told.
    expect((await post('{not json', tokens['doctor'])).status).toBe(400);
    expect((await post(JSON.stringify({ serviceId: 'cv-risk', patientId: regional, extra: 1 }), tokens['doctor'])).status).toBe(400);
  });

  it('a submit whose row cannot be stored gives its place back and sends nothing', async () => {
    const taken: string[] = [];
    // Worker threads that keep the bodies they make: the one made for this request is let go.
    const pool = createWorkerPreparer({ secret: pseudonymKeyFrom(h.exchange.config.auth.secretKeyFile), keyFile: h.exchange.config.auth.secretKeyFile, threads: 1 });
    const flow = flowWith({
      preparer: {
        kind: 'worker-threads',
        prepare: (req, load) => pool.prepare(req, load),
        prepareHeld: async (req, load) => {
          const got = await pool.prepareHeld!(req, load);
          const release = got.body.release;
          return { ...got, body: { ...got.body, release: () => (taken.push('body let go'), release()) } };
        },
        close: () => pool.close(),
      },
      // The audit append (and with it the request's row) fails, as with the database unreachable.
      audit: { record: async () => {}, recordWith: async () => Promise.reject(new Error('the database is unreachable')) },
      queue: () => ({
        kind: 'in-process',
        enqueue: async () => {
          throw new Error('not queued');
        },
        reserve: () => {
          taken.push('taken');
          return { run: () => void taken.push('ran'), release: () => void taken.push('released') };
        },
        start: async () => {},
        idle: async () => {},
        close: async () => {},
      }),
    });
    const before = stand.received.length;
    await expect(flow.submit(doctorPrincipal(), { serviceId: 'cv-risk', patientId: regional }, 'POST /api/ai/requests')).rejects.toThrow(/unreachable/);
    expect(taken).toEqual(['taken', 'released']);
    // Once the worker (started cold here) has made it.
    await expect.poll(() => taken, { timeout: 20_000 }).toEqual(['taken', 'released', 'body let go']);
    expect(stand.received.length).toBe(before);
    await pool.close();
  });

  it('a withdrawal between submit and send stops the request before anything leaves', async () => {
    // The same flow, with a queue that holds the job until the test runs it.
    const held: string[] = [];
    const flow = flowWith({ queue: () => ({ kind: 'in-process', enqueue: async (id) => void held.push(id), start: async () => {}, idle: async () => {}, close: async () => {} }) });
    const principal = doctorPrincipal();
    const v = await flow.submit(principal, { serviceId: 'cv-risk', patientId: regional }, 'POST /api/ai/requests');
    expect(held).toEqual([v.id]);
    await consent.consent.withdraw(actor, regional, 'patient withdrew at the front desk');
    const before = stand.received.length;
    await flow.process(v.id);
    const after = await flow.status(principal, v.id);
    expect(after).toMatchObject({ status: 'denied', detail: 'This patient’s data may not be sent to this AI service.' });
    expect(stand.received.length).toBe(before);
    const denial = (await audits('ai.request.send')).at(-1)!;
    expect(denial).toMatchObject({ outcome: 'denied', patient: regional });
    expect(denial.reason).toMatch(/withdrawn/);
    // Processing again does nothing (the request is no longer queued).
    await flow.process(v.id);
    expect(stand.received.length).toBe(before);
  });

  it('a decision that aged while the Bundle was prepared is taken again before sending: a withdrawal meanwhile stops it', async () => {
    const ex = h.exchange;
    const inline = createInlinePreparer(pseudonymKeyFrom(ex.config.auth.secretKeyFile), undefined, SecretBox.fromKeyFile(ex.config.auth.secretKeyFile));
    // A preparer that holds the Bundle until the test lets it go, and a queue with a free place.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const preparing = new Promise<void>((r) => (started = r));
    const ran: Promise<void>[] = [];
    const flow = flowWith({
      preparer: {
        kind: 'inline',
        async prepare(req, load) {
          started();
          await held;
          return inline.prepare(req, load);
        },
        close: () => inline.close(),
      },
      queue: () => ({
        kind: 'in-process',
        enqueue: async () => {
          throw new Error('not queued: sent at once');
        },
        reserve: () => ({ run: (task) => void ran.push(task()), release: () => undefined }),
        start: async () => {},
        idle: async () => {},
        close: async () => {},
      }),
    });
    const principal = doctorPrincipal();
    // A patient of its own (at a facility of its own), so that the withdrawal leaves the other tests' patient alone.
    await insertFacility(ex.db, { id: 'FD', name: 'Facility FD', kind: 'hospital' });
    await consent.consent.setParticipation(actor, { facilityId: 'FD', kind: 'hospital', discloses: true, views: true }, 'joins the network');
    await indexPatient(ex.db, 'FD');
    const patient = (await consent.identity.enrol(actor, { facilityId: 'FD', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;
    await consent.consent.record(actor, patient, { terms: terms(['cv-risk']) });
    const before = stand.received.length;
    const v = await flow.submit(principal, { serviceId: 'cv-risk', patientId: patient }, 'POST /api/ai/requests');
    expect(v.status).toBe('sending');
    await preparing;
    await consent.consent.withdraw(actor, patient, 'patient withdrew while the data was being prepared');
    h.clock.advance(REDECIDE_AFTER_MS + 1000);
    release();
    await Promise.all(ran);
    expect(await flow.status(principal, v.id)).toMatchObject({ status: 'denied', detail: 'This patient’s data may not be sent to this AI service.' });
    expect(stand.received.length).toBe(before);
    const denial = (await audits('ai.request.send')).at(-1)!;
    expect(denial).toMatchObject({ outcome: 'denied', patient });
    expect(denial.reason).toMatch(/withdrawn/);
  });

  it('the audit chain still verifies', async () => {
    expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);
  });
});
