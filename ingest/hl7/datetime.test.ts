import { describe, expect, it } from 'vitest';
import { parseHl7DateTime } from './datetime.js';

describe('parseHl7DateTime', () => {
  it('reads every precision, in Japanese time unless an offset is written', () => {
    expect(parseHl7DateTime('2011')).toEqual({ ok: true, value: { iso: '2011', day: undefined, nextDayHour: false } });
    expect(parseHl7DateTime('201107')).toMatchObject({ ok: true, value: { iso: '2011-07' } });
    expect(parseHl7DateTime('20110701')).toMatchObject({ ok: true, value: { iso: '2011-07-01', day: '20110701' } });
    expect(parseHl7DateTime('2011070108')).toMatchObject({ ok: true, value: { iso: '2011-07-01T08:00:00+09:00' } });
    expect(parseHl7DateTime('20111220224447.3399')).toMatchObject({ ok: true, value: { iso: '2011-12-20T22:44:47.339+09:00' } });
    expect(parseHl7DateTime('201107010830+0000')).toMatchObject({ ok: true, value: { iso: '2011-07-01T08:30:00+00:00' } });
  });

  it('reads hours 24-47 as the next day and says so', () => {
    expect(parseHl7DateTime('201112312530')).toEqual({
      ok: true,
      value: { iso: '2012-01-01T01:30:00+09:00', day: '20120101', nextDayHour: true },
    });
  });

  it('rejects impossible dates with a reason', () => {
    for (const bad of ['20110230', '20111301', '201101011260', '2011070148', 'yesterday', '2011-07-01', '']) {
      const r = parseHl7DateTime(bad);
      expect(r.ok, bad).toBe(false);
    }
    expect(parseHl7DateTime('20110230')).toMatchObject({ ok: false, reason: expect.stringContaining('day 30') });
    expect(parseHl7DateTime('20120229').ok).toBe(true); // leap year
  });
});

describe('parseHl7DateTime fast path', () => {
  it('reads every digits-only value as the full grammar does', () => {
    // The fast path and the general reader must agree: compare against values whose expected
    // form is built independently, over every month end, hours and precisions.
    for (const ym of ['202001', '202002', '202102', '210002', '200002', '202004', '202012']) {
      const y = Number(ym.slice(0, 4));
      const m = Number(ym.slice(4));
      const dim = new Date(Date.UTC(y, m, 0)).getUTCDate();
      for (const d of [0, 1, dim, dim + 1]) {
        const day = `${ym}${String(d).padStart(2, '0')}`;
        const valid = d >= 1 && d <= dim;
        expect(parseHl7DateTime(day).ok, day).toBe(valid);
        if (!valid) continue;
        const iso = `${ym.slice(0, 4)}-${ym.slice(4)}-${day.slice(6)}`;
        expect(parseHl7DateTime(day)).toEqual({ ok: true, value: { iso, day, nextDayHour: false } });
        expect(parseHl7DateTime(`${day}23`)).toEqual({ ok: true, value: { iso: `${iso}T23:00:00+09:00`, day, nextDayHour: false } });
        expect(parseHl7DateTime(`${day}0759`)).toEqual({ ok: true, value: { iso: `${iso}T07:59:00+09:00`, day, nextDayHour: false } });
        expect(parseHl7DateTime(`${day}075905`)).toEqual({ ok: true, value: { iso: `${iso}T07:59:05+09:00`, day, nextDayHour: false } });
        expect(parseHl7DateTime(`${day}0760`).ok).toBe(false);
        expect(parseHl7DateTime(`${day}075960`).ok).toBe(false);
      }
    }
    expect(parseHl7DateTime(' 20200101 ')).toMatchObject({ ok: true, value: { iso: '2020-01-01' } });
    expect(parseHl7DateTime('2020010124')).toMatchObject({ ok: true, value: { iso: '2020-01-02T00:00:00+09:00', nextDayHour: true } });
  });
});
