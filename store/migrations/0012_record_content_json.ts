import { sql, type Kysely } from 'kysely';

/**
 * A record's mapped content is kept as `json` (the text as written) instead of `jsonb`. The
 * viewer sends content as it is stored; from jsonb PostgreSQL must rebuild the text of every
 * document on every read (jsonb_out: about 0.08 ms of server CPU for a 4 KB prescription, most
 * of a timeline request's database time), from json it only copies it. Nothing queries inside
 * the content, which is what jsonb is for. Rewrites the table once (minutes at millions of rows).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table record alter column content type json using content::json`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table record alter column content type jsonb using content::jsonb`.execute(db);
}
