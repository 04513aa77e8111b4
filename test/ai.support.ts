import type { AiService } from '../viewer-api/ai/registry.js';
import type { StandIn } from '../viewer-api/ai/standin.js';

/**
 * A leak scanner for what leaves the exchange towards an AI service: given what is known about a
 * patient, it lists every written form of each identifier (independently of the de-identifier's
 * own folding) and looks for each one in every string of a JSON value, including base64
 * attachments decoded. Shared by the de-identification and the end-to-end tests. Also a
 * registry entry for the client tests.
 */

/** A stand-in as it started: answering normally, nothing queued, nothing received (between tests). */
export function resetStandIn(s: StandIn): void {
  s.queue.length = 0;
  s.fallback = { kind: 'ok' };
  s.received.length = 0;
}

/** A registered service at `base` (a stand-in's FHIR base), with what the client tests need. */
export function aiService(base: string, over: Partial<AiService> = {}): AiService {
  return {
    id: 'risk',
    name: 'Risk model',
    baseUrl: base,
    operation: '$analyze',
    auth: { kind: 'none' },
    categories: ['labs'],
    facilities: 'all',
    roles: ['physician'],
    timeoutMs: 2000,
    rateLimit: { perMinute: 600_000, burst: 1000 },
    location: { country: 'JP', region: 'Tokyo' },
    allowOutsideJapan: false,
    birthDate: 'age',
    enabled: true,
    createdAt: 0,
    updatedAt: 0,
    updatedBy: 'test',
    ...over,
  };
}

export interface KnownPatient {
  names: { family?: string; given?: string }[];
  /** YYYY-MM-DD or YYYYMMDD. */
  birthDates: string[];
  addresses: string[];
  postalCodes: string[];
  phones: string[];
  localIds: string[];
  insuranceNumbers: string[];
}

export interface Form {
  kind: string;
  form: string;
  /** Digits and codes only count when not part of a longer number. */
  bounded: boolean;
}

export interface Leak {
  kind: string;
  form: string;
  path: string;
}

const HALF: Record<string, string> = {};
{
  const full = 'ァアィイゥウェエォオカキクケコサシスセソタチッツテトナニヌネノハヒフヘホマミムメモャヤュユョヨラリルレロワヲンー';
  const half = 'ｧｱｨｲｩｳｪｴｫｵｶｷｸｹｺｻｼｽｾｿﾀﾁｯﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓｬﾔｭﾕｮﾖﾗﾘﾙﾚﾛﾜｦﾝｰ';
  for (let i = 0; i < full.length; i++) HALF[full[i]!] = half[i]!;
  const voiced = 'ガギグゲゴザジズゼゾダヂヅデドバビブベボ';
  const base = 'カキクケコサシスセソタチツテトハヒフヘホ';
  for (let i = 0; i < voiced.length; i++) HALF[voiced[i]!] = HALF[base[i]!]! + 'ﾞ';
  const semi = 'パピプペポ';
  for (let i = 0; i < semi.length; i++) HALF[semi[i]!] = HALF['ハヒフヘホ'[i]!]! + 'ﾟ';
  HALF['ヴ'] = 'ｳﾞ';
  HALF['　'] = ' ';
}

const toHalfWidth = (s: string) => Array.from(s, (c) => HALF[c] ?? c).join('');
const toHiragana = (s: string) => Array.from(s, (c) => (c >= '\u30A1' && c <= '\u30F6' ? String.fromCharCode(c.charCodeAt(0) - 0x60) : c)).join('');
const toFullWidthDigits = (s: string) => s.replace(/[0-9]/g, (d) => String.fromCharCode(d.charCodeAt(0) + 0xfee0)).replace(/-/g, '－').replace(/\//g, '／');

const ERAS: [string, string, number, number, number][] = [
  ['令和', 'R', 2019, 5, 1],
  ['平成', 'H', 1989, 1, 8],
  ['昭和', 'S', 1926, 12, 25],
  ['大正', 'T', 1912, 7, 30],
];

function dateForms(v: string): string[] {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})$/.exec(v);
  if (!m) return [v];
  const [y, mm, dd] = [m[1]!, m[2]!, m[3]!];
  const [mo, d] = [String(+mm), String(+dd)];
  const out = [
    `${y}-${mm}-${dd}`,
    `${y}${mm}${dd}`,
    `${y}/${mo}/${d}`,
    `${y}/${mm}/${dd}`,
    `${y}.${mo}.${d}`,
    `${y}年${mo}月${d}日`,
    `${y}年${mm}月${dd}日`,
  ];
  const key = +y * 10_000 + +mm * 100 + +dd;
  const era = ERAS.find(([, , ey, em, ed]) => key >= ey * 10_000 + em * 100 + ed);
  if (era) {
    const ey = +y - era[2] + 1;
    out.push(`${era[0]}${ey}年${mo}月${d}日`, `${era[0]}${ey}年${mm}月${dd}日`, `${era[1]}${ey}.${mo}.${d}`, `${era[1]}${ey}/${mo}/${d}`, `${era[1]}.${ey}.${mo}.${d}`);
    if (ey === 1) out.push(`${era[0]}元年${mo}月${d}日`);
  }
  return [...out, ...out.map(toFullWidthDigits)];
}

/** Every written form of every identifier of the patient. */
export function identifierForms(p: KnownPatient): Form[] {
  const forms: Form[] = [];
  const add = (kind: string, form: string | undefined, bounded = false) => {
    if (!form || form.length < 2) return;
    if (!forms.some((f) => f.form === form)) forms.push({ kind, form, bounded });
  };
  for (const n of p.names) {
    // One-field kana names ("ヤマダ　タロウ") split into their parts.
    const parts = [n.family, n.given].flatMap((x) => (x ?? '').split(/[\s\u3000]+/)).filter(Boolean);
    const variants = (s: string) => [s, toHiragana(s), toHalfWidth(s)];
    const joined = [parts.join(''), parts.join(' '), parts.join('\u3000')];
    for (const j of joined) for (const v of variants(j)) add('name', v);
    for (const part of parts) if (part.length >= 2) for (const v of variants(part)) add('name', v);
  }
  for (const b of p.birthDates) for (const f of dateForms(b)) add('birth-date', f, true);
  for (const a of p.addresses) {
    add('address', a);
    add('address', a.normalize('NFKC'));
    const street = a.normalize('NFKC').replace(/^.+?[都道府県]/, '').replace(/^.+?[市区町村]/, '');
    if (street.length >= 4) {
      add('address', street);
      add('address', toFullWidthDigits(street));
    }
  }
  for (const pc of p.postalCodes) {
    const digits = pc.normalize('NFKC').replace(/\D/g, '');
    add('postal-code', `${digits.slice(0, 3)}-${digits.slice(3)}`, true);
    add('postal-code', digits, true);
  }
  for (const ph of p.phones) {
    const n = ph.normalize('NFKC');
    add('phone', n, true);
    add('phone', n.replace(/\D/g, ''), true);
    add('phone', toFullWidthDigits(n), true);
  }
  for (const id of p.localIds) {
    add('local-id', id, true);
    add('local-id', toFullWidthDigits(id), true);
  }
  for (const n of p.insuranceNumbers) add('insurance-number', n, true);
  return forms;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Every form found in any string of `value` (keys included), with the JSON path where it is.
 * Strings are checked as they are, NFKC-normalised, and without whitespace; base64 `data` of an
 * attachment is decoded and checked the same way.
 */
export function scanForIdentifiers(value: unknown, forms: readonly Form[]): Leak[] {
  const leaks: Leak[] = [];
  const patterns = forms.map((f) => ({
    ...f,
    re: f.bounded ? new RegExp(`(?<![0-9A-Za-z０-９])${esc(f.form)}(?![0-9A-Za-z０-９])`) : undefined,
  }));
  const check = (s: string, path: string) => {
    const views = [s, s.normalize('NFKC'), s.replace(/[\s\u3000]+/g, ''), s.normalize('NFKC').replace(/\s+/g, '')];
    for (const p of patterns) {
      if (views.some((v) => (p.re ? p.re.test(v) : v.includes(p.form)))) leaks.push({ kind: p.kind, form: p.form, path });
    }
  };
  const walk = (v: unknown, path: string) => {
    if (typeof v === 'string') {
      check(v, path);
      return;
    }
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, `${path}[${i}]`));
      return;
    }
    if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        check(k, `${path}.${k}(key)`);
        if (k === 'data' && typeof x === 'string' && /^[A-Za-z0-9+/=\s]+$/.test(x)) {
          check(Buffer.from(x, 'base64').toString('utf8'), `${path}.data(decoded)`);
        }
        walk(x, `${path}.${k}`);
      }
    }
  };
  walk(value, '$');
  return leaks;
}

/** All strings of a JSON value (for counting and spot checks). */
export function allStrings(value: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown) => {
    if (typeof v === 'string') out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(value);
  return out;
}
