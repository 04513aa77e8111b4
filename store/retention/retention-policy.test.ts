import { describe, expect, it } from 'vitest';
import { parseRetentionPolicy, planRetention, RetentionPolicyError, type RetentionCandidate } from './retention-policy.js';

const now = new Date('2026-11-21T03:00:00Z'); // 12:00 in Tokyo, 2026-11-21

/** One snapshot per night at 02:00 Tokyo (17:00 UTC the day before) from `from` for `nights` nights. */
function nightly(facilityId: string, from: string, nights: number): RetentionCandidate[] {
  const out: RetentionCandidate[] = [];
  for (let i = 0; i < nights; i++) {
    const d = new Date(`${from}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + i);
    const date = d.toISOString().slice(0, 10);
    out.push({ id: `${facilityId}-${date}`, facilityId, nightlyDate: date, createdAt: new Date(d.getTime() - 7 * 3600_000) });
  }
  return out;
}

describe('retention policy text', () => {
  it('parses rules, "all" and missing rules', () => {
    expect(parseRetentionPolicy('daily=30,monthly=24,yearly=all')).toEqual({ daily: 30, monthly: 24, yearly: 'all' });
    expect(parseRetentionPolicy(' daily = 7 ')).toEqual({ daily: 7, monthly: 0, yearly: 0 });
  });
  it.each([
    ['', /a retention policy is a list/],
    ['daily=30,', /a retention policy is a list/],
    ['daily', /"daily" is not a rule/],
    ['daily=-1', /is not a rule/],
    ['hourly=3', /unknown retention rule "hourly"/],
    ['daily=3,daily=4', /given twice/],
    ['monthly=0', /between 1 and 100000/],
  ])('refuses %j with a clear message', (text, message) => {
    expect(() => parseRetentionPolicy(text)).toThrow(RetentionPolicyError);
    expect(() => parseRetentionPolicy(text)).toThrow(message);
  });
});

describe('planRetention', () => {
  const policy = parseRetentionPolicy('daily=30,monthly=24,yearly=all');

  it('keeps the last 30 nights, month ends for 24 months and year ends for good', () => {
    const snaps = nightly('F1', '2023-01-01', 1056); // up to 2025-11-21
    const plan = planRetention(snaps, policy, { now, lockDays: 30 });
    const kept = plan.filter((d) => d.keep).map((d) => d.nightlyDate);
    // 2023 ends in 2023-12-31 (yearly); the months from 2024-12 onwards (monthly, 24 months back from 2026-11)
    expect(kept).toContain('2023-12-31');
    expect(kept).not.toContain('2023-11-30');
    expect(kept).not.toContain('2024-11-30');
    expect(kept).toContain('2024-12-31');
    expect(kept).toContain('2025-10-31');
    // the latest (2025-11-21) is kept although it is older than 30 days
    expect(kept).toContain('2025-11-21');
    expect(plan.find((d) => d.nightlyDate === '2025-11-20')).toMatchObject({ keep: false });
    expect(plan.find((d) => d.nightlyDate === '2024-12-31')!.reasons).toEqual(['monthly: last of 2024-12', 'yearly: last of 2024']);
  });

  it('keeps every night of the last 30 days and everything inside the delete lock', () => {
    const snaps = nightly('F1', '2026-09-01', 82); // to 2026-11-21
    const plan = planRetention(snaps, parseRetentionPolicy('daily=30'), { now, lockDays: 45 });
    const byDate = new Map(plan.map((d) => [d.nightlyDate, d]));
    expect(byDate.get('2026-10-23')!.reasons).toContain('daily: last of night 2026-10-23');
    expect(byDate.get('2026-10-22')!.reasons).toEqual(['locked: younger than the 45-day delete lock']);
    expect(byDate.get('2026-10-06')!.keep).toBe(false);
    expect(byDate.get('2026-10-06')!.reasons[0]).toMatch(/outside every rule \(daily=30\)/);
  });

  it('many snapshots uploaded in one night cannot push the other nights out', () => {
    const real = nightly('F1', '2025-06-01', 537); // to 2026-11-19
    const fakes: RetentionCandidate[] = Array.from({ length: 500 }, (_, i) => ({
      id: `F1-fake-${String(i).padStart(3, '0')}`,
      facilityId: 'F1',
      nightlyDate: '2026-11-21',
      createdAt: new Date(now.getTime() - 3600_000 + i * 1000),
    }));
    const before = planRetention(real, policy, { now, lockDays: 30 }).filter((d) => d.keep).map((d) => d.id);
    const after = planRetention([...real, ...fakes], policy, { now, lockDays: 30 });
    for (const id of before) expect(after.find((d) => d.id === id)!.keep).toBe(true);
    // A count-based "last 30 snapshots" would have kept only fakes.
    expect(before.length).toBeGreaterThan(30);
  });

  it('pins what something still needs and plans each facility apart', () => {
    const snaps = [...nightly('F1', '2025-01-01', 3), ...nightly('F2', '2025-01-01', 2)];
    const plan = planRetention(snaps, parseRetentionPolicy('daily=1'), { now, lockDays: 1, pinned: new Map([['F1-2025-01-01', 'restore request R1 is queued']]) });
    expect(plan.filter((d) => d.keep).map((d) => d.id).sort()).toEqual(['F1-2025-01-01', 'F1-2025-01-03', 'F2-2025-01-02']);
  });
});
