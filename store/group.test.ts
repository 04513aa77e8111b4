import { describe, expect, it } from 'vitest';
import { freshReads, grouped } from './group.js';

const deferred = <T = void>() => {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
};

describe('grouped statements', () => {
  it('runs a call alone at once, and groups the calls made while a statement is in flight', async () => {
    const groups: number[][] = [];
    const gates: ReturnType<typeof deferred<void>>[] = [];
    const run = grouped<number, number>(async (xs) => {
      groups.push(xs);
      const g = deferred();
      gates.push(g);
      await g.promise;
      return xs.map((x) => x * 10);
    });
    const first = run(1);
    expect(groups).toEqual([[1]]);
    const later = [run(2), run(3), run(4)];
    expect(groups).toHaveLength(1);
    gates[0]!.resolve();
    expect(await first).toBe(10);
    await new Promise((r) => setImmediate(r));
    expect(groups).toEqual([[1], [2, 3, 4]]);
    gates[1]!.resolve();
    expect(await Promise.all(later)).toEqual([20, 30, 40]);
  });

  it('a failed group is run again call by call: only the bad call fails, and the next group runs', async () => {
    let n = 0;
    const gate = deferred<void>();
    const seen: string[][] = [];
    const run = grouped<string, string>(async (xs) => {
      seen.push(xs);
      if (n++ === 0) {
        await gate.promise;
        return xs;
      }
      if (xs.includes('bad')) throw new Error('statement failed');
      return xs.map((x) => x.toUpperCase());
    });
    const first = run('a');
    const group = [run('b'), run('bad'), run('d')];
    gate.resolve();
    expect(await first).toBe('a');
    const settled = await Promise.allSettled(group);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual(['B', 'statement failed', 'D']);
    expect(seen).toEqual([['a'], ['b', 'bad', 'd'], ['b'], ['bad'], ['d']]);
    expect(await run('c')).toBe('C');
  });

  it('keeps groups to the largest size asked', async () => {
    const sizes: number[] = [];
    const gate = deferred();
    const run = grouped<number, number>(async (xs) => {
      sizes.push(xs.length);
      if (sizes.length === 1) await gate.promise;
      return xs;
    }, { maxGroup: 3 });
    const all = [run(0), ...Array.from({ length: 7 }, (_, i) => run(i + 1))];
    gate.resolve();
    expect(await Promise.all(all)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(sizes).toEqual([1, 3, 3, 1]);
  });

  it('without retryEach, a failed group fails every call of it, and the next group runs', async () => {
    const gate = deferred<void>();
    const seen: string[][] = [];
    const run = grouped<string, string>(
      async (xs) => {
        seen.push(xs);
        if (seen.length === 1) await gate.promise;
        if (xs.includes('bad')) throw new Error('statement failed');
        return xs;
      },
      { retryEach: false },
    );
    const first = run('a');
    const group = [run('b'), run('bad')];
    gate.resolve();
    expect(await first).toBe('a');
    const settled = await Promise.allSettled(group);
    expect(settled.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(seen).toEqual([['a'], ['b', 'bad']]);
    expect(await run('c')).toBe('c');
  });

  it('an answer of the wrong length fails the group', async () => {
    const run = grouped<number, number>(async () => []);
    await expect(run(1)).rejects.toThrow('answered 0 results for 1 calls');
  });
});

describe('fresh reads', () => {
  it('a caller never gets a read that started before it asked; those who asked meanwhile share the next one', async () => {
    const reads = freshReads<number>();
    const gates: ReturnType<typeof deferred<number>>[] = [];
    const read = () => {
      const g = deferred<number>();
      gates.push(g);
      return g.promise;
    };
    const since0 = performance.now();
    const a = reads('k', since0, read);
    // Asked at the same instant the read started: shares it.
    const a2 = reads('k', since0 - 1, read);
    await new Promise((r) => setTimeout(r, 2));
    // Asked after the running read started: waits for the next one, shared by both.
    const b = reads('k', performance.now(), read);
    const c = reads('k', performance.now(), read);
    expect(gates).toHaveLength(1);
    gates[0]!.resolve(1);
    expect(await a).toBe(1);
    expect(await a2).toBe(1);
    await new Promise((r) => setImmediate(r));
    expect(gates).toHaveLength(2);
    gates[1]!.resolve(2);
    expect(await b).toBe(2);
    expect(await c).toBe(2);
    // Other keys read on their own.
    const d = reads('other', performance.now(), read);
    expect(gates).toHaveLength(3);
    gates[2]!.resolve(3);
    expect(await d).toBe(3);
  });

  it('a failed read fails its callers only; the next one reads again', async () => {
    const reads = freshReads<number>();
    const gate = deferred<number>();
    const a = reads('k', performance.now(), () => gate.promise);
    await new Promise((r) => setTimeout(r, 2));
    const b = reads('k', performance.now(), async () => 7);
    gate.reject(new Error('read failed'));
    await expect(a).rejects.toThrow('read failed');
    expect(await b).toBe(7);
  });
});
