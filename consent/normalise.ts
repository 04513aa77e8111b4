/**
 * Normalisation of Japanese patient demographics for matching (名寄せ). Pure functions; the
 * stored bytes are never rewritten, only the keys the matcher compares.
 */

/**
 * Characters that one JIS X 0208 code point decodes to differently depending on the decoder
 * (JIS/Unicode consortium mapping vs Microsoft CP932 mapping), see docs/ssmix2.md. Both sides
 * map to one representative before NFKC.
 */
const DECODER_PAIRS: Record<string, string> = {
  '\u301C': '\uFF5E', // 0x2141 WAVE DASH vs FULLWIDTH TILDE
  '\u2016': '\u2225', // 0x2142 DOUBLE VERTICAL LINE vs PARALLEL TO
  '\u2212': '\uFF0D', // 0x215D MINUS SIGN vs FULLWIDTH HYPHEN-MINUS
  '\u2014': '\u2015', // 0x213D EM DASH vs HORIZONTAL BAR
  '\u00A2': '\uFFE0', // 0x2171 CENT SIGN vs FULLWIDTH CENT SIGN
  '\u00A3': '\uFFE1', // 0x2172 POUND SIGN vs FULLWIDTH POUND SIGN
  '\u00AC': '\uFFE2', // 0x224C NOT SIGN vs FULLWIDTH NOT SIGN
};

/**
 * Kanji written differently in different facilities' systems for the same name: old forms
 * (旧字体), itaiji (異体字) and the IBM/NEC extension characters that some systems substitute.
 * Each maps to the form in common use. Only characters that are interchangeable in personal and
 * place names are listed; pairs that are distinct names (e.g. 埼/崎) are not.
 */
const KANJI_VARIANTS: Record<string, string> = {
  髙: '高',
  﨑: '崎',
  嵜: '崎',
  碕: '崎',
  邊: '辺',
  邉: '辺',
  齋: '斎',
  齊: '斎',
  斉: '斎',
  澤: '沢',
  濱: '浜',
  廣: '広',
  德: '徳',
  國: '国',
  櫻: '桜',
  槇: '槙',
  籠: '篭',
  嶋: '島',
  嶌: '島',
  冨: '富',
  𠮷: '吉',
  曻: '昇',
  瀨: '瀬',
  惠: '恵',
  眞: '真',
  實: '実',
  淺: '浅',
  圓: '円',
  榮: '栄',
  壽: '寿',
  豐: '豊',
  藏: '蔵',
  彌: '弥',
  瀧: '滝',
  峯: '峰',
  嶽: '岳',
  條: '条',
  來: '来',
  與: '与',
  傳: '伝',
  禮: '礼',
  靜: '静',
  淸: '清',
  黑: '黒',
  增: '増',
  萬: '万',
  龍: '竜',
  會: '会',
  鐵: '鉄',
  縣: '県',
  驛: '駅',
  邨: '村',
  﨔: '欅',
  舘: '館',
  桒: '桑',
  栁: '柳',
  檜: '桧',
  莊: '荘',
  顯: '顕',
  學: '学',
  恆: '恒',
  穗: '穂',
  渕: '淵',
  渊: '淵',
  巖: '巌',
  乘: '乗',
};

/** Small kana and old kana that name registrations write interchangeably (カ゚ etc. aside). */
const KANA_FOLD: Record<string, string> = {
  ァ: 'ア',
  ィ: 'イ',
  ゥ: 'ウ',
  ェ: 'エ',
  ォ: 'オ',
  ッ: 'ツ',
  ャ: 'ヤ',
  ュ: 'ユ',
  ョ: 'ヨ',
  ヮ: 'ワ',
  ヵ: 'カ',
  ヶ: 'ケ',
  ヰ: 'イ',
  ヱ: 'エ',
  ヲ: 'オ',
  ヂ: 'ジ',
  ヅ: 'ズ',
  ヴ: 'ブ',
};

// Variation selectors (IVS and standard) choose a glyph, not a different character.
const VARIATION_SELECTORS = /[\uFE00-\uFE0F]|\uDB40[\uDD00-\uDDEF]/g;
const SPACES = /[\s\u3000\u200B\uFEFF・･.,、。]/g;

const tableRegex = new WeakMap<Record<string, string>, RegExp>();

/** Replaces each character found in the table; most strings have none, so test first. */
function mapChars(s: string, table: Record<string, string>): string {
  let re = tableRegex.get(table);
  if (!re) tableRegex.set(table, (re = new RegExp(`[${Object.keys(table).join('')}]`, 'u')));
  if (!re.test(s)) return s;
  let out = '';
  for (const ch of s) out += table[ch] ?? ch;
  return out;
}

/** NFKC after unifying decoder differences and dropping variation selectors. */
export function nfkc(s: string): string {
  return mapChars(s.replace(VARIATION_SELECTORS, ''), DECODER_PAIRS).normalize('NFKC');
}

/** A kanji name as a matching key: NFKC, no spaces, variant kanji unified. */
export function normaliseKanjiName(s: string | null | undefined): string {
  if (!s) return '';
  return mapChars(nfkc(s).replace(SPACES, ''), KANJI_VARIANTS);
}

/** Hiragana to katakana (U+3041..U+3096 -> U+30A1..U+30F6). */
export function toKatakana(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    out += c >= 0x3041 && c <= 0x3096 ? String.fromCharCode(c + 0x60) : ch;
  }
  return out;
}

/**
 * A kana name as a matching key: NFKC (half-width to full-width, combined voiced marks),
 * katakana, small kana as large, ヂ/ヅ/ヴ as ジ/ズ/ブ, no spaces, long vowels folded.
 */
export function normaliseKanaName(s: string | null | undefined): string {
  if (!s) return '';
  const k = mapChars(toKatakana(nfkc(s)).replace(SPACES, '').replace(/[ー\-‐―~〜]/g, ''), KANA_FOLD);
  return foldLongVowels(k);
}

const VOWEL_ROWS: [string, string][] = [
  ['a', 'アカサタナハマヤラワガザダバパ'],
  ['i', 'イキシチニヒミリギジビピ'],
  ['u', 'ウクスツヌフムユルグズブプ'],
  ['e', 'エケセテネヘメレゲゼデベペ'],
  ['o', 'オコソトノホモヨロゴゾドボポ'],
];
const VOWEL_OF = new Map<string, string>();
for (const [v, chars] of VOWEL_ROWS) for (const c of chars) VOWEL_OF.set(c, v);
const VOWEL_KANA: Record<string, string> = { ア: 'a', イ: 'i', ウ: 'u', エ: 'e', オ: 'o' };

/**
 * Long vowels are written three ways (サトウ / サトー / サト, オオノ / オーノ, ケイコ / ケーコ):
 * after the long-vowel mark is dropped, a vowel kana that only lengthens the one before it
 * (same vowel, or ウ after an o-row kana, or イ after an e-row kana) is dropped too.
 */
function foldLongVowels(k: string): string {
  let out = '';
  let prev = '';
  for (const ch of k) {
    const v = VOWEL_KANA[ch];
    const pv = VOWEL_OF.get(prev);
    if (v && pv && (v === pv || (pv === 'o' && v === 'u') || (pv === 'e' && v === 'i'))) continue;
    out += ch;
    prev = ch;
  }
  return out;
}

/** Digits only; an international +81 prefix becomes the domestic 0. */
export function normalisePhone(s: string | null | undefined): string {
  if (!s) return '';
  const t = nfkc(s).trim();
  const digits = t.replace(/\D/g, '');
  if (/^\+\s*81/.test(t)) return '0' + digits.slice(2);
  return digits;
}

/** Digits only; a valid Japanese postal code has 7. */
export function normalisePostalCode(s: string | null | undefined): string {
  if (!s) return '';
  return nfkc(s).replace(/\D/g, '');
}

export const PREFECTURES = [
  '北海道', '青森県', '岩手県', '宮城県', '秋田県', '山形県', '福島県', '茨城県', '栃木県', '群馬県',
  '埼玉県', '千葉県', '東京都', '神奈川県', '新潟県', '富山県', '石川県', '福井県', '山梨県', '長野県',
  '岐阜県', '静岡県', '愛知県', '三重県', '滋賀県', '京都府', '大阪府', '兵庫県', '奈良県', '和歌山県',
  '鳥取県', '島根県', '岡山県', '広島県', '山口県', '徳島県', '香川県', '愛媛県', '高知県', '福岡県',
  '佐賀県', '長崎県', '熊本県', '大分県', '宮崎県', '鹿児島県', '沖縄県',
] as const;

const KANJI_DIGITS: Record<string, number> = { 〇: 0, 零: 0, 一: 1, 二: 2, 三: 3, 四: 4, 五: 5, 六: 6, 七: 7, 八: 8, 九: 9 };

/** 二十三 -> 23, 百五 -> 105, 一〇二 -> 102. Returns NaN for something that is not a numeral. */
export function kanjiNumeral(s: string): number {
  if (/^[〇零一二三四五六七八九]+$/.test(s) && !/[十百千]/.test(s) && s.length > 1) {
    return Number([...s].map((c) => KANJI_DIGITS[c]).join(''));
  }
  let total = 0;
  let current = 0;
  for (const c of s) {
    const d = KANJI_DIGITS[c];
    if (d !== undefined) current = d;
    else if (c === '十' || c === '百' || c === '千') {
      const unit = c === '十' ? 10 : c === '百' ? 100 : 1000;
      total += (current || 1) * unit;
      current = 0;
    } else return NaN;
  }
  return total + current;
}

export interface NormalisedAddress {
  prefecture: string;
  /** City, ward, town or village (市区町村, with 郡 when present). */
  city: string;
  /** Everything after the city, with block numbers as `n-n-n`. */
  rest: string;
  /** The whole address without the prefecture (which addresses often omit). */
  key: string;
}

const HYPHENS = /[-‐‑‒–—―−－ｰ─━]/g;
// Numbers in a 丁目-番地-号 position, in kanji or (after NFKC) ASCII digits.
// 番 counts only before 地 or a number, so that the town 一番町 keeps its name.
const BLOCK_NUMBER = /([〇零一二三四五六七八九十百千]+)(?=丁目|番地|番[0-9〇一二三四五六七八九十]|号|の[0-9〇一二三四五六七八九十]|[-‐‑‒–—―−－ｰ])/g;

/**
 * Address as comparable parts: NFKC, no spaces, prefecture split off, 大字/字 dropped,
 * 丁目/番地/番/号/の and every dash as '-', kanji numerals in block positions as digits.
 */
export function normaliseAddress(s: string | null | undefined): NormalisedAddress {
  if (!s) return { prefecture: '', city: '', rest: '', key: '' };
  let a = mapChars(nfkc(s).replace(/[\s\u3000]/g, ''), KANJI_VARIANTS);
  let prefecture = '';
  for (const p of PREFECTURES) {
    if (a.startsWith(p)) {
      prefecture = p;
      a = a.slice(p.length);
      break;
    }
  }
  a = a.replace(BLOCK_NUMBER, (m) => {
    const n = kanjiNumeral(m);
    return Number.isNaN(n) ? m : String(n);
  });
  a = a
    .replace(/大字|字(?=[^0-9])/g, '')
    .replace(/(\d)(?:丁目|番地|番|号|の)(?=\d)/g, '$1-')
    .replace(/(\d)(?:丁目|番地|番|号)/g, '$1-')
    .replace(HYPHENS, '-')
    .replace(/-+/g, '-')
    .replace(/-$/, '');
  const city = cityOf(a);
  const rest = a.slice(city.length);
  return { prefecture, city, rest, key: a };
}

/**
 * The city part of an address without prefecture: 郡 + 町/村, or 市 + a ward (区) that follows
 * within a few characters (政令指定都市), or up to the first 市/区/町/村. Written with indexOf, not
 * a lazy regular expression, which backtracks quadratically on long addresses.
 */
function cityOf(a: string): string {
  const gun = a.indexOf('郡', 1);
  if (gun > 0) {
    for (let j = gun + 2; j < a.length; j++) if (a[j] === '町' || a[j] === '村') return a.slice(0, j + 1);
  }
  const shi = a.indexOf('市', 1);
  if (shi > 0) {
    const ku = a.indexOf('区', shi + 2);
    if (ku > 0 && ku - shi <= 5) return a.slice(0, ku + 1);
  }
  for (let j = 1; j < a.length; j++) {
    const c = a[j];
    // 四日市市, 廿日市市: a city whose name ends in 市.
    if (c === '市' && a[j + 1] === '市') return a.slice(0, j + 2);
    if (c === '市' || c === '区' || c === '町' || c === '村') return a.slice(0, j + 1);
  }
  return '';
}

/** Jaro-Winkler similarity in [0, 1] over code points. */
export function jaroWinkler(a: string, b: string): number {
  if (a === b) return a.length === 0 ? 0 : 1;
  const s1 = [...a];
  const s2 = [...b];
  const n1 = s1.length;
  const n2 = s2.length;
  if (n1 === 0 || n2 === 0) return 0;
  const window = Math.max(0, Math.floor(Math.max(n1, n2) / 2) - 1);
  const m1 = new Array<boolean>(n1).fill(false);
  const m2 = new Array<boolean>(n2).fill(false);
  let matches = 0;
  for (let i = 0; i < n1; i++) {
    const lo = Math.max(0, i - window);
    const hi = Math.min(n2 - 1, i + window);
    for (let j = lo; j <= hi; j++) {
      if (!m2[j] && s1[i] === s2[j]) {
        m1[i] = true;
        m2[j] = true;
        matches++;
        break;
      }
    }
  }
  if (matches === 0) return 0;
  let t = 0;
  let k = 0;
  for (let i = 0; i < n1; i++) {
    if (!m1[i]) continue;
    while (!m2[k]) k++;
    if (s1[i] !== s2[k]) t++;
    k++;
  }
  const jaro = (matches / n1 + matches / n2 + (matches - t / 2) / matches) / 3;
  let prefix = 0;
  while (prefix < 4 && prefix < n1 && prefix < n2 && s1[prefix] === s2[prefix]) prefix++;
  return jaro + prefix * 0.1 * (1 - jaro);
}
