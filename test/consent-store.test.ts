import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { ExchangeError } from '../store/errors.js';
import { createConsentModule, type ConsentModule } from '../consent/consent.module.js';
import { decide, type AccessRequest } from '../consent/decide.js';
import { createParticipationCache, perRequest } from '../consent/decision-context.js';
import { upsertParticipation } from '../consent/consent.repository.js';
import { FhirConsentError } from '../consent/fhir-consent.js';
import type { IdentityRecord } from '../consent/match.js';
import type { ConsentTerms, EvidenceStore } from '../consent/model.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

/** A simple evidence store for the test: SHA-256 of the bytes, kept in memory. */
class MemoryEvidence implements EvidenceStore {
  readonly blobs = new Map<string, Buffer>();
  async put(bytes: Uint8Array): Promise<string> {
    const sha = createHash('sha256').update(bytes).digest('hex');
    this.blobs.set(sha, Buffer.from(bytes));
    return sha;
  }
}

const DAY = 86_400_000;
const START = Date.UTC(2026, 4, 1, 0, 0, 0);

const terms = (over: Partial<ConsentTerms> = {}): ConsentTerms => ({
  status: 'opted-in',
  disclosing: { mode: 'all' },
  receiving: { kinds: ['hospital', 'pharmacy'], facilities: [], exclude: ['F003'] },
  categories: { mode: 'all' },
  purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
  validFrom: START - DAY,
  validTo: null,
  ...over,
});

function person(over: Partial<IdentityRecord>): IdentityRecord {
  return {
    facilityId: 'F001',
    localId: '0001234',
    familyKanji: '髙橋',
    givenKanji: '花子',
    familyKana: 'タカハシ',
    givenKana: 'ハナコ',
    birthDate: '19800102',
    sex: 'F',
    postalCode: '980-0811',
    address: '宮城県仙台市青葉区一番町四丁目７番１７号',
    phone: '022-222-3333',
    ...over,
  };
}

const BACKENDS = [
  ['PGlite (embedded)', 'embedded'],
  ['PostgreSQL', 'postgres'],
] as const;

describe.each(BACKENDS)('identity and consent on %s', (_label, kind) => {
  let handle: DatabaseHandle;
  let pg: TestDatabase | undefined;
  const tmp = tempDir();
  let clock = START;
  const now = () => clock;
  const evidence = new MemoryEvidence();
  let mod: ConsentModule;
  let auto: ConsentModule;

  beforeAll(async () => {
    if (kind === 'postgres') pg = await createTestDatabase('hkc');
    handle = await openDatabase({ dataDir: tmp.dir, databaseUrl: pg?.url });
    await migrateToLatest(handle.db);
    mod = createConsentModule({ db: handle.db, evidence, now, participationTtlMs: 60_000 });
    auto = createConsentModule({ db: handle.db, evidence, now, match: { autoLinkAt: 24, reviewAt: 10 } });
    for (const [id, k, d, v] of [
      ['F001', 'hospital', true, true],
      ['F002', 'pharmacy', true, true],
      ['F003', 'hospital', true, true],
      ['F004', 'care_home', false, true],
    ] as const) {
      await mod.consent.setParticipation('admin', { facilityId: id, kind: k, discloses: d, views: v }, 'joined the network');
    }
  }, 180_000); // migrations of every feature on a loaded machine
  afterAll(async () => {
    await handle?.close();
    await pg?.drop();
    tmp.remove();
  });

  const read = (over: Partial<AccessRequest> & { regionalId: string }): AccessRequest => ({
    user: { id: 'dr-b', facilityId: 'F002', facilityKind: 'pharmacy', role: 'pharmacist' },
    purpose: 'treatment',
    source: { facilityId: 'F001', localId: '0001234' },
    category: 'prescriptions',
    at: clock,
    ...over,
  });

  async function decideNow(req: AccessRequest) {
    const loaded = await mod.contexts.load(req.regionalId, { userId: req.user.id }, req.at);
    if (!loaded) throw new Error('no such patient');
    return decide({ ...req, regionalId: loaded.regionalId }, loaded.context);
  }

  it('enrols local IDs with evidence, keeps history, audits, and refuses a second link elsewhere', async () => {
    clock += 1000;
    const a = await mod.identity.enrol('clerk-a', { facilityId: 'F001', localId: '0001234' }, { evidence: 'insurance card checked' });
    expect(a.method).toBe('manual');
    const rp = a.regionalId;
    const b = await mod.identity.enrol('clerk-b', { facilityId: 'F002', localId: 'K-5521' }, { regionalId: rp, evidence: 'patient named the hospital ID' });
    expect(b.regionalId).toBe(rp);
    // Same link again is a no-op; another patient is a conflict.
    await expect(mod.identity.enrol('clerk-b', { facilityId: 'F002', localId: 'K-5521' }, { regionalId: rp, evidence: 'again' })).resolves.toMatchObject({ regionalId: rp });
    const other = await mod.identity.createPatient('clerk-c', 'walk-in');
    await expect(mod.identity.enrol('clerk-c', { facilityId: 'F002', localId: 'K-5521' }, { regionalId: other.id, evidence: 'x' })).rejects.toMatchObject({ code: 'conflict' });
    await expect(mod.identity.enrol('clerk-c', { facilityId: 'F002', localId: '' }, { evidence: 'x' })).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.identity.enrol('clerk-c', { facilityId: 'F002', localId: 'zz' }, { evidence: '' })).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.identity.enrol('clerk-c', { facilityId: 'F002', localId: 'zz' }, { regionalId: 'RP-NOPE', evidence: 'x' })).rejects.toMatchObject({ code: 'not-found' });
    const h = await mod.identity.history(rp);
    expect(h.links.map((l) => `${l.facilityId}/${l.localId}`)).toEqual(['F001/0001234', 'F002/K-5521']);
    expect(h.events.map((e) => [e.action, e.operation, e.actor, e.evidence])).toEqual([
      ['link', 'enrol', 'clerk-a', 'insurance card checked'],
      ['link', 'enrol', 'clerk-b', 'patient named the hospital ID'],
    ]);
    const audit = await mod.identity.audit({ targetKind: 'local-patient', targetId: 'F002/K-5521' });
    expect(audit.map((x) => [x.action, x.actor, x.details.regionalId])).toEqual([['link.enrol', 'clerk-b', rp]]);
  });

  it('shares only while consent, link and participation hold; withdrawal acts on the next request', async () => {
    const rp = (await mod.identity.linkOf({ facilityId: 'F001', localId: '0001234' }))!.regionalId;
    expect((await decideNow(read({ regionalId: rp }))).reasons.map((r) => r.code)).toContain('no-consent');
    clock += 1000;
    const form = new TextEncoder().encode('%PDF-1.4 signed consent form');
    const v1 = await mod.consent.record('clerk-a', rp, { terms: terms(), evidence: { bytes: form, mediaType: 'application/pdf' }, note: 'signed at reception' });
    expect(v1.version).toBe(1);
    expect(v1.evidenceSha256).toBe(createHash('sha256').update(form).digest('hex'));
    expect(evidence.blobs.has(v1.evidenceSha256!)).toBe(true);
    clock += 1;
    const ok = await decideNow(read({ regionalId: rp, at: clock }));
    expect(ok.effect).toBe('permit');
    expect(ok.consentVersionId).toBe(v1.id);
    // Excluded facility F003 (a hospital) sees nothing; F004 (care home) is not a receiver kind.
    expect((await decideNow(read({ regionalId: rp, at: clock, user: { id: 'dr-c', facilityId: 'F003', facilityKind: 'hospital', role: 'physician' } }))).reasons.map((r) => r.code)).toContain('receiver-excluded');
    expect((await decideNow(read({ regionalId: rp, at: clock, user: { id: 'cw', facilityId: 'F004', facilityKind: 'care_home', role: 'care_worker' } }))).effect).toBe('deny');
    // An unlinked local ID of the same facility is never shared.
    expect((await decideNow(read({ regionalId: rp, at: clock, source: { facilityId: 'F001', localId: '9999999' } }))).reasons.map((r) => r.code)).toEqual(['not-linked']);

    clock += 1000;
    const v2 = await mod.consent.withdraw('clerk-a', rp, 'patient phoned to withdraw');
    expect(v2).toMatchObject({ version: 2, status: 'withdrawn', note: 'patient phoned to withdraw' });
    const after = await decideNow(read({ regionalId: rp, at: clock }));
    expect(after.effect).toBe('deny');
    expect(after.reasons.map((r) => r.code)).toContain('withdrawn');
    // Nothing was overwritten: version 1 is still there as it was.
    const versions = await mod.consent.versions(rp);
    expect(versions.map((v) => [v.version, v.status])).toEqual([[1, 'opted-in'], [2, 'withdrawn']]);
    expect(versions[0]).toEqual(v1);
    await expect(mod.consent.withdraw('clerk-a', rp, 'twice')).rejects.toMatchObject({ code: 'conflict' });
    // Before the withdrawal instant the decision was (and stays) permit.
    expect((await decideNow(read({ regionalId: rp, at: v2.recordedAt - 1 }))).effect).toBe('permit');

    clock += 1000;
    const v3 = await mod.consent.record('clerk-a', rp, { terms: terms({ categories: { mode: 'all-except', categories: ['documents'] } }) });
    expect(v3.version).toBe(3);
    expect((await mod.consent.current(rp))?.id).toBe(v3.id);
    expect((await decideNow(read({ regionalId: rp, at: clock }))).effect).toBe('permit');
    expect((await decideNow(read({ regionalId: rp, at: clock, category: 'documents' }))).reasons.map((r) => r.code)).toContain('category-excluded');

    await expect(mod.consent.record('clerk-a', rp, { terms: { ...terms(), validTo: START - 2 * DAY } })).rejects.toMatchObject({ code: 'bad-request', message: expect.stringMatching(/validTo/) });
    await expect(mod.consent.record('clerk-a', rp, { terms: { ...terms(), categories: { mode: 'listed', categories: ['gossip'] } } })).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.consent.record('clerk-a', 'RP-NOPE', { terms: terms() })).rejects.toMatchObject({ code: 'not-found' });
    const audit = await mod.identity.audit({ targetKind: 'regional-patient', targetId: rp });
    expect(audit.filter((x) => x.action.startsWith('consent.')).map((x) => x.action)).toEqual(['consent.record', 'consent.withdraw', 'consent.record']);
  });

  it('turns a non-participating facility away and sees the change at once in this process', async () => {
    const rp = (await mod.identity.linkOf({ facilityId: 'F001', localId: '0001234' }))!.regionalId;
    clock += 1000;
    await mod.consent.setParticipation('admin', { facilityId: 'F002', kind: 'pharmacy', discloses: true, views: false }, 'left the network');
    const d = await decideNow(read({ regionalId: rp, at: clock }));
    expect(d.publicReason.code).toBe('facility-not-participating');
    await mod.consent.setParticipation('admin', { facilityId: 'F002', kind: 'pharmacy', discloses: true, views: true }, 'back');
    expect((await decideNow(read({ regionalId: rp, at: clock }))).effect).toBe('permit');
    await expect(mod.consent.setParticipation('admin', { facilityId: 'F009', kind: 'spa' as never, discloses: true, views: true }, 'x')).rejects.toMatchObject({ code: 'bad-request' });
    const audit = await mod.identity.audit({ targetKind: 'facility', targetId: 'F002' });
    expect(audit.map((a) => a.details.after)).toEqual([
      { facilityId: 'F002', kind: 'pharmacy', discloses: true, views: true },
      { facilityId: 'F002', kind: 'pharmacy', discloses: true, views: false },
      { facilityId: 'F002', kind: 'pharmacy', discloses: true, views: true },
    ]);
  });

  it('exports consents as FHIR and imports them back as the same consent', async () => {
    const rp = (await mod.identity.linkOf({ facilityId: 'F001', localId: '0001234' }))!.regionalId;
    const exported = await mod.consent.exportFhir(rp);
    expect(exported.map((r) => r.status)).toEqual(['active', 'inactive', 'active']);
    clock += 1000;
    const imported = await mod.consent.importFhir('admin', exported[2]);
    const original = (await mod.consent.versions(rp))[2];
    const strip = ({ id: _i, version: _v, ...rest }: typeof original) => rest;
    expect(strip(imported)).toEqual(strip(original));
    expect(imported.version).toBe(4);
    await expect(mod.consent.importFhir('admin', { resourceType: 'Consent' })).rejects.toBeInstanceOf(FhirConsentError);
    // An older statement cannot be slipped in before the latest version.
    await expect(mod.consent.importFhir('admin', exported[0])).rejects.toMatchObject({ code: 'conflict' });
    await expect(mod.consent.importFhir('admin', { ...exported[2], dateTime: new Date(clock + DAY).toISOString() })).rejects.toMatchObject({ code: 'bad-request' });
  });

  it('opens break-glass within policy, permits with notification, and stops at expiry or revocation', async () => {
    const rp = (await mod.identity.createPatient('clerk-c', 'walk-in')).id;
    await mod.identity.enrol('clerk-c', { facilityId: 'F001', localId: 'BG-1' }, { regionalId: rp, evidence: 'ER registration' });
    await mod.identity.enrol('clerk-c', { facilityId: 'F002', localId: 'BG-2' }, { regionalId: rp, evidence: 'pharmacy' });
    const dr = { userId: 'dr-c', facilityId: 'F003', role: 'physician' };
    const req = read({ regionalId: rp, user: { id: 'dr-c', facilityId: 'F003', facilityKind: 'hospital', role: 'physician' }, source: { facilityId: 'F001', localId: 'BG-1' } });
    expect((await decideNow({ ...req, at: clock })).effect).toBe('deny');
    await expect(mod.consent.openBreakGlass({ ...dr, role: 'clerk' }, rp, 'unconscious patient in the ER', 30)).rejects.toMatchObject({ code: 'forbidden' });
    await expect(mod.consent.openBreakGlass(dr, rp, 'because', 30)).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.consent.openBreakGlass(dr, rp, 'unconscious patient in the ER', 10_000)).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.consent.openBreakGlass({ ...dr, facilityId: 'F999' }, rp, 'unconscious patient in the ER', 30)).rejects.toMatchObject({ code: 'forbidden' });
    const g = await mod.consent.openBreakGlass(dr, rp, 'unconscious patient in the ER', 30);
    clock += 60_000;
    const d = await decideNow({ ...req, at: clock });
    expect(d).toMatchObject({ effect: 'permit', basis: 'break-glass', grantId: g.id });
    expect(d.obligations).toContainEqual({ kind: 'notify-patient-facilities', facilities: ['F001', 'F002'] });
    // Expiry is exact.
    expect((await decideNow({ ...req, at: g.expiresAt - 1 })).effect).toBe('permit');
    expect((await decideNow({ ...req, at: g.expiresAt })).publicReason.code).toBe('break-glass-expired');
    await mod.consent.revokeBreakGlass('auditor', g.id, 'not an emergency');
    expect((await decideNow({ ...req, at: clock + 1 })).effect).toBe('deny');
    await expect(mod.consent.revokeBreakGlass('auditor', g.id, 'again')).rejects.toMatchObject({ code: 'conflict' });
    const audit = await mod.identity.audit({ targetKind: 'regional-patient', targetId: rp });
    expect(audit.filter((a) => a.action.startsWith('break-glass')).map((a) => [a.action, a.actor])).toEqual([['break-glass.open', 'dr-c'], ['break-glass.revoke', 'auditor']]);
  });

  it('opens emergency reads during a declared disaster, exactly for its period', async () => {
    const rp = (await mod.identity.linkOf({ facilityId: 'F001', localId: 'BG-1' }))!.regionalId;
    const req = read({ regionalId: rp, purpose: 'emergency', user: { id: 'ns-c', facilityId: 'F003', facilityKind: 'hospital', role: 'nurse' }, source: { facilityId: 'F001', localId: 'BG-1' } });
    await expect(mod.consent.declareDisaster('op', { facilities: [], from: clock, to: clock + DAY, reason: 'quake' })).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.consent.declareDisaster('op', { facilities: ['F003'], from: clock, to: clock, reason: 'quake' })).rejects.toMatchObject({ code: 'bad-request' });
    const dz = await mod.consent.declareDisaster('op', { facilities: ['F003'], from: clock, to: clock + DAY, reason: 'earthquake' });
    expect(await decideNow({ ...req, at: clock })).toMatchObject({ effect: 'permit', basis: 'disaster', disasterId: dz.id });
    expect((await decideNow({ ...req, at: clock + DAY })).effect).toBe('deny');
    expect((await decideNow({ ...req, purpose: 'treatment', at: clock })).effect).toBe('deny');
    clock += 1000;
    await mod.consent.endDisaster('op', dz.id, 'over');
    expect((await decideNow({ ...req, at: clock })).effect).toBe('deny');
    await expect(mod.consent.endDisaster('op', dz.id, 'again')).rejects.toMatchObject({ code: 'conflict' });
  });

  it('queues matcher proposals for review, and a rejected pair is never proposed again', async () => {
    clock += 1000;
    expect(await mod.identity.observe(person({ facilityId: 'F010', localId: 'A-1' }))).toEqual({ autoLinked: [], queued: [] });
    const r = await mod.identity.observe(person({ facilityId: 'F011', localId: 'B-1', familyKanji: '高橋', familyKana: 'ﾀｶﾊｼ', address: '仙台市青葉区一番町4-7-17' }));
    expect(r.autoLinked).toEqual([]);
    expect(r.queued).toHaveLength(1);
    const m = r.queued[0];
    expect(m).toMatchObject({ status: 'open', a: { facilityId: 'F010', localId: 'A-1' }, b: { facilityId: 'F011', localId: 'B-1' } });
    expect(m.score).toBeGreaterThanOrEqual(24);
    expect((await mod.identity.reviewQueue()).map((x) => x.id)).toContain(m.id);
    await mod.identity.rejectMatch('reviewer', m.id, 'different mothers per the facilities');
    await expect(mod.identity.rejectMatch('reviewer', m.id, 'again')).rejects.toMatchObject({ code: 'conflict' });
    // Seen again (an ADT-00 update): not proposed again, also not by the auto-linking matcher.
    expect(await mod.identity.observe(person({ facilityId: 'F011', localId: 'B-1', familyKanji: '高橋' }))).toEqual({ autoLinked: [], queued: [] });
    expect(await auto.identity.observe(person({ facilityId: 'F011', localId: 'B-1', familyKanji: '高橋' }))).toEqual({ autoLinked: [], queued: [] });
    expect(await mod.identity.linkOf({ facilityId: 'F011', localId: 'B-1' })).toBeUndefined();
  });

  it('accepting a proposal links both; the auto band links only unlinked IDs and never moves a manual link', async () => {
    clock += 1000;
    await mod.identity.observe(person({ facilityId: 'F010', localId: 'C-1', givenKanji: '次郎', givenKana: 'ジロウ', sex: 'M', birthDate: '19700505' }));
    const q = await mod.identity.observe(person({ facilityId: 'F012', localId: 'C-2', givenKanji: '次郎', givenKana: 'ジロウ', sex: 'M', birthDate: '19700505' }));
    expect(q.queued).toHaveLength(1);
    const accepted = await mod.identity.acceptMatch('reviewer', q.queued[0].id, 'same insurance number on both cards');
    expect(accepted.links.map((l) => [l.facilityId, l.method])).toEqual([['F010', 'manual'], ['F012', 'manual']]);
    const rp = accepted.regionalId;

    // A third facility's record of the same man: the auto-linking matcher joins it.
    const r = await auto.identity.observe(person({ facilityId: 'F013', localId: 'C-3', givenKanji: '次郎', givenKana: 'ｼﾞﾛｳ', sex: 'M', birthDate: '19700505' }));
    expect(r.autoLinked.map((l) => [l.facilityId, l.regionalId, l.method, l.linkedBy])).toEqual([['F013', rp, 'matcher', 'matcher']]);
    // A record manually linked to someone else is never moved by the matcher.
    const stranger = await mod.identity.enrol('clerk', { facilityId: 'F014', localId: 'C-4' }, { evidence: 'registered as a new patient' });
    const again = await auto.identity.observe(person({ facilityId: 'F014', localId: 'C-4', givenKanji: '次郎', givenKana: 'ジロウ', sex: 'M', birthDate: '19700505' }));
    expect(again.autoLinked).toEqual([]);
    expect(again.queued.length).toBeGreaterThan(0);
    expect((await mod.identity.linkOf({ facilityId: 'F014', localId: 'C-4' }))?.regionalId).toBe(stranger.regionalId);
    // Accepting that proposal merges the two patients, with history.
    const proposal = again.queued.find((m) => m.a.facilityId === 'F010' || m.b.facilityId === 'F010')!;
    await mod.identity.acceptMatch('reviewer', proposal.id, 'same person, registered twice');
    expect((await mod.identity.getPatient(stranger.regionalId))?.mergedInto).toBe(rp);
    const h = await mod.identity.history(rp);
    expect(h.links.map((l) => l.facilityId)).toEqual(['F010', 'F012', 'F013', 'F014']);
    expect(h.events.filter((e) => e.operation === 'merge').map((e) => [e.action, e.facilityId, e.previousRegionalId])).toEqual([['relink', 'F014', stranger.regionalId]]);
  });

  it('merges and splits with full history; consents of a merged patient still speak', async () => {
    clock += 1000;
    const x = await mod.identity.enrol('clerk', { facilityId: 'F001', localId: 'M-1' }, { evidence: 'card' });
    const y = await mod.identity.enrol('clerk', { facilityId: 'F002', localId: 'M-2' }, { evidence: 'card' });
    await mod.consent.record('clerk', y.regionalId, { terms: terms() });
    clock += 1000;
    await mod.identity.merge('admin', y.regionalId, x.regionalId, 'same person: same insurance number');
    await expect(mod.identity.merge('admin', y.regionalId, x.regionalId, 'again')).rejects.toMatchObject({ code: 'conflict' });
    await expect(mod.consent.record('clerk', y.regionalId, { terms: terms() })).rejects.toMatchObject({ code: 'conflict' });
    // The consent recorded on the absorbed patient speaks for the survivor; asking by the old id
    // answers for the survivor.
    const loaded = await perRequest(mod.contexts).load(y.regionalId, { userId: 'dr-b' }, clock);
    expect(loaded?.regionalId).toBe(x.regionalId);
    const d = decide(read({ regionalId: loaded!.regionalId, source: { facilityId: 'F001', localId: 'M-1' }, at: clock }), loaded!.context);
    expect(d.effect).toBe('permit');

    clock += 1000;
    await expect(mod.identity.split('admin', x.regionalId, [{ facilityId: 'F001', localId: 'M-1' }, { facilityId: 'F002', localId: 'M-2' }], 'all')).rejects.toMatchObject({ code: 'bad-request' });
    await expect(mod.identity.split('admin', x.regionalId, [{ facilityId: 'F009', localId: 'nope' }], 'x')).rejects.toMatchObject({ code: 'bad-request' });
    const split = await mod.identity.split('admin', x.regionalId, [{ facilityId: 'F002', localId: 'M-2' }], 'two people after all');
    expect((await mod.identity.linksOf(split.id)).map((l) => l.localId)).toEqual(['M-2']);
    // The new patient has no consent: nothing of it is shared.
    const ctx = await mod.contexts.load(split.id, { userId: 'dr-b' }, clock);
    expect(decide(read({ regionalId: split.id, source: { facilityId: 'F002', localId: 'M-2' }, user: { id: 'dr-c', facilityId: 'F001', facilityKind: 'hospital', role: 'physician' }, at: clock }), ctx!.context).reasons.map((r) => r.code)).toContain('no-consent');
    const local = await mod.identity.localHistory({ facilityId: 'F002', localId: 'M-2' });
    expect(local.map((e) => [e.action, e.operation, e.previousRegionalId, e.regionalId])).toEqual([
      ['link', 'enrol', null, y.regionalId],
      ['relink', 'merge', y.regionalId, x.regionalId],
      ['relink', 'split', x.regionalId, split.id],
    ]);
    const audit = await mod.identity.audit({ targetKind: 'regional-patient', targetId: x.regionalId });
    expect(audit.map((a) => a.action)).toEqual(expect.arrayContaining(['patient.merge', 'patient.split']));
  });

  it('unlinks: the local ID is shared with nobody and not proposed again with its old partners', async () => {
    clock += 1000;
    await mod.identity.observe(person({ facilityId: 'F020', localId: 'U-1', givenKanji: '三郎', givenKana: 'サブロウ', sex: 'M', birthDate: '19600606' }));
    const q = await mod.identity.observe(person({ facilityId: 'F021', localId: 'U-2', givenKanji: '三郎', givenKana: 'サブロウ', sex: 'M', birthDate: '19600606' }));
    const { regionalId } = await mod.identity.acceptMatch('reviewer', q.queued[0].id, 'checked');
    await mod.identity.unlink('admin', { facilityId: 'F021', localId: 'U-2' }, 'wrong person');
    await expect(mod.identity.unlink('admin', { facilityId: 'F021', localId: 'U-2' }, 'again')).rejects.toMatchObject({ code: 'not-found' });
    expect(await mod.identity.linkOf({ facilityId: 'F021', localId: 'U-2' })).toBeUndefined();
    expect(await auto.identity.observe(person({ facilityId: 'F021', localId: 'U-2', givenKanji: '三郎', givenKana: 'サブロウ', sex: 'M', birthDate: '19600606' }))).toEqual({ autoLinked: [], queued: [] });
    const h = await mod.identity.history(regionalId);
    expect(h.events.map((e) => `${e.action}:${e.localId}`)).toEqual(['link:U-1', 'link:U-2', 'unlink:U-2']);
  });

  it('runs the matcher over every local patient', async () => {
    const summary = await auto.identity.runMatching();
    expect(summary.localPatients).toBe(8); // A-1, B-1, C-1..C-4, U-1, U-2
    // Everything the earlier tests decided stays decided: nothing new is linked or moved.
    expect(summary.autoLinked).toBe(0);
    expect(summary.skipped).toBeGreaterThan(0);
  });

  it('serves participation from a short-lived cache, and sees another process\'s change after its TTL', async () => {
    let t = 0;
    const cache = createParticipationCache(handle.db, { ttlMs: 1000, now: () => t });
    expect((await cache.get()).get('F004')?.views).toBe(true);
    // Another process changes the table behind this cache's back.
    await upsertParticipation(handle.db, { facilityId: 'F004', kind: 'care_home', discloses: false, views: false }, 'other-process', clock);
    t = 999;
    expect((await cache.get()).get('F004')?.views).toBe(true);
    t = 1000;
    expect((await cache.get()).get('F004')?.views).toBe(false);
    await upsertParticipation(handle.db, { facilityId: 'F004', kind: 'care_home', discloses: false, views: true }, 'other-process', clock);
    cache.invalidate();
    expect((await cache.get()).get('F004')?.views).toBe(true);
  });

  it('answers errors as the exchange vocabulary', async () => {
    await expect(mod.identity.acceptMatch('r', 999_999, 'x')).rejects.toBeInstanceOf(ExchangeError);
    await expect(mod.identity.history('RP-NOPE')).rejects.toMatchObject({ code: 'not-found' });
    expect(await mod.contexts.load('RP-NOPE', { userId: 'u' }, clock)).toBeUndefined();
  });
});
