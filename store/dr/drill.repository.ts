import { sql } from 'kysely';
import type { Db } from '../db.js';

/** The history of restore drills and sampled verifications (table drill, migration 0008). */

export interface DrillDamage {
  /** Files that did not come back as the snapshot has them. */
  files: { path: string; sha256: string; reason: string }[];
  /** Every snapshot that holds a damaged blob, with the paths where it does. */
  snapshots: { snapshotId: string; facilityId: string; paths: string[] }[];
  /** Pack objects missing (sampled verification). */
  missingPacks?: string[];
}

export interface DrillRecord {
  id: number;
  kind: 'restore' | 'verify';
  facilityId: string | null;
  snapshotId: string | null;
  nightlyDate: string | null;
  outcome: 'passed' | 'damaged' | 'failed';
  startedAt: Date;
  durationMs: number;
  files: number;
  bytes: number;
  damage: DrillDamage | null;
  detail: string | null;
}

export async function insertDrill(db: Db, d: Omit<DrillRecord, 'id'>): Promise<DrillRecord> {
  const row = await db
    .insertInto('drill')
    .values({
      kind: d.kind,
      facility_id: d.facilityId,
      snapshot_id: d.snapshotId,
      nightly_date: d.nightlyDate,
      outcome: d.outcome,
      started_at: d.startedAt,
      duration_ms: d.durationMs,
      files: d.files,
      bytes: d.bytes,
      damage: d.damage ? JSON.stringify(d.damage) : null,
      detail: d.detail,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { ...d, id: row.id };
}

export async function listDrills(db: Db, limit: number): Promise<DrillRecord[]> {
  const rows = await db.selectFrom('drill').selectAll().orderBy('started_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    facilityId: r.facility_id,
    snapshotId: r.snapshot_id,
    nightlyDate: r.nightly_date,
    outcome: r.outcome,
    startedAt: r.started_at,
    durationMs: r.duration_ms,
    files: r.files,
    bytes: r.bytes,
    damage: (typeof r.damage === 'string' ? JSON.parse(r.damage) : r.damage) as DrillDamage | null,
    detail: r.detail,
  }));
}

/** Facilities with at least one snapshot, and their distinct nights, for picking a drill at random. */
export async function drillCandidates(db: Db): Promise<{ facilityId: string; nights: string[] }[]> {
  const r = await sql<{ facility_id: string; nights: string[] }>`
    select facility_id, array_agg(distinct nightly_date order by nightly_date) as nights
    from snapshot group by facility_id order by facility_id`.execute(db);
  return r.rows.map((x) => ({ facilityId: x.facility_id, nights: x.nights }));
}
