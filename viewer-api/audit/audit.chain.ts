import { createHash } from 'node:crypto';

/**
 * The audit trail's tamper evidence, as pure functions over plain rows.
 *
 * Every entry stores hash = SHA-256(prev_hash || canonical JSON of the entry), prev_hash being the
 * previous entry's hash (64 zeros for the first). Changing, inserting or removing an entry breaks
 * the chain from that point; the head row (count and last hash, updated with each append) catches
 * removal of the last entries, which a chain alone cannot see.
 *
 * Limits: whoever can write the whole database (its owner, a superuser) can rewrite every entry
 * and the head consistently. Only a copy of the head kept outside the database (`hakobune audit
 * anchor`, recorded by an operator or sent to another system periodically) exposes that.
 */
export const GENESIS_HASH = '0'.repeat(64);

export type AuditOutcome = 'success' | 'denied' | 'failure';

/** One audit entry, as stored and as hashed. */
export interface AuditRecord {
  seq: number;
  /** ISO 8601 instant with milliseconds (UTC). */
  at: string;
  action: string;
  outcome: AuditOutcome;
  /** The real reason of a denial or failure (never sent to the client that was denied). */
  reason: string | null;
  userId: number | null;
  username: string | null;
  facilityId: string | null;
  role: string | null;
  address: string | null;
  deviceId: string | null;
  endpoint: string | null;
  patient: string | null;
  purpose: string | null;
  breakGlassReason: string | null;
  /** Canonical JSON of further detail (categories, record ids, the target of a change). */
  detail: string;
  prevHash: string;
  hash: string;
}

/**
 * Canonical JSON in the manner of RFC 8785 (JCS): object keys sorted by UTF-16 code units, no
 * white space, ECMAScript number and string serialisation. Undefined members are left out;
 * non-finite numbers are refused (JSON cannot carry them).
 */
/** The order of canonical JSON's keys: by UTF-16 code units. */
export const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Error('canonical JSON cannot carry a non-finite number');
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
      if (value instanceof Date) return JSON.stringify(value.toISOString());
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => byCodeUnits(a, b));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
    }
    default:
      throw new Error(`canonical JSON cannot carry a ${typeof value}`);
  }
}

// The members of an entry as hashed (all but prevHash and hash), in canonical order.
const HASHED_KEYS: readonly (keyof AuditRecord)[] = (
  ['seq', 'at', 'action', 'outcome', 'reason', 'userId', 'username', 'facilityId', 'role', 'address', 'deviceId', 'endpoint', 'patient', 'purpose', 'breakGlassReason', 'detail'] as const
).slice().sort(byCodeUnits);
const HASHED_PREFIXES = HASHED_KEYS.map((k) => `${JSON.stringify(k)}:`);

/**
 * canonicalJson of an entry without prevHash and hash. An entry of exactly the stored members
 * is written in their known order (no copy of it, no sort per entry); anything else (a row with
 * extra members) the general way.
 */
export function hashedJson(entry: Omit<AuditRecord, 'hash'>): string {
  const e = entry as unknown as Record<string, unknown>;
  const keys = Object.keys(e);
  if (keys.length === HASHED_KEYS.length + 1 && 'prevHash' in e && HASHED_KEYS.every((k) => k in e)) {
    let out = '';
    for (let i = 0; i < HASHED_KEYS.length; i++) {
      const x = e[HASHED_KEYS[i]!];
      if (x === undefined) continue;
      out += `${out ? ',' : ''}${HASHED_PREFIXES[i]}${canonicalJson(x)}`;
    }
    return `{${out}}`;
  }
  const { prevHash: _prev, ...body } = entry;
  return canonicalJson(body);
}

export function entryHash(entry: Omit<AuditRecord, 'hash'>): string {
  return createHash('sha256').update(entry.prevHash, 'utf8').update(hashedJson(entry), 'utf8').digest('hex');
}

export interface AuditHead {
  count: number;
  lastHash: string;
}

export type ChainProblemKind = 'altered' | 'removed' | 'inserted' | 'head-mismatch';

export interface ChainProblem {
  kind: ChainProblemKind;
  /** The first entry affected (for a removal: the first missing sequence number). */
  seq: number;
  message: string;
}

export interface ChainReport {
  ok: boolean;
  /** Entries read from the table. */
  entries: number;
  head: AuditHead;
  /** The first problem found; verification stops there. */
  problem?: ChainProblem;
}

/**
 * Checks entries fed in ascending seq order, one page at a time, so that a chain of any length
 * is verified in constant memory.
 */
export class ChainVerifier {
  private expectedSeq = 1;
  private prevHash = GENESIS_HASH;
  private seen = 0;
  private problem: ChainProblem | undefined;

  /** Returns false once a problem is found (the caller may stop reading). */
  push(row: AuditRecord): boolean {
    if (this.problem) return false;
    this.seen++;
    if (row.seq > this.expectedSeq) {
      return this.fail('removed', this.expectedSeq, `entries ${this.expectedSeq}..${row.seq - 1} are missing`);
    }
    if (row.seq < this.expectedSeq) {
      return this.fail('inserted', row.seq, `entry ${row.seq} appears twice or out of order`);
    }
    const { hash, ...rest } = row;
    if (entryHash(rest) !== hash) {
      return this.fail('altered', row.seq, `entry ${row.seq} does not match its hash: its content was changed`);
    }
    if (row.prevHash !== this.prevHash) {
      // The entry is intact but does not follow the one before it: something was put in or taken out.
      return this.fail(
        'inserted',
        row.seq,
        `entry ${row.seq} does not follow entry ${row.seq - 1}: an entry was inserted or replaced before it`,
      );
    }
    this.prevHash = hash;
    this.expectedSeq++;
    return true;
  }

  finish(head: AuditHead): ChainReport {
    const report = (problem?: ChainProblem): ChainReport => ({
      ok: !problem,
      entries: this.seen,
      head,
      ...(problem ? { problem } : {}),
    });
    if (this.problem) return report(this.problem);
    const last = this.expectedSeq - 1;
    if (head.count > last) {
      return report({
        kind: 'removed',
        seq: last + 1,
        message: `the head counts ${head.count} entries but the chain ends at ${last}: the last entries were removed`,
      });
    }
    if (head.count < last) {
      return report({
        kind: 'inserted',
        seq: head.count + 1,
        message: `entries after ${head.count} are not covered by the head: they were added outside the exchange`,
      });
    }
    if (head.lastHash !== this.prevHash) {
      return report({ kind: 'head-mismatch', seq: last, message: 'the head hash does not match the last entry' });
    }
    return report();
  }

  private fail(kind: ChainProblemKind, seq: number, message: string): false {
    this.problem = { kind, seq, message };
    return false;
  }
}
