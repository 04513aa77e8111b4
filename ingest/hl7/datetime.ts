/**
 * HL7 v2.5 DTM/DT values (YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]) read into ISO 8601.
 * SS-MIX2 times are Japanese local time; without an offset they are read as +09:00 (FHIR
 * requires a zone once hours are present). Some systems write hours 24-47 to mean the next
 * day's clock: those are read as the next day and reported, never rejected.
 */
export interface HlDateTime {
  /** ISO 8601 at the precision written: `2011`, `2011-07`, `2011-07-01`, `2011-07-01T08:30:00+09:00`. */
  iso: string;
  /** The calendar date, YYYYMMDD, when the value has day precision. */
  day: string | undefined;
  /** True when the hour was written as 24-47 (next-day clock). */
  nextDayHour: boolean;
}

export type DateParse = { ok: true; value: HlDateTime } | { ok: false; reason: string };

const DTM = /^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?$/;

const isDigits = (v: string) => {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
};

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** Two ASCII digits at i as a number (the caller checked they are digits). */
const two = (v: string, i: number) => (v.charCodeAt(i) - 48) * 10 + (v.charCodeAt(i + 1) - 48);

/**
 * The common shapes (all digits, day to second precision, within the day's 24 hours, no
 * offset), read without a regex or intermediate strings; undefined for anything else.
 */
function fast(v: string): DateParse | undefined {
  const n = v.length;
  if (n < 8 || n > 14 || n % 2 !== 0 || !isDigits(v)) return undefined;
  const year = (v.charCodeAt(0) - 48) * 1000 + (v.charCodeAt(1) - 48) * 100 + two(v, 2);
  const month = two(v, 4);
  const day = two(v, 6);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  const ymd = `${v.slice(0, 4)}-${v.slice(4, 6)}-${v.slice(6, 8)}`;
  if (n === 8) return { ok: true, value: { iso: ymd, day: v, nextDayHour: false } };
  const hour = two(v, 8);
  const minute = n >= 12 ? two(v, 10) : 0;
  const second = n >= 14 ? two(v, 12) : 0;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  const iso = `${ymd}T${v.slice(8, 10)}:${n >= 12 ? v.slice(10, 12) : '00'}:${n >= 14 ? v.slice(12, 14) : '00'}+09:00`;
  return { ok: true, value: { iso, day: v.slice(0, 8), nextDayHour: false } };
}

export function parseHl7DateTime(raw: string): DateParse {
  const v = raw.trim();
  const quick = fast(v);
  if (quick) return quick;
  // Other shapes and every invalid value: the full grammar, with the reasons.
  const m = isDigits(v) && v.length >= 4 && v.length <= 14 && v.length % 2 === 0
    ? [v, v.slice(0, 4), v.length >= 6 ? v.slice(4, 6) : undefined, v.length >= 8 ? v.slice(6, 8) : undefined, v.length >= 10 ? v.slice(8, 10) : undefined, v.length >= 12 ? v.slice(10, 12) : undefined, v.length >= 14 ? v.slice(12, 14) : undefined, undefined, undefined]
    : DTM.exec(v);
  if (!m) return { ok: false, reason: `"${raw}" is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])` };
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  if (mo === undefined) return { ok: true, value: { iso: y!, day: undefined, nextDayHour: false } };
  const month = Number(mo);
  if (month < 1 || month > 12) return { ok: false, reason: `"${raw}" has month ${mo}` };
  if (d === undefined) return { ok: true, value: { iso: `${y}-${mo}`, day: undefined, nextDayHour: false } };
  const dayN = Number(d);
  const dim = daysInMonth(year, month);
  if (dayN < 1 || dayN > dim) return { ok: false, reason: `"${raw}" has day ${d} in a month of ${dim} days` };
  if (h === undefined) return { ok: true, value: { iso: `${y}-${mo}-${d}`, day: `${y}${mo}${d}`, nextDayHour: false } };
  let hour = Number(h);
  if (hour > 47) return { ok: false, reason: `"${raw}" has hour ${h}` };
  const minute = mi === undefined ? 0 : Number(mi);
  const second = s === undefined ? 0 : Number(s);
  if (minute > 59 || second > 59) return { ok: false, reason: `"${raw}" has minute ${mi ?? '00'} or second ${s ?? '00'} out of range` };
  let ymd = `${y}-${mo}-${d}`;
  const nextDayHour = hour >= 24;
  if (nextDayHour) {
    hour -= 24;
    ymd = new Date(Date.UTC(year, month - 1, dayN) + 86_400_000).toISOString().slice(0, 10);
  }
  const zone = tz ? `${tz.slice(0, 3)}:${tz.slice(3)}` : '+09:00';
  const ms = frac ? `.${frac.padEnd(3, '0').slice(0, 3)}` : '';
  const iso = `${ymd}T${pad(hour)}:${pad(minute)}:${pad(second)}${ms}${zone}`;
  return { ok: true, value: { iso, day: ymd.slice(0, 4) + ymd.slice(5, 7) + ymd.slice(8, 10), nextDayHour } };
}

/** The ISO form of a value, or undefined when empty or invalid (quality checks report those). */
export function isoOrUndefined(raw: string): string | undefined {
  if (raw === '') return undefined;
  const p = parseHl7DateTime(raw);
  return p.ok ? p.value.iso : undefined;
}

/** YYYYMMDD of a value with day precision, else undefined. */
export function dayOf(raw: string): string | undefined {
  if (raw === '') return undefined;
  const p = parseHl7DateTime(raw);
  return p.ok ? p.value.day : undefined;
}

const pad = (n: number) => String(n).padStart(2, '0');
