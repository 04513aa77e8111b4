import { describe, expect, it } from 'vitest';
import { grouped } from '../store/group.js';

/** A statement that answers when told to, recording the groups it was given. */
function gate() {
  const groups: number[][] = [];
  const release: (() => void)[] = [];
  const run = (items: number[]) => {
    groups.push(items);
    return new Promise<number[]>((resolve) => release.push(() => resolve(items.map((i) => i * 10))));
  };
  return { groups, release, run };
}

const turn = () => new Promise((r) => setImmediate(r));

describe('grouped statements', () => {
  it('with concurrency 1, waits for the statement in flight, then sends what waited together', async () => {
    const g = gate();
    const call = grouped(g.run);
    const a = call(1);
    expect(g.groups).toEqual([[1]]);
    const b = [call(2), call(3)];
    await turn();
    expect(g.groups).toEqual([[1]]);
    g.release.shift()!();
    expect(await a).toBe(10);
    await turn();
    expect(g.groups).toEqual([[1], [2, 3]]);
    g.release.shift()!();
    expect(await Promise.all(b)).toEqual([20, 30]);
  });

  it('with concurrency 2, starts a second statement while one is in flight, and no third', async () => {
    const g = gate();
    const call = grouped(g.run, { concurrency: 2 });
    const a = call(1);
    const b = call(2);
    expect(g.groups).toEqual([[1], [2]]);
    const c = [call(3), call(4)];
    await turn();
    expect(g.groups).toEqual([[1], [2]]);
    // The second answers first: what waited goes at once, each call gets its own result.
    g.release.splice(1, 1)[0]!();
    expect(await b).toBe(20);
    await turn();
    expect(g.groups).toEqual([[1], [2], [3, 4]]);
    for (const r of g.release.splice(0)) r();
    expect(await a).toBe(10);
    expect(await Promise.all(c)).toEqual([30, 40]);
  });

  it('with atTurnEnd, sends the calls of one turn together', async () => {
    const g = gate();
    const call = grouped(g.run, { atTurnEnd: true });
    const out = [1, 2, 3].map((i) => call(i));
    expect(g.groups).toEqual([]);
    await turn();
    expect(g.groups).toEqual([[1, 2, 3]]);
    const more = [call(4), call(5)];
    await turn();
    expect(g.groups).toEqual([[1, 2, 3]]);
    g.release.shift()!();
    expect(await Promise.all(out)).toEqual([10, 20, 30]);
    await turn();
    expect(g.groups).toEqual([[1, 2, 3], [4, 5]]);
    g.release.shift()!();
    expect(await Promise.all(more)).toEqual([40, 50]);
  });

  it('refuses a concurrency below 1', () => {
    expect(() => grouped(async (xs: number[]) => xs, { concurrency: 0 })).toThrow(/concurrency/);
    expect(() => grouped(async (xs: number[]) => xs, { concurrency: 1.5 })).toThrow(/concurrency/);
  });
});
