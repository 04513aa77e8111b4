import { describe, expect, it } from 'vitest';
import {
  jaroWinkler,
  kanjiNumeral,
  nfkc,
  normaliseAddress,
  normaliseKanaName,
  normaliseKanjiName,
  normalisePhone,
  normalisePostalCode,
} from '../consent/normalise.js';
import {
  band,
  blockKeys,
  findCandidates,
  normaliseRecord,
  pairKey,
  planMatches,
  scorePair,
  validateMatchConfig,
  type IdentityRecord,
} from '../consent/match.js';
import { categoryOfDataType, isCategory } from '../consent/categories.js';

describe('normalisation', () => {
  it.each([
    ['髙橋', '高橋'],
    ['山﨑', '山崎'],
    ['渡邊', '渡辺'],
    ['渡邉', '渡辺'],
    ['齋藤', '斎藤'],
    ['齊藤', '斎藤'],
    ['斉藤', '斎藤'],
    ['澤田', '沢田'],
    ['濱口', '浜口'],
    ['廣瀬', '広瀬'],
    ['德川', '徳川'],
    ['國分', '国分'],
    ['櫻井', '桜井'],
    ['槇原', '槙原'],
    ['籠池', '篭池'],
    ['𠮷田', '吉田'],
    ['山 田\u3000太郎', '山田太郎'],
    ['葛\u{E0100}飾', '葛飾'], // an ideographic variation selector chooses a glyph only
    ['ＡＢＣ', 'ABC'],
  ])('kanji %s -> %s', (input, want) => {
    expect(normaliseKanjiName(input)).toBe(want);
  });

  it('keeps distinct names distinct', () => {
    expect(normaliseKanjiName('埼玉')).not.toBe(normaliseKanjiName('崎玉'));
    expect(normaliseKanjiName('太田')).not.toBe(normaliseKanjiName('大田'));
    expect(normaliseKanjiName('')).toBe('');
    expect(normaliseKanjiName(undefined)).toBe('');
  });

  it.each([
    // Long vowels fold: タロウ / タロー / タロ are one key.
    ['ﾔﾏｻﾞｷ ﾀﾛｳ', 'ヤマザキタロ'],
    ['やまざき　たろう', 'ヤマザキタロ'],
    ['ヤマザキ・タロー', 'ヤマザキタロ'],
    ['キョウコ', 'キヨコ'],
    ['キヨウコ', 'キヨコ'],
    ['サトウ', 'サト'],
    ['サトー', 'サト'],
    ['オオノ', 'オノ'],
    ['オーノ', 'オノ'],
    ['ケイコ', 'ケコ'],
    ['アイ', 'アイ'],
    ['ユーコ', 'ユコ'],
    ['ツヅキ', 'ツズキ'],
    ['ヴィクトル', 'ブイクトル'],
    ['ｼﾞｮｰｼﾞ', 'ジヨジ'],
  ])('kana %s -> %s', (input, want) => {
    expect(normaliseKanaName(input)).toBe(want);
  });

  it('unifies the decoder pairs of one JIS code point', () => {
    expect(nfkc('\u301C')).toBe(nfkc('\uFF5E')); // 0x2141
    expect(nfkc('\u2212')).toBe(nfkc('\uFF0D')); // 0x215D
    expect(nfkc('\u2016')).toBe(nfkc('\u2225')); // 0x2142
    expect(nfkc('\u00A2')).toBe(nfkc('\uFFE0'));
    expect(normaliseAddress('東京都港区芝公園4\u22122\u22128').key).toBe(normaliseAddress('東京都港区芝公園4\uFF0D2\uFF0D8').key);
  });

  it('keeps only digits of phones and postal codes', () => {
    expect(normalisePhone('022-222-3333')).toBe('0222223333');
    expect(normalisePhone('０２２（２２２）３３３３')).toBe('0222223333');
    expect(normalisePhone('+81 90-1234-5678')).toBe('09012345678');
    expect(normalisePhone('')).toBe('');
    expect(normalisePostalCode('〒９８０－０８１１')).toBe('9800811');
    expect(normalisePostalCode(null)).toBe('');
  });

  it('reads kanji numerals', () => {
    expect(kanjiNumeral('四')).toBe(4);
    expect(kanjiNumeral('十')).toBe(10);
    expect(kanjiNumeral('二十三')).toBe(23);
    expect(kanjiNumeral('百五')).toBe(105);
    expect(kanjiNumeral('千二百')).toBe(1200);
    expect(kanjiNumeral('一〇二')).toBe(102);
    expect(kanjiNumeral('一番')).toBeNaN();
  });

  it.each([
    ['宮城県仙台市青葉区一番町四丁目７番１７号', '仙台市青葉区一番町4-7-17'],
    ['仙台市青葉区一番町4-7-17', '仙台市青葉区一番町4-7-17'],
    ['宮城県 仙台市青葉区 一番町 ４－７－１７', '仙台市青葉区一番町4-7-17'],
    ['東京都千代田区霞が関一丁目二番二号', '千代田区霞が関1-2-2'],
    ['東京都千代田区霞が関１‐２‐２', '千代田区霞が関1-2-2'],
    ['宮城県黒川郡大和町吉岡字東二十三番地', '黒川郡大和町吉岡東23'],
    ['大阪府大阪市北区梅田3の1の1', '大阪市北区梅田3-1-1'],
    ['北海道札幌市中央区北1条西2丁目', '札幌市中央区北1条西2'],
  ])('address %s', (input, key) => {
    expect(normaliseAddress(input).key).toBe(key);
  });

  it('splits prefecture and city', () => {
    expect(normaliseAddress('宮城県仙台市青葉区一番町4-7-17')).toEqual({ prefecture: '宮城県', city: '仙台市青葉区', rest: '一番町4-7-17', key: '仙台市青葉区一番町4-7-17' });
    expect(normaliseAddress('宮城県黒川郡大和町吉岡東23').city).toBe('黒川郡大和町');
    expect(normaliseAddress('東京都港区芝公園4-2-8').city).toBe('港区');
    expect(normaliseAddress('三重県四日市市諏訪町1-5').city).toBe('四日市市');
    expect(normaliseAddress('千葉県市川市八幡1-1-1').city).toBe('市川市');
    expect(normaliseAddress('京都府京都市左京区岡崎').city).toBe('京都市左京区');
    expect(normaliseAddress('どこか').city).toBe('');
    expect(normaliseAddress('').key).toBe('');
  });

  it('measures similarity', () => {
    expect(jaroWinkler('ヤマダ', 'ヤマダ')).toBe(1);
    expect(jaroWinkler('', '')).toBe(0);
    expect(jaroWinkler('ヤマダ', '')).toBe(0);
    expect(jaroWinkler('ヒロシ', 'ヒロン')).toBeGreaterThan(0.8);
    expect(jaroWinkler('ヒロシ', 'ヒロン')).toBeLessThan(0.9); // so ハナコ/ハルコ (twins) are not 'similar'
    expect(jaroWinkler('ヒロシ', 'タカコ')).toBe(0);
  });
});

describe('categories', () => {
  it.each([
    ['ADT-00', 'demographics'],
    ['ADT-12', 'encounters'],
    ['ADT-22', 'encounters'],
    ['ADT-52', 'encounters'],
    ['ADT-61', 'allergies'],
    ['PPR-01', 'diagnoses'],
    ['OMP-01', 'prescriptions'],
    ['OMP-11', 'prescriptions'],
    ['OMP-02', 'injections'],
    ['OMP-12', 'injections'],
    ['OML-01', 'labs'],
    ['OML-11', 'labs'],
    ['OMG-01', 'imaging'],
    ['OMG-13', 'imaging'],
    ['OMD', 'diet'],
    ['omp-01', 'prescriptions'],
  ])('%s is %s', (t, c) => {
    expect(categoryOfDataType(t)).toBe(c);
  });
  it('files extended storage under documents and refuses to guess an unknown type', () => {
    expect(categoryOfDataType('L-OBSERVATIONS^OBSERVATIONS^99ZL01', 'extended')).toBe('documents');
    expect(categoryOfDataType('ADT-99')).toBeUndefined();
    expect(categoryOfDataType('XYZ')).toBeUndefined();
    expect(categoryOfDataType('OMP-03')).toBeUndefined();
    expect(isCategory('labs')).toBe(true);
    expect(isCategory('gossip')).toBe(false);
    expect(isCategory(3)).toBe(false);
  });
});

function person(over: Partial<IdentityRecord>): IdentityRecord {
  return {
    facilityId: 'A',
    localId: '0001',
    familyKanji: '髙橋',
    givenKanji: '花子',
    familyKana: 'タカハシ',
    givenKana: 'ハナコ',
    birthDate: '19800102',
    sex: 'F',
    postalCode: '980-0811',
    address: '宮城県仙台市青葉区一番町四丁目７番１７号',
    phone: '022-222-3333',
    ...over,
  };
}

const score = (a: Partial<IdentityRecord>, b: Partial<IdentityRecord>) => scorePair(normaliseRecord(person(a)), normaliseRecord(person(b)));
const CFG = { autoLinkAt: 24, reviewAt: 10 };

describe('matching hand-written tricky pairs', () => {
  it.each<[string, Partial<IdentityRecord>, 'auto' | 'review' | 'none']>([
    ['the same person spelled with a variant kanji, half-width kana and another address notation', { facilityId: 'B', familyKanji: '高橋', familyKana: 'ﾀｶﾊｼ', address: '仙台市青葉区一番町4-7-17', postalCode: '9800811', phone: '０２２２２２３３３３' }, 'auto'],
    ['the same person with a mistyped birth date', { facilityId: 'B', birthDate: '19800120' }, 'auto'],
    ['the same person with a one-digit birth date slip and a new phone', { facilityId: 'B', birthDate: '19800103', phone: '09000000000' }, 'review'],
    ['a married woman who moved', { facilityId: 'B', familyKanji: '佐藤', familyKana: 'サトウ', address: '東京都港区芝公園4-2-8', postalCode: '1050011', phone: '09011112222' }, 'review'],
    ['the same person who moved within the city', { facilityId: 'B', address: '宮城県仙台市青葉区国分町2-1-1', postalCode: '9800803', phone: '' }, 'review'],
    ['a kana-only pharmacy record', { facilityId: 'P', familyKanji: '', givenKanji: '', address: '', postalCode: '', phone: '0222223333' }, 'review'],
    ['a twin sister (same everything but the given name)', { facilityId: 'B', localId: '0002', givenKanji: '桃子', givenKana: 'モモコ' }, 'none'],
    ['a stranger sharing birth date and sex', { facilityId: 'B', familyKanji: '鈴木', familyKana: 'スズキ', givenKanji: '恵', givenKana: 'メグミ', address: '大阪府大阪市北区梅田3-1-1', postalCode: '5300001', phone: '0611112222' }, 'none'],
    ['a mother with the same name at the same address', { facilityId: 'B', birthDate: '19550607' }, 'review'],
  ])('%s', (_name, other, want) => {
    expect(band(score({}, other).score, CFG)).toBe(want);
  });

  it('a mother with the same name never auto-links, and the reasons say why', () => {
    const s = score({}, { facilityId: 'B', birthDate: '19550607' });
    expect(s.reasons).toContain('birth-date-differs');
    expect(s.score).toBeLessThan(CFG.autoLinkAt);
  });

  it('flags a changed family name for the reviewer', () => {
    expect(score({}, { familyKanji: '佐藤', familyKana: 'サトウ' }).reasons).toContain('family-changed');
  });

  it('blocks on birth date and sex, and on the name when the birth date was mistyped', () => {
    const typo = findCandidates([person({}), person({ facilityId: 'B', birthDate: '19800120', sex: 'M' })], CFG);
    expect(typo.candidates).toHaveLength(1);
    const keys = blockKeys(normaliseRecord(person({ familyKana: '', givenKana: '' })));
    expect(keys.some((k) => k.startsWith('b|19800102|F'))).toBe(true);
    expect(keys.some((k) => k.startsWith('ky|'))).toBe(false);
    expect(keys.some((k) => k.startsWith('jy|'))).toBe(true);
  });

  it('is deterministic whatever the input order', () => {
    const records = [
      person({}),
      person({ facilityId: 'B', localId: 'x', familyKanji: '高橋' }),
      person({ facilityId: 'C', localId: 'y', familyKanji: '佐藤', familyKana: 'サトウ' }),
      person({ facilityId: 'D', localId: 'z', givenKanji: '桃子', givenKana: 'モモコ' }),
    ];
    const a = findCandidates(records, CFG);
    const b = findCandidates([...records].reverse(), CFG);
    expect(a).toEqual(b);
    expect(a.candidates.map((c) => c.band)).toEqual(['auto', 'review', 'review']);
  });

  it('auto-linking is off by default', () => {
    const { candidates } = findCandidates([person({}), person({ facilityId: 'B' })]);
    expect(candidates).toHaveLength(1);
    expect(candidates[0].band).toBe('review');
  });

  it('rejects inconsistent thresholds', () => {
    expect(() => validateMatchConfig({ autoLinkAt: 5, reviewAt: 10 })).toThrow(/autoLinkAt/);
    expect(() => validateMatchConfig({ autoLinkAt: null, reviewAt: Number.NaN })).toThrow(/reviewAt/);
    expect(() => findCandidates([], { autoLinkAt: 1, reviewAt: 2 })).toThrow();
  });

  it('manual decisions win over the matcher', () => {
    const a = person({});
    const b = person({ facilityId: 'B', localId: 'b' });
    const c = person({ facilityId: 'C', localId: 'c' });
    const d = person({ facilityId: 'D', localId: 'd' });
    const { candidates } = findCandidates([a, b, c, d], CFG);
    expect(candidates.every((x) => x.band === 'auto')).toBe(true);
    const links = new Map([
      [`A\u00000001`, { regionalId: 'R1', method: 'manual' as const }],
      [`B\u0000b`, { regionalId: 'R1', method: 'matcher' as const }],
      [`C\u0000c`, { regionalId: 'R2', method: 'manual' as const }],
    ]);
    const rejected = new Set([pairKey(a, d)]);
    const plan = planMatches(candidates, links, rejected);
    const key = (x: { a: { facilityId: string }; b: { facilityId: string } }) => x.a.facilityId + x.b.facilityId;
    expect(plan.skipped.map((s) => `${key(s.candidate)}:${s.why}`).sort()).toEqual(['AB:already-linked', 'AD:rejected']);
    // A-C and B-C are both linked to different patients: a person must decide (never moved).
    expect(plan.review.map(key).sort()).toEqual(['AC', 'BC']);
    // B-D and C-D: D is unlinked and may join.
    expect(plan.autoLinks.map(key).sort()).toEqual(['BD', 'CD']);
  });
});
