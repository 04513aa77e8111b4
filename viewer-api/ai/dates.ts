import { randomInt } from 'node:crypto';

/**
 * Dates for de-identification: shifting FHIR date / dateTime / instant values by whole days,
 * Japanese era (和暦) conversion, and the written forms of one date that free text may use.
 * Pure functions, no clock.
 */

const DAY_MS = 86_400_000;

/**
 * A random shift, in whole days, for one request: at least 30 days either way (a shift of a few
 * days hides nothing) and at most a year (seasonality stays roughly where it was).
 */
export function randomShiftDays(): number {
  const magnitude = randomInt(30, 366);
  return randomInt(0, 2) === 0 ? -magnitude : magnitude;
}

const FHIR_DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?$/;

export function isFhirDateLike(v: string): boolean {
  const m = FHIR_DATE.exec(v);
  return !!m && validYmd(+m[1]!, m[2] ? +m[2] : 1, m[3] ? +m[3] : 1);
}

function validYmd(y: number, m: number, d: number): boolean {
  if (m < 1 || m > 12 || d < 1 || d > 31) return false;
  const t = new Date(Date.UTC(y, m - 1, d));
  return t.getUTCFullYear() === y && t.getUTCMonth() === m - 1 && t.getUTCDate() === d;
}

function addDaysYmd(y: number, m: number, d: number, days: number): [number, number, number] {
  const t = new Date(Date.UTC(y, m - 1, d) + days * DAY_MS);
  return [t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate()];
}

const p2 = (n: number) => String(n).padStart(2, '0');
const p4 = (n: number) => String(n).padStart(4, '0');

/**
 * Shifts a FHIR date, dateTime or instant by whole calendar days, keeping its precision, time
 * of day and offset: intervals between full dates are preserved exactly. A month- or
 * year-precision value is shifted from its middle (the 15th, or 1 July) and truncated back, so
 * that it moves with the rest without claiming a precision it never had. Anything that is not a
 * FHIR date comes back as undefined.
 */
export function shiftFhirDate(v: string, days: number): string | undefined {
  const m = FHIR_DATE.exec(v);
  if (!m) return undefined;
  const y = +m[1]!;
  if (m[3]) {
    if (!validYmd(y, +m[2]!, +m[3])) return undefined;
    const [ny, nm, nd] = addDaysYmd(y, +m[2]!, +m[3], days);
    return `${p4(ny)}-${p2(nm)}-${p2(nd)}${m[4] ?? ''}`;
  }
  if (m[2]) {
    if (!validYmd(y, +m[2], 1)) return undefined;
    const [ny, nm] = addDaysYmd(y, +m[2], 15, days);
    return `${p4(ny)}-${p2(nm)}`;
  }
  const [ny] = addDaysYmd(y, 7, 1, days);
  return p4(ny);
}

/** Whole years between a birth date (YYYY-MM-DD) and an instant (epoch ms, JST calendar day). */
export function ageAt(birthDate: string, at: number): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(birthDate);
  if (!m || !validYmd(+m[1]!, +m[2]!, +m[3]!)) return undefined;
  // The age a Japanese clinic would state: the calendar day in Japan (UTC+9, no DST).
  const jst = new Date(at + 9 * 3_600_000);
  const [y, mo, d] = [jst.getUTCFullYear(), jst.getUTCMonth() + 1, jst.getUTCDate()];
  let age = y - +m[1]!;
  if (mo < +m[2]! || (mo === +m[2]! && d < +m[3]!)) age--;
  return age >= 0 ? age : undefined;
}

/** Japanese eras since the Meiji calendar reform, with their first day. */
export const ERAS = [
  { kanji: '令和', short: '令', letter: 'R', start: [2019, 5, 1] },
  { kanji: '平成', short: '平', letter: 'H', start: [1989, 1, 8] },
  { kanji: '昭和', short: '昭', letter: 'S', start: [1926, 12, 25] },
  { kanji: '大正', short: '大', letter: 'T', start: [1912, 7, 30] },
  { kanji: '明治', short: '明', letter: 'M', start: [1868, 1, 25] },
] as const;

export type Era = (typeof ERAS)[number];

/** The era and era year of a date, e.g. 1960-05-01 -> 昭和 35. */
export function eraOf(y: number, m: number, d: number): { era: Era; year: number } | undefined {
  const key = y * 10_000 + m * 100 + d;
  for (const era of ERAS) {
    const [sy, sm, sd] = era.start;
    if (key >= sy * 10_000 + sm * 100 + sd) return { era, year: y - sy + 1 };
  }
  return undefined;
}

export interface Ymd {
  y: number;
  m: number;
  d: number;
}

export function parseYmd(v: string): Ymd | undefined {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})/.exec(v);
  if (!m || !validYmd(+m[1]!, +m[2]!, +m[3]!)) return undefined;
  return { y: +m[1]!, m: +m[2]!, d: +m[3]! };
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * One regular expression that finds a given date written in any of the usual Japanese and
 * Western forms, over text that has been folded (NFKC, no whitespace, ASCII upper case; see
 * scrub.ts): 1960-05-01, 1960/5/1, 1960.5.1, 19600501, 1960年5月1日, 60/5/1, 昭和35年5月1日,
 * 昭35.5.1, S35.5.1, S35/05/01, S.35.5.1, S350501, and 元年 for an era's first year.
 */
export function datePattern(date: Ymd): RegExp {
  const { y, m, d } = date;
  const mm = `0?${m}`;
  const dd = `0?${d}`;
  const sep = '[-/.・]';
  const forms = [
    `${y}${sep}${mm}${sep}${dd}`,
    `${y}年${mm}月${dd}日?`,
    `${y}${p2(m)}${p2(d)}`,
    `${p2(y % 100)}/${mm}/${dd}`,
  ];
  const era = eraOf(y, m, d);
  if (era) {
    const ey = era.year === 1 ? `(?:0?1|元)` : `0?${era.year}`;
    const name = `(?:${esc(era.era.kanji)}|${esc(era.era.short)}|${era.era.letter}\\.?)`;
    forms.push(`${name}${ey}年${mm}月${dd}日?`, `${name}${ey}${sep}${mm}${sep}${dd}`, `${name}${p2(era.year)}${p2(m)}${p2(d)}`);
  }
  // The caller checks digit boundaries on the original text (19600501 inside 219600501 is some
  // other number): the folded text it searches has lost the spaces between numbers.
  return new RegExp(`(?:${forms.join('|')})`, 'g');
}

/** Writes a date found in free text in the form it was found in (year, month, day as numbers). */
export type TextDateFormat = (y: number, m: number, d: number) => string;

/**
 * Dates written in free text, shifted by the request's offset in their own format. Only
 * unambiguous forms are touched: ISO (1960-05-01, with time), slashes with a four-digit year,
 * 年月日, and CDA timestamps in `value="YYYYMMDD..."` attributes. A bare eight-digit number
 * outside an attribute may be anything and is left alone.
 */
export function shiftDatesInText(text: string, days: number): { text: string; count: number } {
  return mapDatesInText(text, (y, m, d, format) => shiftTextDate(y, m, d, format, days));
}

/** A valid date of free text, moved by whole days and written in its own form (`format`). */
export function shiftTextDate(y: number, m: number, d: number, format: TextDateFormat, days: number): string {
  const [ny, nm, nd] = addDaysYmd(y, m, d, days);
  return format(ny, nm, nd);
}

/**
 * The dates of free text that shiftDatesInText moves, each replaced by what `replace` gives for
 * it (its valid year, month and day, and how to write a date in its form); `count` of them.
 * Which text is a date never depends on the shift: every replacement keeps the digits and
 * separators around it as they were.
 */
export function mapDatesInText(text: string, replace: (y: number, m: number, d: number, format: TextDateFormat) => string): { text: string; count: number } {
  // Every form below starts with four digits: most strings (displays, units, names) have none.
  if (!/[0-9]{4}/.test(text)) return { text, count: 0 };
  let count = 0;
  const one = (y: string, m: string, d: string, format: TextDateFormat, whole: string) => {
    if (!validYmd(+y, +m, +d)) return whole;
    count++;
    return replace(+y, +m, +d, format);
  };
  let out = text.replace(/(?<![0-9])(\d{4})-(\d{2})-(\d{2})(?![0-9])/g, (w, y, m, d) => one(y, m, d, (a, b, c) => `${p4(a)}-${p2(b)}-${p2(c)}`, w));
  out = out.replace(/(?<![0-9])(\d{4})\/(\d{1,2})\/(\d{1,2})(?![0-9])/g, (w, y, m, d) =>
    one(y, m, d, (a, b, c) => `${p4(a)}/${m.length === 2 ? p2(b) : b}/${d.length === 2 ? p2(c) : c}`, w),
  );
  out = out.replace(/(?<![0-9])(\d{4})年(\d{1,2})月(\d{1,2})日/g, (w, y, m, d) => one(y, m, d, (a, b, c) => `${a}年${b}月${c}日`, w));
  out = out.replace(/(value=["'])(\d{4})(\d{2})(\d{2})(\d*(?:[+-]\d{4})?["'])/g, (w, pre, y, m, d, post) =>
    one(y, m, d, (a, b, c) => `${pre}${p4(a)}${p2(b)}${p2(c)}${post}`, w),
  );
  return { text: out, count };
}
