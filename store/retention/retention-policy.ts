import { tokyoDate } from '../backup/backup.service.js';

/**
 * Generations kept by time (HAKOBUNE_RETENTION, e.g. "daily=30,monthly=24,yearly=all"): the last
 * snapshot of each of the last `daily` nights, of each of the last `monthly` calendar months and
 * of each of the last `yearly` years (Asia/Tokyo dates, counted back from today). Counting by
 * night rather than by snapshot means that a facility (or whoever holds its uploader token) that
 * uploads many snapshots cannot push older nights out: extra snapshots only compete with the
 * other snapshots of their own night.
 */
export interface RetentionPolicy {
  daily: number | 'all';
  monthly: number | 'all';
  yearly: number | 'all';
}

export const DEFAULT_RETENTION = 'daily=30,monthly=24,yearly=all';

export class RetentionPolicyError extends Error {
  override name = 'RetentionPolicyError';
}

const RULES = ['daily', 'monthly', 'yearly'] as const;
type Rule = (typeof RULES)[number];

/** Parses "daily=30,monthly=24,yearly=all"; a rule left out keeps nothing by that rule. */
export function parseRetentionPolicy(text: string): RetentionPolicy {
  const policy: RetentionPolicy = { daily: 0, monthly: 0, yearly: 0 };
  const seen = new Set<string>();
  const parts = text.split(',').map((p) => p.trim());
  if (!text.trim() || parts.some((p) => p === '')) {
    throw new RetentionPolicyError(`a retention policy is a list like "${DEFAULT_RETENTION}", got "${text}"`);
  }
  for (const part of parts) {
    const m = /^([a-z]+)\s*=\s*(\d+|all)$/.exec(part);
    if (!m) throw new RetentionPolicyError(`"${part}" is not a rule: write rule=count or rule=all, e.g. daily=30`);
    const [, rule, value] = m as unknown as [string, string, string];
    if (!(RULES as readonly string[]).includes(rule)) throw new RetentionPolicyError(`unknown retention rule "${rule}": the rules are ${RULES.join(', ')}`);
    if (seen.has(rule)) throw new RetentionPolicyError(`the retention rule "${rule}" is given twice`);
    seen.add(rule);
    const n = value === 'all' ? 'all' : Number(value);
    if (n !== 'all' && (n < 1 || n > 100_000)) throw new RetentionPolicyError(`${rule}=${value}: a count is between 1 and 100000 (leave the rule out to keep none by it)`);
    policy[rule as Rule] = n;
  }
  return policy;
}

export function formatRetentionPolicy(p: RetentionPolicy): string {
  return RULES.filter((r) => p[r] !== 0).map((r) => `${r}=${p[r]}`).join(',');
}

export interface RetentionCandidate {
  id: string;
  facilityId: string;
  nightlyDate: string;
  createdAt: Date;
}

export interface RetentionDecision extends RetentionCandidate {
  keep: boolean;
  /** Why it is kept (every rule that keeps it), or why it goes. */
  reasons: string[];
}

export interface RetentionOptions {
  now: Date;
  /** Nothing created within this many days is deleted, whatever the policy says. */
  lockDays: number;
  /** Snapshots that something still needs (an index, a restore request), with the reason. */
  pinned?: Map<string, string>;
}

function addDays(date: string, days: number): string {
  const d = new Date(`${date}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

function addMonths(month: string, months: number): string {
  const [y, m] = month.split('-').map(Number) as [number, number];
  const total = y * 12 + (m - 1) + months;
  return `${String(Math.floor(total / 12)).padStart(4, '0')}-${String((total % 12) + 1).padStart(2, '0')}`;
}

/**
 * Decides, per facility, which snapshots the policy keeps and which may go. Pure: the same
 * snapshots, policy and clock give the same plan. Every facility's latest snapshot is kept
 * (the base of its next delta upload).
 */
export function planRetention(snapshots: RetentionCandidate[], policy: RetentionPolicy, opts: RetentionOptions): RetentionDecision[] {
  const today = tokyoDate(opts.now);
  const lockedAfter = opts.now.getTime() - opts.lockDays * 86_400_000;
  const firstNight = policy.daily === 'all' ? '' : policy.daily === 0 ? '9999-99-99' : addDays(today, -(policy.daily - 1));
  const firstMonth = policy.monthly === 'all' ? '' : policy.monthly === 0 ? '9999-99' : addMonths(today.slice(0, 7), -(policy.monthly - 1));
  const firstYear = policy.yearly === 'all' ? '' : policy.yearly === 0 ? '9999' : String(Number(today.slice(0, 4)) - (policy.yearly - 1)).padStart(4, '0');

  const byFacility = new Map<string, RetentionCandidate[]>();
  for (const s of snapshots) {
    const list = byFacility.get(s.facilityId);
    if (list) list.push(s);
    else byFacility.set(s.facilityId, [s]);
  }
  const out: RetentionDecision[] = [];
  for (const list of byFacility.values()) {
    list.sort((a, b) => (a.nightlyDate < b.nightlyDate ? -1 : a.nightlyDate > b.nightlyDate ? 1 : a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1)));
    // The last snapshot of each night, month and year (the list is in time order).
    const lastOf = (key: (s: RetentionCandidate) => string) => {
      const last = new Map<string, string>();
      for (const s of list) last.set(key(s), s.id);
      return new Map([...last].map(([k, id]) => [id, k]));
    };
    const nights = lastOf((s) => s.nightlyDate);
    const months = lastOf((s) => s.nightlyDate.slice(0, 7));
    const years = lastOf((s) => s.nightlyDate.slice(0, 4));
    const latest = list[list.length - 1]!.id;
    for (const s of list) {
      const reasons: string[] = [];
      if (s.createdAt.getTime() > lockedAfter) reasons.push(`locked: younger than the ${opts.lockDays}-day delete lock`);
      if (s.id === latest) reasons.push('the latest snapshot of the facility');
      const night = nights.get(s.id);
      if (night !== undefined && night >= firstNight) reasons.push(`daily: last of night ${night}`);
      const month = months.get(s.id);
      if (month !== undefined && month >= firstMonth) reasons.push(`monthly: last of ${month}`);
      const year = years.get(s.id);
      if (year !== undefined && year >= firstYear) reasons.push(`yearly: last of ${year}`);
      const pin = opts.pinned?.get(s.id);
      if (pin) reasons.push(pin);
      if (reasons.length) out.push({ ...s, keep: true, reasons });
      else {
        const why = night === undefined ? `not the last snapshot of night ${s.nightlyDate}` : `night ${s.nightlyDate} is outside every rule (${formatRetentionPolicy(policy) || 'no rule'})`;
        out.push({ ...s, keep: false, reasons: [why] });
      }
    }
  }
  return out;
}
