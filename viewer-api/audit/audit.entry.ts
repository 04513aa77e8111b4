import { byCodeUnits, canonicalJson, entryHash, type AuditOutcome, type AuditRecord } from './audit.chain.js';

/** Who did something: a signed-in user, or (for the command line) an operator of the machine. */
export interface AuditActor {
  userId?: number | null;
  username?: string | null;
  facilityId?: string | null;
  role?: string | null;
}

/** What a caller records; the log adds seq, time and the chain. */
export interface AuditInput {
  /** Dotted name of what happened: auth.login, record.read, admin.device.register, audit.export ... */
  action: string;
  outcome: AuditOutcome;
  reason?: string | null;
  actor?: AuditActor;
  address?: string | null;
  deviceId?: string | null;
  endpoint?: string | null;
  patient?: string | null;
  purpose?: string | null;
  breakGlassReason?: string | null;
  /** Categories, record ids, targets of a change: anything else worth keeping (JSON values). */
  detail?: Record<string, unknown>;
}

const MAX_TEXT = 2000;

/**
 * PostgreSQL text cannot hold NUL, and an attacker's 1 MB query string does not deserve to be
 * kept whole: clean text before it is hashed, so that what is stored is exactly what was hashed.
 */
function clean(s: string | null | undefined): string | null {
  if (s === undefined || s === null) return null;
  const t = s.replace(/\u0000/g, '\uFFFD');
  return t.length > MAX_TEXT ? t.slice(0, MAX_TEXT) + '…' : t;
}

export function cleanDeep(v: unknown): unknown {
  if (typeof v === 'string') return clean(v);
  if (Array.isArray(v)) return v.slice(0, 1000).map(cleanDeep);
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [clean(k)!, cleanDeep(x)]));
  }
  return v;
}

/**
 * canonicalJson(cleanDeep(v)), written in one walk without the cleaned copy (every request's
 * entries pass here). A key that cleaning would change (rare: NUL, or longer than MAX_TEXT) takes
 * the two-step way, which also settles keys that become equal once cleaned.
 */
export function cleanCanonicalJson(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(clean(v));
  if (Array.isArray(v)) return `[${v.slice(0, 1000).map((x) => (x === undefined ? 'null' : cleanCanonicalJson(x))).join(',')}]`;
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const entries = Object.entries(v);
    for (const [k] of entries) if (k.length > MAX_TEXT || k.includes('\u0000')) return canonicalJson(cleanDeep(v));
    let out = '';
    for (const [k, x] of entries.sort(([a], [b]) => byCodeUnits(a, b))) {
      if (x === undefined) continue;
      out += `${out ? ',' : ''}${JSON.stringify(k)}:${cleanCanonicalJson(x)}`;
    }
    return `{${out}}`;
  }
  return canonicalJson(v);
}

/** An entry's content, cleaned, before it takes its place in the chain (no seq, prev_hash or hash yet). */
export type EntryBody = Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>;

/** Cleans what a caller records (once: a batch that must be rechained reuses it). */
export function entryBody(input: AuditInput, at: Date): EntryBody {
  return {
    at: at.toISOString(),
    action: clean(input.action)!,
    outcome: input.outcome,
    reason: clean(input.reason),
    userId: input.actor?.userId ?? null,
    username: clean(input.actor?.username),
    facilityId: clean(input.actor?.facilityId),
    role: clean(input.actor?.role),
    address: clean(input.address),
    deviceId: clean(input.deviceId),
    endpoint: clean(input.endpoint),
    patient: clean(input.patient),
    purpose: clean(input.purpose),
    breakGlassReason: clean(input.breakGlassReason),
    detail: cleanCanonicalJson(input.detail ?? {}),
  };
}

/** The stored entry of `body` at position `seq`, after the entry whose hash is `prevHash`. */
export function chainEntry(body: EntryBody, seq: number, prevHash: string): AuditRecord {
  const unhashed: Omit<AuditRecord, 'hash'> = { seq, ...body, prevHash };
  return { ...unhashed, hash: entryHash(unhashed) };
}

/** Builds the stored entry that follows `prevHash` at position `seq`. */
export function buildEntry(input: AuditInput, seq: number, at: Date, prevHash: string): AuditRecord {
  return chainEntry(entryBody(input, at), seq, prevHash);
}
