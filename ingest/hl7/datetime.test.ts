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
