import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { decodeIso2022jp } from '../ingest/hl7/decode.js';
import { facilityQualityReport } from '../ingest/quality/quality.report.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';
import { backupTree, scanTree } from './index.support.js';
import { get, lastAudit, signIn, startViewer, type TestUser, type ViewerHarness } from './viewer.support.js';

/**
 * One record by id over HTTP (detail, original message, document files), the quality report and
 * FHIR Patient search by name, on real backed-up and indexed SS-MIX2 data: the sample patient
 * 9999013 (standard storage) with a discharge summary (CDA) and its PDF (extended storage),
 * held by facilities FA, FB and FC. The patient is linked across FA and FB and consents to share
 * with hospitals and pharmacies except FC; FC's local patient is another regional patient.
 */

const PATIENT_DIR = path.join(SAMPLES_ROOT, '999/901/9999013');
const DOC_FOLDER = '999/901/9999013/20111220/18842-5^DISCHARGE-SUMMARY^LN/9999013_20111220_18842-5_1_20111220153000000_01_1';

const CDA = `<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1" displayName="退院時サマリー"/>
  <title>退院時サマリー</title>
  <effectiveTime value="20111220153000+0900"/>
  <recordTarget><patientRole><id root="1.2.392.100495.20.3.51.11311234567" extension="9999013"/></patientRole></recordTarget>
  <author><time value="20111220"/><assignedAuthor><id extension="D001"/>
    <assignedPerson><name><family>医師</family><given>一郎</given></name></assignedPerson></assignedAuthor></author>
  <component><structuredBody>
    <component><section><title>経過</title><text>胃潰瘍にて入院、内視鏡にて治癒を確認し退院。</text></section></component>
  </structuredBody></component>
</ClinicalDocument>
`;
// A small but well-formed PDF: one empty page.
const PDF = Buffer.from(
  '%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n' +
    '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n',
  'latin1',
);

type Problem = { title: string; status: number; detail: string; requestId?: string };

describe('records by id, documents, quality and name search over HTTP (PostgreSQL)', () => {
  let h: ViewerHarness;
  const tmp = tempDir('hakobune-records-');
  let regional: string;
  let otherRegional: string;
  const ids: Record<string, number> = {};
  let filesOfFA = 0;
  const u: Record<string, TestUser> = {};
  const tokens: Record<string, string> = {};
  const actor = 'test:admin';

  beforeAll(async () => {
    h = await startViewer('postgres', (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    const { consent, db } = h.exchange;
    const kinds = { FA: 'hospital', FB: 'hospital', FC: 'hospital', FP: 'pharmacy', FK: 'care_home' } as const;
    for (const [id, kind] of Object.entries(kinds)) {
      await h.exchange.backup.addFacility({ id, name: `Facility ${id}`, kind });
      await consent.consent.setParticipation(actor, { facilityId: id, kind, discloses: true, views: true }, 'joins the network');
    }
    const ext = path.join(tmp.dir, 'extended');
    fs.mkdirSync(path.join(ext, DOC_FOLDER), { recursive: true });
    fs.writeFileSync(path.join(ext, DOC_FOLDER, 'main_document.xml'), CDA);
    fs.writeFileSync(path.join(ext, DOC_FOLDER, 'attachment_1.pdf'), PDF);
    const files = [...scanTree(PATIENT_DIR, 'standard/999/901/9999013/'), ...scanTree(ext, 'extended/')];
    filesOfFA = files.length;
    // Backed up through the upload protocol's operations; the exchange (listening) indexes each snapshot.
    for (const f of ['FA', 'FB', 'FC']) await backupTree(h.exchange.backup, f, files);
    await h.exchange.jobs.runner.idle();

    regional = (await consent.identity.enrol(actor, { facilityId: 'FA', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;
    await consent.identity.enrol(actor, { facilityId: 'FB', localId: '9999013' }, { regionalId: regional, evidence: 'ID card checked' });
    otherRegional = (await consent.identity.enrol(actor, { facilityId: 'FC', localId: '9999013' }, { evidence: 'ID card checked' })).regionalId;
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

    const rows = await db.selectFrom('record').select(['id', 'facility_id', 'data_type', 'path']).where('status', '=', 'ok').execute();
    const find = (f: string, test: (r: { data_type: string | null; path: string }) => boolean) => {
      const r = rows.find((x) => x.facility_id === f && test(x));
      if (!r) throw new Error(`no indexed record of ${f} for the test`);
      return Number(r.id);
    };
    ids.rxA = find('FA', (r) => r.data_type === 'OMP-01');
    ids.encounterA = find('FA', (r) => r.data_type === 'ADT-22');
    ids.pdfA = find('FA', (r) => r.path.endsWith('attachment_1.pdf'));
    ids.cdaA = find('FA', (r) => r.path.endsWith('main_document.xml'));
    ids.rxB = find('FB', (r) => r.data_type === 'OMP-01');
    ids.rxC = find('FC', (r) => r.data_type === 'OMP-01');

    const people: [string, string, string][] = [
      ['FB', 'doctor', 'physician'],
      ['FB', 'nurse', 'nurse'],
      ['FB', 'clerk', 'clerk'],
      ['FP', 'pharma', 'pharmacist'],
      ['FK', 'carer', 'care_worker'],
      ['FC', 'doctor', 'physician'],
      ['FA', 'admin', 'facility_admin'],
      ['FB', 'netadmin', 'network_admin'],
      ['FB', 'auditor', 'auditor'],
    ];
    await signIn(h, people, u, tokens);
  }, 300_000);
  afterAll(async () => {
    await h?.close();
    tmp.remove();
  });

  const as = (who: string, p: string) => get(h, p, tokens[who]);
  const problem = async (r: Response) => {
    const b = (await r.json()) as Problem;
    delete b.requestId;
    return { status: r.status, body: b };
  };

  it("shows a physician at FB a record of FA with its source, dates, condition and mapped content, and audits it", async () => {
    const res = await as('FB/doctor', `/api/records/${ids.rxA}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as Record<string, any>;
    expect(body).toMatchObject({
      id: ids.rxA,
      patient: regional,
      sourceFacilityId: 'FA',
      localPatientId: '9999013',
      category: 'prescriptions',
      dataType: 'OMP-01',
      careDate: '2011-07-01',
      condition: '1',
      status: 'current',
      basis: 'consent',
      document: null,
      links: { original: `/api/records/${ids.rxA}/original` },
    });
    expect(body.content.content).toMatchObject({ kind: 'medication-order', items: [{ medication: { code: '108665201' } }, {}, {}] });
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success', patient: regional, user_id: u['FB/doctor']!.userId, facility_id: 'FB', role: 'physician', purpose: 'treatment' });
    expect(JSON.parse(entry!.detail)).toMatchObject({ recordIds: [ids.rxA], categories: ['prescriptions'], facilities: ['FA'], bases: ['consent'] });
    expect(entry!.endpoint).toBe(`GET /api/records/${ids.rxA}`);
  });

  it('serves the original message as decoded text and as the exact stored ISO-2022-JP bytes', async () => {
    const rel = (await h.exchange.db.selectFrom('record').select('path').where('id', '=', ids.rxA).executeTakeFirstOrThrow()).path;
    const stored = fs.readFileSync(path.join(SAMPLES_ROOT, rel.replace(/^standard\//, '')));
    const text = await as('FB/doctor', `/api/records/${ids.rxA}/original`);
    expect(text.status).toBe(200);
    expect(text.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(text.headers.get('cache-control')).toBe('no-store');
    const decoded = decodeIso2022jp(stored);
    expect(decoded.ok).toBe(true);
    const body = await text.text();
    // One segment a line: each bare CR of HL7 v2 becomes a CRLF, nothing else changes.
    expect(body).toBe((decoded as { text: string }).text.replace(/\r(?!\n)/g, '\r\n'));
    expect(body.split('\r\n')[0]).toMatch(/^MSH\|/);
    // (the sample ends with a stray FS control character after its last segment)
    expect(body.split('\r\n').filter((l) => l.includes('|')).every((l) => /^[A-Z][A-Z0-9]{2}\|/.test(l))).toBe(true);
    expect(body.split('\r\n').filter((l) => l.includes('|')).length).toBeGreaterThan(5);
    expect(body).toContain('患者^太郎');

    const raw = await as('FB/doctor', `/api/records/${ids.rxA}/original?format=raw`);
    expect(raw.status).toBe(200);
    expect(raw.headers.get('content-type')).toBe('x-application/hl7-v2+er7; charset=ISO-2022-JP');
    const bytes = Buffer.from(await raw.arrayBuffer());
    expect(bytes.equals(stored)).toBe(true);
    expect(raw.headers.get('repr-digest')).toBe(`sha-256=:${createHash('sha256').update(stored).digest('base64')}:`);
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'record.original', outcome: 'success', patient: regional });
  });

  it('refuses the original message to a clerk and a nurse by role, and audits it', async () => {
    for (const who of ['FB/clerk', 'FB/nurse']) {
      const res = await as(who, `/api/records/${ids.rxB}/original`);
      expect(res.status).toBe(403);
      expect((await res.json()) as Problem).toMatchObject({ detail: 'Your role may not read original messages.' });
      const [entry] = await lastAudit(h);
      expect(entry).toMatchObject({ action: 'record.original', outcome: 'denied', user_id: u[who]!.userId });
      expect(entry!.reason).toMatch(/may not read original messages/);
    }
    // The clerk still reads the record's detail only where its categories allow (encounters yes, prescriptions no).
    expect((await as('FB/clerk', `/api/records/${ids.encounterA}`)).status).toBe(200);
    expect((await as('FB/clerk', `/api/records/${ids.rxA}`)).status).toBe(404);
  });

  it('answers a timeline page only once its audit entry is committed: none of it when the append fails', async () => {
    const { db } = h.exchange;
    const path = `/api/patients/${regional}/timeline?category=documents&facility=FA`;
    // The page is made into its answer before the commit (gate.ts, timeline with an answer); it
    // must still not leave when the commit fails. Without its head row the trail refuses to append.
    const head = await db.selectFrom('audit_head').selectAll().executeTakeFirstOrThrow();
    await sql`delete from audit_head`.execute(db);
    try {
      const refused = await as('FB/doctor', path);
      const problem = (await refused.json()) as Record<string, unknown>;
      expect(refused.status).toBe(500);
      expect(Object.keys(problem)).not.toContain('records');
      expect(JSON.stringify(problem)).not.toContain('attachment_1.pdf');
    } finally {
      await db.insertInto('audit_head').values(head).execute();
    }
    const ok = await as('FB/doctor', path);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { records: Array<{ id: number }> }).records.map((r) => r.id).sort()).toEqual([ids.cdaA, ids.pdfA].sort());
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success', patient: regional });
    expect((await verifyAuditChain(db)).ok).toBe(true);
  });

  it('lists documents in the timeline and serves the CDA and the PDF with their types', async () => {
    const tl = (await (await as('FB/doctor', `/api/patients/${regional}/timeline?category=documents&facility=FA`)).json()) as { records: Array<{ id: number }> };
    expect(tl.records.map((r) => r.id).sort()).toEqual([ids.cdaA, ids.pdfA].sort());

    const detail = (await (await as('FB/doctor', `/api/records/${ids.pdfA}`)).json()) as Record<string, any>;
    expect(detail).toMatchObject({ category: 'documents', sourceFacilityId: 'FA', document: { contentType: 'application/pdf', size: PDF.length, name: 'attachment_1.pdf' }, links: { content: `/api/records/${ids.pdfA}/content` } });

    const pdf = await as('FB/doctor', `/api/records/${ids.pdfA}/content`);
    expect(pdf.status).toBe(200);
    expect(pdf.headers.get('content-type')).toBe('application/pdf');
    expect(pdf.headers.get('cache-control')).toBe('no-store');
    expect(pdf.headers.get('content-disposition')).toContain('attachment_1.pdf');
    expect(Buffer.from(await pdf.arrayBuffer()).equals(PDF)).toBe(true);

    const cda = await as('FB/doctor', `/api/records/${ids.cdaA}/content`);
    expect(cda.status).toBe(200);
    expect(cda.headers.get('content-type')).toBe('text/xml; charset=utf-8');
    expect(await cda.text()).toBe(CDA);
    const cdaDetail = (await (await as('FB/doctor', `/api/records/${ids.cdaA}`)).json()) as Record<string, any>;
    expect(cdaDetail.content.content).toMatchObject({ kind: 'document', title: '退院時サマリー' });
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success' });

    // FHIR DocumentReference points at the same files.
    const docs = (await (await as('FB/doctor', `/fhir/DocumentReference?patient=${regional}`)).json()) as { entry: Array<{ resource: { content: Array<{ attachment: { url?: string; contentType: string } }> } }> };
    const urls = docs.entry.flatMap((e) => e.resource.content.map((c) => c.attachment.url)).filter(Boolean);
    expect(urls).toEqual(expect.arrayContaining([`/api/records/${ids.pdfA}/content`, `/api/records/${ids.cdaA}/content`]));
    expect(urls.some((x) => x!.startsWith('urn:hakobune:blob:'))).toBe(false);

    // A record that is not a document has no file to serve; the PDF's original is binary.
    expect((await as('FB/doctor', `/api/records/${ids.rxA}/content`)).status).toBe(404);
    expect((await as('FB/doctor', `/api/records/${ids.pdfA}/original`)).status).toBe(400);
    expect(Buffer.from(await (await as('FB/doctor', `/api/records/${ids.pdfA}/original?format=raw`)).arrayBuffer()).equals(PDF)).toBe(true);
  });

  it('answers a hidden record exactly like one that does not exist', async () => {
    const missing = await problem(await as('FB/doctor', '/api/records/987654321'));
    expect(missing.status).toBe(404);
    expect(JSON.stringify(missing.body)).not.toMatch(/consent|FA|FC|category|patient/i);
    const cases: [string, string][] = [
      ['FB/nurse', `/api/records/${ids.pdfA}`], // nurses do not read documents
      ['FB/nurse', `/api/records/${ids.cdaA}/content`],
      ['FP/pharma', `/api/records/${ids.encounterA}`], // nor pharmacists encounters
      ['FK/carer', `/api/records/${ids.rxA}`], // a care home is not a receiver, and carers read no prescriptions
      ['FC/doctor', `/api/records/${ids.rxA}`], // FC is excluded by the consent: guessing FA's ids gives nothing
      ['FC/doctor', `/api/records/${ids.rxB}`],
      ['FB/doctor', `/api/records/${ids.rxC}`], // FC's patient is another person, without consent
      ['FB/doctor', `/api/records/${ids.rxC}/original`],
      ['FC/doctor', `/api/records/${ids.pdfA}/content`],
    ];
    for (const [who, p] of cases) expect([who, p, await problem(await as(who, p))]).toEqual([who, p, missing]);
    // FC reads its own record; FB reads its own.
    expect((await as('FC/doctor', `/api/records/${ids.rxC}`)).status).toBe(200);
    expect(((await (await as('FB/doctor', `/api/records/${ids.rxB}`)).json()) as { basis: string }).basis).toBe('own-facility');
    // Every refusal is in the trail with its real reason.
    const denials = await h.exchange.db.selectFrom('audit_event').select(['action', 'reason', 'user_id', 'detail']).where('outcome', '=', 'denied').execute();
    expect(denials.some((d) => d.user_id === u['FB/nurse']!.userId && /may not read category documents/.test(d.reason ?? ''))).toBe(true);
    expect(denials.some((d) => d.user_id === u['FC/doctor']!.userId && JSON.parse(d.detail).recordId === ids.rxA)).toBe(true);
    // Roles that read no clinical records at all are told so, whatever the id.
    expect((await as('FB/auditor', `/api/records/${ids.rxA}`)).status).toBe(403);
    expect((await as('FB/auditor', '/api/records/987654321')).status).toBe(403);
  });

  it('rejects malformed ids and injection in every parameter with 400', async () => {
    const bad = [
      '/api/records/abc',
      '/api/records/0',
      '/api/records/-1',
      '/api/records/1e3',
      '/api/records/99999999999999999999',
      `/api/records/${encodeURIComponent("1' OR '1'='1")}`,
      `/api/records/${encodeURIComponent('1; drop table record')}/original`,
      `/api/records/${ids.rxA}?purpose=${encodeURIComponent("treatment' --")}`,
      `/api/records/${ids.rxA}?purpose=research`,
      `/api/records/${ids.rxA}/original?format=${encodeURIComponent('<script>')}`,
      `/api/records/${ids.rxA}/original?format=raw&format=text`,
      `/api/records/${ids.rxA}/content?x=1`,
    ];
    for (const p of bad) expect([p, (await as('FB/doctor', p)).status]).toEqual([p, 400]);
    expect((await get(h, `/api/records/${ids.rxA}`)).status).toBe(401);
  });

  it("gives a facility administrator its own facility's quality report, and only that", async () => {
    const res = await as('FA/admin', '/api/facilities/FA/quality');
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { facilityId: string; files: number; flagged: number; findings: unknown[] };
    expect(body.files).toBe(filesOfFA);
    expect(body).toEqual(JSON.parse(JSON.stringify(await facilityQualityReport(h.exchange.db, 'FA', undefined, 1000))));
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'quality.read', outcome: 'success', user_id: u['FA/admin']!.userId });

    const snapshot = (await h.exchange.db.selectFrom('record_index_state').select('published_snapshot_id').where('facility_id', '=', 'FB').executeTakeFirstOrThrow()).published_snapshot_id!;
    const other = await as('FA/admin', `/api/facilities/FB/quality?snapshot=${snapshot}`);
    expect(other.status).toBe(403);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'quality.read', outcome: 'denied' });
    expect((await as('FB/doctor', '/api/facilities/FB/quality')).status).toBe(403);
    expect((await as('FB/clerk', '/api/facilities/FB/quality')).status).toBe(403);

    const net = await as('FB/netadmin', `/api/facilities/FB/quality?snapshot=${snapshot}&limit=5`);
    expect(net.status).toBe(200);
    expect(((await net.json()) as { snapshotId: string; scope: string })).toMatchObject({ snapshotId: snapshot, scope: 'snapshot' });
    expect((await as('FB/netadmin', '/api/facilities/ZZ/quality')).status).toBe(404);
    expect((await as('FB/netadmin', `/api/facilities/FA/quality?snapshot=${snapshot}`)).status).toBe(404); // FB's snapshot, not FA's
    for (const q of [`?snapshot=${encodeURIComponent("x' OR 1=1--")}`, '?limit=0', '?limit=abc', '?scope=all']) {
      expect([q, (await as('FB/netadmin', `/api/facilities/FA/quality${q}`)).status]).toEqual([q, 400]);
    }
    expect((await as('FB/netadmin', `/api/facilities/${encodeURIComponent("FA' --")}/quality`)).status).toBe(400);
  });

  it('finds patients by name (kanji or kana, normalised) among those the caller may see', async () => {
    type Bundle = { resourceType: string; entry: Array<{ resource: { id: string; resourceType: string } }> };
    const search = async (who: string, q: string) => {
      const res = await as(who, `/fhir/Patient?${q}`);
      expect(res.status).toBe(200);
      const b = (await res.json()) as Bundle;
      expect(b.resourceType).toBe('Bundle');
      return b.entry.map((e) => e.resource.id).sort();
    };
    const enc = encodeURIComponent;
    expect(await search('FB/doctor', `name=${enc('患者')}`)).toEqual([regional]);
    expect(await search('FB/doctor', `name=${enc('かんじゃ')}`)).toEqual([regional]); // hiragana folds to the stored katakana
    expect(await search('FB/doctor', `name=${enc('ｶﾝｼﾞｬ ﾀﾛｰ')}`)).toEqual([regional]); // half-width, long vowel written ー
    expect(await search('FB/doctor', `name=${enc('患者　太郎')}`)).toEqual([regional]);
    expect(await search('FB/doctor', `family=${enc('患者')}&given=${enc('太')}`)).toEqual([regional]);
    expect(await search('FB/doctor', `name=${enc('太郎')}`)).toEqual([regional]);
    expect(await search('FB/doctor', `name=${enc('山田')}`)).toEqual([]);
    // FC's physician finds FC's own patient of that name, never the one whose consent excludes FC.
    expect(await search('FC/doctor', `name=${enc('患者')}`)).toEqual([otherRegional]);
    expect(await search('FK/carer', `name=${enc('患者')}`)).toEqual([]);
    const [entry] = await lastAudit(h, 1);
    expect(entry).toMatchObject({ action: 'patient.search', outcome: 'success', user_id: u['FK/carer']!.userId });
    expect(JSON.parse(entry!.detail)).toMatchObject({ query: { name: '患者' }, results: 0 });

    for (const q of [`name=${enc("' OR 1=1--")}`, `name=${enc('患者;')}`, `name=${enc('a'.repeat(65))}`, `name=a&name=b`, `name=${enc('患者')}&_id=${regional}`, `name=${enc('患者')}&birthdate=1948`, `family=${enc('<x>')}`, `given=${enc("' or ''='")}`, `family=${enc('患者')}&given=${enc('太郎%')}`, 'name=']) {
      const res = await as('FB/doctor', `/fhir/Patient?${q}`);
      expect([q, res.status]).toEqual([q, 400]);
      expect(((await res.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    }
    expect((await as('FB/auditor', `/fhir/Patient?name=${enc('患者')}`)).status).toBe(403);
  });

  it('opens a record of a patient without consent by break-glass, audited with the reason', async () => {
    const missing = await problem(await as('FB/doctor', '/api/records/987654321'));
    expect(await problem(await as('FB/doctor', `/api/records/${ids.rxC}?purpose=emergency`))).toEqual(missing);
    const opened = await fetch(`${h.url}/api/patients/${otherRegional}/break-glass`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens['FB/doctor']}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'unconscious on arrival, FC is her clinic', minutes: 15 }),
    });
    expect(opened.status).toBe(201);
    const res = await as('FB/doctor', `/api/records/${ids.rxC}?purpose=emergency`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { basis: string; sourceFacilityId: string })).toMatchObject({ basis: 'break-glass', sourceFacilityId: 'FC' });
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'record.read', outcome: 'success', patient: otherRegional, purpose: 'emergency', break_glass_reason: 'unconscious on arrival, FC is her clinic' });
    expect(JSON.parse(entry!.detail).grantIds).toHaveLength(1);
    // The grant is the physician's own: another role at FB gains nothing from it.
    expect(await problem(await as('FB/nurse', `/api/records/${ids.rxC}?purpose=emergency`))).toEqual(missing);
  });

  it('closes a record of FA on the request after the consent is withdrawn over HTTP', async () => {
    expect((await as('FB/doctor', `/api/records/${ids.rxA}`)).status).toBe(200);
    const res = await fetch(`${h.url}/api/admin/patients/${regional}/consents/withdraw`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens['FB/clerk']}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'the patient asked at the front desk' }),
    });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { status: string }).status).toBe('withdrawn');
    const missing = await problem(await as('FB/doctor', '/api/records/987654321'));
    expect(await problem(await as('FB/doctor', `/api/records/${ids.rxA}`))).toEqual(missing);
    expect(await problem(await as('FB/doctor', `/api/records/${ids.pdfA}/content`))).toEqual(missing);
    expect(await problem(await as('FP/pharma', `/api/records/${ids.rxA}/original`))).toEqual({ status: 403, body: expect.objectContaining({ detail: 'Your role may not read original messages.' }) });
    // FB's own record stays readable: reading one's own records is not a disclosure.
    expect((await as('FB/doctor', `/api/records/${ids.rxB}`)).status).toBe(200);
    expect(await stillFoundByName()).toBe(true);

    async function stillFoundByName() {
      const b = (await (await as('FB/doctor', `/fhir/Patient?name=${encodeURIComponent('患者')}`)).json()) as { entry: Array<{ resource: { id: string } }> };
      // Still visible: FB's own records of the patient.
      return b.entry.some((e) => e.resource.id === regional);
    }
  });

  it('describes the new endpoints in the OpenAPI document and the CapabilityStatement', async () => {
    const doc = (await (await get(h, '/api/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
    for (const [p, m] of [
      ['/api/records/{id}', 'get'],
      ['/api/records/{id}/original', 'get'],
      ['/api/records/{id}/content', 'get'],
      ['/api/facilities/{id}/quality', 'get'],
      ['/api/admin/facilities', 'get'],
      ['/api/admin/participation/{facility}', 'put'],
      ['/api/admin/patients/{id}/links', 'get'],
      ['/api/admin/links/review', 'get'],
      ['/api/admin/links/review/{match}/accept', 'post'],
      ['/api/admin/links/unlink', 'post'],
      ['/api/admin/links/enrol', 'post'],
      ['/api/admin/links/relink', 'post'],
      ['/api/admin/links/reject-pair', 'post'],
      ['/api/admin/links/match', 'post'],
      ['/api/admin/links/match', 'get'],
      ['/api/admin/links/match/{run}', 'get'],
      ['/api/admin/links/history', 'get'],
      ['/api/admin/patients/{id}/links/history', 'get'],
      ['/api/admin/patients/{id}/merge', 'post'],
      ['/api/admin/patients/{id}/split', 'post'],
      ['/api/admin/patients/{id}/consents', 'post'],
      ['/api/admin/patients/{id}/consents/withdraw', 'post'],
      ['/api/admin/users', 'get'],
      ['/api/admin/users/{facility}/{username}/role', 'post'],
    ] as const) {
      expect([p, m, doc.paths[p]?.[m] !== undefined]).toEqual([p, m, true]);
    }
    const cs = (await (await get(h, '/fhir/metadata')).json()) as { rest: Array<{ resource: Array<{ type: string; searchParam: Array<{ name: string }> }> }> };
    const patient = cs.rest[0]!.resource.find((r) => r.type === 'Patient')!;
    expect(patient.searchParam.map((s) => s.name)).toEqual(expect.arrayContaining(['_id', 'name', 'family', 'given']));
  });

  it('keeps a verifying audit chain after all of it', async () => {
    expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);
  });
});
