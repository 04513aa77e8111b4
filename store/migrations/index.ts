import type { Migration } from 'kysely';

/**
 * The exchange's migrations, in order. Each is frozen once it has landed: a change to the schema
 * is a new migration added at the end, never an edit of an old one. Migrations use Kysely<any>
 * so that they do not change meaning when the table types in code move on.
 */
export const migrations: Record<string, Migration> = {};
