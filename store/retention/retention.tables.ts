import type { ColumnType, Generated } from 'kysely';

/** Tables of retention, prune and drills (migration 0008). */
export interface RetentionTables {
  prune_object: PruneObjectTable;
  delete_nonce: DeleteNonceTable;
  drill: DrillTable;
}

export interface PruneObjectTable {
  object_name: string;
  state: 'writing' | 'condemned';
  created_at: ColumnType<Date, Date | string | undefined, never>;
}

export interface DeleteNonceTable {
  nonce: string;
  action: string;
  signed_at: Date;
  used_at: ColumnType<Date, Date | string | undefined, never>;
}

export interface DrillTable {
  id: Generated<number>;
  kind: 'restore' | 'verify';
  facility_id: string | null;
  snapshot_id: string | null;
  nightly_date: string | null;
  outcome: 'passed' | 'damaged' | 'failed';
  started_at: Date;
  duration_ms: number;
  files: number;
  bytes: number;
  damage: ColumnType<unknown, string | null, string | null>;
  detail: string | null;
}
