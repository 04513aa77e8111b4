import type { Selectable } from 'kysely';
import { preparedQuery, preparedRead, type Db } from '../../store/db.js';
import { decisionRowsOf, decisionRowsSql, GRANT_WINDOW_MS, type DecisionRows } from '../../consent/consent.repository.js';
import type { AuditCompanion } from '../audit/audit.repository.js';
import { sessionOf, type SessionRecord } from '../auth/auth.repository.js';
import { sessionAndContextSql, type SessionAndContextRow } from '../gate/session-context.js';
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
  /** Default queued; sending: claimed at once by the process that inserts it. */
  status?: 'queued' | 'sending';
}

/** The status detail of a request being prepared and sent. */
export const SENDING_DETAIL = 'sending to the AI service';

// The statements every request makes are prepared (preparedQuery): parsed once per connection,
// without query building on the way.

// Insert, claim and finish take many requests per statement (group commit: see store/group.ts); the
// values go as arrays (unnest), timestamps as epoch milliseconds, bytea as base64 text.

const ts = (col: string) => `to_timestamp(${col} / 1000.0)`;
const b64 = (b: Buffer | null | undefined) => (b ? b.toString('base64') : null);

// Numbered by `p`: in the audit append's statement, after its own parameters.
type Param = (i: number) => string;

const insertSql = (p: Param, where: string) => `
  insert into ai_request (id, service_id, regional_id, user_id, facility_id, role, status, status_detail, categories, records, report, outgoing_enc, reid_key_enc, created_at, updated_at)
  select id, service_id, regional_id, user_id, facility_id, role, status, detail, categories::jsonb, records, report::jsonb,
    decode(outgoing, 'base64'), decode(reid, 'base64'), ${ts('at')}, ${ts('at')}
  from unnest(${p(1)}::text[], ${p(2)}::text[], ${p(3)}::text[], ${p(4)}::bigint[], ${p(5)}::text[], ${p(6)}::text[], ${p(7)}::text[], ${p(8)}::int[], ${p(9)}::text[], ${p(10)}::text[], ${p(11)}::text[], ${p(12)}::float8[], ${p(13)}::text[], ${p(14)}::text[])
    as v(id, service_id, regional_id, user_id, facility_id, role, categories, records, report, outgoing, reid, at, status, detail)
  where ${where}`;

/** How a request starts: queued, or already being sent by the process that took it (AiQueue.reserve). */
const STARTS = { queued: null, sending: SENDING_DETAIL } as const;

function insertParams(rs: readonly NewAiRequest[]): unknown[] {
  const col = <T>(f: (r: NewAiRequest) => T) => rs.map(f);
  return [
    col((r) => r.id), col((r) => r.serviceId), col((r) => r.regionalId), col((r) => r.userId), col((r) => r.facilityId), col((r) => r.role),
    col((r) => JSON.stringify(r.categories)), col((r) => r.records), col((r) => (r.report ? JSON.stringify(r.report) : null)),
    col((r) => b64(r.outgoingEnc)), col((r) => b64(r.reidKeyEnc)), col((r) => r.at), col((r) => r.status ?? 'queued'), col((r) => STARTS[r.status ?? 'queued']),
  ];
}

/** The insert of queued requests, in the statement (and commit) of their submit's audit entries. */
export const insertWithAudit: AuditCompanion<NewAiRequest> = {
  name: 'ai-request-insert',
  sql: (p, guard) => `${insertSql(p, guard)} returning 1`,
  params: insertParams,
};

export async function findRequest(db: Db, id: string): Promise<AiRequestRow | undefined> {
  const r = await db.selectFrom('ai_request').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toRow(r);
}

/** The published index version of facilities, as named in a prepared Bundle's cache key (null: none published). */
export type IndexVersions = ReadonlyMap<string, string | null>;

const versionOf = (seq: unknown, snapshot: unknown) => (seq === null || seq === undefined ? null : `${String(seq)}:${String(snapshot)}`);

/** The published index version of every facility the patient `regionalId` (an SQL expression) is linked at, as JSON [[facility, seq, snapshot], ...]. */
const INDEX_VERSIONS_SQL = (regionalId: string) => `
  (select coalesce(json_agg(json_build_array(l.facility_id, s.published_seq, s.published_snapshot_id)), '[]')
     from identity_link l left join record_index_state s on s.facility_id = l.facility_id
     where l.regional_id = ${regionalId})`;

function versionsOf(iv: unknown): IndexVersions {
  const list = (typeof iv === 'string' ? JSON.parse(iv) : (iv ?? [])) as [string, unknown, unknown][];
  return new Map(list.map(([f, seq, snap]) => [f, versionOf(seq, snap)]));
}

/**
 * Claims queued requests for preparing and sending, many in one statement: only one worker wins
 * each (the status moves queued -> sending in one statement), so a job delivered twice never
 * calls the service twice. The same statement reads, once per (patient, user) among them, the
 * published index version of every facility the patient is linked at (null where none is
 * published) and the consent decision context of the patient and user as of `at`
 * (decisionRowsSql): two round trips less per request. Answers, per id in order, the claimed
 * request, or undefined when it was not queued (or its id came twice: the first wins).
 */
const CLAIM = `
  with claimed as (
    update ai_request set status = 'sending', status_detail = '${SENDING_DETAIL}', updated_at = $2
    where id = any($1::text[]) and status = 'queued' returning *),
  who as (select distinct regional_id, user_id from claimed),
  ctx as (
    select who.regional_id as ctx_regional_id, who.user_id as ctx_user_id, d.*, ${INDEX_VERSIONS_SQL('who.regional_id')} as index_versions
    from who, lateral (${decisionRowsSql({ regionalId: 'who.regional_id', userId: 'who.user_id::text', since: '$3', at: '$2' })}) d)
  select claimed.*, ctx.* from claimed join ctx on ctx.ctx_regional_id = claimed.regional_id and ctx.ctx_user_id = claimed.user_id`;

type ClaimedRow = Selectable<AiRequestTable> & {
  ctx_regional_id: string;
  ctx_user_id: unknown;
  index_versions: [string, unknown, unknown][] | string;
  survivor: string | null;
  links: unknown;
  consents: unknown;
  grants: unknown;
  disasters: unknown;
};

export interface ClaimedRequest {
  row: AiRequestRow;
  versions: IndexVersions;
  decision: DecisionRows | undefined;
}

export async function claimRequests(db: Db, ids: readonly string[], at: number): Promise<(ClaimedRequest | undefined)[]> {
  const rows = await preparedQuery<ClaimedRow>(db, 'ai-request-claim-many', CLAIM, [ids, new Date(at), new Date(at - GRANT_WINDOW_MS)]);
  const by = new Map<string, ClaimedRequest>();
  for (const got of rows) {
    const { ctx_regional_id: _r, ctx_user_id: _u, index_versions: iv, survivor, links, consents, grants, disasters, ...row } = got;
    by.set(row.id, {
      row: toRow(row),
      versions: versionsOf(iv),
      decision: decisionRowsOf({ survivor, links, consents, grants, disasters }),
    });
  }
  return ids.map((id) => {
    const c = by.get(id);
    by.delete(id);
    return c;
  });
}

/**
 * The consent decision context (decisionRowsSql) of many (patient, user) pairs in one statement,
 * each as of its own `at` (a pair asked twice is read once, as of the later). Answers, per input
 * in order, the rows, or undefined for an unknown patient.
 */
const DECISION_MANY = `
  select v.regional_id as ctx_regional_id, v.user_id as ctx_user_id, d.*
  from (select regional_id, user_id, max(at_ms) as at_ms from unnest($1::text[], $2::text[], $3::float8[]) as u(regional_id, user_id, at_ms)
        group by regional_id, user_id) v,
    lateral (select ${ts('v.at_ms')} as at, ${ts(`(v.at_ms - ${GRANT_WINDOW_MS})`)} as since) t,
    lateral (${decisionRowsSql({ regionalId: 'v.regional_id', userId: 'v.user_id', since: 't.since', at: 't.at' })}) d`;

export async function decisionRowsMany(db: Db, asks: readonly { regionalId: string; userId: string; at: number }[]): Promise<(DecisionRows | undefined)[]> {
  // Read only: over the pipelined connections, without waiting for a pooled one.
  const rows = await preparedRead<{ ctx_regional_id: string; ctx_user_id: string; survivor: string | null; links: unknown; consents: unknown; grants: unknown; disasters: unknown }>(
    db,
    'ai-decision-rows-many',
    DECISION_MANY,
    [asks.map((a) => a.regionalId), asks.map((a) => a.userId), asks.map((a) => a.at)],
  );
  const by = new Map(rows.map((r) => [`${r.ctx_regional_id}\u0000${r.ctx_user_id}`, decisionRowsOf(r)]));
  return asks.map((a) => by.get(`${a.regionalId}\u0000${a.userId}`));
}

/**
 * A submit's session (by token hash), and, when there is one, the decision context of the patient
 * and the session's user as of `at` with the patient's index versions: ONE statement, read on
 * this request (the viewer's session-and-context statement with one column more). The patient's rows are read only when the
 * token names a session.
 */
const SESSION_AND_DECISION = sessionAndContextSql(`${INDEX_VERSIONS_SQL('ctx.survivor')} as index_versions`);

export async function sessionAndDecision(
  db: Db,
  tokenHash: string,
  regionalId: string,
  at: number,
): Promise<{ session: SessionRecord | undefined; decision: DecisionRows | undefined; versions: IndexVersions }> {
  const [r] = await preparedRead<SessionAndContextRow & { index_versions: unknown }>(db, 'ai-session-and-decision', SESSION_AND_DECISION, [tokenHash, regionalId, new Date(at - GRANT_WINDOW_MS), new Date(at)]);
  const session = sessionOf(r);
  return session ? { session, decision: decisionRowsOf(r), versions: versionsOf(r!.index_versions) } : { session, decision: undefined, versions: new Map() };
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
// waited to be sent (outgoing_enc) is not kept once the request has ended. The sealed keys (~8 kB
// each) go as one binary parameter, each row naming its slice (offset, length): no base64 text
// and no text array to escape. The rows are named by their primary key (`id = any`) as well as
// joined to the unnest: a plan made with the table's size known takes the key (EXPLAIN, 10 requests
// at 400 rows: 0.81 ms, against 1.16 ms hashing a sequential scan of the table). A generic plan
// made while the table was new and nearly empty (a fresh database: the bench's) still scans it.
const finishSql = (p: Param, where: string) => `
  update ai_request r set status = v.status, status_detail = v.detail, attempts = v.attempts, sent_sha256 = v.sha, sent_bytes = v.sent_bytes,
    received_bytes = v.received_bytes, result = v.result::jsonb, records = coalesce(v.records, r.records), report = coalesce(v.report::jsonb, r.report),
    reid_key_enc = case when v.reid_len is null then r.reid_key_enc else substring(${p(14)}::bytea from v.reid_off + 1 for v.reid_len) end,
    outgoing_enc = null, updated_at = ${ts('v.at')}, completed_at = ${ts('v.at')}
  from unnest(${p(1)}::text[], ${p(2)}::text[], ${p(3)}::text[], ${p(4)}::int[], ${p(5)}::text[], ${p(6)}::int[], ${p(7)}::int[], ${p(8)}::text[], ${p(9)}::int[], ${p(10)}::text[], ${p(11)}::int[], ${p(12)}::int[], ${p(13)}::float8[])
    as v(id, status, detail, attempts, sha, sent_bytes, received_bytes, result, records, report, reid_off, reid_len, at)
  where r.id = any(${p(1)}::text[]) and r.id = v.id and ${where}`;

export interface RequestOutcome {
  id: string;
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
}

function finishParams(fs: readonly RequestOutcome[]): unknown[] {
  const col = <T>(f: (r: RequestOutcome) => T) => fs.map(f);
  const keys = fs.map((f) => f.prepared?.reidKeyEnc);
  const offsets: (number | null)[] = [];
  let at = 0;
  for (const k of keys) {
    offsets.push(k ? at : null);
    at += k?.byteLength ?? 0;
  }
  return [
    col((f) => f.id), col((f) => f.status), col((f) => f.detail), col((f) => f.attempts), col((f) => f.sentSha256 ?? null),
    col((f) => f.sentBytes ?? null), col((f) => f.receivedBytes ?? null), col((f) => (f.result ? JSON.stringify(f.result) : null)),
    col((f) => f.prepared?.records ?? null), col((f) => (f.prepared ? JSON.stringify(f.prepared.report) : null)), offsets, keys.map((k) => k?.byteLength ?? null),
    col((f) => f.at), Buffer.concat(keys.filter((k): k is Buffer => !!k)),
  ];
}

/** The end of requests, in the statement (and commit) of the audit entries that explain them. */
export const finishWithAudit: AuditCompanion<RequestOutcome> = {
  name: 'ai-request-finish',
  sql: (p, guard) => `${finishSql(p, guard)} returning 1`,
  params: finishParams,
};

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
