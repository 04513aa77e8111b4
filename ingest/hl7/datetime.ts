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

export function parseHl7DateTime(raw: string): DateParse {
  const m = DTM.exec(raw.trim());
  if (!m) return { ok: false, reason: `"${raw}" is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+ZZZZ])` };
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  if (mo === undefined) return { ok: true, value: { iso: y!, day: undefined, nextDayHour: false } };
  const month = Number(mo);
  if (month < 1 || month > 12) return { ok: false, reason: `"${raw}" has month ${mo}` };
  if (d === undefined) return { ok: true, value: { iso: `${y}-${mo}`, day: undefined, nextDayHour: false } };
  const dayN = Number(d);
  const dim = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (dayN < 1 || dayN > dim) return { ok: false, reason: `"${raw}" has day ${d} in a month of ${dim} days` };
  if (h === undefined) return { ok: true, value: { iso: `${y}-${mo}-${d}`, day: `${y}${mo}${d}`, nextDayHour: false } };
  let hour = Number(h);
  if (hour > 47) return { ok: false, reason: `"${raw}" has hour ${h}` };
  const minute = mi === undefined ? 0 : Number(mi);
  const second = s === undefined ? 0 : Number(s);
  if (minute > 59 || second > 59) return { ok: false, reason: `"${raw}" has minute ${mi ?? '00'} or second ${s ?? '00'} out of range` };
  let date = new Date(Date.UTC(year, month - 1, dayN));
  const nextDayHour = hour >= 24;
  if (nextDayHour) {
    hour -= 24;
    date = new Date(date.getTime() + 86_400_000);
  }
  const ymd = date.toISOString().slice(0, 10);
  const zone = tz ? `${tz.slice(0, 3)}:${tz.slice(3)}` : '+09:00';
  const ms = frac ? `.${frac.padEnd(3, '0').slice(0, 3)}` : '';
  const iso = `${ymd}T${pad(hour)}:${pad(minute)}:${pad(second)}${ms}${zone}`;
  return { ok: true, value: { iso, day: ymd.replaceAll('-', ''), nextDayHour } };
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
