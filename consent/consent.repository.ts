import { sql, type Selectable } from 'kysely';
import type { ConsentVersionTable } from './consent.tables.js';
import { jsonb, toLink, type Conn } from './identity.repository.js';
import { preparedRead } from '../store/db.js';
import type { BreakGlassGrant, Link, ConsentVersion, DisasterDeclaration, FacilityKind, Participation } from './model.js';

/** SQL of consent versions, facility participation, break-glass grants and disaster declarations. */

const ms = (d: Date) => d.getTime();
const msOrNull = (d: Date | null) => (d ? d.getTime() : null);

function toConsent(r: Selectable<ConsentVersionTable>): ConsentVersion {
  const t = r.terms as Pick<ConsentVersion, 'disclosing' | 'receiving' | 'categories' | 'purposes'>;
  return {
    id: r.id,
    regionalId: r.regional_id,
    version: r.version,
    recordedAt: ms(r.recorded_at),
    recordedBy: r.recorded_by,
    status: r.status,
    disclosing: t.disclosing,
    receiving: t.receiving,
    categories: t.categories,
    purposes: t.purposes,
    validFrom: ms(r.valid_from),
    validTo: msOrNull(r.valid_to),
    evidenceSha256: r.evidence_sha256,
    evidenceMediaType: r.evidence_media_type,
    note: r.note,
  };
}

/** The next version number of a patient's consent (call inside the transaction that inserts). */
export async function nextConsentVersion(db: Conn, regionalId: string): Promise<number> {
  const r = await db.selectFrom('consent_version').select((eb) => eb.fn.max('version').as('v')).where('regional_id', '=', regionalId).executeTakeFirst();
  return (r?.v ?? 0) + 1;
}

/** Inserts a version; a concurrent writer of the same version number fails on the unique key. */
export async function insertConsentVersion(db: Conn, c: ConsentVersion): Promise<void> {
  await db
    .insertInto('consent_version')
    .values({
      id: c.id,
      regional_id: c.regionalId,
      version: c.version,
      recorded_at: new Date(c.recordedAt),
      recorded_by: c.recordedBy,
      status: c.status,
      terms: jsonb({ disclosing: c.disclosing, receiving: c.receiving, categories: c.categories, purposes: c.purposes }),
      valid_from: new Date(c.validFrom),
      valid_to: c.validTo === null ? null : new Date(c.validTo),
      evidence_sha256: c.evidenceSha256,
      evidence_media_type: c.evidenceMediaType,
      note: c.note,
    })
    .execute();
}

export async function consentVersionsOf(db: Conn, regionalIds: string[]): Promise<ConsentVersion[]> {
  if (!regionalIds.length) return [];
  const rows = await db.selectFrom('consent_version').selectAll().where('regional_id', 'in', regionalIds).orderBy('recorded_at').orderBy('version').execute();
  return rows.map(toConsent);
}

/**
 * The consent versions that speak for a patient: its own and those of the patients merged into
 * it, in one query (the decision loader calls this on every request).
 */
export async function consentVersionsForDecision(db: Conn, regionalId: string): Promise<ConsentVersion[]> {
  // `regional_id = any(array(...))`, not `= $1 or in (subquery)`: PostgreSQL cannot use an index
  // for that OR and scans every consent (36 ms at 100k patients instead of 0.2 ms).
  const rows = await db
    .selectFrom('consent_version')
    .selectAll()
    .where(
      sql<boolean>`regional_id = any(array(select ${regionalId}::text union all select id from regional_patient where merged_into = ${regionalId}))`,
    )
    .execute();
  return rows.map(toConsent);
}

export async function getConsentVersion(db: Conn, id: string): Promise<ConsentVersion | undefined> {
  const r = await db.selectFrom('consent_version').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toConsent(r);
}

// ---------------------------------------------------------------------------------------------
// participation

export async function upsertParticipation(db: Conn, p: Participation, by: string, at: number): Promise<void> {
  await db
    .insertInto('facility_participation')
    .values({ facility_id: p.facilityId, kind: p.kind, discloses: p.discloses, views: p.views, updated_at: new Date(at), updated_by: by })
    .onConflict((oc) => oc.column('facility_id').doUpdateSet({ kind: p.kind, discloses: p.discloses, views: p.views, updated_at: new Date(at), updated_by: by }))
    .execute();
}

export async function getParticipation(db: Conn, facilityId: string): Promise<Participation | undefined> {
  const r = await db.selectFrom('facility_participation').selectAll().where('facility_id', '=', facilityId).executeTakeFirst();
  return r && { facilityId: r.facility_id, kind: r.kind as FacilityKind, discloses: r.discloses, views: r.views };
}

export async function allParticipation(db: Conn): Promise<Participation[]> {
  const rows = await db.selectFrom('facility_participation').selectAll().orderBy('facility_id').execute();
  return rows.map((r) => ({ facilityId: r.facility_id, kind: r.kind as FacilityKind, discloses: r.discloses, views: r.views }));
}

// ---------------------------------------------------------------------------------------------
// break-glass

export interface StoredGrant extends BreakGlassGrant {
  role: string;
  revokedBy: string | null;
}

function toGrant(r: {
  id: string;
  user_id: string;
  facility_id: string;
  role: string;
  regional_id: string;
  reason: string;
  granted_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_by: string | null;
}): StoredGrant {
  return {
    id: r.id,
    userId: r.user_id,
    facilityId: r.facility_id,
    role: r.role,
    regionalId: r.regional_id,
    reason: r.reason,
    grantedAt: ms(r.granted_at),
    expiresAt: ms(r.expires_at),
    revokedAt: msOrNull(r.revoked_at),
    revokedBy: r.revoked_by,
  };
}

export async function insertGrant(db: Conn, g: StoredGrant): Promise<void> {
  await db
    .insertInto('break_glass_grant')
    .values({
      id: g.id,
      user_id: g.userId,
      facility_id: g.facilityId,
      role: g.role,
      regional_id: g.regionalId,
      reason: g.reason,
      granted_at: new Date(g.grantedAt),
      expires_at: new Date(g.expiresAt),
      revoked_at: null,
      revoked_by: null,
    })
    .execute();
}

export async function getGrant(db: Conn, id: string): Promise<StoredGrant | undefined> {
  const r = await db.selectFrom('break_glass_grant').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toGrant(r);
}

export async function revokeGrant(db: Conn, id: string, by: string, at: number): Promise<void> {
  await db.updateTable('break_glass_grant').set({ revoked_at: new Date(at), revoked_by: by }).where('id', '=', id).where('revoked_at', 'is', null).execute();
}

/**
 * The requester's grants for a patient that matter at `at`: the ones not expired long ago
 * (an expired one still lets the decision say "your emergency access has expired").
 */
export async function grantsForDecision(db: Conn, regionalId: string, userId: string, at: number): Promise<StoredGrant[]> {
  const rows = await db
    .selectFrom('break_glass_grant')
    .selectAll()
    .where('regional_id', '=', regionalId)
    .where('user_id', '=', userId)
    .where('expires_at', '>', new Date(at - 24 * 3_600_000))
    .orderBy('granted_at', 'desc')
    .limit(20)
    .execute();
  return rows.map(toGrant);
}

export async function grantsOfPatient(db: Conn, regionalId: string): Promise<StoredGrant[]> {
  const rows = await db.selectFrom('break_glass_grant').selectAll().where('regional_id', '=', regionalId).orderBy('granted_at').execute();
  return rows.map(toGrant);
}

// ---------------------------------------------------------------------------------------------
// disasters

function toDisaster(r: {
  id: string;
  facilities: 'all' | string[];
  starts_at: Date;
  ends_at: Date;
  declared_by: string;
  reason: string;
  ended_at: Date | null;
}): DisasterDeclaration {
  return {
    id: r.id,
    facilities: r.facilities,
    from: ms(r.starts_at),
    to: ms(r.ends_at),
    declaredBy: r.declared_by,
    reason: r.reason,
    endedAt: msOrNull(r.ended_at),
  };
}

export async function insertDisaster(db: Conn, d: DisasterDeclaration, declaredAt: number): Promise<void> {
  await db
    .insertInto('disaster_declaration')
    .values({
      id: d.id,
      facilities: jsonb(d.facilities),
      starts_at: new Date(d.from),
      ends_at: new Date(d.to),
      declared_by: d.declaredBy,
      declared_at: new Date(declaredAt),
      reason: d.reason,
      ended_at: null,
      ended_by: null,
    })
    .execute();
}

export async function endDisaster(db: Conn, id: string, by: string, at: number): Promise<number> {
  const r = await db
    .updateTable('disaster_declaration')
    .set({ ended_at: new Date(at), ended_by: by })
    .where('id', '=', id)
    .where('ended_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export async function getDisaster(db: Conn, id: string): Promise<DisasterDeclaration | undefined> {
  const r = await db.selectFrom('disaster_declaration').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toDisaster(r);
}

/** Declarations whose period contains `at` and that were not ended before it. */
export async function disastersAt(db: Conn, at: number): Promise<DisasterDeclaration[]> {
  const t = new Date(at);
  const rows = await db
    .selectFrom('disaster_declaration')
    .selectAll()
    .where('starts_at', '<=', t)
    .where('ends_at', '>', t)
    .where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>', t)]))
    .orderBy('id')
    .execute();
  return rows.map(toDisaster);
}

export async function listDisasters(db: Conn, limit: number): Promise<DisasterDeclaration[]> {
  const rows = await db.selectFrom('disaster_declaration').selectAll().orderBy('starts_at', 'desc').limit(limit).execute();
  return rows.map(toDisaster);
}

// ---------------------------------------------------------------------------------------------
// the decision context in one statement

export interface DecisionRows {
  /** The patient the rows are for: the survivor when the id asked for was merged. */
  regionalId: string;
  links: Link[];
  consents: ConsentVersion[];
  grants: StoredGrant[];
  disasters: DisasterDeclaration[];
}

/** json_agg gives timestamps as ISO 8601 text; the row mappers take Dates. */
function dates<T extends Record<string, unknown>>(r: T, keys: string[]): T {
  const out: Record<string, unknown> = { ...r };
  for (const k of keys) if (typeof out[k] === 'string') out[k] = new Date(out[k] as string);
  return out as T;
}

/**
 * The text of the decision-context statement, its inputs given as SQL expressions (parameters
 * such as `$1`, or subqueries of a statement that embeds it: see viewer-api/gate/session-context.ts).
 * One row: survivor (null: no such patient), links, consents, grants, disasters (json arrays).
 */
export function decisionRowsSql(p: { regionalId: string; userId: string; since: string; at: string }): string {
  return `
  with pt as (select coalesce(merged_into, id) as id from regional_patient where id = ${p.regionalId})
  select
    (select id from pt) as survivor,
    (select coalesce(json_agg(l order by l.facility_id, l.local_id), '[]') from identity_link l
      where l.regional_id = (select id from pt)) as links,
    (select coalesce(json_agg(c), '[]') from consent_version c
      where c.regional_id = any(array(select id from pt union all
                                      select m.id from regional_patient m where m.merged_into = (select id from pt)))) as consents,
    (select coalesce(json_agg(g order by g.granted_at desc), '[]') from (
      select * from break_glass_grant where regional_id = (select id from pt) and user_id = ${p.userId} and expires_at > ${p.since}
      order by granted_at desc limit 20) g) as grants,
    (select coalesce(json_agg(d order by d.id), '[]') from disaster_declaration d
      where d.starts_at <= ${p.at} and d.ends_at > ${p.at} and (d.ended_at is null or d.ended_at > ${p.at})) as disasters`;
}

/** The rows of decisionRowsSql as DecisionRows; undefined when there is no such patient. */
export function decisionRowsOf(row: { survivor: string | null; links: unknown; consents: unknown; grants: unknown; disasters: unknown } | undefined): DecisionRows | undefined {
  if (!row?.survivor) return undefined;
  const json = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v) as any[];
  return {
    regionalId: row.survivor,
    links: json(row.links).map((l) => toLink(dates(l, ['linked_at']))),
    consents: json(row.consents).map((c) => toConsent(dates(c, ['recorded_at', 'valid_from', 'valid_to']))),
    grants: json(row.grants).map((g) => toGrant(dates(g, ['granted_at', 'expires_at', 'revoked_at']))),
    disasters: json(row.disasters).map((d) => toDisaster(dates(d, ['starts_at', 'ends_at', 'ended_at', 'declared_at']))),
  };
}

/** Grants of the last 24 hours count: decide() checks their expiry at `at` itself. */
export const GRANT_WINDOW_MS = 24 * 3_600_000;

const DECISION_ROWS = decisionRowsSql({ regionalId: '$1', userId: '$2', since: '$3', at: '$4' });

/**
 * Everything decide() needs about one patient and one requester, in ONE statement (the viewer
 * asks on every request, so round trips count; prepared, see preparedRead): the survivor of a
 * merge, its links, the consent versions of it and of the patients merged into it, the
 * requester's break-glass grants of the last 24 hours, and the disasters declared at `at`. The
 * same rows as linksOfPatient, consentVersionsForDecision, grantsForDecision and disastersAt.
 * Undefined: no such patient.
 */
export async function decisionRows(db: Conn, regionalId: string, userId: string, at: number): Promise<DecisionRows | undefined> {
  const [row] = await preparedRead<{ survivor: string | null; links: unknown; consents: unknown; grants: unknown; disasters: unknown }>(
    db, 'consent-decision-rows', DECISION_ROWS, [regionalId, userId, new Date(at - GRANT_WINDOW_MS), new Date(at)]);
  return decisionRowsOf(row);
}
