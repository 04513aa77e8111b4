import type { BackupTables } from './backup/backup.tables.js';
import type { RecordTables } from './records/records.tables.js';
import type { ConsentTables } from '../consent/consent.tables.js';
import type { ViewerTables } from '../viewer-api/viewer.tables.js';
import type { DrTables } from './dr/dr.tables.js';
import type { AiTables } from '../viewer-api/ai/ai.tables.js';
import type { RestoreRequestTables } from './backup/restore-requests.repository.js';
import type { RetentionTables } from './retention/retention.tables.js';

/**
 * Every table of the exchange, as Kysely sees it. Each feature declares its own tables beside
 * its code; the schema itself is made by the migrations in store/migrations.
 */
export interface Database extends BackupTables, RecordTables, ConsentTables, ViewerTables, DrTables, AiTables, RestoreRequestTables, RetentionTables {}
