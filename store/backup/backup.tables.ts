import type { ColumnType, Generated } from 'kysely';
import type { FacilityKind } from '../facility-kind.js';

/** Tables of the backup store (facilities, blobs, packs, trees, snapshots, uploads). */
export interface BackupTables {
  facility: FacilityTable;
  uploader_credential: UploaderCredentialTable;
  compression_dictionary: CompressionDictionaryTable;
  pack: PackTable;
  blob: BlobTable;
  tree: TreeTable;
  upload: UploadTable;
  upload_entry: UploadEntryTable;
  snapshot: SnapshotTable;
}

type CreatedAt = ColumnType<Date, Date | string | undefined, never>;

export interface FacilityTable {
  id: string;
  name: string;
  kind: FacilityKind;
  created_at: CreatedAt;
}

export interface UploaderCredentialTable {
  id: Generated<number>;
  facility_id: string;
  token_hash: Buffer;
  created_at: CreatedAt;
  revoked_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface CompressionDictionaryTable {
  id: Generated<number>;
  hash: string;
  content: Buffer;
  sample_blobs: number;
  created_at: CreatedAt;
}

export interface PackTable {
  id: Generated<number>;
  hash: string;
  object_name: string;
  size: number;
  blob_count: number;
  created_at: CreatedAt;
}

export interface BlobTable {
  sha256: Buffer;
  size: number;
  pack_id: number;
  offset: number;
  length: number;
  /** 0 raw, 1 raw deflate. */
  codec: number;
  dictionary_id: number | null;
}

export interface TreeTable {
  hash: Buffer;
  content: Buffer;
}

export interface UploadTable {
  id: string;
  facility_id: string;
  client_session: string;
  base_snapshot_id: string | null;
  state: 'open' | 'committed' | 'aborted';
  entries: Generated<number>;
  blobs_stored: Generated<number>;
  bytes_stored: Generated<number>;
  snapshot_id: string | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
  finished_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface UploadEntryTable {
  upload_id: string;
  path: string;
  size: number | null;
  mtime: number | null;
  sha256: Buffer | null;
  deleted: Generated<boolean>;
}

export interface SnapshotTable {
  id: string;
  facility_id: string;
  root_tree: Buffer;
  files: number;
  bytes: number;
  new_blobs: number;
  new_bytes: number;
  upload_id: string;
  /** The Asia/Tokyo calendar date of the upload, 'YYYY-MM-DD'. */
  nightly_date: ColumnType<string, string, never>;
  created_at: CreatedAt;
}
