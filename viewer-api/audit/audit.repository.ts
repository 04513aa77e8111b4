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
 * The append of a batch, one statement (prepared: every group commit sends it, see preparedQuery).
 * unnest of parallel arrays keeps the entries' order; text arrays carry every string exactly.
 * `cur` locks the head row; under READ COMMITTED a locking read that waited for another writer
 * returns the row as that writer committed it, so a failed append learns the real head here
 * instead of reading it again in another round trip. $1, $2: the head the batch was chained
 * from; $3-$20: the entries' columns; $21-$23: the new head.
 */
const APPEND_BATCH = `
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
  )
  select (select count(*) from ins)::int as inserted, (select count(*) from upd)::int as updated,
         (select count from cur) as head_count, (select last_hash from cur) as head_hash`;

/**
 * Appends several entries in ONE statement (one round trip, one commit), chained in the order
 * given after `expected`, the head the caller believes current. The statement locks the head row
 * and writes only while it still is `expected`; when another writer moved the head meanwhile
 * (another exchange process on the same database) nothing is written and the result carries the
 * head as the statement found it under its lock (`moved`; undefined when there is no head row):
 * rebuild the entries after it. Resolves with the entries and the new head once they are
 * committed.
 */
export async function appendAuditBatch(
  db: Kysely<Database>,
  expected: AuditHead,
  items: EntryBody[],
): Promise<{ entries: AuditRecord[]; head: AuditHead } | { moved: AuditHead | undefined }> {
  const entries: AuditRecord[] = [];
  let prev = expected.lastHash;
  for (const [i, body] of items.entries()) {
    const e = chainEntry(body, expected.count + 1 + i, prev);
    entries.push(e);
    prev = e.hash;
  }
  const last = entries[entries.length - 1];
  if (!last) return { entries, head: expected };
  const col = <T>(f: (e: AuditRecord) => T) => entries.map(f);
  const rows = await preparedQuery<{ inserted: number; updated: number; head_count: number | null; head_hash: string | null }>(db, 'audit-append-batch', APPEND_BATCH, [
    expected.count, expected.lastHash,
    col((e) => e.seq), col((e) => e.at), col((e) => e.action), col((e) => e.outcome), col((e) => e.reason), col((e) => e.userId),
    col((e) => e.username), col((e) => e.facilityId), col((e) => e.role), col((e) => e.address), col((e) => e.deviceId),
    col((e) => e.endpoint), col((e) => e.patient), col((e) => e.purpose), col((e) => e.breakGlassReason), col((e) => e.detail),
    col((e) => e.prevHash), col((e) => e.hash),
    last.seq, last.hash, last.at,
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
