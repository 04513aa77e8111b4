import {
  jaroWinkler,
  normaliseAddress,
  normaliseKanaName,
  normaliseKanjiName,
  normalisePhone,
  normalisePostalCode,
  type NormalisedAddress,
} from './normalise.js';
import type { Link, LocalKey } from './model.js';

/**
 * Candidate matching of facility-local patients (名寄せ): blocking, then a Fellegi-Sunter style
 * score (sums of agreement / disagreement weights, in points). Pure and deterministic: the same
 * records in any order give the same candidates in the same order.
 */

export type Sex = 'M' | 'F' | 'O' | 'U';

/** What a facility's ADT-00 (PID) says about its patient. */
export interface IdentityRecord extends LocalKey {
  familyKanji: string;
  givenKanji: string;
  familyKana: string;
  givenKana: string;
  /** YYYYMMDD */
  birthDate: string;
  sex: Sex;
  postalCode: string;
  address: string;
  phone: string;
}

export interface NormalisedRecord extends LocalKey {
  key: string;
  fam: string;
  giv: string;
  famKana: string;
  givKana: string;
  birth: string;
  sex: Sex;
  postal: string;
  phone: string;
  addr: NormalisedAddress;
  /** The address without its last number (the same building block, another house or room). */
  addrBlock: string;
}

export function localKey(k: LocalKey): string {
  return `${k.facilityId}\u0000${k.localId}`;
}

/** A pair's key that does not depend on the order of its members. */
export function pairKey(a: LocalKey, b: LocalKey): string {
  const ka = localKey(a);
  const kb = localKey(b);
  return ka < kb ? `${ka}\u0001${kb}` : `${kb}\u0001${ka}`;
}

export function normaliseRecord(r: IdentityRecord): NormalisedRecord {
  const birth = (r.birthDate ?? '').replace(/\D/g, '');
  let familyKana = r.familyKana ?? '';
  let givenKana = r.givenKana ?? '';
  const addr = normaliseAddress(r.address);
  // Systems with one kana field keep the whole name there, family and given split by a space.
  if (!givenKana.trim()) {
    const parts = familyKana.trim().split(/[\s\u3000]+/);
    if (parts.length === 2) [familyKana, givenKana] = parts as [string, string];
  }
  return {
    facilityId: r.facilityId,
    localId: r.localId,
    key: localKey(r),
    fam: normaliseKanjiName(r.familyKanji),
    giv: normaliseKanjiName(r.givenKanji),
    famKana: normaliseKanaName(familyKana),
    givKana: normaliseKanaName(givenKana),
    birth: birth.length === 8 ? birth : '',
    sex: r.sex === 'M' || r.sex === 'F' || r.sex === 'O' ? r.sex : 'U',
    postal: normalisePostalCode(r.postalCode),
    phone: normalisePhone(r.phone),
    addr,
    addrBlock: addr.rest.replace(/-\d+$/, ''),
  };
}

export type MatchReason =
  | 'birth-date-same'
  | 'birth-date-typo'
  | 'birth-date-differs'
  | 'sex-same'
  | 'sex-differs'
  | 'given-same'
  | 'given-kana-same'
  | 'given-similar'
  | 'given-differs'
  | 'family-same'
  | 'family-kana-same'
  | 'family-similar'
  | 'family-changed'
  | 'phone-same'
  | 'postal-same'
  | 'postal-differs'
  | 'address-same'
  | 'address-same-block'
  | 'address-same-city'
  | 'address-differs';

export interface PairScore {
  score: number;
  reasons: MatchReason[];
}

/** Two dates that differ by one digit or by two swapped digits (a keying error). */
function dateTypo(a: string, b: string): boolean {
  let diff = 0;
  const pos: number[] = [];
  for (let i = 0; i < 8; i++) {
    if (a[i] !== b[i]) {
      diff++;
      pos.push(i);
    }
  }
  if (diff === 1) return true;
  if (diff === 2 && pos[1] === pos[0] + 1 && a[pos[0]] === b[pos[1]] && a[pos[1]] === b[pos[0]]) return true;
  // Month and day swapped (e.g. 0312 / 1203).
  return a.slice(0, 4) === b.slice(0, 4) && a.slice(4, 6) === b.slice(6, 8) && a.slice(6, 8) === b.slice(4, 6);
}

/**
 * Weights in points. A true pair agreeing on everything scores 30; twins (same family name,
 * birth date, address, phone; different given names) stay at 3; a married woman who moved (new
 * family name, address and phone; same given name and birth date) scores 12 and goes to review.
 * Addresses and phones change over a life, so their disagreement costs nothing.
 */
export const WEIGHTS = {
  birthSame: 6,
  birthTypo: 1,
  birthDiffers: -8,
  sexSame: 1,
  sexDiffers: -4,
  givenSame: 7,
  givenKanaSame: 6,
  // Same reading, other kanji (陽子/洋子): a keying slip or a sibling; a person decides.
  givenKanaSameKanjiDiffers: 0,
  givenSimilar: 3,
  givenDiffers: -20,
  familySame: 5,
  familyKanaSame: 4,
  familySimilar: 2,
  familyChanged: -2,
  phoneSame: 5,
  postalSame: 2,
  postalDiffers: 0,
  addressSame: 4,
  addressSameBlock: 3,
  addressSameCity: 1,
  addressDiffers: 0,
} as const;

function nameScore(
  kanjiA: string,
  kanjiB: string,
  kanaA: string,
  kanaB: string,
  w: { same: number; kanaSame: number; kanaSameKanjiDiffers: number; similar: number; differs: number },
): { points: number; verdict: 'same' | 'kana-same' | 'similar' | 'differs' | 'unknown' } {
  const haveKanji = kanjiA !== '' && kanjiB !== '';
  const haveKana = kanaA !== '' && kanaB !== '';
  if (haveKanji && kanjiA === kanjiB) return { points: w.same, verdict: 'same' };
  if (haveKana && kanaA === kanaB) {
    return haveKanji ? { points: w.kanaSameKanjiDiffers, verdict: 'kana-same' } : { points: w.kanaSame, verdict: 'kana-same' };
  }
  if (!haveKanji && !haveKana) return { points: 0, verdict: 'unknown' };
  // A one-character slip: kana similarity (ユウコ/ユコ, ヤマサキ/ヤマザキ is already folded) or
  // a kanji that differs in one of two-three characters with the same reading unknown.
  const kanaSim = haveKana ? jaroWinkler(kanaA, kanaB) : 0;
  const kanjiSim = haveKanji ? jaroWinkler(kanjiA, kanjiB) : 0;
  if (kanaSim >= 0.9 || (kanjiSim >= 0.8 && (!haveKana || kanaSim >= 0.8))) return { points: w.similar, verdict: 'similar' };
  return { points: w.differs, verdict: 'differs' };
}

export function scorePair(a: NormalisedRecord, b: NormalisedRecord): PairScore {
  const W = WEIGHTS;
  const reasons: MatchReason[] = [];
  let score = 0;

  if (a.birth && b.birth) {
    if (a.birth === b.birth) {
      score += W.birthSame;
      reasons.push('birth-date-same');
    } else if (dateTypo(a.birth, b.birth)) {
      score += W.birthTypo;
      reasons.push('birth-date-typo');
    } else {
      score += W.birthDiffers;
      reasons.push('birth-date-differs');
    }
  }
  if (a.sex !== 'U' && b.sex !== 'U') {
    if (a.sex === b.sex) {
      score += W.sexSame;
      reasons.push('sex-same');
    } else {
      score += W.sexDiffers;
      reasons.push('sex-differs');
    }
  }

  const given = nameScore(a.giv, b.giv, a.givKana, b.givKana, {
    same: W.givenSame,
    kanaSame: W.givenKanaSame,
    kanaSameKanjiDiffers: W.givenKanaSameKanjiDiffers,
    similar: W.givenSimilar,
    differs: W.givenDiffers,
  });
  score += given.points;
  if (given.verdict !== 'unknown') {
    reasons.push(given.verdict === 'same' ? 'given-same' : given.verdict === 'kana-same' ? 'given-kana-same' : given.verdict === 'similar' ? 'given-similar' : 'given-differs');
  }

  const family = nameScore(a.fam, b.fam, a.famKana, b.famKana, {
    same: W.familySame,
    kanaSame: W.familyKanaSame,
    kanaSameKanjiDiffers: W.familyKanaSame - 1,
    similar: W.familySimilar,
    differs: W.familyChanged,
  });
  score += family.points;
  if (family.verdict !== 'unknown') {
    // A different family name with the same given name and birth date is most often a marriage
    // (or divorce): weakly negative, flagged for the reviewer, never enough to auto-link alone.
    reasons.push(family.verdict === 'same' ? 'family-same' : family.verdict === 'kana-same' ? 'family-kana-same' : family.verdict === 'similar' ? 'family-similar' : 'family-changed');
  }

  if (a.phone.length >= 10 && a.phone === b.phone) {
    score += W.phoneSame;
    reasons.push('phone-same');
  }
  if (a.postal.length === 7 && b.postal.length === 7) {
    if (a.postal === b.postal) {
      score += W.postalSame;
      reasons.push('postal-same');
    } else {
      score += W.postalDiffers;
      reasons.push('postal-differs');
    }
  }
  if (a.addr.key && b.addr.key) {
    if (a.addr.key === b.addr.key) {
      score += W.addressSame;
      reasons.push('address-same');
    } else if (a.addr.city && a.addr.city === b.addr.city) {
      if (a.addrBlock && a.addrBlock === b.addrBlock) {
        score += W.addressSameBlock;
        reasons.push('address-same-block');
      } else {
        score += W.addressSameCity;
        reasons.push('address-same-city');
      }
    } else {
      score += W.addressDiffers;
      reasons.push('address-differs');
    }
  }
  return { score, reasons };
}

export interface MatchConfig {
  /** Score at or above which a pair may be linked without review; null = never (default). */
  autoLinkAt: number | null;
  /** Score at or above which a pair goes to the review queue. */
  reviewAt: number;
}

export const DEFAULT_MATCH_CONFIG: MatchConfig = { autoLinkAt: null, reviewAt: 10 };

export function validateMatchConfig(c: MatchConfig): MatchConfig {
  if (!Number.isFinite(c.reviewAt)) throw new Error('reviewAt must be a number');
  if (c.autoLinkAt !== null && (!Number.isFinite(c.autoLinkAt) || c.autoLinkAt < c.reviewAt)) {
    throw new Error('autoLinkAt must be a number at least reviewAt, or null to switch auto-linking off');
  }
  return c;
}

export type Band = 'auto' | 'review' | 'none';

export function band(score: number, config: MatchConfig): Band {
  if (config.autoLinkAt !== null && score >= config.autoLinkAt) return 'auto';
  return score >= config.reviewAt ? 'review' : 'none';
}

export interface Candidate {
  a: LocalKey;
  b: LocalKey;
  score: number;
  band: Exclude<Band, 'none'>;
  reasons: MatchReason[];
}

/**
 * The full normalised names as keys (empty when a part is missing). The separator is U+001F,
 * not NUL, because the keys are also stored in PostgreSQL text columns.
 */
export function nameKeys(r: Pick<NormalisedRecord, 'fam' | 'giv' | 'famKana' | 'givKana'>): { kana: string; kanji: string } {
  return {
    kana: r.famKana && r.givKana ? `${r.famKana}\u001f${r.givKana}` : '',
    kanji: r.fam && r.giv ? `${r.fam}\u001f${r.giv}` : '',
  };
}

/**
 * Block keys of a record. Birth date + sex is the main block; two fallbacks keep a pair whose
 * birth date (or sex) was mistyped: the full kana name with the birth year, and with the month
 * and day; the same with the kanji name for records without kana.
 */
export function blockKeys(r: NormalisedRecord): string[] {
  const keys: string[] = [];
  if (r.birth) keys.push(`b|${r.birth}|${r.sex}`);
  const { kana, kanji } = nameKeys(r);
  const y = r.birth.slice(0, 4);
  const md = r.birth.slice(4);
  if (kana) {
    keys.push(`ky|${kana}|${y}`);
    if (md) keys.push(`km|${kana}|${md}`);
  }
  if (kanji) {
    keys.push(`jy|${kanji}|${y}`);
    if (md) keys.push(`jm|${kanji}|${md}`);
  }
  return keys;
}

/** Blocks larger than this are skipped (a junk value shared by thousands): they say nothing. */
export const MAX_BLOCK = 500;

export interface BlockStats {
  records: number;
  blocks: number;
  pairsCompared: number;
  oversizedBlocks: number;
}

/**
 * Every pair of records that shares a block and scores at least `floor`, once, in a stable
 * order. `visit` gets indices into `records` (i < j) so a caller can keep its own data.
 */
export function comparePairs(
  records: readonly NormalisedRecord[],
  floor: number,
  visit: (i: number, j: number, s: PairScore) => void,
  /** Called after each block of two or more records (blocks done, blocks of two or more). */
  onBlock?: (done: number, total: number) => void,
): BlockStats {
  const recordKeys: string[][] = new Array(records.length);
  const blocks = new Map<string, number[]>();
  for (let i = 0; i < records.length; i++) {
    const keys = blockKeys(records[i]);
    recordKeys[i] = keys;
    for (const k of keys) {
      let list = blocks.get(k);
      if (!list) blocks.set(k, (list = []));
      list.push(i);
    }
  }
  const n = records.length;
  let pairsCompared = 0;
  let oversizedBlocks = 0;
  const usable = (k: string) => (blocks.get(k) as number[]).length <= MAX_BLOCK;
  const keys = [...blocks.keys()].sort();
  let searchable = 0;
  if (onBlock) for (const list of blocks.values()) if (list.length >= 2) searchable++;
  let done = 0;
  for (const k of keys) {
    const list = blocks.get(k) as number[];
    if (list.length < 2) continue;
    if (onBlock) onBlock(++done, searchable);
    if (list.length > MAX_BLOCK) {
      oversizedBlocks++;
      continue;
    }
    for (let x = 0; x < list.length; x++) {
      const i = list[x];
      const ki = recordKeys[i];
      for (let y = x + 1; y < list.length; y++) {
        const j = list[y];
        // A pair sharing several blocks is compared once, in the first usable one (in key order);
        // no set of seen pairs, which would not fit for a million records.
        let earlier = false;
        for (const q of recordKeys[j]) {
          if (q < k && ki.includes(q) && usable(q)) {
            earlier = true;
            break;
          }
        }
        if (earlier) continue;
        pairsCompared++;
        const s = scorePair(records[i], records[j]);
        if (s.score >= floor) visit(i, j, s);
      }
    }
  }
  return { records: n, blocks: blocks.size, pairsCompared, oversizedBlocks };
}

/** Candidates of a whole population (review band and above), sorted by score then keys. */
export function findCandidates(
  records: readonly IdentityRecord[],
  config: MatchConfig = DEFAULT_MATCH_CONFIG,
  /** Progress of the search: blocks started of all, candidates so far. */
  onBlock?: (done: number, total: number, candidates: number) => void,
): { candidates: Candidate[]; stats: BlockStats } {
  validateMatchConfig(config);
  const norm = records.map(normaliseRecord);
  // Sort so the output does not depend on the input order.
  norm.sort((p, q) => (p.key < q.key ? -1 : p.key > q.key ? 1 : 0));
  const candidates: Candidate[] = [];
  const stats = comparePairs(norm, config.reviewAt, (i, j, s) => {
    const b = band(s.score, config);
    if (b === 'none') return;
    candidates.push({ a: strip(norm[i]), b: strip(norm[j]), score: s.score, band: b, reasons: s.reasons });
  }, onBlock && ((done, total) => onBlock(done, total, candidates.length)));
  candidates.sort((p, q) => q.score - p.score || cmp(pairKey(p.a, p.b), pairKey(q.a, q.b)));
  return { candidates, stats };
}

function strip(r: NormalisedRecord): LocalKey {
  return { facilityId: r.facilityId, localId: r.localId };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface MatchPlan {
  /** Pairs to link now: `attach` is unlinked and joins `to` (a linked record or a new patient). */
  autoLinks: Candidate[];
  /** Pairs for a person to decide. */
  review: Candidate[];
  /** Pairs dropped because a person already decided them, or both are already together. */
  skipped: { candidate: Candidate; why: 'rejected' | 'already-linked' }[];
}

/**
 * Applies manual decisions to candidates: a rejected pair is never proposed again; a pair
 * already linked together is dropped; the matcher never moves a local ID that is already linked
 * (a manual link is never undone, and a matcher link is only changed by a person), so an
 * auto-band pair whose members are both linked (to different patients) goes to review instead.
 */
export function planMatches(
  candidates: readonly Candidate[],
  links: ReadonlyMap<string, Pick<Link, 'regionalId' | 'method'>>,
  rejected: ReadonlySet<string>,
): MatchPlan {
  const plan: MatchPlan = { autoLinks: [], review: [], skipped: [] };
  for (const c of candidates) {
    if (rejected.has(pairKey(c.a, c.b))) {
      plan.skipped.push({ candidate: c, why: 'rejected' });
      continue;
    }
    const la = links.get(localKey(c.a));
    const lb = links.get(localKey(c.b));
    if (la && lb && la.regionalId === lb.regionalId) {
      plan.skipped.push({ candidate: c, why: 'already-linked' });
      continue;
    }
    if (c.band === 'auto' && !(la && lb)) plan.autoLinks.push(c);
    else plan.review.push(c);
  }
  return plan;
}
