import { normaliseSegments } from './decode.js';

/**
 * A small HL7 v2 reader over a decoded string: the hot path of indexing. It splits segments and
 * fields once and leaves components to accessors, which is several times faster than building
 * the full object tree (bench/README.md#indexing). The hl7v2 package remains the reference: the
 * tests check that both read the same values from every sample.
 */
export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export interface Segment {
  readonly id: string;
  /** fields[n] is field n as written (escapes kept); fields[0] is the segment id. For MSH,
   *  fields[1] is the field separator and fields[2] the encoding characters, as in HL7. */
  readonly fields: readonly string[];
  /** 1-based line number in the message, for findings. */
  readonly line: number;
  readonly delimiters: Delimiters;
}

export interface Message {
  readonly delimiters: Delimiters;
  readonly segments: readonly Segment[];
}

export class Hl7ParseError extends Error {
  override name = 'Hl7ParseError';
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(message);
  }
}

/** A segment id: an upper-case letter, then two upper-case letters or digits (checked per line). */
function isSegmentId(id: string): boolean {
  if (id.length !== 3) return false;
  const a = id.charCodeAt(0);
  if (a < 65 || a > 90) return false;
  for (let i = 1; i < 3; i++) {
    const c = id.charCodeAt(i);
    if (!((c >= 65 && c <= 90) || (c >= 48 && c <= 57))) return false;
  }
  return true;
}

/** Reads a decoded message; throws Hl7ParseError when it is not HL7 v2 at all. */
export function readMessage(text: string): Message {
  const lines = normaliseSegments(text);
  const first = lines[0];
  if (first === undefined) throw new Hl7ParseError('the message is empty', 1);
  if (!first.startsWith('MSH') || first.length < 8) {
    throw new Hl7ParseError('the message does not start with an MSH segment', 1);
  }
  const fs = first[3]!;
  const enc = first.slice(4, first.indexOf(fs, 4) === -1 ? 8 : first.indexOf(fs, 4));
  if (enc.length < 4 || /[A-Za-z0-9\s]/.test(fs + enc)) {
    throw new Hl7ParseError(`MSH-2 encoding characters "${enc}" are not valid`, 1);
  }
  const delimiters: Delimiters = {
    field: fs,
    component: enc[0]!,
    repetition: enc[1]!,
    escape: enc[2]!,
    subcomponent: enc[3]!,
  };
  const segments: Segment[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const parts = line.split(fs);
    const id = parts[0]!;
    if (!isSegmentId(id)) {
      throw new Hl7ParseError(`line ${i + 1} is not a segment (starts with "${id.slice(0, 10)}")`, i + 1);
    }
    if (id === 'MSH') parts.splice(1, 0, fs);
    segments.push({ id, fields: parts, line: i + 1, delimiters });
  }
  return { delimiters, segments };
}

/** Field n of a segment as written, '' when absent. */
export function rawField(seg: Segment | undefined, n: number): string {
  return seg?.fields[n] ?? '';
}

/**
 * Component `c` (1-based) of subcomponent `s` of repetition `r` (0-based) of a field, with HL7
 * escapes resolved. `value(seg, 5)` is component 1 of the first repetition.
 */
export function value(seg: Segment | undefined, n: number, c = 1, s = 1, r = 0): string {
  const raw = rawField(seg, n);
  if (raw === '') return '';
  return pick(raw, c, s, r, seg!.delimiters);
}

export function pick(raw: string, c = 1, s = 1, r = 0, d: Delimiters = DEFAULT_DELIMITERS): string {
  // Scans with indexOf instead of splitting: this runs for every field read of every message.
  let v = nth(raw, d.repetition, r);
  v = nth(v, d.component, c - 1);
  v = nth(v, d.subcomponent, s - 1);
  return v.includes(d.escape) ? unescape(v, d) : v;
}

/** The i-th (0-based) part of `v` split by `sep`, without allocating the other parts. */
function nth(v: string, sep: string, i: number): string {
  let start = 0;
  for (let k = 0; k < i; k++) {
    const at = v.indexOf(sep, start);
    if (at === -1) return '';
    start = at + 1;
  }
  const end = v.indexOf(sep, start);
  return start === 0 && end === -1 ? v : v.slice(start, end === -1 ? v.length : end);
}

/** Repetition `r` (0-based) of a field as written, '' when absent; allocates nothing else. */
export function repetition(seg: Segment | undefined, n: number, r = 0): string {
  const raw = rawField(seg, n);
  return raw === '' ? '' : nth(raw, seg!.delimiters.repetition, r);
}

/** The repetitions of a field, as raw strings. */
export function repetitions(seg: Segment | undefined, n: number): string[] {
  const raw = rawField(seg, n);
  return raw === '' ? [] : raw.split(seg!.delimiters.repetition);
}

export const DEFAULT_DELIMITERS: Delimiters = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };

/**
 * Resolves HL7 v2.5 escape sequences (2.7 "Use of escape sequences in text fields"): \F\ \S\
 * \T\ \R\ \E\, \Xhh..\ (hex), \.br\ as a line break; highlighting \H\ \N\ is dropped.
 */
export function unescape(v: string, d: Delimiters = DEFAULT_DELIMITERS): string {
  const e = d.escape;
  let out = '';
  let i = 0;
  while (i < v.length) {
    const ch = v[i]!;
    if (ch !== e) {
      out += ch;
      i++;
      continue;
    }
    const end = v.indexOf(e, i + 1);
    if (end === -1) {
      out += v.slice(i);
      break;
    }
    const seq = v.slice(i + 1, end);
    switch (seq) {
      case 'F': out += d.field; break;
      case 'S': out += d.component; break;
      case 'T': out += d.subcomponent; break;
      case 'R': out += d.repetition; break;
      case 'E': out += e; break;
      case '.br': out += '\n'; break;
      case 'H': case 'N': break;
      default:
        if (/^X([0-9A-Fa-f]{2})+$/.test(seq)) {
          out += Buffer.from(seq.slice(1), 'hex').toString('latin1');
        } else {
          out += e + seq + e; // unknown: keep as written
        }
    }
    i = end + 1;
  }
  return out;
}

/** The first segment with this id, optionally after a given index. */
export function segment(msg: Message, id: string, from = 0): Segment | undefined {
  for (let i = from; i < msg.segments.length; i++) if (msg.segments[i]!.id === id) return msg.segments[i];
  return undefined;
}

export function segmentsOf(msg: Message, id: string): Segment[] {
  return msg.segments.filter((s) => s.id === id);
}
