import { nfkc, normaliseKanjiName, normalisePhone, PREFECTURES, toKatakana } from '../../consent/normalise.js';
import { datePattern, parseYmd, type Ymd } from './dates.js';

/**
 * Scrubbing a patient's own identifiers out of free text (clinical notes, narrative XHTML, CDA
 * documents). Text is compared in a folded form — NFKC (half-width kana and full-width digits
 * become ordinary), hiragana as katakana, variant kanji unified, whitespace dropped, ASCII upper
 * case — so that one needle finds 山田 太郎, 山田　太郎 and 山田太郎, やまだ たろう and ﾔﾏﾀﾞﾀﾛｳ, and
 * ０５４－２２２ as 054-222. A match is mapped back to the original characters and replaced by a
 * bracketed label. Over-redaction is preferred to a leak.
 */

/** Everything known to identify one patient. Plain strings as the records hold them. */
export interface PatientIdentity {
  /** Names in kanji, kana or Latin letters, as (family, given) pairs; either part may be absent. */
  names: { family?: string; given?: string }[];
  /** Birth dates, YYYY-MM-DD (several facilities may disagree). */
  birthDates: string[];
  /** Addresses as written. */
  addresses: string[];
  postalCodes: string[];
  phones: string[];
  /** Facility-local patient IDs. */
  localIds: string[];
  /** Insurance numbers: insurer number (保険者番号), symbol and number (記号・番号). */
  insuranceNumbers: string[];
}

export const emptyIdentity = (): PatientIdentity => ({
  names: [],
  birthDates: [],
  addresses: [],
  postalCodes: [],
  phones: [],
  localIds: [],
  insuranceNumbers: [],
});

export function mergeIdentity(a: PatientIdentity, b: Partial<PatientIdentity> | undefined): PatientIdentity {
  if (!b) return a;
  return {
    names: [...a.names, ...(b.names ?? [])],
    birthDates: [...a.birthDates, ...(b.birthDates ?? [])],
    addresses: [...a.addresses, ...(b.addresses ?? [])],
    postalCodes: [...a.postalCodes, ...(b.postalCodes ?? [])],
    phones: [...a.phones, ...(b.phones ?? [])],
    localIds: [...a.localIds, ...(b.localIds ?? [])],
    insuranceNumbers: [...a.insuranceNumbers, ...(b.insuranceNumbers ?? [])],
  };
}

export type ScrubKind = 'name' | 'birth-date' | 'address' | 'postal-code' | 'phone' | 'local-id' | 'insurance-number';

const LABEL: Record<ScrubKind, string> = {
  name: '[氏名]',
  'birth-date': '[生年月日]',
  address: '[住所]',
  'postal-code': '[郵便番号]',
  phone: '[電話番号]',
  'local-id': '[ID]',
  'insurance-number': '[保険番号]',
};

interface FoldedChar {
  c: string;
  start: number;
  end: number;
}

const SKIP = /[\s\u3000\u200B\u200C\u200D\uFEFF\u00AD]/;
const DAKUTEN = /[\uFF9E\uFF9F]/;
const HAN = /\p{Script=Han}/u;

/** The folded form of a text, each folded character remembering its span in the original. */
function foldChars(s: string): FoldedChar[] {
  const out: FoldedChar[] = [];
  const chars = Array.from(s);
  let pos = 0;
  for (let i = 0; i < chars.length; i++) {
    let ch = chars[i]!;
    const start = pos;
    pos += ch.length;
    const code = ch.charCodeAt(0);
    // ASCII needs no normalisation (the common case in codes, numbers and units).
    if (code < 0x80) {
      if (code > 0x20) out.push({ c: code >= 0x61 && code <= 0x7a ? String.fromCharCode(code - 32) : ch, start, end: pos });
      continue;
    }
    if (SKIP.test(ch)) continue;
    // A half-width kana and its separate voiced mark are one character after NFKC (ｶﾞ -> ガ).
    const next = chars[i + 1];
    if (next && DAKUTEN.test(next)) {
      ch += next;
      pos += next.length;
      i++;
    }
    let n = nfkc(ch);
    if (n.length === 1 && HAN.test(n)) n = normaliseKanjiName(n) || n;
    n = toKatakana(n).toUpperCase();
    for (const c of Array.from(n)) {
      if (SKIP.test(c)) continue;
      out.push({ c, start, end: pos });
    }
  }
  return out;
}

// Not '.': 7.2 and 72 are different numbers, and phone numbers are not written with dots here.
const DIGIT_SEPARATORS = new Set(['-', '‐', '‑', '‒', '–', '—', '―', '−', 'ー', '─', '━', '(', ')']);

/** The folded form for numbers: separators between digits dropped (054-222-1234 -> 0542221234). */
function digitView(f: FoldedChar[]): FoldedChar[] {
  const out: FoldedChar[] = [];
  for (let i = 0; i < f.length; i++) {
    const c = f[i]!.c;
    if (DIGIT_SEPARATORS.has(c)) {
      const prev = out[out.length - 1]?.c;
      let j = i + 1;
      while (j < f.length && DIGIT_SEPARATORS.has(f[j]!.c)) j++;
      const next = f[j]?.c;
      const isDigit = (x: string | undefined) => !!x && x >= '0' && x <= '9';
      // "(054)222-1234": an opening parenthesis before a digit goes too.
      if ((isDigit(prev) || c === '(') && isDigit(next)) continue;
    }
    out.push(f[i]!);
  }
  return out;
}

export const fold = (s: string) => foldChars(s).map((x) => x.c).join('');
const foldDigits = (s: string) => digitView(foldChars(s)).map((x) => x.c).join('');

interface Needle {
  kind: ScrubKind;
  text: string;
  /** Numbers and codes must not be part of a longer run of letters or digits. */
  bounded: boolean;
  digits: boolean;
}

/**
 * Compiled needles of one identity: reused for every string of a request.
 */
export interface Scrubber {
  scrub(text: string): { text: string; counts: Partial<Record<ScrubKind, number>> };
}

function addressNeedles(address: string): string[] {
  const out = new Set<string>();
  const full = fold(address);
  // Without a trailing building (written after a space) the address is still the address.
  const firstPart = fold(address.trim().split(/[\s\u3000]+/)[0] ?? '');
  for (const a of [full, firstPart]) {
    if (a.length < 4) continue;
    out.add(a);
    let rest = a;
    for (const p of PREFECTURES) {
      if (rest.startsWith(p)) {
        rest = rest.slice(p.length);
        break;
      }
    }
    out.add(rest);
    // The part after the municipality (town, 丁目, block numbers) identifies a household.
    const m = /^(.+?郡.+?[町村]|.+?市.+?区|.+?[市区町村])(.+)$/.exec(rest);
    if (m && m[2]!.length >= 4) out.add(m[2]!);
  }
  return [...out].filter((x) => x.length >= 4);
}

/** Strings remembered by a memoising scrubber before it starts afresh (bounded memory). */
const MEMO_ENTRIES = 20_000;

/**
 * `memo`: remember what each string became (a patient's records repeat the same texts: codes'
 * displays, units, document bodies). The scrubber is pure, so a remembered answer is the answer.
 */
export function compileScrubber(identity: PatientIdentity, opts: { memo?: boolean } = {}): Scrubber {
  const inner = compileScrubberOnce(identity);
  if (!opts.memo) return inner;
  const seen = new Map<string, ReturnType<Scrubber['scrub']>>();
  return {
    scrub(text) {
      let r = seen.get(text);
      if (!r) {
        r = inner.scrub(text);
        if (seen.size >= MEMO_ENTRIES) seen.clear();
        seen.set(text, r);
      }
      return { text: r.text, counts: { ...r.counts } };
    },
  };
}

function compileScrubberOnce(identity: PatientIdentity): Scrubber {
  const needles: Needle[] = [];
  const add = (kind: ScrubKind, raw: string | undefined, opts: { digits?: boolean; min?: number } = {}) => {
    if (!raw) return;
    const text = opts.digits ? foldDigits(raw) : fold(raw);
    if (text.length < (opts.min ?? 2)) return;
    if (needles.some((n) => n.text === text && n.digits === !!opts.digits)) return;
    needles.push({ kind, text, bounded: !!opts.digits || /^[0-9A-Z]+$/.test(text), digits: !!opts.digits });
  };
  for (const n of identity.names) {
    const family = n.family?.trim();
    const given = n.given?.trim();
    // Full name in either order (Latin names are often written given-first); parts alone when
    // they are at least two characters (a one-character part alone would wipe common words).
    if (family && given) {
      add('name', family + given);
      add('name', given + family);
    }
    add('name', family);
    add('name', given);
  }
  for (const a of identity.addresses) for (const x of addressNeedles(a)) add('address', x);
  for (const p of identity.postalCodes) add('postal-code', p, { digits: true, min: 7 });
  for (const p of identity.phones) {
    const digits = normalisePhone(p);
    if (digits.length < 6) continue;
    add('phone', digits, { digits: true });
    // +81 54-222-1234: the international form drops the leading 0.
    if (digits.startsWith('0')) add('phone', '81' + digits.slice(1), { digits: true });
  }
  for (const id of identity.localIds) {
    add('local-id', id, { digits: true, min: 1 });
    const stripped = id.replace(/^0+/, '');
    if (stripped !== id && stripped.length >= 4) add('local-id', stripped, { digits: true });
  }
  for (const n of identity.insuranceNumbers) add('insurance-number', n, { digits: true, min: 1 });
  // Longer needles first, so that a full name wins over its family name alone.
  needles.sort((a, b) => b.text.length - a.text.length);

  const dates: Ymd[] = [];
  for (const b of identity.birthDates) {
    const d = parseYmd(b);
    if (d && !dates.some((x) => x.y === d.y && x.m === d.m && x.d === d.d)) dates.push(d);
  }
  const datePatterns = dates.map(datePattern);

  return {
    scrub(text) {
      const counts: Partial<Record<ScrubKind, number>> = {};
      if (!text) return { text, counts };
      const folded = foldChars(text);
      const digits = digitView(folded);
      const spans: { start: number; end: number; kind: ScrubKind }[] = [];
      // Boundaries are judged on the original text: the folded view has lost its spaces.
      const word = (x: string | undefined) => !!x && /^[0-9A-Za-z]$/.test(nfkc(x));
      const bounded = (start: number, end: number) =>
        !word(Array.from(text.slice(Math.max(0, start - 2), start)).pop()) && !word(Array.from(text.slice(end, end + 2))[0]);
      // Each view once per text: its joined form and, for each UTF-16 offset of it, the folded
      // character (FoldedChar entries are code points).
      const prepare = (view: FoldedChar[]) => {
        const indexOf = new Map<number, number>();
        let o = 0;
        view.forEach((x, i) => {
          indexOf.set(o, i);
          o += x.c.length;
        });
        return { view, hay: view.map((x) => x.c).join(''), indexOf };
      };
      const views = { folded: prepare(folded), digits: prepare(digits) };
      const search = (prepared: ReturnType<typeof prepare>, n: Needle) => {
        const { view, hay, indexOf } = prepared;
        let from = 0;
        for (;;) {
          const at = hay.indexOf(n.text, from);
          if (at < 0) break;
          from = at + 1;
          const first = indexOf.get(at);
          const last = indexOf.get(at + n.text.length);
          if (first === undefined) continue;
          const lastIdx = (last ?? view.length) - 1;
          let start = view[first]!.start;
          const end = view[lastIdx]!.end;
          if (n.bounded && !bounded(start, end)) continue;
          // "(022)222-1234": the area code's opening parenthesis belongs to the number.
          if (n.kind === 'phone' && /[(（]/.test(text[start - 1] ?? '') && /[)）]/.test(text.slice(start, end))) start--;
          spans.push({ start, end, kind: n.kind });
        }
      };
      for (const n of needles) search(n.digits ? views.digits : views.folded, n);
      // Dates need digits: most strings (names of drugs, codes' displays) have none.
      if (datePatterns.length && /[0-9]/.test(views.folded.hay)) {
        const joined = views.folded.hay;
        const cpIndex: number[] = [];
        folded.forEach((x, i) => {
          for (let k = 0; k < x.c.length; k++) cpIndex.push(i);
        });
        for (const re of datePatterns) {
          re.lastIndex = 0;
          for (const m of joined.matchAll(re)) {
            const a = cpIndex[m.index]!;
            const b = cpIndex[m.index + m[0].length - 1]!;
            if (!bounded(folded[a]!.start, folded[b]!.end)) continue;
            spans.push({ start: folded[a]!.start, end: folded[b]!.end, kind: 'birth-date' });
          }
        }
      }
      if (spans.length === 0) return { text, counts };
      spans.sort((a, b) => a.start - b.start || b.end - a.end);
      let out = '';
      let pos = 0;
      let lastEnd = -1;
      for (const s of spans) {
        if (s.start < lastEnd) {
          // Overlapping matches grow the redaction instead of leaving a piece behind.
          if (s.end > lastEnd) {
            lastEnd = s.end;
            pos = s.end;
          }
          continue;
        }
        out += text.slice(pos, s.start) + LABEL[s.kind];
        pos = s.end;
        lastEnd = s.end;
        counts[s.kind] = (counts[s.kind] ?? 0) + 1;
      }
      out += text.slice(pos);
      return { text: out, counts };
    },
  };
}
