import { sql, type Expression, type SqlBool } from 'kysely';
import { preparedRows, type Db } from '../db.js';
import type { ClinicalRecord, Category } from '../../ingest/records/types.js';
import type { Finding } from '../../ingest/quality/findings.js';

/**
 * SQL of the record index. Versions of a facility's files are valid from the run that added
 * them to the run that removed them; readers see each facility as of its published run
 * (record_index_state.published_seq), so a run in progress is invisible until it finishes.
 */

export interface RunRow {
  snapshotId: string;
  facilityId: string;
  seq: number;
  snapshotCreatedAt: Date;
  state: 'running' | 'done' | 'superseded';
  checkpointPath: string | null;
  filesSeen: number;
  filesNew: number;
  filesRemoved: number;
  recordsOk: number;
  recordsFlagged: number;
  findings: number;
  attempts: number;
  heartbeatAt: Date;
  finishedAt: Date | null;
}

const runColumns = [
  'snapshot_id', 'facility_id', 'seq', 'snapshot_created_at', 'state', 'checkpoint_path', 'files_seen', 'files_new',
  'files_removed', 'records_ok', 'records_flagged', 'findings', 'attempts', 'heartbeat_at', 'finished_at',
] as const;

function toRun(r: {
  snapshot_id: string; facility_id: string; seq: number; snapshot_created_at: Date; state: RunRow['state']; checkpoint_path: string | null;
  files_seen: number; files_new: number; files_removed: number; records_ok: number; records_flagged: number; findings: number;
  attempts: number; heartbeat_at: Date; finished_at: Date | null;
}): RunRow {
  return {
    snapshotId: r.snapshot_id, facilityId: r.facility_id, seq: r.seq, snapshotCreatedAt: new Date(r.snapshot_created_at), state: r.state,
    checkpointPath: r.checkpoint_path, filesSeen: r.files_seen, filesNew: r.files_new, filesRemoved: r.files_removed,
    recordsOk: r.records_ok, recordsFlagged: r.records_flagged, findings: r.findings, attempts: r.attempts,
    heartbeatAt: new Date(r.heartbeat_at), finishedAt: r.finished_at ? new Date(r.finished_at) : null,
  };
}

export async function findRun(db: Db, snapshotId: string): Promise<RunRow | undefined> {
  const r = await db.selectFrom('record_index_run').select(runColumns).where('snapshot_id', '=', snapshotId).executeTakeFirst();
  return r && toRun(r);
}

export type BeginOutcome =
  | { kind: 'run'; run: RunRow; resumed: boolean }
  | { kind: 'skip'; reason: 'already-indexed' | 'newer-snapshot-indexed'; run: RunRow }
  | { kind: 'busy'; other: RunRow };

/**
 * Starts (or resumes) the run of a snapshot, one running run per facility at a time: the
 * facility's state row is locked while deciding. A run whose heartbeat is older than `staleMs`
 * belonged to a worker that died; its facility is free again.
 */
export async function beginRun(db: Db, snap: { id: string; facilityId: string; createdAt: Date }, staleMs: number): Promise<BeginOutcome> {
  return db.transaction().execute(async (trx) => {
    await trx.insertInto('record_index_state').values({ facility_id: snap.facilityId }).onConflict((oc) => oc.column('facility_id').doNothing()).execute();
    await trx.selectFrom('record_index_state').select('facility_id').where('facility_id', '=', snap.facilityId).forUpdate().execute();
    const own = await findRun(trx, snap.id);
    if (own && own.state !== 'running') return { kind: 'skip', reason: own.state === 'done' ? 'already-indexed' : 'newer-snapshot-indexed', run: own };
    const newer = await trx
      .selectFrom('record_index_run')
      .select(runColumns)
      .where('facility_id', '=', snap.facilityId)
      .where('state', '=', 'done')
      .where('snapshot_created_at', '>', snap.createdAt)
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (newer) {
      // An older night arriving after a newer one is already published: indexing it would roll
      // the facility's view back, and its content is contained in the newer state anyway.
      const row = own
        ? await trx.updateTable('record_index_run').set({ state: 'superseded', finished_at: new Date() }).where('snapshot_id', '=', snap.id).returning(runColumns).executeTakeFirstOrThrow()
        : await trx
            .insertInto('record_index_run')
            .values({ snapshot_id: snap.id, facility_id: snap.facilityId, seq: await nextSupersededSeq(trx, snap.facilityId), snapshot_created_at: snap.createdAt, state: 'superseded', finished_at: new Date() })
            .returning(runColumns)
            .executeTakeFirstOrThrow();
      return { kind: 'skip', reason: 'newer-snapshot-indexed', run: toRun(row) };
    }
    const running = await trx
      .selectFrom('record_index_run')
      .select(runColumns)
      .where('facility_id', '=', snap.facilityId)
      .where('state', '=', 'running')
      .where('snapshot_id', '!=', snap.id)
      .execute();
    const alive = running.map(toRun).find((r) => Date.now() - r.heartbeatAt.getTime() < staleMs);
    if (alive) return { kind: 'busy', other: alive };
    if (own) {
      const row = await trx
        .updateTable('record_index_run')
        .set((eb) => ({ attempts: eb('attempts', '+', 1), heartbeat_at: new Date() }))
        .where('snapshot_id', '=', snap.id)
        .returning(runColumns)
        .executeTakeFirstOrThrow();
      return { kind: 'run', run: toRun(row), resumed: true };
    }
    const row = await trx
      .insertInto('record_index_run')
      .values({ snapshot_id: snap.id, facility_id: snap.facilityId, seq: await nextSeq(trx, snap.facilityId), snapshot_created_at: snap.createdAt, state: 'running' })
      .returning(runColumns)
      .executeTakeFirstOrThrow();
    return { kind: 'run', run: toRun(row), resumed: false };
  });
}

/** Superseded runs never publish: they take negative numbers, out of the way of real runs. */
async function nextSupersededSeq(db: Db, facilityId: string): Promise<number> {
  const r = await db
    .selectFrom('record_index_run')
    .select((eb) => eb.fn.min('seq').as('min'))
    .where('facility_id', '=', facilityId)
    .executeTakeFirst();
  return Math.min(0, Number(r?.min ?? 0)) - 1;
}

async function nextSeq(db: Db, facilityId: string): Promise<number> {
  const r = await db
    .selectFrom('record_index_run')
    .select((eb) => eb.fn.max('seq').as('max'))
    .where('facility_id', '=', facilityId)
    .executeTakeFirst();
  return Math.max(0, Number(r?.max ?? 0)) + 1;
}

/** The present (not removed) versions of a facility's paths in (after, upTo], in path order. */
export async function presentVersions(db: Db, facilityId: string, after: string | null, upTo: string | null): Promise<{ id: number; path: string; sha256: string }[]> {
  let q = db.selectFrom('record').select(['id', 'path', 'sha256']).where('facility_id', '=', facilityId).where('removed_seq', 'is', null);
  if (after !== null) q = q.where('path', '>', after);
  if (upTo !== null) q = q.where('path', '<=', upTo);
  return q.orderBy('path').execute();
}

export interface NewVersion {
  path: string;
  sha256: string;
  status: 'ok' | 'flagged';
  /** `content`: the mapped record as JSON text; undefined for a flagged file (never stored). */
  contentJson: string | undefined;
  /** From the path, even when the content is flagged. */
  source: { patientId: string; dataType: string; careDate: string | null; orderNo: string; timestamp: string; department: string | null; condition: '0' | '1' | '2' } | undefined;
  category: Category | undefined;
  findings: Finding[];
}

export interface PageWrite {
  run: RunRow;
  removeIds: number[];
  versions: NewVersion[];
  checkpointPath: string;
  filesSeen: number;
}

/**
 * A PostgreSQL array literal of text values for one column of a page (`{"a","b",NULL}`). Built
 * here rather than by the driver, whose generic array encoding cost more CPU than the rest of
 * the page's preparation together.
 */
function textArray(values: readonly (string | null)[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    if (v === null || v === undefined) out += 'NULL';
    else out += '"' + (v.includes('"') || v.includes('\\') ? v.replace(/["\\]/g, '\\$&') : v) + '"';
  }
  return out + '}';
}

/**
 * The JSON texts of a page's contents in one parameter, separated by U+0001, with '' for none:
 * JSON.stringify escapes every control character inside strings (ECMA-262 QuoteJSONString), so
 * the separator never occurs in a content and PostgreSQL splits it without reading the JSON.
 */
const CONTENT_SEPARATOR = '\u0001';

/**
 * Writes one page of a run with its checkpoint in ONE statement (data-modifying CTEs run in one
 * implicit transaction): a crash leaves either the whole page and its checkpoint, or neither, so
 * a retry resumes exactly after the last page. One round trip per page also lets the next page
 * be read and mapped while PostgreSQL stores this one. The page travels as one array per column
 * (unnest keeps their order, so record ids follow path order) and the contents as JSON text for
 * the `json` column: PostgreSQL neither parses a page document nor builds jsonb
 * (bench/README.md#indexing).
 */
export async function writePage(db: Db, w: PageWrite): Promise<void> {
  const { run } = w;
  const n = w.versions.length;
  const col = (f: (v: NewVersion) => string | null) => {
    const a = new Array<string | null>(n);
    for (let i = 0; i < n; i++) a[i] = f(w.versions[i]!);
    return textArray(a);
  };
  let contents = '';
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const v = w.versions[i]!;
    if (i > 0) contents += CONTENT_SEPARATOR;
    // A flagged file is never served: its content is not even stored.
    if (v.status !== 'ok') continue;
    ok++;
    if (v.contentJson) contents += v.contentJson;
  }
  const findings = w.versions.flatMap((v) =>
    v.findings.map((f) => ({ path: v.path, severity: f.severity, code: f.code, reason: f.reason, field: f.field ?? null, byte_offset: f.byteOffset ?? null })),
  );
  const result = await sql<{ removed: number; inserted: number; found: number }>`
    with guard as (
      -- Nothing is written unless the run is still running (a superseded or finished run's
      -- late page must not land).
      select 1 from record_index_run where snapshot_id = ${run.snapshotId} and state = 'running' for update
    ), compression as (
      -- Contents are compressed with lz4 where the server has it (PostgreSQL 14+ built with
      -- lz4): half of the records are over the 2 kB TOAST threshold, and pglz was the largest
      -- single cost of an insert. Local to this statement's transaction; being volatile, the CTE
      -- runs once, before the insert below reads its first row.
      select set_config('default_toast_compression', case when 'lz4' = any(enumvals) then 'lz4' else setting end, true)
      from pg_settings where name = 'default_toast_compression'
    ), rm as (
      update record set removed_seq = ${run.seq}
      where id = any(${w.removeIds}::bigint[]) and removed_seq is null and exists (select 1 from guard)
      returning 1
    ), ins as (
      insert into record (facility_id, path, sha256, added_seq, snapshot_id, patient_id, data_type, category, care_date,
                          order_no, message_ts, department, condition_flag, status, content)
      select ${run.facilityId}, x.path, x.sha256, ${run.seq}, ${run.snapshotId}, x.patient_id, x.data_type, x.category, x.care_date,
             x.order_no, x.message_ts, x.department, x.condition_flag, x.status, x.content::json
      from unnest(
        ${col((v) => v.path)}::text[], ${col((v) => v.sha256)}::text[], ${col((v) => v.source?.patientId ?? null)}::text[],
        ${col((v) => v.source?.dataType ?? null)}::text[], ${col((v) => v.category ?? null)}::text[],
        ${col((v) => v.source?.careDate ?? null)}::date[], ${col((v) => v.source?.orderNo ?? null)}::text[],
        ${col((v) => v.source?.timestamp ?? null)}::text[], ${col((v) => v.source?.department ?? null)}::text[],
        ${col((v) => v.source?.condition ?? null)}::text[], ${col((v) => v.status)}::text[],
        string_to_array(${contents}::text, ${CONTENT_SEPARATOR}::text, '')
      ) as x(path, sha256, patient_id, data_type, category, care_date, order_no, message_ts, department, condition_flag, status, content)
      where exists (select 1 from guard) and exists (select 1 from compression)
      returning id, path
    ), fnd as (
      insert into record_finding (record_id, facility_id, snapshot_id, path, severity, code, reason, field, byte_offset)
      select ins.id, ${run.facilityId}, ${run.snapshotId}, y.path, y.severity, y.code, y.reason, y.field, y.byte_offset
      from json_to_recordset(${JSON.stringify(findings)}::json) as y(path text, severity text, code text, reason text, field text, byte_offset int)
      join ins on ins.path = y.path
      returning 1
    ), upd as (
      update record_index_run set
        checkpoint_path = ${w.checkpointPath},
        files_seen = files_seen + ${w.filesSeen},
        files_new = files_new + ${n},
        files_removed = files_removed + ${w.removeIds.length},
        records_ok = records_ok + ${ok},
        records_flagged = records_flagged + ${n - ok},
        findings = findings + ${findings.length},
        heartbeat_at = now()
      where snapshot_id = ${run.snapshotId} and exists (select 1 from guard)
      returning 1
    )
    select (select count(*) from rm)::int as removed, (select count(*) from ins)::int as inserted,
           (select count(*) from fnd)::int as found, (select count(*) from upd)::int as updated
  `.execute(db);
  const r = result.rows[0] as unknown as { removed: number; inserted: number; found: number; updated: number };
  if (r.updated !== 1) throw new Error(`run ${run.snapshotId} is no longer running; page not recorded`);
  if (r.inserted !== n || r.found !== findings.length) {
    throw new Error(`page of run ${run.snapshotId} stored ${r.inserted}/${n} records and ${r.found}/${findings.length} findings`);
  }
}

/** Finishes a run and publishes it: from now on readers see the facility as of this run. */
export async function finishRun(db: Db, run: RunRow): Promise<RunRow> {
  return db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable('record_index_run')
      .set({ state: 'done', finished_at: new Date(), heartbeat_at: new Date() })
      .where('snapshot_id', '=', run.snapshotId)
      .returning(runColumns)
      .executeTakeFirstOrThrow();
    await trx
      .updateTable('record_index_state')
      .set({ published_seq: run.seq, published_snapshot_id: run.snapshotId, published_at: new Date() })
      .where('facility_id', '=', run.facilityId)
      .where('published_seq', '<', run.seq)
      .execute();
    return toRun(row);
  });
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface IndexedRecord {
  id: number;
  facilityId: string;
  patientId: string;
  dataType: string;
  category: Category;
  careDate: string | null;
  orderNo: string;
  timestamp: string;
  department: string | null;
  condition: '0' | '1' | '2';
  sha256: string;
  path: string;
  /** The mapped content, parsed from `contentJson` on first use. */
  readonly record: ClinicalRecord;
  /** The content as PostgreSQL stores it (JSON text): a response can carry it without a parse. */
  contentJson: string;
}

export interface RecordQuery {
  /** The (facility, local patient ID) pairs of one person. */
  patients: { facilityId: string; patientId: string }[];
  categories?: Category[];
  /** Care dates, inclusive, YYYY-MM-DD. Records without a care date are kept only when no range is given. */
  from?: string;
  to?: string;
  /** Only current records (condition 1); otherwise superseded and cancelled ones too (history). */
  currentOnly: boolean;
  limit: number;
  /** Keyset cursor from the previous page. */
  after?: RecordCursor;
}

export interface RecordCursor {
  careDate: string | null;
  id: number;
}

/** Visible versions of a facility: as of its published run, never a flagged file. */
function visible(current: boolean) {
  return (eb: any): Expression<SqlBool> =>
    eb.and([
      eb('r.status', '=', 'ok'),
      eb('r.added_seq', '<=', eb.ref('s.published_seq')),
      eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', eb.ref('s.published_seq'))]),
      ...(current ? [eb('r.condition_flag', '=', '1')] : []),
    ]);
}

/**
 * A person's records across facilities, newest care date first (undated records last), with
 * keyset paging on (care date, id). This is the query the viewer's timeline makes; it uses the
 * record_patient_timeline index per (facility, local id).
 */
export async function queryPatientRecords(db: Db, q: RecordQuery): Promise<{ records: IndexedRecord[]; next: RecordCursor | undefined }> {
  const { rows, next } = await queryPatientRecordRows(db, q);
  const records = rows.map((r) => withContent({
    id: r[0],
    facilityId: r[1],
    patientId: r[2],
    dataType: r[3],
    category: r[4],
    careDate: r[5],
    orderNo: r[6],
    timestamp: r[7],
    department: r[8],
    condition: r[9],
    sha256: r[10],
    path: r[11],
  }, r[12]));
  return { records, next };
}

/**
 * One indexed record as an array of its fields, in the order of IndexedRecord (the content as its
 * JSON text): queryPatientRecords' page before it becomes objects, for a reader that builds its
 * own (the viewer's gate, on every timeline request).
 */
export type IndexedRecordRow<C extends string | Buffer = string> = [
  id: number, facilityId: string, patientId: string, dataType: string, category: Category, careDate: string | null,
  orderNo: string, timestamp: string, department: string | null, condition: '0' | '1' | '2', sha256: string,
  path: string, contentJson: C,
];

/** queryPatientRecords with each record as an IndexedRecordRow. */
export async function queryPatientRecordRows(db: Db, q: RecordQuery): Promise<{ rows: IndexedRecordRow[]; next: RecordCursor | undefined }> {
  return recordRows(db, q, false) as Promise<{ rows: IndexedRecordRow[]; next: RecordCursor | undefined }>;
}

/**
 * queryPatientRecordRows with each content as its UTF-8 bytes (the viewer's gate, which sends
 * them on as bytes: see preparedRows' bytesColumn).
 */
export async function queryPatientRecordByteRows(db: Db, q: RecordQuery): Promise<{ rows: IndexedRecordRow<Buffer>[]; next: RecordCursor | undefined }> {
  return recordRows(db, q, true) as Promise<{ rows: IndexedRecordRow<Buffer>[]; next: RecordCursor | undefined }>;
}

async function recordRows(db: Db, q: RecordQuery, bytes: boolean): Promise<{ rows: IndexedRecordRow<string | Buffer>[]; next: RecordCursor | undefined }> {
  // Each (facility, local ID) once: the join below would return a record once per copy.
  const seen = new Set<string>();
  const patients = q.patients.filter((p) => {
    const key = `${p.facilityId}\u0000${p.patientId}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  if (patients.length === 0) return { rows: [], next: undefined };
  // A prepared statement per shape (number of patients, which filters): the viewer makes this
  // query on every timeline request, and a few shapes cover them all.
  const values: unknown[] = [];
  const $ = (v: unknown) => `$${values.push(v)}`;
  // One row per local ID with its facility's published seq, read once (an init plan) and joined
  // to that local ID's index scan. A join with record_index_state on the facility (and an OR of
  // the local IDs) had PostgreSQL scan the state table for every record and build a bitmap of
  // both index scans: about a fifth more of its CPU per timeline page at 1M records. A facility
  // without a state row (never published) gets null, which hides its records as the join did.
  const who = patients
    .map((p) => {
      const f = $(p.facilityId);
      return `(${f}::text, ${$(p.patientId)}::text, (select published_seq from record_index_state where facility_id = ${f}::text))`;
    })
    .join(', ');
  const where = [
    `r.status = 'ok' and r.added_seq <= p.published_seq and (r.removed_seq is null or r.removed_seq > p.published_seq)`,
  ];
  if (q.currentOnly) where.push(`r.condition_flag = '1'`);
  // One comma-separated text, not a text[] (the driver's array quoting costs more than the split),
  // split once per statement (a subquery): as an argument of any() it was split for every row.
  if (q.categories?.length) where.push(`r.category = any((select string_to_array(${$(q.categories.join(','))}::text, ','))::text[])`);
  if (q.from) where.push(`r.care_date >= ${$(q.from)}::date`);
  if (q.to) where.push(`r.care_date <= ${$(q.to)}::date`);
  const after = q.after;
  if (after) {
    where.push(
      after.careDate === null
        ? `r.care_date is null and r.id < ${$(after.id)}`
        : `(r.care_date < ${$(after.careDate)}::date or (r.care_date = $${values.length}::date and r.id < ${$(after.id)}) or r.care_date is null)`,
    );
  }
  const limit = $(q.limit + 1);
  const shape = `${patients.length}${q.currentOnly ? 'c' : ''}${q.categories?.length ? 'k' : ''}${q.from ? 'f' : ''}${q.to ? 't' : ''}${after ? (after.careDate === null ? 'n' : 'a') : ''}`;
  // Rows as arrays (see preparedRows), in the order of the select list.
  const rows = (await preparedRows(
    db,
    // One statement for both forms: the bytes column is chosen per run (preparedRows), not by its text.
    `patient-records-${shape}`,
    `select r.id, r.facility_id, r.patient_id, r.data_type, r.category, r.care_date::text as care_date, r.order_no, r.message_ts,
       r.department, r.condition_flag, r.sha256, r.path, r.content::text as content_json
     from (values ${who}) as p(facility_id, patient_id, published_seq)
     join record as r on r.facility_id = p.facility_id and r.patient_id = p.patient_id
     where ${where.join(' and ')}
     order by r.care_date desc nulls last, r.id desc limit ${limit}`,
    values,
    bytes ? 12 : undefined,
  )) as [
    id: number, facilityId: string, patientId: string | null, dataType: string | null, category: string | null, careDate: string | null,
    orderNo: string | null, timestamp: string | null, department: string | null, condition: '0' | '1' | '2' | null, sha256: string,
    path: string, contentJson: string | Buffer | null,
  ][];
  const page = rows.length > q.limit ? rows.slice(0, q.limit) : rows;
  // Empty columns as IndexedRecord has them (in place: the arrays are this call's own). Patient and
  // data type are set on every record the query can match (its patient_id is a parameter).
  for (const r of page) {
    r[6] ??= '';
    r[7] ??= '';
    r[9] ??= '1';
    r[12] ??= bytes ? Buffer.from('null') : 'null';
  }
  const last = page[page.length - 1];
  return { rows: page as IndexedRecordRow<string | Buffer>[], next: rows.length > q.limit && last ? { careDate: last[5], id: last[0] } : undefined };
}

/**
 * Adds the content: kept as the JSON text PostgreSQL returned, parsed only when something reads
 * `record` (a timeline response splices the text; FHIR and AI need the object).
 */
export function withContent(base: Omit<IndexedRecord, 'record' | 'contentJson'>, contentJson: string): IndexedRecord {
  let parsed: ClinicalRecord | undefined;
  return {
    ...base,
    contentJson,
    get record(): ClinicalRecord {
      return (parsed ??= JSON.parse(contentJson) as ClinicalRecord);
    },
  };
}

/** Counts of visible current records per category over a date range (all facilities). */
export async function countByCategory(db: Db, range: { from: string; to: string }): Promise<{ category: string; count: number }[]> {
  const rows = await db
    .selectFrom('record as r')
    .innerJoin('record_index_state as s', 's.facility_id', 'r.facility_id')
    .select(['r.category', (eb) => eb.fn.countAll<number>().as('count')])
    .where(visible(true))
    .where('r.care_date', '>=', range.from)
    .where('r.care_date', '<=', range.to)
    .groupBy('r.category')
    .orderBy('r.category')
    .execute();
  return rows.map((r) => ({ category: r.category ?? 'unknown', count: Number(r.count) }));
}

/** What a facility's published state holds, path by path (for checks and tools). */
export async function publishedFiles(db: Db, facilityId: string): Promise<{ path: string; sha256: string; status: 'ok' | 'flagged'; condition: string | null }[]> {
  const rows = await db
    .selectFrom('record as r')
    .innerJoin('record_index_state as s', 's.facility_id', 'r.facility_id')
    .select(['r.path', 'r.sha256', 'r.status', 'r.condition_flag'])
    .where('r.facility_id', '=', facilityId)
    .where('r.added_seq', '<=', (eb) => eb.ref('s.published_seq'))
    .where((eb) => eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', eb.ref('s.published_seq'))]))
    .orderBy('r.path')
    .execute();
  return rows.map((r) => ({ path: r.path, sha256: r.sha256, status: r.status, condition: r.condition_flag }));
}

export async function publishedState(db: Db, facilityId: string) {
  return db.selectFrom('record_index_state').selectAll().where('facility_id', '=', facilityId).executeTakeFirst();
}

// ---------------------------------------------------------------------------------------------
// Quality report

export interface QualityReport {
  facilityId: string;
  snapshotId: string | null;
  scope: 'snapshot' | 'published';
  files: number;
  flagged: number;
  counts: { severity: string; code: string; count: number }[];
  findings: { path: string; severity: string; code: string; reason: string; field: string | null; byteOffset: number | null }[];
}

/**
 * Findings of a facility: of the files new in one snapshot (`snapshotId`), or of every file in
 * the facility's published state (the default).
 */
export async function qualityReport(db: Db, facilityId: string, snapshotId: string | undefined, limit = 10_000): Promise<QualityReport> {
  const state = await publishedState(db, facilityId);
  const scope: QualityReport['scope'] = snapshotId ? 'snapshot' : 'published';
  const publishedSeq = state?.published_seq ?? 0;
  const base = db
    .selectFrom('record_finding as f')
    .innerJoin('record as r', 'r.id', 'f.record_id')
    .where('f.facility_id', '=', facilityId)
    .where((eb) =>
      snapshotId
        ? eb('r.snapshot_id', '=', snapshotId)
        : eb.and([eb('r.added_seq', '<=', publishedSeq), eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', publishedSeq)])]),
    );
  const counts = await base
    .select(['f.severity', 'f.code', (eb) => eb.fn.countAll<number>().as('count')])
    .groupBy(['f.severity', 'f.code'])
    .orderBy('f.severity')
    .orderBy(sql`count(*) desc`)
    .orderBy('f.code')
    .execute();
  const findings = await base
    .select(['f.path', 'f.severity', 'f.code', 'f.reason', 'f.field', 'f.byte_offset'])
    .orderBy('f.path')
    .orderBy('f.id')
    .limit(limit)
    .execute();
  const files = await db
    .selectFrom('record as r')
    .select([(eb) => eb.fn.countAll<number>().as('files'), sql<number>`count(*) filter (where r.status = 'flagged')`.as('flagged')])
    .where('r.facility_id', '=', facilityId)
    .where((eb) =>
      snapshotId
        ? eb('r.snapshot_id', '=', snapshotId)
        : eb.and([eb('r.added_seq', '<=', publishedSeq), eb.or([eb('r.removed_seq', 'is', null), eb('r.removed_seq', '>', publishedSeq)])]),
    )
    .executeTakeFirst();
  return {
    facilityId,
    snapshotId: snapshotId ?? state?.published_snapshot_id ?? null,
    scope,
    files: Number(files?.files ?? 0),
    flagged: Number(files?.flagged ?? 0),
    counts: counts.map((c) => ({ severity: c.severity, code: c.code, count: Number(c.count) })),
    findings: findings.map((f) => ({ path: f.path, severity: f.severity, code: f.code, reason: f.reason, field: f.field, byteOffset: f.byte_offset })),
  };
}

/**
 * Snapshots of the backup store whose indexing has not finished (never started, or a run left
 * running by a process that died), oldest first: the catch-up sweep enqueues them.
 */
export async function unindexedSnapshots(db: Db, limit = 10_000): Promise<string[]> {
  const rows = await db
    .selectFrom('snapshot as s')
    .leftJoin('record_index_run as r', 'r.snapshot_id', 's.id')
    .select('s.id')
    .where((eb) => eb.or([eb('r.snapshot_id', 'is', null), eb('r.state', '=', 'running')]))
    .orderBy('s.created_at')
    .orderBy('s.id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}
