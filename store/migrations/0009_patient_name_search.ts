import { sql, type Kysely } from 'kysely';

/**
 * Patient search by name (consent/name-search.ts) matches a prefix of the family name, of the
 * given name or of the whole name, in kanji and in kana, of the matcher's normalised name keys
 * ("family<US>given"). One prefix-capable index per part and script lets it read only the
 * matching rows instead of every local patient of the region. The expressions here must stay
 * exactly those of name-search.ts, or the planner will not use them.
 */
const PARTS: [string, string][] = [
  ['kanji_family', `split_part(kanji_key, chr(31), 1)`],
  ['kanji_given', `split_part(kanji_key, chr(31), 2)`],
  ['kanji_whole', `replace(kanji_key, chr(31), '')`],
  ['kana_family', `split_part(kana_key, chr(31), 1)`],
  ['kana_given', `split_part(kana_key, chr(31), 2)`],
  ['kana_whole', `replace(kana_key, chr(31), '')`],
];

export async function up(db: Kysely<any>): Promise<void> {
  for (const [name, expr] of PARTS) {
    await sql.raw(`create index identity_local_patient_${name} on identity_local_patient ((${expr}) text_pattern_ops)`).execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const [name] of PARTS) await sql.raw(`drop index if exists identity_local_patient_${name}`).execute(db);
}
