import { sql, type Expression, type SqlBool } from 'kysely';
import type { Conn } from './identity.repository.js';
import { normaliseKanaName, normaliseKanjiName } from './normalise.js';

/**
 * Finds regional patients by name among the linked local patients the matcher knows
 * (identity_local_patient, fed from each facility's indexed ADT-00), normalising the query the
 * way the matcher normalises names (normalise.ts): NFKC, kanji variants unified (髙/高, 﨑/崎),
 * kana folded (hiragana/half-width to katakana, small kana, long vowels). A query part matches
 * when it starts a family name, a given name or the whole name (family then given), in kanji or
 * in kana. Only linked local IDs are searched; who may see the patients found is the gate's call.
 */

export interface NameQuery {
  /** Any part of the name, or "family given" separated by a space. */
  name?: string;
  family?: string;
  given?: string;
}

/** What a name may hold: letters and marks of any script, digits, spaces, ・ and dashes. */
export const NAME_TEXT = /^[\p{L}\p{M}\p{N}\s\u3000・ー‐－-]{1,64}$/u;

/** A LIKE pattern for "starts with v" (the name text allows no wildcard, but escape anyway). */
function prefix(v: string): string {
  return `${v.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

interface Forms {
  kanji: string;
  kana: string;
}

function forms(s: string): Forms {
  return { kanji: normaliseKanjiName(s), kana: normaliseKanaName(s) };
}

/** The normalised forms of each part of a query; empty when a part normalises to nothing. */
export function normaliseNameQuery(q: NameQuery): { name: Forms[]; family: Forms | undefined; given: Forms | undefined } {
  const parts = (q.name ?? '').split(/[\s\u3000]+/).filter(Boolean).map(forms);
  return {
    name: parts,
    family: q.family === undefined ? undefined : forms(q.family),
    given: q.given === undefined ? undefined : forms(q.given),
  };
}

export async function findPatientsByName(db: Conn, q: NameQuery, limit: number): Promise<string[]> {
  const n = normaliseNameQuery(q);
  const empty = (f: Forms | undefined) => f !== undefined && !f.kanji && !f.kana;
  if ((q.name !== undefined && n.name.length === 0) || n.name.some((f) => !f.kanji && !f.kana) || empty(n.family) || empty(n.given)) return [];
  if (n.name.length === 0 && !n.family && !n.given) return [];

  // For each script: family part, given part and the whole name of a key "family<US>given". The
  // expressions are those of the prefix indexes of migration 0009, written out the same way.
  const conds = (key: 'kanji_key' | 'kana_key', pick: (f: Forms) => string): Expression<SqlBool> | undefined => {
    const fam = sql.raw(`split_part(p.${key}, chr(31), 1)`);
    const giv = sql.raw(`split_part(p.${key}, chr(31), 2)`);
    const whole = sql.raw(`replace(p.${key}, chr(31), '')`);
    const all: Expression<SqlBool>[] = [sql<SqlBool>`${sql.ref(`p.${key}`)} <> ''`];
    if (n.name.length === 1) {
      const v = pick(n.name[0]!);
      if (!v) return undefined;
      all.push(sql<SqlBool>`(${fam} like ${prefix(v)} or ${giv} like ${prefix(v)} or ${whole} like ${prefix(v)})`);
    } else if (n.name.length >= 2) {
      // "family given": the first part is the family name, the rest the given name.
      const f = pick(n.name[0]!);
      const g = n.name.slice(1).map(pick).join('');
      if (!f || !g) return undefined;
      all.push(sql<SqlBool>`(${fam} like ${prefix(f)} and ${fam} = ${f} and ${giv} like ${prefix(g)})`);
    }
    if (n.family) {
      const v = pick(n.family);
      if (!v) return undefined;
      all.push(sql<SqlBool>`${fam} like ${prefix(v)}`);
    }
    if (n.given) {
      const v = pick(n.given);
      if (!v) return undefined;
      all.push(sql<SqlBool>`${giv} like ${prefix(v)}`);
    }
    return sql<SqlBool>`(${sql.join(all, sql` and `)})`;
  };
  const either = [conds('kanji_key', (f) => f.kanji), conds('kana_key', (f) => f.kana)].filter((c): c is Expression<SqlBool> => !!c);
  if (either.length === 0) return [];
  const rows = await db
    .selectFrom('identity_local_patient as p')
    .innerJoin('identity_link as l', (j) => j.onRef('l.facility_id', '=', 'p.facility_id').onRef('l.local_id', '=', 'p.local_id'))
    .select('l.regional_id')
    .distinct()
    .where(sql<SqlBool>`(${sql.join(either, sql` or `)})`)
    .orderBy('l.regional_id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.regional_id);
}
