import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStoredFile } from '../ingest/records/read.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import type { Db } from '../store/db.js';
import { SAMPLES_ROOT } from './support/tmp.js';
import { enrol, get, startViewer, tokenFor, type Backend, type TestUser, type ViewerHarness } from './viewer.support.js';

/**
 * The issue's scenario over HTTP: facilities A, B, C hold records of one person; the person is
 * linked across A and B and consents to share with hospitals and pharmacies except C. What each
 * role at each facility sees, through the JSON API and FHIR, and what the audit trail keeps.
 */

const SAMPLE_PATIENT = path.join(SAMPLES_ROOT, '999/901/9999013');

function sampleFiles(): { rel: string; bytes: Buffer }[] {
  const out: { rel: string; bytes: Buffer }[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out.push({ rel: path.relative(SAMPLES_ROOT, p), bytes: fs.readFileSync(p) });
    }
  };
  walk(SAMPLE_PATIENT);
  return out;
}

/** Indexes the sample patient's files as one facility's published records (what the indexer writes). */
async function indexSamples(db: Db, facilityId: string): Promise<number> {
  let n = 0;
  for (const f of sampleFiles()) {
    const sha256 = createHash('sha256').update(f.bytes).digest('hex');
    const out = readStoredFile({ facilityId, path: f.rel, sha256, bytes: f.bytes });
    if (out.status !== 'ok' || !out.record || !out.source || !out.category) continue;
    await db
      .insertInto('record')
      .values({
        facility_id: facilityId,
        path: f.rel,
        sha256,
        added_seq: 1,
        snapshot_id: `snap-${facilityId}`,
        patient_id: out.source.patientId,
        data_type: out.source.dataType,
        category: out.category,
        care_date: out.source.careDate,
        order_no: out.source.orderNo,
        message_ts: out.source.timestamp,
        department: out.source.department,
        condition_flag: out.source.condition,
        status: 'ok',
        content: JSON.stringify(out.record),
      })
      .execute();
    n++;
  }
  await db.insertInto('record_index_state').values({ facility_id: facilityId, published_seq: 1, published_snapshot_id: `snap-${facilityId}`, published_at: new Date() }).execute();
  return n;
}

interface TimelineBody {
  records: Array<{ id: number; sourceFacilityId: string; category: string; basis: string }>;
  nextCursor: string | null;
}

describe.each<Backend>(['postgres', 'embedded'])('the viewer scenario on %s', (backend) => {
  let h: ViewerHarness;
  let regional: string;
  let noConsent: string;
  let doctorB: TestUser;
  let pharmacist: TestUser;
  let careWorker: TestUser;
  let doctorC: TestUser;
  let nurseB: TestUser;
  let auditor: TestUser;
  const tokens: Record<string, string> = {};
  const actor = 'test:admin';

  beforeAll(async () => {
    h = await startViewer(backend, (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    const db = h.exchange.db;
    const consent = h.exchange.consent;
    const kinds = { FA: 'hospital', FB: 'hospital', FC: 'hospital', FP: 'pharmacy', FK: 'care_home' } as const;
    for (const [id, kind] of Object.entries(kinds)) {
      await insertFacility(db, { id, name: `Facility ${id}`, kind });
      await consent.consent.setParticipation(actor, { facilityId: id, kind, discloses: true, views: true }, 'joins the network');
    }
    for (const f of ['FA', 'FB', 'FC']) expect(await indexSamples(db, f)).toBeGreaterThan(5);

    const linkA = await consent.identity.enrol(actor, { facilityId: 'FA', localId: '9999013' }, { evidence: 'ID card checked' });
    regional = linkA.regionalId;
    await consent.identity.enrol(actor, { facilityId: 'FB', localId: '9999013' }, { regionalId: regional, evidence: 'ID card checked' });
    await consent.consent.record(actor, regional, {
      terms: {
        status: 'opted-in',
        disclosing: { mode: 'all' },
        receiving: { kinds: ['hospital', 'pharmacy'], facilities: [], exclude: ['FC'] },
        categories: { mode: 'all' },
        purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
        validFrom: h.clock.ms - 86_400_000,
        validTo: null,
      },
    });
    // C's local patient is another person as far as the exchange knows: linked alone, no consent at all.
    noConsent = (await consent.identity.enrol(actor, { facilityId: 'FC', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;

    doctorB = await enrol(h, 'FB', 'doctor', 'physician');
    nurseB = await enrol(h, 'FB', 'nurse', 'nurse');
    pharmacist = await enrol(h, 'FP', 'pharma', 'pharmacist');
    careWorker = await enrol(h, 'FK', 'carer', 'care_worker');
    doctorC = await enrol(h, 'FC', 'doctor', 'physician');
    auditor = await enrol(h, 'FB', 'auditor', 'auditor');
    for (const u of [doctorB, nurseB, pharmacist, careWorker, doctorC, auditor]) tokens[`${u.facilityId}/${u.username}`] = await tokenFor(h, u);
    // Six enrolments and six logins cost two dozen scrypt hashes: slow on a busy 2-core machine.
  }, 240_000);
  afterAll(async () => h?.close());

  const tok = (u: TestUser) => tokens[`${u.facilityId}/${u.username}`]!;
  const timeline = async (u: TestUser, query = '') => get(h, `/api/patients/${regional}/timeline${query}`, tok(u));

  it("shows a physician at B A's prescriptions and labs, with their source, and never C's", async () => {
    const res = await timeline(doctorB, '?limit=200');
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as TimelineBody;
    const fromA = body.records.filter((r) => r.sourceFacilityId === 'FA');
    expect(fromA.some((r) => r.category === 'prescriptions')).toBe(true);
    expect(fromA.some((r) => r.category === 'labs')).toBe(true);
    expect(fromA.every((r) => r.basis === 'consent')).toBe(true);
    expect(body.records.filter((r) => r.sourceFacilityId === 'FB').every((r) => r.basis === 'own-facility')).toBe(true);
    expect(body.records.some((r) => r.sourceFacilityId === 'FC')).toBe(false);

    const [entry] = await h.exchange.db.selectFrom('audit_event').selectAll().orderBy('seq', 'desc').limit(1).execute();
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success', patient: regional, user_id: doctorB.userId, facility_id: 'FB', role: 'physician', purpose: 'treatment' });
    expect(JSON.parse(entry!.detail).recordIds).toEqual(body.records.map((r) => r.id));
  });

  it('filters the timeline by category, facility and dates, and pages without repeating', async () => {
    const labsA = (await (await timeline(doctorB, '?category=labs&facility=FA')).json()) as TimelineBody;
    expect(labsA.records.length).toBeGreaterThan(0);
    expect(labsA.records.every((r) => r.category === 'labs' && r.sourceFacilityId === 'FA')).toBe(true);
    const dated = (await (await timeline(doctorB, '?from=2011-12-01&to=2011-12-31')).json()) as { records: Array<{ careDate: string }> };
    expect(dated.records.length).toBeGreaterThan(0);
    expect(dated.records.every((r) => r.careDate >= '2011-12-01' && r.careDate <= '2011-12-31')).toBe(true);

    const all = ((await (await timeline(doctorB, '?limit=200')).json()) as TimelineBody).records.map((r) => r.id);
    const paged: number[] = [];
    let cursor: string | null = null;
    do {
      const page = (await (await timeline(doctorB, `?limit=3${cursor ? `&cursor=${cursor}` : ''}`)).json()) as TimelineBody;
      expect(page.records.length).toBeLessThanOrEqual(3);
      paged.push(...page.records.map((r) => r.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(paged).toEqual(all);
  });

  it('serves the same records as FHIR: searches, $everything and a CapabilityStatement', async () => {
    const meta = await get(h, '/fhir/metadata');
    expect(meta.status).toBe(200);
    expect(meta.headers.get('content-type')).toContain('application/fhir+json');
    expect(((await meta.json()) as { resourceType: string }).resourceType).toBe('CapabilityStatement');

    const mr = await get(h, `/fhir/MedicationRequest?patient=${regional}`, tok(doctorB));
    expect(mr.status).toBe(200);
    const bundle = (await mr.json()) as { resourceType: string; entry: Array<{ resource: { resourceType: string; meta: { source: string } } }> };
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.entry.length).toBeGreaterThan(0);
    expect(bundle.entry.every((e) => e.resource.resourceType === 'MedicationRequest')).toBe(true);
    const sources = new Set(bundle.entry.map((e) => e.resource.meta.source));
    expect(sources.has('urn:hakobune:facility:FA')).toBe(true);
    expect(sources.has('urn:hakobune:facility:FC')).toBe(false);

    const obs = (await (await get(h, `/fhir/Observation?patient=${regional}&date=ge2011-12-01&date=le2011-12-31`, tok(doctorB))).json()) as typeof bundle;
    expect(obs.entry.every((e) => e.resource.resourceType === 'Observation')).toBe(true);

    const everything = (await (await get(h, `/fhir/Patient/${regional}/$everything?_count=200`, tok(doctorB))).json()) as typeof bundle;
    const types = new Set(everything.entry.map((e) => e.resource.resourceType));
    expect(types.has('Patient')).toBe(true);
    expect(types.has('MedicationRequest')).toBe(true);
    const patient = (await (await get(h, `/fhir/Patient/${regional}`, tok(doctorB))).json()) as { resourceType: string; id: string };
    expect(patient).toMatchObject({ resourceType: 'Patient', id: regional });
  });

  it('pages FHIR searches with absolute links to this server', async () => {
    type Paged = { link: Array<{ relation: string; url: string }>; entry: Array<{ fullUrl: string; resource: { resourceType: string; id: string } }> };
    const all = (await (await get(h, `/fhir/MedicationRequest?patient=${regional}&_count=200`, tok(doctorB))).json()) as Paged;
    expect(all.entry.length).toBeGreaterThan(1);
    for (const e of all.entry) expect(e.fullUrl).toBe(`${h.url}/fhir/MedicationRequest/${e.resource.id}`);
    const seen: string[] = [];
    let res = await get(h, `/fhir/MedicationRequest?patient=${regional}&_count=1`, tok(doctorB));
    for (;;) {
      expect(res.status).toBe(200);
      const page = (await res.json()) as Paged;
      expect(page.link.find((l) => l.relation === 'self')!.url.startsWith(`${h.url}/fhir/MedicationRequest?`)).toBe(true);
      seen.push(...page.entry.map((e) => e.resource.id));
      const next = page.link.find((l) => l.relation === 'next');
      if (!next) break;
      expect(next.url.startsWith(`${h.url}/fhir/`)).toBe(true);
      res = await get(h, next.url.slice(h.url.length), tok(doctorB));
    }
    expect(seen).toEqual(all.entry.map((e) => e.resource.id));
  });

  it('shows a pharmacist only what pharmacists may read', async () => {
    const body = (await (await timeline(pharmacist, '?limit=200')).json()) as TimelineBody;
    expect(body.records.length).toBeGreaterThan(0);
    const allowed = ['demographics', 'allergies', 'prescriptions', 'injections', 'labs'];
    expect(body.records.every((r) => allowed.includes(r.category))).toBe(true);
    expect(body.records.some((r) => r.category === 'prescriptions')).toBe(true);
    // Asking for a category the role may not read gives no hint that it exists.
    const diag = await timeline(pharmacist, '?category=diagnoses');
    expect(diag.status).toBe(200);
    expect(((await diag.json()) as TimelineBody).records).toEqual([]);
  });

  it('shows a care worker and anyone at C nothing, exactly as for a patient who does not exist', async () => {
    const strip = async (r: Response) => {
      const b = (await r.json()) as Record<string, unknown>;
      delete b.requestId;
      return { status: r.status, body: b };
    };
    const care = await strip(await timeline(careWorker));
    const atC = await strip(await timeline(doctorC));
    const unknown = await strip(await get(h, '/api/patients/R-does-not-exist/timeline', tok(doctorB)));
    const otherPatient = await strip(await get(h, `/api/patients/${noConsent}/timeline`, tok(doctorB)));
    expect(care.status).toBe(403);
    for (const r of [atC, unknown, otherPatient]) expect(r).toEqual(care);
    expect(JSON.stringify(care)).not.toMatch(/consent|record|FA|count/i);
    const fhir = await get(h, `/fhir/Condition?patient=${regional}`, tok(doctorC));
    expect(fhir.status).toBe(403);
    expect(((await fhir.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    const search = (await (await get(h, `/fhir/Patient?_id=${regional}`, tok(careWorker))).json()) as { entry: unknown[] };
    expect(search.entry).toEqual([]);
    const denials = await h.exchange.db
      .selectFrom('audit_event')
      .select(['reason', 'user_id'])
      .where('action', '=', 'record.read')
      .where('outcome', '=', 'denied')
      .execute();
    expect(denials.some((d) => d.user_id === careWorker.userId && /receiver-not-included/.test(d.reason ?? ''))).toBe(true);
    expect(denials.some((d) => d.user_id === doctorC.userId && /not-linked|receiver-excluded/.test(d.reason ?? ''))).toBe(true);
    expect(denials.some((d) => d.user_id === doctorB.userId && d.reason === 'unknown regional patient')).toBe(true);
  });

  it('rejects injection and malformed parameters with 400 and no data', async () => {
    const bad = [
      `?category=${encodeURIComponent("labs' OR '1'='1")}`,
      '?category=labs,gossip',
      '?from=2011-02-30',
      `?facility=${encodeURIComponent("FA'--")}`,
      '?limit=-1',
      '?limit=100000',
      '?cursor=not-a-cursor',
      '?purpose=research',
      '?category=labs&category=prescriptions',
      '?sort=1',
    ];
    for (const q of bad) expect([q, (await timeline(doctorB, q)).status]).toEqual([q, 400]);
    expect((await get(h, `/api/patients/${encodeURIComponent("R' OR 1=1--")}/timeline`, tok(doctorB))).status).toBe(400);
    const fhirBad = await get(h, `/fhir/Observation?patient=${regional}&date=ge2011-01-01${encodeURIComponent("'")}`, tok(doctorB));
    expect(fhirBad.status).toBe(400);
    expect(((await fhirBad.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    expect((await get(h, `/fhir/Observation?patient=${regional}&subject:Patient.name=x`, tok(doctorB))).status).toBe(400);
    expect((await get(h, `/api/patients/${regional}/timeline`)).status).toBe(401);
    expect((await get(h, `/fhir/Patient/${regional}`)).status).toBe(401);
  });

  it('opens a patient without consent by break-glass, for its time limit only, and audits it', async () => {
    expect((await get(h, `/api/patients/${noConsent}/timeline`, tok(doctorB))).status).toBe(403);
    const post = (u: TestUser, body: unknown) =>
      fetch(`${h.url}/api/patients/${noConsent}/break-glass`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tok(u)}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await post(nurseB, { reason: 'patient collapsed in the ward', minutes: 30 })).status).toBe(403);
    expect((await post(doctorB, { reason: 'x', minutes: 30 })).status).toBe(400);
    const opened = await post(doctorB, { reason: 'unconscious on arrival, no relatives', minutes: 30 });
    expect(opened.status).toBe(201);
    const seen = await get(h, `/api/patients/${noConsent}/timeline`, tok(doctorB));
    expect(seen.status).toBe(200);
    const body = (await seen.json()) as TimelineBody;
    expect(body.records.length).toBeGreaterThan(0);
    expect(body.records.every((r) => r.basis === 'break-glass' && r.sourceFacilityId === 'FC')).toBe(true);
    const [entry] = await h.exchange.db.selectFrom('audit_event').selectAll().orderBy('seq', 'desc').limit(1).execute();
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success', break_glass_reason: 'unconscious on arrival, no relatives' });
    expect(await h.exchange.db.selectFrom('audit_event').select('seq').where('action', '=', 'break-glass.open').where('outcome', '=', 'success').execute()).toHaveLength(1);

    h.clock.advance(31 * 60_000);
    tokens['FB/doctor'] = await tokenFor(h, doctorB); // the old session went idle meanwhile
    expect((await get(h, `/api/patients/${noConsent}/timeline`, tok(doctorB))).status).toBe(403);
  });

  it('applies a withdrawal on the very next request', async () => {
    tokens['FB/doctor'] = await tokenFor(h, doctorB);
    const before = (await (await timeline(doctorB, '?limit=200')).json()) as TimelineBody;
    expect(before.records.some((r) => r.sourceFacilityId === 'FA')).toBe(true);
    await h.exchange.consent.consent.withdraw(actor, regional, 'patient asked at the front desk');
    const after = (await (await timeline(doctorB, '?limit=200')).json()) as TimelineBody;
    // B still reads its own records (not a disclosure); nothing of A's any more.
    expect(after.records.some((r) => r.sourceFacilityId === 'FA')).toBe(false);
    expect(after.records.every((r) => r.basis === 'own-facility')).toBe(true);
  });

  it('finds patients by local ID only when the caller may see them', async () => {
    // The break-glass test moved the clock past the idle timeout: sign in again.
    for (const u of [doctorB, pharmacist, careWorker, auditor]) tokens[`${u.facilityId}/${u.username}`] = await tokenFor(h, u);
    const mine = await get(h, '/api/patients?localId=9999013', tok(doctorB));
    expect(await mine.json()).toEqual({ patients: [{ id: regional }] });
    // The consent was withdrawn above: the pharmacy no longer finds the patient at all.
    expect(await (await get(h, '/api/patients?facility=FA&localId=9999013', tok(pharmacist))).json()).toEqual({ patients: [] });
    const hidden = await (await get(h, '/api/patients?facility=FA&localId=9999013', tok(careWorker))).json();
    const unknown = await (await get(h, '/api/patients?facility=FA&localId=0000000', tok(careWorker))).json();
    expect(hidden).toEqual({ patients: [] });
    expect(unknown).toEqual(hidden);
    expect((await get(h, `/api/patients?localId=${encodeURIComponent("1' OR '1'='1")}`, tok(doctorB))).status).toBe(400);
    expect((await get(h, '/api/patients?localId=9999013', tok(auditor))).status).toBe(403);
  });

  it('lets auditors, and only auditors, search and export the trail', async () => {
    const res = await get(h, `/api/audit?patient=${regional}&action=record.read&limit=1000`, tok(auditor));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { entries: Array<{ userId: number; outcome: string; facilityId: string }> };
    expect(body.entries.some((e) => e.userId === doctorB.userId && e.outcome === 'success')).toBe(true);
    expect(body.entries.some((e) => e.userId === careWorker.userId && e.outcome === 'denied')).toBe(true);
    const fhir = await get(h, `/api/audit/AuditEvent?patient=${regional}`, tok(auditor));
    expect(((await fhir.json()) as { entry: Array<{ resource: { resourceType: string } }> }).entry[0]!.resource.resourceType).toBe('AuditEvent');
    expect(((await (await get(h, '/api/audit/verify', tok(auditor))).json()) as { ok: boolean }).ok).toBe(true);
    expect((await get(h, '/api/audit', tok(doctorB))).status).toBe(403);
    expect((await get(h, `/api/audit?from=${encodeURIComponent("2020' --")}`, tok(auditor))).status).toBe(400);
    expect((await get(h, `/api/patients/${regional}/timeline`, tok(auditor))).status).toBe(403);
  });

  it('describes its JSON API in OpenAPI 3', async () => {
    const res = await get(h, '/api/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    for (const p of ['/api/auth/login', '/api/patients', '/api/patients/{id}/timeline', '/api/patients/{id}/break-glass', '/api/audit']) {
      expect(doc.paths[p]).toBeDefined();
    }
  });

  it('keeps an audit chain that verifies after all of it', async () => {
    const report = await verifyAuditChain(h.exchange.db);
    expect(report.ok).toBe(true);
    expect(report.entries).toBeGreaterThan(20);
  });
});
