import type { ColumnType, Generated } from 'kysely';

/** Tables of the record index (clinical records and data quality); made by migration 0002. */
export interface RecordTables {
  record_index_state: RecordIndexStateTable;
  record_index_run: RecordIndexRunTable;
  record: RecordTable;
  record_finding: RecordFindingTable;
}

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface RecordIndexStateTable {
  facility_id: string;
  published_seq: Generated<number>;
  published_snapshot_id: string | null;
  published_at: Timestamp | null;
}

export interface RecordIndexRunTable {
  snapshot_id: string;
  facility_id: string;
  seq: number;
  snapshot_created_at: Timestamp;
  state: 'running' | 'done' | 'superseded';
  checkpoint_path: string | null;
  files_seen: Generated<number>;
  files_new: Generated<number>;
  files_removed: Generated<number>;
  records_ok: Generated<number>;
  records_flagged: Generated<number>;
  findings: Generated<number>;
  attempts: Generated<number>;
  started_at: Generated<Date>;
  heartbeat_at: Generated<Date>;
  finished_at: Timestamp | null;
}

export interface RecordTable {
  id: Generated<number>;
  facility_id: string;
  path: string;
  sha256: string;
  added_seq: number;
  removed_seq: number | null;
  snapshot_id: string;
  patient_id: string | null;
  data_type: string | null;
  category: string | null;
  /** YYYY-MM-DD; read back as a string (see records.repository.ts). */
  care_date: ColumnType<string | null, string | null, string | null>;
  order_no: string | null;
  message_ts: string | null;
  department: string | null;
  condition_flag: '0' | '1' | '2' | null;
  status: 'ok' | 'flagged';
  /** The mapped ClinicalRecord (json since migration 0012: kept as the text written). */
  content: ColumnType<unknown, string | null, string | null>;
}

export interface RecordFindingTable {
  id: Generated<number>;
  record_id: number;
  facility_id: string;
  snapshot_id: string;
  path: string;
  severity: 'error' | 'warning';
  code: string;
  reason: string;
  field: string | null;
  byte_offset: number | null;
}
