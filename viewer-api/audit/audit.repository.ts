import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Database } from '../../store/database.js';
import type { AuditEventTable } from '../viewer.tables.js';
import type { AuditHead, AuditOutcome, AuditRecord } from './audit.chain.js';
import { buildEntry, type AuditInput } from './audit.entry.js';

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
