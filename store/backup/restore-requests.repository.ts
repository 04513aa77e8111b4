import type { Generated } from 'kysely';
import type { Db } from '../db.js';

/** The restore_request table (migration 0007). */
export interface RestoreRequestTable {
  id: string;
  facility_id: string;
  snapshot_id: string;
  patients: string[] | null;
  mode: string;
  path: string | null;
  state: string;
  reason: string | null;
  priority: number;
  files_done: Generated<number>;
  bytes_done: Generated<number>;
  files_total: number | null;
  bytes_total: number | null;
  user_id: number | null;
  username: string;
  user_facility_id: string | null;
  role: string;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
}

export interface RestoreRequestTables {
  restore_request: RestoreRequestTable;
}

export const RESTORE_STATES = ['queued', 'running', 'ready', 'failed'] as const;
export type RestoreState = (typeof RESTORE_STATES)[number];
export type RestoreMode = 'download' | 'path';

export interface RestoreRequest {
  id: string;
  facilityId: string;
  snapshotId: string;
  patients: string[] | null;
  mode: RestoreMode;
  path: string | null;
  state: RestoreState;
  reason: string | null;
  priority: number;
  progress: { files: number; bytes: number; totalFiles: number | null; totalBytes: number | null };
  requestedBy: { userId: number | null; username: string; facilityId: string | null; role: string };
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

type Row = { [K in keyof RestoreRequestTable]: RestoreRequestTable[K] extends Generated<infer T> ? T : RestoreRequestTable[K] };

function toRequest(r: Row): RestoreRequest {
  return {
    id: r.id,
    facilityId: r.facility_id,
    snapshotId: r.snapshot_id,
    patients: r.patients,
    mode: r.mode as RestoreMode,
    path: r.path,
    state: r.state as RestoreState,
    reason: r.reason,
    priority: r.priority,
    progress: { files: Number(r.files_done), bytes: Number(r.bytes_done), totalFiles: r.files_total, totalBytes: r.bytes_total },
    requestedBy: { userId: r.user_id, username: r.username, facilityId: r.user_facility_id, role: r.role },
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    finishedAt: r.finished_at,
  };
}

export async function insertRestoreRequest(
  db: Db,
  r: Pick<RestoreRequest, 'id' | 'facilityId' | 'snapshotId' | 'patients' | 'mode' | 'path' | 'priority' | 'requestedBy'>,
  at: Date,
): Promise<RestoreRequest> {
  const row = await db
    .insertInto('restore_request')
    .values({
      id: r.id,
      facility_id: r.facilityId,
      snapshot_id: r.snapshotId,
      patients: r.patients === null ? null : JSON.stringify(r.patients) as unknown as string[],
      mode: r.mode,
      path: r.path,
      state: 'queued',
      reason: null,
      priority: r.priority,
      files_total: null,
      bytes_total: null,
      user_id: r.requestedBy.userId,
      username: r.requestedBy.username,
      user_facility_id: r.requestedBy.facilityId,
      role: r.requestedBy.role,
      created_at: at,
      updated_at: at,
      finished_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toRequest(row);
}

export async function findRestoreRequest(db: Db, id: string): Promise<RestoreRequest | undefined> {
  const r = await db.selectFrom('restore_request').selectAll().where('id', '=', id).executeTakeFirst();
  return r && toRequest(r);
}

/** Moves a queued (or, on a retry, running) request to running; false when it is already finished. */
export async function startRestoreRequest(db: Db, id: string, at: Date): Promise<boolean> {
  const r = await db
    .updateTable('restore_request')
    .set({ state: 'running', updated_at: at, files_done: 0, bytes_done: 0 })
    .where('id', '=', id)
    .where('state', 'in', ['queued', 'running'])
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function setRestoreProgress(
  db: Db,
  id: string,
  p: { files: number; bytes: number; totalFiles?: number; totalBytes?: number },
  at: Date,
): Promise<void> {
  await db
    .updateTable('restore_request')
    .set({
      files_done: p.files,
      bytes_done: p.bytes,
      ...(p.totalFiles !== undefined ? { files_total: p.totalFiles } : {}),
      ...(p.totalBytes !== undefined ? { bytes_total: p.totalBytes } : {}),
      updated_at: at,
    })
    .where('id', '=', id)
    .execute();
}

export async function finishRestoreRequest(db: Db, id: string, state: 'ready' | 'failed', reason: string | null, at: Date): Promise<void> {
  await db.updateTable('restore_request').set({ state, reason, updated_at: at, finished_at: at }).where('id', '=', id).execute();
}
