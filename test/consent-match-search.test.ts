import { describe, expect, it } from 'vitest';
import { findCandidates, type IdentityRecord } from '../consent/match.js';
import { inlineSearch, MatchSearchError, workerSearch, type SearchProgress } from '../consent/match-search.js';

/**
 * The matcher's candidate search in a worker thread gives what findCandidates gives, reports its
 * progress, and fails with a message for people when the worker dies.
 */

const CFG = { autoLinkAt: 24, reviewAt: 10 };
const KANJI = '一二三四五六七八九十';
const KANA = 'アイウエオカキクケコ';

/** Pairs of one person at two facilities, with neighbours sharing their birth date. */
function population(n: number): IdentityRecord[] {
  const out: IdentityRecord[] = [];
  for (let i = 0; i < n; i++) {
    const given = `${KANJI[i % 10]}${KANJI[Math.floor(i / 10) % 10]}`;
    const kana = `${KANA[i % 10]}${KANA[Math.floor(i / 10) % 10]}`;
    for (const facilityId of ['A', 'B']) {
      out.push({
        facilityId,
        localId: `${facilityId}${i}`,
        familyKanji: '山田',
        givenKanji: given,
        familyKana: 'ヤマダ',
        givenKana: kana,
        birthDate: `1970${String(1 + (i % 12)).padStart(2, '0')}15`,
        sex: i % 2 ? 'M' : 'F',
        postalCode: '980-0811',
        address: `宮城県仙台市青葉区一番町${i}`,
        phone: '',
      });
    }
  }
  return out;
}

async function* pagesOf(records: IdentityRecord[], size: number) {
  for (let i = 0; i < records.length; i += size) yield records.slice(i, i + size);
}

describe('candidate search off the event loop', () => {
  it('finds in a worker thread exactly what findCandidates finds, page by page, with progress', async () => {
    const records = population(300);
    const expected = findCandidates(records, CFG).candidates;
    expect(expected.length).toBeGreaterThan(300);
    const seen: SearchProgress[] = [];
    const got = await workerSearch()(pagesOf(records, 70), CFG, (p) => seen.push(p));
    expect(got).toEqual(expected);
    expect(await inlineSearch(pagesOf(records, 70), CFG)).toEqual(expected);
    // The last report is the whole search.
    const last = seen[seen.length - 1]!;
    expect(last.blocksSearched).toBe(last.blocks);
    expect(last.candidates).toBe(expected.length);
  }, 60_000);

  it('fails with a MatchSearchError, not a hang, when the worker runs out of memory', async () => {
    const search = workerSearch({ resourceLimits: { maxOldGenerationSizeMb: 8 } });
    const err = await search(pagesOf(population(20_000), 5000), CFG).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MatchSearchError);
    expect((err as Error).message).toMatch(/^the candidate search worker (failed|stopped)/);
  }, 60_000);
});
