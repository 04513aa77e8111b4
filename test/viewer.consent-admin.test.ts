import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityRecord } from '../consent/match.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { get, lastAudit, signIn, startViewer, type TestUser, type ViewerHarness } from './viewer.support.js';

/**
 * Administration over HTTP from the consent service: facilities and their participation, a
 * person's identity links, the review queue (accept / reject), unlink, and consents (list,
 * record, withdraw). Network administrators act everywhere; facility-bound roles only on their
 * own facility's patients and local IDs; everything else answers like an unknown patient or match.
 */

const TERMS = {
  status: 'opted-in',
  disclosing: { mode: 'all' },
  receiving: { kinds: ['hospital'], facilities: [], exclude: [] },
  categories: { mode: 'all-except', categories: ['documents'] },
  purposes: { treatment: true, emergency: 'permit', aiServices: [], research: false },
  validFrom: Date.parse('2026-11-01T00:00:00Z'),
  validTo: null,
};

function person(facilityId: string, localId: string, given: string, givenKana: string): IdentityRecord {
  return {
    facilityId,
    localId,
    familyKanji: '海辺',
    givenKanji: given,
    familyKana: 'ウミベ',
    givenKana,
    birthDate: '19600312',
    sex: 'F',
    postalCode: '422-8033',
    address: '静岡県静岡市駿河区登呂1-3-5',
    phone: '054-000-0001',
  };
}

describe('identity links, consents and participation over HTTP (PostgreSQL)', () => {
  let h: ViewerHarness;
  let shared: string; // linked at FA and FB
  let onlyA: string; // linked at FA only
  const u: Record<string, TestUser> = {};
  const tokens: Record<string, string> = {};
  const actor = 'test:admin';

  beforeAll(async () => {
    h = await startViewer('postgres', (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    const { identity } = h.exchange.consent;
    for (const [id, kind] of [['FA', 'hospital'], ['FB', 'hospital'], ['FC', 'clinic']] as const) await h.exchange.backup.addFacility({ id, name: `Facility ${id}`, kind });
    await h.exchange.consent.consent.setParticipation(actor, { facilityId: 'FA', kind: 'hospital', discloses: true, views: true }, 'joins');
    shared = (await identity.enrol(actor, { facilityId: 'FA', localId: '1001' }, { evidence: 'insurance card' })).regionalId;
    await identity.enrol(actor, { facilityId: 'FB', localId: '2001' }, { regionalId: shared, evidence: 'insurance card' });
    onlyA = (await identity.enrol(actor, { facilityId: 'FA', localId: '1002' }, { evidence: 'insurance card' })).regionalId;
    // Two pairs for review: one across FA and FB, one inside FA (the same woman registered twice).
    await identity.recordLocalPatients([
      person('FA', '3001', '花子', 'ハナコ'),
      person('FB', '3002', '花子', 'ハナコ'),
      person('FA', '4001', '桜', 'サクラ'),
      person('FA', '4002', '櫻', 'サクラ'),
    ]);
    const run = await identity.runMatching();
    expect(run.queued).toBeGreaterThanOrEqual(2);
    await signIn(
      h,
      [
        ['FB', 'net', 'network_admin'],
        ['FA', 'admin', 'facility_admin'],
        ['FB', 'clerk', 'clerk'],
        ['FB', 'doctor', 'physician'],
        ['FB', 'carer', 'care_worker'],
      ] as const,
      u,
      tokens,
    );
  }, 240_000);
  afterAll(async () => h?.close());

  const as = (who: string, p: string) => get(h, p, tokens[who]);
  const post = (who: string, p: string, body: string | Uint8Array | object, method = 'POST', type = 'application/json') =>
    fetch(`${h.url}${p}`, {
      method,
      headers: { authorization: `Bearer ${tokens[who]}`, 'content-type': type },
      body: typeof body === 'string' ? body : body instanceof Uint8Array ? new Uint8Array(body) : JSON.stringify(body),
    });
  const strip = async (r: Response) => {
    const b = (await r.json()) as Record<string, unknown>;
    delete b.requestId;
    return { status: r.status, body: b };
  };

  it('lists facilities with their participation and lets a network administrator change it (audited)', async () => {
    const list = await as('FB/net', '/api/admin/facilities');
    expect(list.status).toBe(200);
    expect(list.headers.get('cache-control')).toBe('no-store');
    for (const p of ['/api/admin/facilities', '/api/admin/roles', `/api/admin/patients/${shared}/consents`, '/api/admin/links/review', '/api/facilities/FA/quality']) {
      expect([p, (await get(h, p)).status]).toEqual([p, 401]);
    }
    const body = (await list.json()) as { facilities: Array<{ id: string; kind: string; participation: unknown }> };
    expect(body.facilities.map((f) => f.id)).toEqual(['FA', 'FB', 'FC']);
    expect(body.facilities[0]!.participation).toEqual({ kind: 'hospital', discloses: true, views: true });
    expect(body.facilities[2]!.participation).toBeNull();

    const set = await post('FB/net', '/api/admin/participation/FC', { kind: 'clinic', discloses: true, views: false, reason: 'signed the agreement' }, 'PUT');
    expect(set.status).toBe(200);
    expect(await h.exchange.consent.consent.participation('FC')).toEqual({ facilityId: 'FC', kind: 'clinic', discloses: true, views: false });
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'admin.participation.set', outcome: 'success', reason: 'signed the agreement', user_id: u['FB/net']!.userId });
    expect(JSON.parse(entry!.detail)).toMatchObject({ facilityId: 'FC', participation: { views: false } });
    const parts = (await (await as('FB/net', '/api/admin/participation')).json()) as { participation: Array<{ facilityId: string }> };
    expect(parts.participation.map((p) => p.facilityId).sort()).toEqual(['FA', 'FC']);

    // The role matrix in force, for those who give users their roles.
    const roles = (await (await as('FA/admin', '/api/admin/roles')).json()) as { roles: Record<string, { categories: string[]; actions: string[] }> };
    expect(roles.roles.physician!.actions).toContain('record.original');
    expect(roles.roles.clerk!.actions).not.toContain('record.original');
    expect(roles.roles.care_worker!.categories).toEqual(['demographics', 'allergies', 'diet']);
    expect((await as('FB/clerk', '/api/admin/roles')).status).toBe(403);

    // A facility administrator may not change the network; a physician may not list it.
    expect((await post('FA/admin', '/api/admin/participation/FA', { kind: 'hospital', discloses: false, views: true, reason: 'leaving' }, 'PUT')).status).toBe(403);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.participation.set', outcome: 'denied' });
    expect((await as('FB/doctor', '/api/admin/facilities')).status).toBe(403);
    expect((await as('FB/doctor', '/api/admin/participation')).status).toBe(403);
    expect(await h.exchange.consent.consent.participation('FA')).toMatchObject({ discloses: true });

    // Bad input: unknown facility, unknown kind, extra fields, not JSON, too big, injection in the id.
    expect((await post('FB/net', '/api/admin/participation/ZZ', { kind: 'clinic', discloses: true, views: true, reason: 'x' }, 'PUT')).status).toBe(404);
    expect((await post('FB/net', '/api/admin/participation/FC', { kind: 'spa', discloses: true, views: true, reason: 'x' }, 'PUT')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/participation/FC', { kind: 'clinic', discloses: true, views: true, reason: 'x', admin: true }, 'PUT')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/participation/FC', '{"kind":', 'PUT')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/participation/FC', 'kind=clinic', 'PUT', 'application/x-www-form-urlencoded')).status).toBe(400);
    expect((await post('FB/net', '/api/admin/participation/FC', { kind: 'clinic', discloses: true, views: true, reason: 'x'.repeat(8000) }, 'PUT')).status).toBe(413);
    expect((await post('FB/net', `/api/admin/participation/${encodeURIComponent("FC' OR '1'='1")}`, { kind: 'clinic', discloses: true, views: true, reason: 'x' }, 'PUT')).status).toBe(400);
  });

  it("lists a person's links: all of them to a network administrator, the own facility's to a facility's staff", async () => {
    const all = await as('FB/net', `/api/admin/patients/${shared}/links`);
    expect(all.status).toBe(200);
    const body = (await all.json()) as { links: Array<{ facilityId: string; localId: string; method: string }> };
    expect(body.links.map((l) => `${l.facilityId}/${l.localId}`).sort()).toEqual(['FA/1001', 'FB/2001']);
    expect(body.links[0]).toMatchObject({ method: 'manual', evidence: 'insurance card' });
    const clerk = (await (await as('FB/clerk', `/api/admin/patients/${shared}/links`)).json()) as typeof body;
    expect(clerk.links.map((l) => `${l.facilityId}/${l.localId}`)).toEqual(['FB/2001']);
    // A patient with no local ID at FB answers for FB's clerk exactly like a patient that does not exist.
    const hidden = await strip(await as('FB/clerk', `/api/admin/patients/${onlyA}/links`));
    const unknown = await strip(await as('FB/clerk', '/api/admin/patients/RP-DOES-NOT-EXIST/links'));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await as('FB/doctor', `/api/admin/patients/${shared}/links`)).status).toBe(403);
    expect((await as('FB/net', `/api/admin/patients/${encodeURIComponent("R' OR 1=1--")}/links`)).status).toBe(400);
  });

  it('shows the review queue and lets a reviewer confirm or reject a candidate, within its reach', async () => {
    type Queue = { matches: Array<{ id: number; a: { facilityId: string; localId: string }; b: { facilityId: string; localId: string } }> };
    const queue = (await (await as('FB/net', '/api/admin/links/review')).json()) as Queue;
    const cross = queue.matches.find((m) => [m.a.localId, m.b.localId].sort().join() === '3001,3002')!;
    const inA = queue.matches.find((m) => [m.a.localId, m.b.localId].sort().join() === '4001,4002')!;
    expect(cross).toBeDefined();
    expect(inA).toBeDefined();
    // FA's administrator sees and decides only pairs of FA's own local IDs.
    const mine = (await (await as('FA/admin', '/api/admin/links/review')).json()) as Queue;
    expect(mine.matches.map((m) => m.id)).toEqual([inA.id]);
    const notMine = await strip(await post('FA/admin', `/api/admin/links/review/${cross.id}/accept`, { reason: 'same card number' }));
    const noSuch = await strip(await post('FA/admin', '/api/admin/links/review/99999999/accept', { reason: 'same card number' }));
    expect(notMine.status).toBe(404);
    expect(noSuch).toEqual(notMine);

    const accepted = await post('FA/admin', `/api/admin/links/review/${inA.id}/accept`, { reason: 'same insurance card, old kanji at registration' });
    expect(accepted.status).toBe(200);
    const acc = (await accepted.json()) as { regionalId: string; links: unknown[] };
    expect((await h.exchange.consent.identity.linkOf({ facilityId: 'FA', localId: '4001' }))?.regionalId).toBe(acc.regionalId);
    expect((await h.exchange.consent.identity.linkOf({ facilityId: 'FA', localId: '4002' }))?.regionalId).toBe(acc.regionalId);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.link.accept', outcome: 'success', reason: 'same insurance card, old kanji at registration' });
    // Deciding twice is a conflict, recorded as a failure.
    expect((await post('FA/admin', `/api/admin/links/review/${inA.id}/reject`, { reason: 'changed my mind' })).status).toBe(409);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.link.reject', outcome: 'failure' });

    const rejected = await post('FB/net', `/api/admin/links/review/${cross.id}/reject`, { reason: 'different mothers named on the cards' });
    expect(rejected.status).toBe(200);
    expect((await h.exchange.consent.identity.getMatch(cross.id))?.status).toBe('rejected');
    expect((await h.exchange.consent.identity.linkOf({ facilityId: 'FA', localId: '3001' }))).toBeUndefined();

    for (const p of ['/api/admin/links/review/abc/accept', '/api/admin/links/review/0/accept', `/api/admin/links/review/${encodeURIComponent('1 OR 1=1')}/accept`]) {
      expect([p, (await post('FB/net', p, { reason: 'x' })).status]).toEqual([p, 400]);
    }
    expect((await post('FB/net', `/api/admin/links/review/${cross.id}/accept`, { reason: '' })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/links/review/${cross.id}/accept`, { reason: 'x', extra: 1 })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/links/review/${cross.id}/accept`, { reason: 'x'.repeat(5000) })).status).toBe(413);
    expect((await post('FB/net', `/api/admin/links/review/${cross.id}/accept`, '{"reason":')).status).toBe(400);
    expect((await post('FB/net', `/api/admin/links/review/${cross.id}/accept`, 'reason=x', 'POST', 'text/plain')).status).toBe(400);
    expect((await as('FB/net', '/api/admin/links/review?limit=100000')).status).toBe(400);
    expect((await as('FB/net', `/api/admin/links/review?after=${encodeURIComponent("1'--")}`)).status).toBe(400);
    expect((await post('FB/carer', `/api/admin/links/review/${cross.id}/accept`, { reason: 'x' })).status).toBe(403);
  });

  it("unlinks a local ID: a clerk only its own facility's, audited", async () => {
    expect((await post('FB/clerk', '/api/admin/links/unlink', { facilityId: 'FA', localId: '1001', reason: 'wrong person' })).status).toBe(403);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.link.unlink', outcome: 'denied' });
    expect(await h.exchange.consent.identity.linkOf({ facilityId: 'FA', localId: '1001' })).toBeDefined();
    for (const bad of [{ facilityId: 'FB', localId: "2001' OR '1'='1", reason: 'x' }, { facilityId: 'FB', localId: '2001' }, { facilityId: 'FB', localId: '2001', reason: 'x', force: true }]) {
      expect((await post('FB/clerk', '/api/admin/links/unlink', bad)).status).toBe(400);
    }
    expect((await post('FB/clerk', '/api/admin/links/unlink', { facilityId: 'FB', localId: '9999', reason: 'wrong person' })).status).toBe(404);
    expect((await post('FB/clerk', '/api/admin/links/unlink', { facilityId: 'FB', localId: '2001', reason: 'y'.repeat(6000) })).status).toBe(413);
    expect((await post('FB/clerk', '/api/admin/links/unlink', '{"facilityId": "FB", "localId": "2001", "reason": "x"')).status).toBe(400);
    const res = await post('FB/clerk', '/api/admin/links/unlink', { facilityId: 'FB', localId: '2001', reason: 'registered to the wrong person' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ facilityId: 'FB', localId: '2001', unlinkedFrom: shared });
    expect(await h.exchange.consent.identity.linkOf({ facilityId: 'FB', localId: '2001' })).toBeUndefined();
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'admin.link.unlink', outcome: 'success', patient: shared, reason: 'registered to the wrong person', user_id: u['FB/clerk']!.userId });
    // FB's clerk no longer reaches the patient at all.
    expect((await as('FB/clerk', `/api/admin/patients/${shared}/links`)).status).toBe(404);
    // Put it back for the consent tests (as staff do at the desk).
    await h.exchange.consent.identity.enrol(actor, { facilityId: 'FB', localId: '2001' }, { regionalId: shared, evidence: 'insurance card' });
  });

  it('records, lists and withdraws consents, for patients within reach only, every change audited', async () => {
    const recorded = await post('FB/clerk', `/api/admin/patients/${shared}/consents`, {
      terms: TERMS,
      note: 'signed at the FB front desk',
      evidence: { mediaType: 'application/pdf', base64: Buffer.from('%PDF-1.4 signed form').toString('base64') },
    });
    expect(recorded.status).toBe(201);
    const v = (await recorded.json()) as { id: string; version: number; status: string; recordedBy: string; evidenceSha256: string };
    expect(v).toMatchObject({ version: 1, status: 'opted-in', recordedBy: 'FB/clerk' });
    expect(v.evidenceSha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.consent.record', outcome: 'success', patient: shared, reason: 'signed at the FB front desk' });

    const list = (await (await as('FB/doctor', `/api/admin/patients/${shared}/consents`)).json()) as { current: { id: string }; versions: unknown[] };
    expect(list.current.id).toBe(v.id);
    expect(list.versions).toHaveLength(1);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.consent.read', outcome: 'success' });

    const withdrawn = await post('FB/net', `/api/admin/patients/${shared}/consents/withdraw`, { reason: 'the patient wrote to the network' });
    expect(withdrawn.status).toBe(201);
    expect(((await h.exchange.consent.consent.current(shared)) as { status: string }).status).toBe('withdrawn');
    expect((await post('FB/net', `/api/admin/patients/${shared}/consents/withdraw`, { reason: 'again' })).status).toBe(409);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'admin.consent.withdraw', outcome: 'failure' });

    // Out of reach: FB's clerk and onlyA; a care worker may not read consents; FA's admin may for FA's patient.
    const hidden = await strip(await post('FB/clerk', `/api/admin/patients/${onlyA}/consents`, { terms: TERMS }));
    const unknown = await strip(await post('FB/clerk', '/api/admin/patients/RP-NOBODY/consents', { terms: TERMS }));
    expect(hidden.status).toBe(404);
    expect(unknown).toEqual(hidden);
    expect((await as('FB/carer', `/api/admin/patients/${shared}/consents`)).status).toBe(403);
    expect((await post('FB/doctor', `/api/admin/patients/${shared}/consents`, { terms: TERMS })).status).toBe(403);
    expect((await as('FA/admin', `/api/admin/patients/${onlyA}/consents`)).status).toBe(200);

    // Malformed terms, bodies and ids.
    const badTerms = await post('FB/net', `/api/admin/patients/${shared}/consents`, { terms: { ...TERMS, status: "opted-in' --" } });
    expect(badTerms.status).toBe(400);
    expect(((await badTerms.json()) as { detail: string }).detail).toMatch(/status/);
    expect((await post('FB/net', `/api/admin/patients/${shared}/consents`, { terms: { ...TERMS, validTo: 1 } })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${shared}/consents`, { terms: TERMS, evidence: { mediaType: 'application/pdf', base64: '!!notbase64' } })).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${shared}/consents`, '[1,2,')).status).toBe(400);
    expect((await post('FB/net', `/api/admin/patients/${shared}/consents`, new Uint8Array(5 * 1024 * 1024).fill(0x20))).status).toBe(413);
    expect((await post('FB/net', `/api/admin/patients/${encodeURIComponent('x;drop table consent_version')}/consents`, { terms: TERMS })).status).toBe(400);
    expect(((await h.exchange.consent.consent.versions(shared)) as unknown[]).length).toBe(2);
  });

  it('keeps a verifying audit chain', async () => {
    expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);
    const denied = await h.exchange.db.selectFrom('audit_event').select('action').where('outcome', '=', 'denied').where('action', 'like', 'admin.%').execute();
    expect(new Set(denied.map((d) => d.action))).toEqual(new Set(['admin.participation.set', 'admin.facility.list', 'admin.roles.read', 'admin.participation.list', 'admin.link.read', 'admin.link.accept', 'admin.link.unlink', 'admin.consent.read', 'admin.consent.record']));
  });
});
