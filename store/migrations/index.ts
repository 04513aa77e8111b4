import type { Migration } from 'kysely';
import * as m0001_backup from './0001_backup.js';
import * as m0002_records from './0002_records.js';
import * as m0003_identity_consent from './0003_identity_consent.js';
import * as m0004_viewer from './0004_viewer.js';
import * as m0005_dr from './0005_dr.js';
import * as m0006_ai from './0006_ai.js';
import * as m0007_restore_requests from './0007_restore_requests.js';
import * as m0008_retention_drills from './0008_retention_drills.js';
import * as m0009_patient_name_search from './0009_patient_name_search.js';
import * as m0012_record_content_json from './0012_record_content_json.js';
import * as m0013_blob_index_hash from './0013_blob_index_hash.js';
import * as m0014_tree_hash_index from './0014_tree_hash_index.js';
import * as m0015_identity_match_runs from './0015_identity_match_runs.js';

/**
 * The exchange's migrations, in order. Each is frozen once it has landed: a change to the schema
 * is a new migration added at the end, never an edit of an old one. Migrations use Kysely<any>
 * so that they do not change meaning when the table types in code move on.
 */
export const migrations: Record<string, Migration> = {
  '0001_backup': m0001_backup,
  '0002_records': m0002_records,
  '0003_identity_consent': m0003_identity_consent,
  '0004_viewer': m0004_viewer,
  '0005_dr': m0005_dr,
  '0006_ai': m0006_ai,
  '0007_restore_requests': m0007_restore_requests,
  '0008_retention_drills': m0008_retention_drills,
  '0009_patient_name_search': m0009_patient_name_search,
  '0012_record_content_json': m0012_record_content_json,
  '0013_blob_index_hash': m0013_blob_index_hash,
  '0014_tree_hash_index': m0014_tree_hash_index,
  '0015_identity_match_runs': m0015_identity_match_runs,
};
