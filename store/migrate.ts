import { Migrator, type MigrationResultSet } from 'kysely';
import type { Db } from './db.js';
import { migrations } from './migrations/index.js';

export interface MigrationReport {
  applied: string[];
  pending: string[];
}

/** Brings the schema up to date; throws with the failing migration's name on error. */
export async function migrateToLatest(db: Db): Promise<MigrationReport> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'hakobune_migration',
    migrationLockTableName: 'hakobune_migration_lock',
    // Numbers are handed out ahead to features built side by side: a database that already ran a
    // later one must still take an earlier one that lands after it.
    allowUnorderedMigrations: true,
  });
  const result: MigrationResultSet = await migrator.migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    const cause = result.error instanceof Error ? result.error.message : String(result.error);
    throw new Error(`migration ${failed} failed: ${cause}`);
  }
  const applied = (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
  return { applied, pending: [] };
}
