import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityRecord } from '../consent/match.js';
import { readStoredFile } from '../ingest/records/read.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { SAMPLES_ROOT } from './support/tmp.js';
import { get, lastAudit, signIn, startViewer, type TestUser, type ViewerHarness } from './viewer.support.js';

/**
 * Patient identity administration over HTTP: enrol, relink, merge, split, reject a pair, link
 * history and running the matcher. A network administrator acts everywhere; a facility-bound role
 * with link.manage (clerk, facility administrator) moves only its own facility's local IDs, to
 * patients already linked at its facility; merges only patients whose links are all its own; and
 * never runs the matcher. Every change is audited, and the clinician's very next timeline
 * request follows a merge or a split.
 */

const TERMS = {
  status: 'opted-in',
  disclosing: { mode: 'all' },
  receiving: { kinds: ['hospital'], facilities: [], exclude: [] },
  categories: { mode: 'all' },
  purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
  validFrom: Date.parse('2026-11-01T00:00:00Z'),
  validTo: null,
};

function person(facilityId: string, localId: string, given: string, givenKana: string): IdentityRecord {
  return {
    facilityId,
    localId,
    familyKanji: '山路',
    givenKanji: given,
    familyKana: 'ヤマジ',
    givenKana,
    birthDate: '19550704',
    sex: 'M',
    postalCode: '980-0811',
    address: '宮城県仙台市青葉区一番町1-1-1',
    phone: '022-000-0001',
  };
}

type LinkOut = { facilityId: string; localId: string; regionalId: string; method: string; evidence: string | null };

describe('patient identity administration over HTTP (PostgreSQL)', () => {
  let h: ViewerHarness;
  const u: Record<string, TestUser> = {};
  const tokens: Record<string, string> = {};
  const actor = 'test:desk';
  let shared: string; // FA/1001 + FB/2001
  let onlyA: string; // FA/1002
  let onlyB: string; // FB/2002

  const id = () => h.exchange.consent.identity;
  const enrolled = async (facilityId: string, localId: string, regionalId?: string) =>
    (await id().enrol(actor, { facilityId, localId }, { regionalId, evidence: 'insurance card' })).regionalId;

  beforeAll(async () => {
    h = await startViewer('postgres', (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    for (const [f, kind] of [['FA', 'hospital'], ['FB', 'hospital'], ['FC', 'clinic']] as const) {
      await h.exchange.backup.addFacility({ id: f, name: `Facility ${f}`, kind });
      await h.exchange.consent.consent.setParticipation(actor, { facilityId: f, kind, discloses: true, views: true }, 'joins');
    }
    shared = await enrolled('FA', '1001');
    await enrolled('FB', '2001', shared);
    onlyA = await enrolled('FA', '1002');
    onlyB = await enrolled('FB', '2002');
    await signIn(
      h,
      [
        ['FB', 'net', 'network_admin'],
        ['FA', 'admin', 'facility_admin'],
        ['FB', 'clerk', 'clerk'],
        ['FB', 'doctor', 'physician'],
        ['FA', 'doctor', 'physician'],
      ] as const,
      u,
      tokens,
    );
  }, 240_000);
  afterAll(async () => h?.close());

  const as = (who: string, p: string) => get(h, p, tokens[who]);
  const post = (who: string, p: string, body: string | Uint8Array | object, type = 'application/json') =>
    fetch(`${h.url}${p}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens[who]}`, 'content-type': type },
      body: typeof body === 'string' ? body : body instanceof Uint8Array ? new Uint8Array(body) : JSON.stringify(body),
    });
  /** A problem document without its request id, to compare two refusals. */
  const strip = async (r: Response) => {
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const b = (await r.json()) as Record<string, unknown>;
    delete b.requestId;
    return { status: r.status, body: b };
  };
  const linkOf = (facilityId: string, localId: string) => id().linkOf({ facilityId, localId });
  /** The newest audit entry, its detail parsed. */
  const newest = async () => {
    const [e] = await lastAudit(h);
    return { ...e!, detail: JSON.parse(e!.detail) as Record<string, unknown> };
  };

  it('enrols a local ID to a new or an existing patient; facility-bound roles only their own IDs, to patients within reach', async () => {
    const created = await post('FB/net', '/api/admin/links/enrol', { facilityId: 'FC', localId: '7001', evidence: 'My Number card checked' });
    expect(created.status).toBe(201);
    const c = (await created.json()) as { created: boolean; link: LinkOut };
    expect(c.created).toBe(true);
    expect(c.link).toMatchObject({ facilityId: 'FC', localId: '7001', method: 'manual', evidence: 'My Number card checked' });
    expect((await linkOf('FC', '7001'))?.regionalId).toBe(c.link.regionalId);
    const e = await newest();
    expect(e).toMatchObject({
      action: 'admin.link.enrol',
      outcome: 'success',
      patient: c.link.regionalId,
      reason: 'enrolment',
      user_id: u['FB/net']!.userId,
      facility_id: 'FB',
      role: 'network_admin',
      endpoint: 'POST /api/admin/links/enrol',
    });
    expect(e.address).toBeTruthy();
    expect(e.device_id).toBeTruthy();
    expect(e.detail).toMatchObject({ facilityId: 'FC', localId: '7001', evidence: 'My Number card checked', created: true });
    // Enrolling again to the same patient changes nothing.
    const again = await post('FB/net', '/api/admin/links/enrol', { facilityId: 'FC', localId: '7001', regionalId: c.link.regionalId, evidence: 'again' });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { created: boolean }).created).toBe(false);

    // FA's administrator enrols a second FA record of a patient FA already has.
    const second = await post('FA/admin', '/api/admin/links/enrol', { facilityId: 'FA', localId: '1003', regionalId: shared, evidence: 'same insurance card', reason: 'registered twice' });
    expect(second.status).toBe(201);
    expect((await linkOf('FA', '1003'))?.regionalId).toBe(shared);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'success', patient: shared, reason: 'registered twice', facility_id: 'FA', role: 'facility_admin' });
    // ... but not to a patient FA has no local ID of: the same answer as a patient that does not exist.
    const hidden = await strip(await post('FA/admin', '/api/admin/links/enrol', { facilityId: 'FA', localId: '1004', regionalId: onlyB, evidence: 'card' }));
    const unknown = await strip(await post('FA/admin', '/api/admin/links/enrol', { facilityId: 'FA', localId: '1004', regionalId: 'RP-NOBODY', evidence: 'card' }));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'denied' });
    expect(await linkOf('FA', '1004')).toBeUndefined();
    // Another facility's local ID: refused, audited.
    expect((await post('FB/clerk', '/api/admin/links/enrol', { facilityId: 'FA', localId: '1005', evidence: 'card' })).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'denied', facility_id: 'FB', role: 'clerk' });
    expect(await linkOf('FA', '1005')).toBeUndefined();
    // A physician has no link.manage at all.
    expect((await post('FB/doctor', '/api/admin/links/enrol', { facilityId: 'FB', localId: '2009', evidence: 'card' })).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'denied', role: 'physician' });

    // Unknown facility or patient, a local ID already linked elsewhere.
    expect((await post('FB/net', '/api/admin/links/enrol', { facilityId: 'ZZ', localId: '1', evidence: 'card' })).status).toBe(404);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'failure' });
    expect((await post('FB/net', '/api/admin/links/enrol', { facilityId: 'FB', localId: '2010', regionalId: 'RP-NOBODY', evidence: 'card' })).status).toBe(404);
    const taken = await post('FB/net', '/api/admin/links/enrol', { facilityId: 'FA', localId: '1001', regionalId: onlyA, evidence: 'card' });
    expect(taken.status).toBe(409);
    expect(((await taken.json()) as { regionalId: string }).regionalId).toBe(shared);
    expect(await newest()).toMatchObject({ action: 'admin.link.enrol', outcome: 'failure', patient: onlyA });
    expect((await linkOf('FA', '1001'))?.regionalId).toBe(shared);

    // Malformed bodies.
    for (const bad of [
      { facilityId: 'FB', localId: '2011' },
      { facilityId: 'FB', localId: '2011', evidence: '  ' },
      { facilityId: 'FB', localId: "2011' OR '1'='1", evidence: 'card' },
      { facilityId: 'FB', localId: '2011', evidence: 'card', regionalId: 'x;drop table identity_link' },
      { facilityId: 'FB', localId: '2011', evidence: 'card', method: 'matcher' },
      [{ facilityId: 'FB', localId: '2011', evidence: 'card' }],
    ]) {
      expect([bad, (await post('FB/net', '/api/admin/links/enrol', bad)).status]).toEqual([bad, 400]);
    }
    expect((await post('FB/net', '/api/admin/links/enrol', '{"facilityId":"FB",')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/links/enrol', 'facilityId=FB', 'application/x-www-form-urlencoded')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/links/enrol', { facilityId: 'FB', localId: '2011', evidence: 'e'.repeat(9000) })).status).toBe(413);
    expect(await linkOf('FB', '2011')).toBeUndefined();
    expect((await fetch(`${h.url}/api/admin/links/enrol`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(401);
  });

  it('answers concurrent enrolments of one local ID with one link and conflicts, never a 500', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 6 }, () => post('FB/net', '/api/admin/links/enrol', { facilityId: 'FC', localId: '7201', evidence: 'card' }).then((r) => r.status)),
    );
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(new Set(statuses.filter((s) => s !== 201))).toEqual(new Set([409]));
    expect((await id().localHistory({ facilityId: 'FC', localId: '7201' })).length).toBe(1);
  });

  it('relinks a local ID to another patient within reach, audited', async () => {
    const wrong = await enrolled('FB', '2101');
    const moved = await post('FB/clerk', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: shared, reason: 'picked the wrong patient at the desk' });
    expect(moved.status).toBe(200);
    expect(await moved.json()).toMatchObject({ facilityId: 'FB', localId: '2101', from: wrong, to: shared, link: { regionalId: shared } });
    expect((await linkOf('FB', '2101'))?.regionalId).toBe(shared);
    const e = await newest();
    expect(e).toMatchObject({ action: 'admin.link.relink', outcome: 'success', patient: shared, reason: 'picked the wrong patient at the desk', role: 'clerk' });
    expect(e.detail).toMatchObject({ facilityId: 'FB', localId: '2101', from: wrong, to: shared });

    // Another facility's ID; a target FB has no link to (like an unknown one); no link.manage.
    expect((await post('FB/clerk', '/api/admin/links/relink', { facilityId: 'FA', localId: '1002', regionalId: shared, reason: 'x' })).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.link.relink', outcome: 'denied' });
    const hidden = await strip(await post('FB/clerk', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: onlyA, reason: 'x' }));
    const unknown = await strip(await post('FB/clerk', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: 'RP-NOBODY', reason: 'x' }));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await post('FB/doctor', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: wrong, reason: 'x' })).status).toBe(403);
    expect((await linkOf('FB', '2101'))?.regionalId).toBe(shared);

    // A local ID never linked, an unknown patient, a missing reason.
    expect((await post('FB/net', '/api/admin/links/relink', { facilityId: 'FB', localId: '9999', regionalId: shared, reason: 'x' })).status).toBe(404);
    expect(await newest()).toMatchObject({ action: 'admin.link.relink', outcome: 'failure' });
    expect((await post('FB/net', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: 'RP-NOBODY', reason: 'x' })).status).toBe(404);
    expect((await post('FB/net', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: wrong })).status).toBe(400);
    expect((await post('FB/net', '/api/admin/links/relink', { facilityId: 'FB', localId: '2101', regionalId: wrong, reason: 'r'.repeat(5000) })).status).toBe(413);
    expect((await linkOf('FB', '2101'))?.regionalId).toBe(shared);
  });

  it('merges two patients: a network administrator any two, a facility administrator only patients wholly its own', async () => {
    const m1 = await enrolled('FA', '1101');
    await enrolled('FB', '2201', m1);
    const m2 = await enrolled('FA', '1102');
    // m1 has an FB local ID: FA's administrator may not move it; FB's clerk does not reach m2.
    expect((await post('FA/admin', `/api/admin/patients/${m2}/merge`, { into: m1, reason: 'same person' })).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.patient.merge', outcome: 'denied', role: 'facility_admin' });
    expect((await post('FA/admin', `/api/admin/patients/${m1}/merge`, { into: m2, reason: 'same person' })).status).toBe(403);
    const hidden = await strip(await post('FB/clerk', `/api/admin/patients/${m2}/merge`, { into: m1, reason: 'same person' }));
    const unknown = await strip(await post('FB/clerk', '/api/admin/patients/RP-NOBODY/merge', { into: m1, reason: 'same person' }));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await post('FB/doctor', `/api/admin/patients/${m2}/merge`, { into: m1, reason: 'same person' })).status).toBe(403);
    expect((await id().getPatient(m2))?.mergedInto).toBeNull();

    // Two patients with only FA local IDs: FA's administrator may merge them.
    const a1 = await enrolled('FA', '1201');
    const a2 = await enrolled('FA', '1202');
    const own = await post('FA/admin', `/api/admin/patients/${a1}/merge`, { into: a2, reason: 'registered twice at FA' });
    expect(own.status).toBe(200);
    expect(((await own.json()) as { links: LinkOut[] }).links.map((l) => l.localId).sort()).toEqual(['1201', '1202']);
    expect((await id().getPatient(a1))?.mergedInto).toBe(a2);

    const res = await post('FB/net', `/api/admin/patients/${m2}/merge`, { into: m1, reason: 'same insurance number at both visits' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { from: string; into: string; links: LinkOut[] };
    expect(body).toMatchObject({ from: m2, into: m1 });
    expect(body.links.map((l) => `${l.facilityId}/${l.localId}`).sort()).toEqual(['FA/1101', 'FA/1102', 'FB/2201']);
    expect((await id().getPatient(m2))?.mergedInto).toBe(m1);
    const e = await newest();
    expect(e).toMatchObject({ action: 'admin.patient.merge', outcome: 'success', patient: m1, reason: 'same insurance number at both visits', role: 'network_admin' });
    expect(e.detail).toMatchObject({ from: m2, into: m1, links: ['FA/1102'] });

    // Into itself, twice, unknown patients, malformed bodies and ids.
    const self = await post('FB/net', `/api/admin/patients/${m1}/merge`, { into: m1, reason: 'x' });
    expect(self.status).toBe(400);
    expect(((await self.json()) as { detail: string }).detail).toMatch(/itself/);
    expect(await newest()).toMatchObject({ action: 'admin.patient.merge', outcome: 'failure' });
    const twice = await post('FB/net', `/api/admin/patients/${m2}/merge`, { into: m1, reason: 'x' });
    expect(twice.status).toBe(409);
    expect(((await twice.json()) as { mergedInto: string }).mergedInto).toBe(m1);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, { into: m2, reason: 'x' })).status).toBe(409);
    expect((await post('FB/net', '/api/admin/patients/RP-NOBODY/merge', { into: m1, reason: 'x' })).status).toBe(404);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, { into: 'RP-NOBODY', reason: 'x' })).status).toBe(404);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, { into: onlyB })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, { into: "x' OR 1=1", reason: 'x' })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${encodeURIComponent("R' OR 1=1--")}/merge`, { into: m1, reason: 'x' })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, '{"into":')).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${m1}/merge`, new Uint8Array(6000).fill(0x20))).status).toBe(413);
    expect((await id().getPatient(onlyB))?.mergedInto).toBeNull();
    expect((await id().linksOf(m1)).length).toBe(3);
  });

  it('splits local IDs off into a new patient, never every one of them', async () => {
    const s = await enrolled('FA', '1301');
    await enrolled('FB', '2301', s);
    await enrolled('FB', '2302', s);
    // FA's administrator may not move FB's IDs; a physician nothing; FB's clerk its own.
    expect((await post('FA/admin', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FB', localId: '2301' }], reason: 'two people' })).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.patient.split', outcome: 'denied' });
    expect((await post('FB/doctor', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FB', localId: '2301' }], reason: 'two people' })).status).toBe(403);
    const hidden = await strip(await post('FB/clerk', `/api/admin/patients/${onlyA}/split`, { localIds: [{ facilityId: 'FB', localId: '2301' }], reason: 'two people' }));
    const unknown = await strip(await post('FB/clerk', '/api/admin/patients/RP-NOBODY/split', { localIds: [{ facilityId: 'FB', localId: '2301' }], reason: 'two people' }));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await linkOf('FB', '2301'))?.regionalId).toBe(s);

    const res = await post('FB/clerk', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FB', localId: '2301' }], reason: 'twins registered under one card' });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { patient: string; newPatient: string; links: LinkOut[] };
    expect(body.patient).toBe(s);
    expect(body.newPatient).not.toBe(s);
    expect(body.links.map((l) => `${l.facilityId}/${l.localId}`)).toEqual(['FB/2301']);
    expect((await linkOf('FB', '2301'))?.regionalId).toBe(body.newPatient);
    expect((await id().linksOf(s)).map((l) => l.localId).sort()).toEqual(['1301', '2302']);
    const e = await newest();
    expect(e).toMatchObject({ action: 'admin.patient.split', outcome: 'success', patient: s, reason: 'twins registered under one card', role: 'clerk' });
    expect(e.detail).toMatchObject({ moved: ['FB/2301'], newPatient: body.newPatient });

    // Every remaining local ID, a local ID of another patient, unknown and merged patients, bad bodies.
    const all = await post('FB/net', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FA', localId: '1301' }, { facilityId: 'FB', localId: '2302' }], reason: 'x' });
    expect(all.status).toBe(400);
    expect(((await all.json()) as { detail: string }).detail).toMatch(/at least one/);
    expect(await newest()).toMatchObject({ action: 'admin.patient.split', outcome: 'failure' });
    expect((await post('FB/net', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FB', localId: '2001' }], reason: 'x' })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${s}/split`, { localIds: [{ facilityId: 'FB', localId: '9999' }], reason: 'x' })).status).toBe(400);
    expect((await post('FB/net', '/api/admin/patients/RP-NOBODY/split', { localIds: [{ facilityId: 'FB', localId: '2302' }], reason: 'x' })).status).toBe(404);
    const merged = await enrolled('FC', '7101');
    await id().merge(actor, merged, onlyA, 'test');
    expect((await post('FB/net', `/api/admin/patients/${merged}/split`, { localIds: [{ facilityId: 'FC', localId: '7101' }], reason: 'x' })).status).toBe(409);
    for (const bad of [
      { localIds: [], reason: 'x' },
      { localIds: [{ facilityId: 'FB', localId: '2302' }] },
      { localIds: [{ facilityId: 'FB' }], reason: 'x' },
      { localIds: 'FB/2302', reason: 'x' },
      { localIds: Array.from({ length: 501 }, (_, i) => ({ facilityId: 'FB', localId: `${i}` })), reason: 'x' },
    ]) {
      expect((await post('FB/net', `/api/admin/patients/${s}/split`, bad)).status).toBe(400);
    }
    expect((await post('FB/net', `/api/admin/patients/${s}/split`, new Uint8Array(70 * 1024).fill(0x20))).status).toBe(413);
    expect((await id().linksOf(s)).map((l) => l.localId).sort()).toEqual(['1301', '2302']);
  });

  it("shows a patient's link history (a facility's staff: its own local IDs only) and a local ID's", async () => {
    const p = await enrolled('FA', '1401');
    await enrolled('FB', '2401', p);
    const q = await enrolled('FB', '2402');
    await id().merge(actor, q, p, 'same person');
    const net = await as('FB/net', `/api/admin/patients/${p}/links/history`);
    expect(net.status).toBe(200);
    type History = { patient: string; mergedInto: string | null; links: LinkOut[]; events: Array<{ facilityId: string; localId: string; action: string; operation: string; at: string }>; audit?: Array<{ action: string }> };
    const full = (await net.json()) as History;
    expect(full.links.map((l) => `${l.facilityId}/${l.localId}`).sort()).toEqual(['FA/1401', 'FB/2401', 'FB/2402']);
    expect(full.events.map((e) => `${e.facilityId}/${e.localId} ${e.action}/${e.operation}`).sort()).toEqual(['FA/1401 link/enrol', 'FB/2401 link/enrol', 'FB/2402 relink/merge']);
    expect(full.events[0]!.at).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(full.audit?.map((a) => a.action)).toContain('patient.merge');
    expect(await newest()).toMatchObject({ action: 'admin.link.history', outcome: 'success', patient: p });

    const clerk = (await (await as('FB/clerk', `/api/admin/patients/${p}/links/history`)).json()) as History;
    expect(clerk.links.map((l) => l.facilityId)).toEqual(['FB', 'FB']);
    expect(new Set(clerk.events.map((e) => e.facilityId))).toEqual(new Set(['FB']));
    expect(clerk.audit).toBeUndefined();
    const hidden = await strip(await as('FB/clerk', `/api/admin/patients/${onlyA}/links/history`));
    const unknown = await strip(await as('FB/clerk', '/api/admin/patients/RP-NOBODY/links/history'));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await as('FB/doctor', `/api/admin/patients/${p}/links/history`)).status).toBe(403);
    expect((await as('FB/net', `/api/admin/patients/${p}/links/history?x=1`)).status).toBe(400);
    expect((await as('FB/net', '/api/admin/patients/RP-NOBODY/links/history')).status).toBe(404);

    // One local ID: enrolled, then moved by the merge.
    const local = await as('FB/clerk', '/api/admin/links/history?facilityId=FB&localId=2402');
    expect(local.status).toBe(200);
    const l = (await local.json()) as { events: Array<{ regionalId: string; previousRegionalId: string | null; operation: string }> };
    expect(l.events.map((e) => [e.operation, e.previousRegionalId, e.regionalId])).toEqual([
      ['enrol', null, q],
      ['merge', q, p],
    ]);
    expect((await as('FB/clerk', '/api/admin/links/history?facilityId=FA&localId=1401')).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.link.history', outcome: 'denied' });
    expect((await as('FB/clerk', '/api/admin/links/history?facilityId=FB&localId=8888')).status).toBe(404);
    for (const bad of ['?facilityId=FB', `?facilityId=FB&localId=${encodeURIComponent("1' OR '1'='1")}`, '?facilityId=FB&localId=1&facilityId=FA', '?facilityId=FB&localId=1&all=true']) {
      expect([bad, (await as('FB/net', `/api/admin/links/history${bad}`)).status]).toEqual([bad, 400]);
    }
  });

  it('rejects a pair and runs the matcher (network administrators only), audited', async () => {
    await id().recordLocalPatients([person('FA', '5001', '健一', 'ケンイチ'), person('FB', '5002', '健一', 'ケンイチ'), person('FA', '5003', '健一', 'ケンイチ'), person('FA', '5004', '健一', 'ケンイチ')]);
    // FA's administrator says two FA records are different people; it may not say so of FB's.
    const rejected = await post('FA/admin', '/api/admin/links/reject-pair', { a: { facilityId: 'FA', localId: '5003' }, b: { facilityId: 'FA', localId: '5004' }, reason: 'father and son, same name' });
    expect(rejected.status).toBe(200);
    expect(await newest()).toMatchObject({ action: 'admin.link.reject-pair', outcome: 'success', reason: 'father and son, same name' });
    expect((await post('FA/admin', '/api/admin/links/reject-pair', { a: { facilityId: 'FA', localId: '5001' }, b: { facilityId: 'FB', localId: '5002' }, reason: 'x' })).status).toBe(403);
    expect((await post('FB/net', '/api/admin/links/reject-pair', { a: { facilityId: 'FA', localId: '5001' }, b: { facilityId: 'FA', localId: '5001' }, reason: 'x' })).status).toBe(400);
    expect((await post('FB/net', '/api/admin/links/reject-pair', { a: { facilityId: 'FA', localId: '1001' }, b: { facilityId: 'FB', localId: '2001' }, reason: 'x' })).status).toBe(409);
    expect((await post('FB/net', '/api/admin/links/reject-pair', { a: { facilityId: 'FA', localId: '5001' }, reason: 'x' })).status).toBe(400);

    for (const who of ['FA/admin', 'FB/clerk', 'FB/doctor']) {
      expect([who, (await post(who, '/api/admin/links/match', {})).status]).toEqual([who, 403]);
      expect(await newest()).toMatchObject({ action: 'admin.link.match', outcome: 'denied' });
    }
    expect((await post('FB/net', '/api/admin/links/match', { reason: 'x', autoLinkAt: 1 })).status).toBe(400);
    expect((await post('FB/net', '/api/admin/links/match', 'go', 'text/plain')).status).toBe(400);
    // The run is a job: 202 with the run queued, then polled until it is done.
    const run = await post('FB/net', '/api/admin/links/match', { reason: 'FB loaded its patients' });
    expect(run.status).toBe(202);
    const asked = (await run.json()) as { id: string; status: string; reason: string; requestedBy: Record<string, unknown>; requestedAt: string };
    expect(asked).toMatchObject({ status: 'queued', reason: 'FB loaded its patients', requestedBy: { username: 'net', facilityId: 'FB', role: 'network_admin' } });
    expect(asked.id).toMatch(/^MR-[0-9A-F]{16}$/);
    expect(run.headers.get('location')).toBe(`/api/admin/links/match/${asked.id}`);
    expect(await newest()).toMatchObject({ action: 'admin.link.match', outcome: 'success', reason: 'FB loaded its patients', role: 'network_admin' });
    expect((await newest()).detail).toMatchObject({ runId: asked.id, status: 'queued' });
    let done: { status: string; summary: { localPatients: number; candidates: number; autoLinked: number; queued: number; skipped: number } | null; progress: Record<string, unknown>; error: string | null };
    for (const until = Date.now() + 60_000; ; ) {
      const r = await as('FB/net', `/api/admin/links/match/${asked.id}`);
      expect(r.status).toBe(200);
      done = (await r.json()) as typeof done;
      if (done.status === 'done' || done.status === 'failed' || Date.now() > until) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect([done.status, done.error]).toEqual(['done', null]);
    const s = done.summary!;
    expect(s.localPatients).toBe(4);
    expect(s.queued).toBeGreaterThanOrEqual(5);
    expect(s.skipped).toBe(1);
    expect(done.progress).toMatchObject({ phase: null, localPatients: 4, candidates: s.candidates, applied: s.candidates, toApply: s.candidates });
    // The outcome is audited by the job, as the administrator who asked.
    const finish = await h.exchange.db.selectFrom('audit_event').selectAll().where('action', '=', 'identity.match.finish').orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
    expect(finish).toMatchObject({ outcome: 'success', user_id: u['FB/net']!.userId, role: 'network_admin', endpoint: 'job identity-match' });
    expect(JSON.parse(finish.detail)).toMatchObject({ runId: asked.id, localPatients: 4, queued: s.queued, skipped: 1 });
    // Other roles may not look at runs either.
    expect((await as('FA/admin', `/api/admin/links/match/${asked.id}`)).status).toBe(403);
    expect(await newest()).toMatchObject({ action: 'admin.link.match.read', outcome: 'denied' });
    expect((await as('FB/clerk', '/api/admin/links/match')).status).toBe(403);
    const list = (await (await as('FB/net', '/api/admin/links/match')).json()) as { runs: Array<{ id: string; status: string }> };
    expect(list.runs[0]).toMatchObject({ id: asked.id, status: 'done' });
    const queue = (await (await as('FB/net', '/api/admin/links/review?limit=500')).json()) as { matches: Array<{ a: { localId: string }; b: { localId: string } }> };
    const pairs = queue.matches.map((m) => [m.a.localId, m.b.localId].sort().join('~'));
    expect(pairs).toContain('5001~5002');
    expect(pairs).not.toContain('5003~5004');
  });

  it("a merge or a split over HTTP holds on the clinician's very next timeline request", async () => {
    const sample = path.join(SAMPLES_ROOT, '999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1');
    const bytes = fs.readFileSync(sample);
    const read = readStoredFile({ facilityId: 'FB', path: path.relative(SAMPLES_ROOT, sample), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
    // FB holds one prescription of each of FB/6001 and FB/6002; FA's physician reads them.
    for (const [localId, day] of [['6001', '01'], ['6002', '02']] as const) {
      await h.exchange.db
        .insertInto('record')
        .values({
          facility_id: 'FB', path: `fresh/${localId}`, sha256: createHash('sha256').update(localId).digest('hex'), added_seq: 1, snapshot_id: 's',
          patient_id: localId, data_type: 'OMP-01', category: 'prescription', care_date: `2020-01-${day}`, order_no: localId,
          message_ts: '20200101000000', department: '01', condition_flag: '1', status: 'ok', content: JSON.stringify(read.record),
        })
        .execute();
    }
    await h.exchange.db.insertInto('record_index_state').values({ facility_id: 'FB', published_seq: 1, published_snapshot_id: 's', published_at: new Date() }).execute();
    const p1 = await enrolled('FB', '6001');
    const p2 = await enrolled('FB', '6002');
    await h.exchange.consent.consent.record(actor, p1, { terms: TERMS });
    await h.exchange.consent.consent.record(actor, p2, { terms: TERMS });
    const timeline = async (p: string) => {
      const r = await as('FA/doctor', `/api/patients/${p}/timeline`);
      return { status: r.status, dates: r.status === 200 ? ((await r.json()) as { records: Array<{ careDate: string }> }).records.map((x) => x.careDate) : null };
    };
    expect(await timeline(p1)).toEqual({ status: 200, dates: ['2020-01-01'] });
    expect(await timeline(p2)).toEqual({ status: 200, dates: ['2020-01-02'] });

    expect((await post('FB/net', `/api/admin/patients/${p2}/merge`, { into: p1, reason: 'one person' })).status).toBe(200);
    expect(await timeline(p1)).toEqual({ status: 200, dates: ['2020-01-02', '2020-01-01'] });

    const split = await post('FB/net', `/api/admin/patients/${p1}/split`, { localIds: [{ facilityId: 'FB', localId: '6002' }], reason: 'two people after all' });
    expect(split.status).toBe(201);
    const p3 = ((await split.json()) as { newPatient: string }).newPatient;
    expect(await timeline(p1)).toEqual({ status: 200, dates: ['2020-01-01'] });
    // The new patient has no consent yet: FA sees nothing of it.
    expect((await timeline(p3)).status).toBe(403);

    // A relink moves the record too, at once.
    expect((await post('FB/net', '/api/admin/links/relink', { facilityId: 'FB', localId: '6002', regionalId: p1, reason: 'one person after all' })).status).toBe(200);
    expect(await timeline(p1)).toEqual({ status: 200, dates: ['2020-01-02', '2020-01-01'] });
  });

  it('keeps a verifying audit chain with every change, refusal and failure in it', async () => {
    expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);
    const rows = await h.exchange.db.selectFrom('audit_event').select(['action', 'outcome']).where('action', 'in', ['admin.link.enrol', 'admin.link.relink', 'admin.patient.merge', 'admin.patient.split', 'admin.link.history', 'admin.link.match', 'admin.link.reject-pair']).execute();
    const seen = new Set(rows.map((r) => `${r.action} ${r.outcome}`));
    for (const action of ['admin.link.enrol', 'admin.link.relink', 'admin.patient.merge', 'admin.patient.split', 'admin.link.match']) {
      for (const outcome of ['success', 'denied', 'failure']) {
        if (action === 'admin.link.match' && outcome === 'failure') continue;
        expect([action, outcome, seen.has(`${action} ${outcome}`)]).toEqual([action, outcome, true]);
      }
    }
    // The identity service keeps its own record of each change, with the signed-in user as actor.
    const changes = await id().audit({ action: 'patient.split', limit: 10 });
    expect(changes.map((c) => c.actor)).toContain('FB/clerk');
  });
});
