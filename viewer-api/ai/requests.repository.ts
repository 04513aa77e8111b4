import type { Selectable } from 'kysely';
import { preparedQuery, type Db } from '../../store/db.js';
import { decisionRowsOf, decisionRowsSql, GRANT_WINDOW_MS, type DecisionRows } from '../../consent/consent.repository.js';
import type { AiRequestTable } from './ai.tables.js';

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

// The statements every request makes are prepared (preparedQuery): parsed once per connection,
// without query building on the way.

const INSERT = `
  insert into ai_request (id, service_id, regional_id, user_id, facility_id, role, status, categories, records, report, outgoing_enc, reid_key_enc, created_at, updated_at)
  values ($1, $2, $3, $4, $5, $6, 'queued', $7::text::jsonb, $8, $9::text::jsonb, $10, $11, $12, $12)`;

export async function insertRequest(db: Db, r: NewAiRequest): Promise<void> {
  await preparedQuery(db, 'ai-request-insert', INSERT, [
    r.id, r.serviceId, r.regionalId, r.userId, r.facilityId, r.role, JSON.stringify(r.categories), r.records,
    r.report ? JSON.stringify(r.report) : null, r.outgoingEnc, r.reidKeyEnc, new Date(r.at),
  ]);
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
 * is linked at (null where none is published) and the consent decision context of the request's
 * patient and user as of `at` (decisionRowsSql): two round trips less per request. Returns the claimed request, or undefined when
 * it was not queued.
 */
const CLAIM = `
  with claimed as (
    update ai_request set status = 'sending', status_detail = 'sending to the AI service', updated_at = $2
    where id = $1 and status = 'queued' returning *),
  ctx as (${decisionRowsSql({ regionalId: '(select regional_id from claimed)', userId: '(select user_id::text from claimed)', since: '$3', at: '$2' })})
  select claimed.*, ctx.*,
    (select coalesce(json_agg(json_build_array(l.facility_id, s.published_seq, s.published_snapshot_id)), '[]')
       from identity_link l left join record_index_state s on s.facility_id = l.facility_id
       where l.regional_id = claimed.regional_id) as index_versions
  from claimed, ctx`;

type ClaimedRow = Selectable<AiRequestTable> & {
  index_versions: [string, unknown, unknown][] | string;
  survivor: string | null;
  links: unknown;
  consents: unknown;
  grants: unknown;
  disasters: unknown;
};

export async function claimRequest(db: Db, id: string, at: number): Promise<{ row: AiRequestRow; versions: IndexVersions; decision: DecisionRows | undefined } | undefined> {
  const [got] = await preparedQuery<ClaimedRow>(db, 'ai-request-claim', CLAIM, [id, new Date(at), new Date(at - GRANT_WINDOW_MS)]);
  if (!got) return undefined;
  const { index_versions: iv, survivor, links, consents, grants, disasters, ...row } = got;
  const list = typeof iv === 'string' ? (JSON.parse(iv) as [string, unknown, unknown][]) : iv;
  return {
    row: toRow(row),
    versions: new Map(list.map(([f, seq, snap]) => [f, versionOf(seq, snap)])),
    decision: decisionRowsOf({ survivor, links, consents, grants, disasters }),
  };
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

// What was prepared (records, report, the key) is written when the request got that far; what
// waited to be sent (outgoing_enc) is not kept once the request has ended.
const FINISH = `
  update ai_request set status = $2, status_detail = $3, attempts = $4, sent_sha256 = $5, sent_bytes = $6, received_bytes = $7,
    result = $8::text::jsonb, records = coalesce($9, records), report = coalesce($10::text::jsonb, report),
    reid_key_enc = coalesce($11, reid_key_enc), outgoing_enc = null, updated_at = $12, completed_at = $12
  where id = $1`;

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
  const p = f.prepared;
  await preparedQuery(db, 'ai-request-finish', FINISH, [
    id, f.status, f.detail, f.attempts, f.sentSha256 ?? null, f.sentBytes ?? null, f.receivedBytes ?? null,
    f.result ? JSON.stringify(f.result) : null, p ? p.records : null, p ? JSON.stringify(p.report) : null, p ? p.reidKeyEnc : null, new Date(f.at),
  ]);
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
