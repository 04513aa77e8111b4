import { sql, type Selectable } from 'kysely';
import type { Db } from '../../store/db.js';
import type { AiRequestTable } from './ai.tables.js';
import { jsonb } from './registry.repository.js';

/** SQL of AI analysis requests. Sealed columns stay sealed here; the service opens them. */

export type AiRequestStatus = 'queued' | 'sending' | 'done' | 'failed' | 'denied';

export interface AiRequestRow {
  id: string;
  serviceId: string;
  regionalId: string;
  userId: number;
  facilityId: string;
  role: string;
  status: AiRequestStatus;
  statusDetail: string | null;
  attempts: number;
  categories: string[];
  records: number;
  report: Record<string, unknown> | null;
  outgoingEnc: Buffer | null;
  reidKeyEnc: Buffer | null;
  sentSha256: string | null;
  sentBytes: number | null;
  receivedBytes: number | null;
  result: Record<string, unknown> | null;
  createdAt: number;
  updatedAt: number;
  completedAt: number | null;
}

function toRow(r: Selectable<AiRequestTable>): AiRequestRow {
  return {
    id: r.id,
    serviceId: r.service_id,
    regionalId: r.regional_id,
    userId: Number(r.user_id),
    facilityId: r.facility_id,
    role: r.role,
    status: r.status as AiRequestStatus,
    statusDetail: r.status_detail,
    attempts: r.attempts,
    categories: r.categories,
    records: r.records,
    report: r.report,
    outgoingEnc: r.outgoing_enc,
    reidKeyEnc: r.reid_key_enc,
    sentSha256: r.sent_sha256,
    sentBytes: r.sent_bytes,
    receivedBytes: r.received_bytes,
    result: r.result,
    createdAt: r.created_at.getTime(),
    updatedAt: r.updated_at.getTime(),
    completedAt: r.completed_at ? r.completed_at.getTime() : null,
  };
}

export interface NewAiRequest {
  id: string;
  serviceId: string;
  regionalId: string;
  userId: number;
  facilityId: string;
  role: string;
  categories: string[];
  records: number;
  report: Record<string, unknown> | null;
  outgoingEnc: Buffer | null;
  reidKeyEnc: Buffer;
  at: number;
}

export async function insertRequest(db: Db, r: NewAiRequest): Promise<void> {
  await db
    .insertInto('ai_request')
    .values({
      id: r.id,
      service_id: r.serviceId,
      regional_id: r.regionalId,
      user_id: r.userId,
      facility_id: r.facilityId,
      role: r.role,
      status: 'queued',
      categories: jsonb(r.categories),
      records: r.records,
      report: r.report ? jsonb(r.report) : null,
      outgoing_enc: r.outgoingEnc,
      reid_key_enc: r.reidKeyEnc,
      created_at: new Date(r.at),
      updated_at: new Date(r.at),
    })
    .execute();
}

export async function findRequest(db: Db, id: string): Promise<AiRequestRow | undefined> {
  const r = await db.selectFrom('ai_request').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toRow(r);
}

/** The published index version of facilities, as named in a prepared Bundle's cache key (null: none published). */
export type IndexVersions = ReadonlyMap<string, string | null>;

const versionOf = (seq: unknown, snapshot: unknown) => (seq === null || seq === undefined ? null : `${String(seq)}:${String(snapshot)}`);

/**
 * Claims a queued request for preparing and sending: only one worker wins (the status moves
 * queued -> sending in one statement), so a job delivered twice never calls the service twice.
 * The same statement reads the published index version of every facility the request's patient
 * is linked at (one round trip less per request; null where none is published). Returns the claimed request, or undefined when
 * it was not queued.
 */
export async function claimRequest(db: Db, id: string, at: number): Promise<{ row: AiRequestRow; versions: IndexVersions } | undefined> {
  const r = await sql<Selectable<AiRequestTable> & { index_versions: [string, unknown, unknown][] | string }>`
    with c as (
      update ai_request set status = 'sending', status_detail = 'sending to the AI service', updated_at = ${new Date(at)}
      where id = ${id} and status = 'queued' returning *)
    select c.*, (select coalesce(json_agg(json_build_array(l.facility_id, s.published_seq, s.published_snapshot_id)), '[]')
                   from identity_link l left join record_index_state s on s.facility_id = l.facility_id
                   where l.regional_id = c.regional_id) as index_versions
    from c`.execute(db);
  const got = r.rows[0];
  if (!got) return undefined;
  const { index_versions: iv, ...row } = got;
  const list = typeof iv === 'string' ? (JSON.parse(iv) as [string, unknown, unknown][]) : iv;
  return { row: toRow(row), versions: new Map(list.map(([f, seq, snap]) => [f, versionOf(seq, snap)])) };
}

/** The published index version of these facilities (those without an index have none). */
export async function indexVersions(db: Db, facilities: string[]): Promise<IndexVersions> {
  const states = facilities.length
    ? await db.selectFrom('record_index_state').select(['facility_id', 'published_seq', 'published_snapshot_id']).where('facility_id', 'in', facilities).execute()
    : [];
  const by = new Map(states.map((s) => [s.facility_id, versionOf(s.published_seq, s.published_snapshot_id)]));
  return new Map(facilities.map((f) => [f, by.get(f) ?? null]));
}

export async function noteProgress(db: Db, id: string, attempts: number, detail: string, at: number): Promise<void> {
  await db.updateTable('ai_request').set({ attempts, status_detail: detail, updated_at: new Date(at) }).where('id', '=', id).where('status', '=', 'sending').execute();
}

export async function finishRequest(
  db: Db,
  id: string,
  f: {
    status: 'done' | 'failed' | 'denied';
    detail: string;
    attempts: number;
    sentSha256?: string | null;
    sentBytes?: number | null;
    receivedBytes?: number | null;
    result?: Record<string, unknown> | null;
    /** What was prepared for sending, when the request got that far. */
    prepared?: { records: number; report: Record<string, unknown>; reidKeyEnc: Buffer };
    at: number;
  },
): Promise<void> {
  await db
    .updateTable('ai_request')
    .set({
      status: f.status,
      status_detail: f.detail,
      attempts: f.attempts,
      sent_sha256: f.sentSha256 ?? null,
      sent_bytes: f.sentBytes ?? null,
      received_bytes: f.receivedBytes ?? null,
      result: f.result ? jsonb(f.result) : null,
      ...(f.prepared ? { records: f.prepared.records, report: jsonb(f.prepared.report), reid_key_enc: f.prepared.reidKeyEnc } : {}),
      // What waited to be sent is not kept once the request has ended.
      outgoing_enc: null,
      updated_at: new Date(f.at),
      completed_at: new Date(f.at),
    })
    .where('id', '=', id)
    .execute();
}

/** Requests still queued (after a restart, their jobs may need queueing again). */
export async function queuedRequestIds(db: Db, limit = 10_000): Promise<string[]> {
  const rows = await db.selectFrom('ai_request').select('id').where('status', '=', 'queued').orderBy('created_at').limit(limit).execute();
  return rows.map((r) => r.id);
}

/** A request that was being sent when its worker died: back to the queue. */
export async function requeueStale(db: Db, olderThan: number): Promise<number> {
  const r = await db
    .updateTable('ai_request')
    .set({ status: 'queued', status_detail: 'queued again after an interrupted send' })
    .where('status', '=', 'sending')
    .where('updated_at', '<', new Date(olderThan))
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}
