import { type Kysely, type Selectable, type Transaction } from 'kysely';
import type { Database } from '../../store/database.js';
import { preparedQuery } from '../../store/db.js';
import type { AuditEventTable } from '../viewer.tables.js';
import type { AuditHead, AuditOutcome, AuditRecord } from './audit.chain.js';
import { buildEntry, chainEntry, type AuditInput, type EntryBody } from './audit.entry.js';

type Q = Kysely<Database> | Transaction<Database>;

function toRecord(r: Selectable<AuditEventTable>): AuditRecord {
  return {
    seq: r.seq,
    at: r.at.toISOString(),
    action: r.action,
    outcome: r.outcome as AuditOutcome,
    reason: r.reason,
    userId: r.user_id,
    username: r.username,
    facilityId: r.facility_id,
    role: r.role,
    address: r.address,
    deviceId: r.device_id,
    endpoint: r.endpoint,
    patient: r.patient,
    purpose: r.purpose,
    breakGlassReason: r.break_glass_reason,
    detail: r.detail,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/**
 * Appends one entry. The single writer path of the chain: the head row is locked
 * (SELECT ... FOR UPDATE) for the rest of the transaction, so concurrent appenders on PostgreSQL
 * queue behind each other and can never both extend the same hash (which would fork the chain).
 * PGlite is one connection, so there the transaction alone serialises.
 */
export async function appendAuditIn(trx: Transaction<Database>, input: AuditInput, at: Date): Promise<AuditRecord> {
  const head = await trx
    .selectFrom('audit_head')
    .select(['count', 'last_hash'])
    .where('id', '=', 1)
    .forUpdate()
    .executeTakeFirstOrThrow();
  const entry = buildEntry(input, head.count + 1, at, head.last_hash);
  await trx
    .insertInto('audit_event')
    .values({
      seq: entry.seq,
      at,
      action: entry.action,
      outcome: entry.outcome,
      reason: entry.reason,
      user_id: entry.userId,
      username: entry.username,
      facility_id: entry.facilityId,
      role: entry.role,
      address: entry.address,
      device_id: entry.deviceId,
      endpoint: entry.endpoint,
      patient: entry.patient,
      purpose: entry.purpose,
      break_glass_reason: entry.breakGlassReason,
      detail: entry.detail,
      prev_hash: entry.prevHash,
      hash: entry.hash,
    })
    .execute();
  await trx
    .updateTable('audit_head')
    .set({ count: entry.seq, last_hash: entry.hash, updated_at: at })
    .where('id', '=', 1)
    .execute();
  return entry;
}

export function appendAudit(db: Kysely<Database>, input: AuditInput, at: Date): Promise<AuditRecord> {
  return db.transaction().execute((trx) => appendAuditIn(trx, input, at));
}

/**
 * A write that goes into the append's statement with its batch of entries (a data-modifying CTE):
 * committed with the entries or not at all, so that the status change an entry explains is never
 * seen without its trace, and one commit serves both. `sql` writes the CTE's statement, numbering
 * its parameters with `param(1)`, `param(2)`, ... and writing only where `guard` (a condition) holds:
 * the guard is false when the head moved, and the batch, its writes included, then goes again.
 * `params` answers those parameters for the batch's items, in order.
 */
export interface AuditCompanion<T> {
  /** Names the statement's variant (each set of companions is prepared once per connection). */
  name: string;
  sql(param: (i: number) => string, guard: string): string;
  params(items: readonly T[]): unknown[];
}

/** The items of one companion in a batch. */
export interface CompanionWrites<T = unknown> {
  companion: AuditCompanion<T>;
  items: T[];
}

/**
 * The append of a batch, one statement (prepared: every group commit sends it, see preparedQuery).
 * unnest of parallel arrays keeps the entries' order; text arrays carry every string exactly.
 * `cur` locks the head row; under READ COMMITTED a locking read that waited for another writer
 * returns the row as that writer committed it, so a failed append learns the real head here
 * instead of reading it again in another round trip. $1, $2: the head the batch was chained
 * from; $3-$20: the entries' columns; $21-$23: the new head; the companions' from $24 on.
 */
const appendSql = (companions: string) => `
  with cur as (
    select count, last_hash from audit_head where id = 1 for update
  ), h as (
    select 1 from cur where count = $1::bigint and last_hash = $2::text
  ), ins as (
    insert into audit_event (seq, at, action, outcome, reason, user_id, username, facility_id, role, address, device_id,
                             endpoint, patient, purpose, break_glass_reason, detail, prev_hash, hash)
    select x.* from unnest(
      $3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[],
      $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[]
    ) as x(seq, at, action, outcome, reason, user_id, username, facility_id, role, address, device_id,
           endpoint, patient, purpose, break_glass_reason, detail, prev_hash, hash)
    where exists (select 1 from h)
    returning 1
  ), upd as (
    update audit_head set count = $21::bigint, last_hash = $22::text, updated_at = $23::timestamptz
    where id = 1 and exists (select 1 from h)
    returning 1
  )${companions}
  select (select count(*) from ins)::int as inserted, (select count(*) from upd)::int as updated,
         (select count from cur) as head_count, (select last_hash from cur) as head_hash`;

const APPEND_BATCH = appendSql('');
const FIRST_COMPANION_PARAM = 24;

/** The statement (name, text, parameters) of a batch with companion writes, in a stable order. */
function withCompanions(writes: readonly CompanionWrites[]): { name: string; text: string; params: unknown[] } {
  const sorted = writes.filter((w) => w.items.length).sort((a, b) => byName(a.companion.name, b.companion.name));
  if (!sorted.length) return { name: 'audit-append-batch', text: APPEND_BATCH, params: [] };
  let next = FIRST_COMPANION_PARAM;
  let ctes = '';
  const params: unknown[] = [];
  for (const [i, w] of sorted.entries()) {
    const base = next;
    const own = w.companion.params(w.items);
    ctes += `, w${i} as (${w.companion.sql((n) => {
      if (!Number.isInteger(n) || n < 1 || n > own.length) throw new Error(`audit companion ${w.companion.name} names parameter ${n} of ${own.length}`);
      return `$${base + n - 1}`;
    }, 'exists (select 1 from h)')})`;
    params.push(...own);
    next += own.length;
  }
  return { name: `audit-append-batch+${sorted.map((w) => w.companion.name).join('+')}`, text: appendSql(ctes), params };
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Appends several entries in ONE statement (one round trip, one commit), chained in the order
 * given after `expected`, the head the caller believes current, with the companions' writes
 * (AuditCompanion) in the same statement. The statement locks the head row and writes only while
 * it still is `expected`; when another writer moved the head meanwhile (another exchange process
 * on the same database) nothing is written, companions included, and the result carries the
 * head as the statement found it under its lock (`moved`; undefined when there is no head row):
 * rebuild the entries after it. Resolves with the entries and the new head once they are
 * committed.
 */
export async function appendAuditBatch(
  db: Kysely<Database>,
  expected: AuditHead,
  items: EntryBody[],
  writes: readonly CompanionWrites[] = [],
): Promise<{ entries: AuditRecord[]; head: AuditHead } | { moved: AuditHead | undefined }> {
  const entries: AuditRecord[] = [];
  let prev = expected.lastHash;
  for (const [i, body] of items.entries()) {
    const e = chainEntry(body, expected.count + 1 + i, prev);
    entries.push(e);
    prev = e.hash;
  }
  const last = entries[entries.length - 1];
  if (!last) {
    if (writes.some((w) => w.items.length)) throw new Error('a companion write needs an audit entry to go with');
    return { entries, head: expected };
  }
  const col = <T>(f: (e: AuditRecord) => T) => entries.map(f);
  const statement = withCompanions(writes);
  const rows = await preparedQuery<{ inserted: number; updated: number; head_count: number | null; head_hash: string | null }>(db, statement.name, statement.text, [
    expected.count, expected.lastHash,
    col((e) => e.seq), col((e) => e.at), col((e) => e.action), col((e) => e.outcome), col((e) => e.reason), col((e) => e.userId),
    col((e) => e.username), col((e) => e.facilityId), col((e) => e.role), col((e) => e.address), col((e) => e.deviceId),
    col((e) => e.endpoint), col((e) => e.patient), col((e) => e.purpose), col((e) => e.breakGlassReason), col((e) => e.detail),
    col((e) => e.prevHash), col((e) => e.hash),
    last.seq, last.hash, last.at,
    ...statement.params,
  ]);
  const row = rows[0]!;
  if (row.updated !== 1) return { moved: row.head_count === null || row.head_hash === null ? undefined : { count: Number(row.head_count), lastHash: row.head_hash } };
  if (row.inserted !== entries.length) throw new Error(`audit batch stored ${row.inserted} of ${entries.length} entries`);
  return { entries, head: { count: last.seq, lastHash: last.hash } };
}

export async function readAuditHead(db: Q): Promise<AuditHead> {
  const h = await db.selectFrom('audit_head').select(['count', 'last_hash']).where('id', '=', 1).executeTakeFirst();
  // A missing head row is itself tampering; report it as an empty head so the chain check fails.
  return h ? { count: h.count, lastHash: h.last_hash } : { count: 0, lastHash: '' };
}

/** Entries after `afterSeq`, in order, at most `limit` (keyset paging: constant cost per page). */
export async function readAuditPage(db: Q, afterSeq: number, limit: number): Promise<AuditRecord[]> {
  const rows = await db
    .selectFrom('audit_event')
    .selectAll()
    .where('seq', '>', afterSeq)
    .orderBy('seq')
    .limit(limit)
    .execute();
  return rows.map(toRecord);
}

export interface AuditQuery {
  from?: Date;
  to?: Date;
  userId?: number;
  patient?: string;
  facilityId?: string;
  action?: string;
  afterSeq?: number;
  limit: number;
}

/** Entries matching a query, oldest first, paged by seq. */
export async function searchAudit(db: Q, q: AuditQuery): Promise<AuditRecord[]> {
  let query = db.selectFrom('audit_event').selectAll().where('seq', '>', q.afterSeq ?? 0);
  if (q.from) query = query.where('at', '>=', q.from);
  if (q.to) query = query.where('at', '<', q.to);
  if (q.userId !== undefined) query = query.where('user_id', '=', q.userId);
  if (q.patient !== undefined) query = query.where('patient', '=', q.patient);
  if (q.facilityId !== undefined) query = query.where('facility_id', '=', q.facilityId);
  if (q.action !== undefined) query = query.where('action', '=', q.action);
  const rows = await query.orderBy('seq').limit(q.limit).execute();
  return rows.map(toRecord);
}
