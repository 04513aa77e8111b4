import { sql } from 'kysely';
import type { Db } from '../db.js';
import { nextPackRange } from '../backup/backup.repository.js';

/**
 * Every SQL statement of replication: a consistent export of what a restore needs, page by
 * page, and its import into an empty database at the second site. Rows travel as plain JSON
 * values (bytea as base64, times as ISO strings), so an export is readable with ordinary tools.
 */

export type Row = Record<string, unknown>;

/** The tables a restore needs, in import order (references first), with their key for paging. */
export const REPLICATED_TABLES = [
  { table: 'facility', key: 'id', columns: ['id', 'name', 'kind', 'created_at'] },
  { table: 'compression_dictionary', key: 'id', columns: ['id', 'hash', 'content', 'sample_blobs', 'created_at'] },
  { table: 'pack', key: 'id', columns: ['id', 'hash', 'object_name', 'size', 'blob_count', 'created_at'] },
  // Blobs page by whole packs (see pageRows): the hash index on their hash has no order.
  { table: 'blob', key: 'pack_id', columns: ['sha256', 'size', 'pack_id', 'offset', 'length', 'codec', 'dictionary_id'] },
  // Trees page by ranges of heap blocks (see pageRows): the hash index on their hash has no order.
  { table: 'tree', key: 'ctid', columns: ['hash', 'content'] },
  {
    table: 'upload',
    key: 'id',
    columns: ['id', 'facility_id', 'client_session', 'base_snapshot_id', 'state', 'entries', 'blobs_stored', 'bytes_stored', 'snapshot_id', 'created_at', 'updated_at', 'finished_at'],
  },
  { table: 'snapshot', key: 'id', columns: ['id', 'facility_id', 'root_tree', 'files', 'bytes', 'new_blobs', 'new_bytes', 'upload_id', 'nightly_date', 'created_at'] },
  { table: 'pack_key', key: 'object_name', columns: ['object_name', 'key_id', 'wrapped_dek', 'plain_size', 'created_at', 'rotated_at'] },
] as const;

export type ReplicatedTable = (typeof REPLICATED_TABLES)[number];

const BYTEA = new Set(['content', 'sha256', 'hash:tree', 'root_tree', 'wrapped_dek']);

function isBytea(table: string, column: string): boolean {
  return BYTEA.has(column) || BYTEA.has(`${column}:${table}`);
}

/** JSON form of a row (bytea -> base64, Date -> ISO). */
function encodeRow(t: ReplicatedTable, r: Row): Row {
  const out: Row = {};
  for (const c of t.columns) {
    const v = r[c];
    out[c] = Buffer.isBuffer(v) ? v.toString('base64') : v instanceof Date ? v.toISOString() : v;
  }
  return out;
}

function decodeValue(t: ReplicatedTable, c: string, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (isBytea(t.table, c)) return Buffer.from(String(v), 'base64');
  return v;
}

/**
 * A page of one table's rows after `after` (in key order; blobs by pack range, trees by heap
 * block range), empty after the last. Only committed uploads are exported: open ones hold no
 * snapshot and their staging is not replicated.
 */
export async function pageRows(db: Db, t: ReplicatedTable, after: unknown, limit: number): Promise<{ rows: Row[]; last: unknown }> {
  const cols = sql.join(t.columns.map((c) => sql.ref(c)));
  if (t.table === 'blob') {
    // Whole packs at a time; a pack can hold no indexed blob (another upload claimed them all),
    // and an empty page would end the caller's walk.
    for (let range = await nextPackRange(db, Number(after ?? 0), limit); range; range = await nextPackRange(db, range.to, limit)) {
      const r = await sql<Row>`select ${cols} from blob where pack_id between ${range.from} and ${range.to} order by pack_id, "offset"`.execute(db);
      if (r.rows.length) return { rows: r.rows.map((x) => encodeRow(t, x)), last: range.to };
    }
    return { rows: [], last: after };
  }
  if (t.table === 'tree') {
    // Ranges of heap blocks, read by a TID range scan. The export runs in one repeatable-read
    // transaction, which sees each block's rows as of one instant and whose lock keeps any
    // rewrite of the table (which would move rows) out until it ends; trees are never updated.
    const blocks = Math.max(1, Math.floor(limit / 64));
    const r = await sql<{ n: number }>`select (pg_relation_size('tree') / current_setting('block_size')::int)::int8 as n`.execute(db);
    for (let from = Number(after ?? 0); from < r.rows[0]!.n; from += blocks) {
      const page = await sql<Row>`
        select ${cols} from tree where ctid >= ${`(${from},0)`}::tid and ctid < ${`(${from + blocks},0)`}::tid`.execute(db);
      if (page.rows.length) return { rows: page.rows.map((x) => encodeRow(t, x)), last: from + blocks };
    }
    return { rows: [], last: after };
  }
  const keyRef = sql.ref(t.key);
  const cond = after === undefined ? sql`true` : sql`${keyRef} > ${after}`;
  const extra = t.table === 'upload' ? sql`and state = 'committed'` : sql``;
  const r = await sql<Row>`select ${cols} from ${sql.table(t.table)} where ${cond} ${extra} order by ${keyRef} limit ${limit}`.execute(db);
  const last = r.rows.length ? r.rows[r.rows.length - 1]![t.key] : undefined;
  return { rows: r.rows.map((x) => encodeRow(t, x)), last };
}

/** Row counts of the replicated tables (what an export must hold). */
export async function countRows(db: Db, t: ReplicatedTable): Promise<number> {
  const extra = t.table === 'upload' ? sql`where state = 'committed'` : sql``;
  const r = await sql<{ n: number }>`select count(*)::int8 as n from ${sql.table(t.table)} ${extra}`.execute(db);
  return r.rows[0]!.n;
}

/** Inserts exported rows into the same table of an empty database (ids kept as they were). */
export async function insertRows(db: Db, t: ReplicatedTable, rows: Row[]): Promise<void> {
  if (rows.length === 0) return;
  const cols = sql.join(t.columns.map((c) => sql.ref(c)));
  const values = sql.join(rows.map((r) => sql`(${sql.join(t.columns.map((c) => sql`${decodeValue(t, c, r[c])}`))})`));
  await sql`insert into ${sql.table(t.table)} (${cols}) values ${values}`.execute(db);
}

/** After an import with explicit ids, serial sequences continue past them. */
export async function resetSequences(db: Db): Promise<void> {
  for (const table of ['pack', 'compression_dictionary']) {
    await sql`select setval(pg_get_serial_sequence(${table}, 'id'), coalesce((select max(id) from ${sql.table(table)}), 0) + 1, false)`.execute(db);
  }
}

/** Tables that must be empty before an import. */
export async function nonEmptyTables(db: Db): Promise<string[]> {
  const out: string[] = [];
  for (const t of REPLICATED_TABLES) {
    const r = await sql<{ n: number }>`select count(*)::int8 as n from ${sql.table(t.table)}`.execute(db);
    if (r.rows[0]!.n > 0) out.push(t.table);
  }
  return out;
}
