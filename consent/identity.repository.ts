import { sql, type Kysely, type Selectable } from 'kysely';
import type { Database } from '../store/database.js';
import { isUniqueViolation } from '../store/db.js';
import { conflict } from '../store/errors.js';
import type { IdentityLinkEventTable, IdentityLocalPatientTable, IdentityMatchTable } from './consent.tables.js';
import type { Link, LinkMethod, LocalKey, RegionalPatient } from './model.js';
import type { IdentityRecord, MatchReason, Sex } from './match.js';

/** SQL of patient identity: regional patients, local patients, links, their history, matches, audit. */

/** The database or a transaction: functions that must run inside one take it first. */
export type Conn = Kysely<Database>;

/** A JSON value as a jsonb parameter; cast from text so that both drivers send it the same way. */
export function jsonb(value: unknown) {
  return sql<string>`cast(cast(${JSON.stringify(value)} as text) as jsonb)`;
}

export interface LinkEvent {
  id: number;
  at: number;
  actor: string;
  action: 'link' | 'unlink' | 'relink';
  operation: string;
  facilityId: string;
  localId: string;
  regionalId: string | null;
  previousRegionalId: string | null;
  method: string | null;
  score: number | null;
  evidence: string | null;
  reason: string;
}

export interface MatchRow {
  id: number;
  a: LocalKey;
  b: LocalKey;
  score: number;
  reasons: MatchReason[];
  status: 'open' | 'accepted' | 'rejected' | 'superseded';
  createdAt: number;
  decidedBy: string | null;
  decidedAt: number | null;
  decisionReason: string | null;
}

export interface AuditEntry {
  id: number;
  at: number;
  actor: string;
  action: string;
  targetKind: string;
  targetId: string;
  reason: string | null;
  details: Record<string, unknown>;
}

const ms = (d: Date) => d.getTime();
const msOrNull = (d: Date | null) => (d ? d.getTime() : null);

// ---------------------------------------------------------------------------------------------
// regional patients

export async function insertRegionalPatient(db: Conn, p: { id: string; createdAt: number; createdBy: string }): Promise<void> {
  await db.insertInto('regional_patient').values({ id: p.id, created_at: new Date(p.createdAt), created_by: p.createdBy, merged_into: null, merged_at: null }).execute();
}

export async function getRegionalPatient(db: Conn, id: string): Promise<RegionalPatient | undefined> {
  const r = await db.selectFrom('regional_patient').selectAll().where('id', '=', id).executeTakeFirst();
  return r && { id: r.id, createdAt: ms(r.created_at), createdBy: r.created_by, mergedInto: r.merged_into };
}

/** Locks the patients' rows for the rest of the transaction (merge and split change them). */
export async function lockRegionalPatients(db: Conn, ids: string[]): Promise<RegionalPatient[]> {
  if (!ids.length) return [];
  const rows = await db.selectFrom('regional_patient').selectAll().where('id', 'in', ids).orderBy('id').forUpdate().execute();
  return rows.map((r) => ({ id: r.id, createdAt: ms(r.created_at), createdBy: r.created_by, mergedInto: r.merged_into }));
}

/** Marks `from` (and every patient merged into it before) as merged into `into`. */
export async function markMerged(db: Conn, from: string, into: string, at: number): Promise<void> {
  await db
    .updateTable('regional_patient')
    .set({ merged_into: into, merged_at: new Date(at) })
    .where((eb) => eb.or([eb('id', '=', from), eb('merged_into', '=', from)]))
    .execute();
}

/** The ids whose consents speak for `id`: itself and the patients merged into it. */
export async function mergedIds(db: Conn, id: string): Promise<string[]> {
  const rows = await db.selectFrom('regional_patient').select('id').where('merged_into', '=', id).orderBy('id').execute();
  return [id, ...rows.map((r) => r.id)];
}

// ---------------------------------------------------------------------------------------------
// local patients (the matcher's view of ADT-00)

function toIdentityRecord(r: Selectable<IdentityLocalPatientTable>): IdentityRecord {
  return {
    facilityId: r.facility_id,
    localId: r.local_id,
    familyKanji: r.family_kanji,
    givenKanji: r.given_kanji,
    familyKana: r.family_kana,
    givenKana: r.given_kana,
    birthDate: r.birth_date,
    sex: r.sex as Sex,
    postalCode: r.postal_code,
    address: r.address,
    phone: r.phone,
  };
}

export async function upsertLocalPatient(db: Conn, r: IdentityRecord, keys: { kanaKey: string; kanjiKey: string }, at: number): Promise<void> {
  const row = {
    facility_id: r.facilityId,
    local_id: r.localId,
    family_kanji: r.familyKanji,
    given_kanji: r.givenKanji,
    family_kana: r.familyKana,
    given_kana: r.givenKana,
    birth_date: r.birthDate,
    sex: r.sex,
    postal_code: r.postalCode,
    address: r.address,
    phone: r.phone,
    kana_key: keys.kanaKey,
    kanji_key: keys.kanjiKey,
    updated_at: new Date(at),
  };
  const { facility_id: _f, local_id: _l, ...update } = row;
  await db.insertInto('identity_local_patient').values(row).onConflict((oc) => oc.columns(['facility_id', 'local_id']).doUpdateSet(update)).execute();
}

export async function getLocalPatient(db: Conn, key: LocalKey): Promise<IdentityRecord | undefined> {
  const r = await db.selectFrom('identity_local_patient').selectAll().where('facility_id', '=', key.facilityId).where('local_id', '=', key.localId).executeTakeFirst();
  return r && toIdentityRecord(r);
}

/** Local patients sharing one of the record's blocks (see match.ts blockKeys), at most `limit`. */
export async function findBlockMates(
  db: Conn,
  r: { birthDate: string; sex: string; kanaKey: string; kanjiKey: string; except: LocalKey },
  limit: number,
): Promise<IdentityRecord[]> {
  const year = r.birthDate.slice(0, 4);
  const md = r.birthDate.slice(4);
  const rows = await db
    .selectFrom('identity_local_patient')
    .selectAll()
    .where((eb) => {
      const ors = [eb.and([eb('birth_date', '=', r.birthDate), eb('sex', '=', r.sex)])];
      if (r.kanaKey) {
        ors.push(eb.and([eb('kana_key', '=', r.kanaKey), eb(sql<string>`substr(birth_date, 1, 4)`, '=', year)]));
        ors.push(eb.and([eb('kana_key', '=', r.kanaKey), eb(sql<string>`substr(birth_date, 5, 4)`, '=', md)]));
      }
      if (r.kanjiKey) {
        ors.push(eb.and([eb('kanji_key', '=', r.kanjiKey), eb(sql<string>`substr(birth_date, 1, 4)`, '=', year)]));
        ors.push(eb.and([eb('kanji_key', '=', r.kanjiKey), eb(sql<string>`substr(birth_date, 5, 4)`, '=', md)]));
      }
      return eb.or(ors);
    })
    .where((eb) => eb.not(eb.and([eb('facility_id', '=', r.except.facilityId), eb('local_id', '=', r.except.localId)])))
    .orderBy('facility_id')
    .orderBy('local_id')
    .limit(limit)
    .execute();
  return rows.map(toIdentityRecord);
}

/** All local patients, page by page in key order (for a full matching run). */
export async function pageLocalPatients(db: Conn, after: LocalKey | null, limit: number): Promise<IdentityRecord[]> {
  let q = db.selectFrom('identity_local_patient').selectAll();
  if (after) {
    q = q.where((eb) =>
      eb.or([eb('facility_id', '>', after.facilityId), eb.and([eb('facility_id', '=', after.facilityId), eb('local_id', '>', after.localId)])]),
    );
  }
  const rows = await q.orderBy('facility_id').orderBy('local_id').limit(limit).execute();
  return rows.map(toIdentityRecord);
}

// ---------------------------------------------------------------------------------------------
// links

export function toLink(r: { facility_id: string; local_id: string; regional_id: string; method: LinkMethod; score: number | null; linked_by: string; linked_at: Date; evidence: string | null }): Link {
  return {
    facilityId: r.facility_id,
    localId: r.local_id,
    regionalId: r.regional_id,
    method: r.method,
    score: r.score,
    linkedBy: r.linked_by,
    linkedAt: ms(r.linked_at),
    evidence: r.evidence,
  };
}

export async function getLink(db: Conn, key: LocalKey, opts: { lock?: boolean } = {}): Promise<Link | undefined> {
  let q = db.selectFrom('identity_link').selectAll().where('facility_id', '=', key.facilityId).where('local_id', '=', key.localId);
  if (opts.lock) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toLink(r);
}

export async function getLinks(db: Conn, keys: LocalKey[]): Promise<Link[]> {
  if (!keys.length) return [];
  const rows = await db
    .selectFrom('identity_link')
    .selectAll()
    .where((eb) => eb.or(keys.map((k) => eb.and([eb('facility_id', '=', k.facilityId), eb('local_id', '=', k.localId)]))))
    .execute();
  return rows.map(toLink);
}

export async function linksOfPatient(db: Conn, regionalId: string): Promise<Link[]> {
  const rows = await db.selectFrom('identity_link').selectAll().where('regional_id', '=', regionalId).orderBy('facility_id').orderBy('local_id').execute();
  return rows.map(toLink);
}

/**
 * Inserts a link. The caller has locked the local ID's link row, but an absent row locks nothing:
 * two enrolments of one new local ID both find none, and the second insert meets the primary key
 * (23505, unique_violation). That is a conflict for the caller to report, not an internal error.
 */
export async function insertLink(db: Conn, l: Link): Promise<void> {
  try {
    await db
      .insertInto('identity_link')
      .values({
        facility_id: l.facilityId,
        local_id: l.localId,
        regional_id: l.regionalId,
        method: l.method,
        score: l.score,
        linked_by: l.linkedBy,
        linked_at: new Date(l.linkedAt),
        evidence: l.evidence,
      })
      .execute();
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`${l.facilityId}/${l.localId} was linked meanwhile`);
    throw e;
  }
}

export async function moveLink(db: Conn, key: LocalKey, to: string): Promise<void> {
  await db.updateTable('identity_link').set({ regional_id: to }).where('facility_id', '=', key.facilityId).where('local_id', '=', key.localId).execute();
}

export async function deleteLink(db: Conn, key: LocalKey): Promise<void> {
  await db.deleteFrom('identity_link').where('facility_id', '=', key.facilityId).where('local_id', '=', key.localId).execute();
}

export async function insertLinkEvent(db: Conn, e: Omit<LinkEvent, 'id'>): Promise<void> {
  await db
    .insertInto('identity_link_event')
    .values({
      at: new Date(e.at),
      actor: e.actor,
      action: e.action,
      operation: e.operation,
      facility_id: e.facilityId,
      local_id: e.localId,
      regional_id: e.regionalId,
      previous_regional_id: e.previousRegionalId,
      method: e.method,
      score: e.score,
      evidence: e.evidence,
      reason: e.reason,
    })
    .execute();
}

function toLinkEvent(r: Selectable<IdentityLinkEventTable>): LinkEvent {
  return {
    id: r.id,
    at: ms(r.at),
    actor: r.actor,
    action: r.action,
    operation: r.operation,
    facilityId: r.facility_id,
    localId: r.local_id,
    regionalId: r.regional_id,
    previousRegionalId: r.previous_regional_id,
    method: r.method,
    score: r.score,
    evidence: r.evidence,
    reason: r.reason,
  };
}

/** The history of a regional patient's links (including links that left it), oldest first. */
export async function linkEventsOfPatient(db: Conn, regionalId: string): Promise<LinkEvent[]> {
  const rows = await db
    .selectFrom('identity_link_event')
    .selectAll()
    .where((eb) => eb.or([eb('regional_id', '=', regionalId), eb('previous_regional_id', '=', regionalId)]))
    .orderBy('id')
    .execute();
  return rows.map(toLinkEvent);
}

export async function linkEventsOfLocal(db: Conn, key: LocalKey): Promise<LinkEvent[]> {
  const rows = await db.selectFrom('identity_link_event').selectAll().where('facility_id', '=', key.facilityId).where('local_id', '=', key.localId).orderBy('id').execute();
  return rows.map(toLinkEvent);
}

// ---------------------------------------------------------------------------------------------
// match queue

function toMatch(r: Selectable<IdentityMatchTable>): MatchRow {
  return {
    id: r.id,
    a: { facilityId: r.a_facility_id, localId: r.a_local_id },
    b: { facilityId: r.b_facility_id, localId: r.b_local_id },
    score: r.score,
    reasons: r.reasons as MatchReason[],
    status: r.status,
    createdAt: ms(r.created_at),
    decidedBy: r.decided_by,
    decidedAt: msOrNull(r.decided_at),
    decisionReason: r.decision_reason,
  };
}

/** Orders a pair so that it has one row. */
export function orderPair(a: LocalKey, b: LocalKey): [LocalKey, LocalKey] {
  const ka = `${a.facilityId}\u0000${a.localId}`;
  const kb = `${b.facilityId}\u0000${b.localId}`;
  return ka <= kb ? [a, b] : [b, a];
}

/**
 * Records a pair for review. A pair that already has a row keeps it (a rejected pair stays
 * rejected; an open pair gets the newer score). Answers the row.
 */
export async function upsertMatch(db: Conn, m: { a: LocalKey; b: LocalKey; score: number; reasons: MatchReason[]; at: number; status?: 'open' | 'accepted' }): Promise<MatchRow> {
  const [a, b] = orderPair(m.a, m.b);
  await db
    .insertInto('identity_match')
    .values({
      a_facility_id: a.facilityId,
      a_local_id: a.localId,
      b_facility_id: b.facilityId,
      b_local_id: b.localId,
      score: m.score,
      reasons: jsonb(m.reasons),
      status: m.status ?? 'open',
      created_at: new Date(m.at),
      decided_by: null,
      decided_at: null,
      decision_reason: null,
    })
    .onConflict((oc) =>
      oc
        .columns(['a_facility_id', 'a_local_id', 'b_facility_id', 'b_local_id'])
        .doUpdateSet({ score: m.score, reasons: jsonb(m.reasons) })
        .where('identity_match.status', '=', 'open'),
    )
    .execute();
  return (await getMatchByPair(db, a, b)) as MatchRow;
}

export async function getMatchByPair(db: Conn, x: LocalKey, y: LocalKey): Promise<MatchRow | undefined> {
  const [a, b] = orderPair(x, y);
  const r = await db
    .selectFrom('identity_match')
    .selectAll()
    .where('a_facility_id', '=', a.facilityId)
    .where('a_local_id', '=', a.localId)
    .where('b_facility_id', '=', b.facilityId)
    .where('b_local_id', '=', b.localId)
    .executeTakeFirst();
  return r && toMatch(r);
}

export async function getMatch(db: Conn, id: number, opts: { lock?: boolean } = {}): Promise<MatchRow | undefined> {
  let q = db.selectFrom('identity_match').selectAll().where('id', '=', id);
  if (opts.lock) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toMatch(r);
}

export async function listMatches(db: Conn, opts: { status: MatchRow['status']; limit: number; afterId?: number }): Promise<MatchRow[]> {
  let q = db.selectFrom('identity_match').selectAll().where('status', '=', opts.status);
  if (opts.afterId !== undefined) q = q.where('id', '>', opts.afterId);
  const rows = await q.orderBy('score', 'desc').orderBy('id').limit(opts.limit).execute();
  return rows.map(toMatch);
}

export async function decideMatch(db: Conn, id: number, d: { status: 'accepted' | 'rejected' | 'superseded'; by: string; at: number; reason: string }): Promise<void> {
  await db
    .updateTable('identity_match')
    .set({ status: d.status, decided_by: d.by, decided_at: new Date(d.at), decision_reason: d.reason })
    .where('id', '=', id)
    .execute();
}

/** Rejected pairs that involve any of the keys, as rows. */
export async function rejectedPairsOf(db: Conn, keys: LocalKey[]): Promise<MatchRow[]> {
  if (!keys.length) return [];
  const rows = await db
    .selectFrom('identity_match')
    .selectAll()
    .where('status', '=', 'rejected')
    .where((eb) =>
      eb.or(
        keys.flatMap((k) => [
          eb.and([eb('a_facility_id', '=', k.facilityId), eb('a_local_id', '=', k.localId)]),
          eb.and([eb('b_facility_id', '=', k.facilityId), eb('b_local_id', '=', k.localId)]),
        ]),
      ),
    )
    .execute();
  return rows.map(toMatch);
}

/** Every rejected pair (for a full matching run). */
export async function allRejectedPairs(db: Conn): Promise<MatchRow[]> {
  const rows = await db.selectFrom('identity_match').selectAll().where('status', '=', 'rejected').execute();
  return rows.map(toMatch);
}

// ---------------------------------------------------------------------------------------------
// audit

export async function insertAudit(db: Conn, e: Omit<AuditEntry, 'id'>): Promise<void> {
  await db
    .insertInto('identity_audit')
    .values({ at: new Date(e.at), actor: e.actor, action: e.action, target_kind: e.targetKind, target_id: e.targetId, reason: e.reason, details: jsonb(e.details) })
    .execute();
}

export async function listAudit(db: Conn, f: { targetKind?: string; targetId?: string; action?: string; limit: number }): Promise<AuditEntry[]> {
  let q = db.selectFrom('identity_audit').selectAll();
  if (f.targetKind) q = q.where('target_kind', '=', f.targetKind);
  if (f.targetId) q = q.where('target_id', '=', f.targetId);
  if (f.action) q = q.where('action', '=', f.action);
  const rows = await q.orderBy('id').limit(f.limit).execute();
  return rows.map((r) => ({
    id: r.id,
    at: ms(r.at),
    actor: r.actor,
    action: r.action,
    targetKind: r.target_kind,
    targetId: r.target_id,
    reason: r.reason,
    details: r.details as Record<string, unknown>,
  }));
}
