import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PackObjectMissing, type PackStore } from '../store/backup/pack-store.js';

/**
 * The PackStore contract, run against every backend (local folder, S3, encrypted): what the
 * blob store relies on. `open` makes a fresh, empty store.
 */
export function packStoreContract(label: string, open: () => Promise<{ store: PackStore; cleanup: () => Promise<void> }>): void {
  describe(`PackStore contract: ${label}`, () => {
    let store: PackStore;
    let cleanup: () => Promise<void>;
    beforeAll(async () => {
      ({ store, cleanup } = await open());
    });
    afterAll(async () => {
      await store.close();
      await cleanup();
    });

    it('stores an object and reads it whole, by range and by size', async () => {
      const data = randomBytes(200_000);
      await store.put('data/ab/object-1', data);
      expect((await store.get('data/ab/object-1')).equals(data)).toBe(true);
      expect(await store.stat('data/ab/object-1')).toBe(200_000);
      expect((await store.get('data/ab/object-1', { offset: 0, length: 1 })).equals(data.subarray(0, 1))).toBe(true);
      expect((await store.get('data/ab/object-1', { offset: 65_530, length: 70_000 })).equals(data.subarray(65_530, 135_530))).toBe(true);
      expect((await store.get('data/ab/object-1', { offset: 199_999, length: 1 })).equals(data.subarray(199_999))).toBe(true);
      expect((await store.get('data/ab/object-1', { offset: 10, length: 0 })).length).toBe(0);
    });

    it('reads the same object whole again and again', async () => {
      const data = randomBytes(3000);
      await store.put('data/ab/again', data);
      for (let i = 0; i < 3; i++) expect((await store.get('data/ab/again')).equals(data), `read ${i + 1}`).toBe(true);
      expect((await store.get('data/ab/again', { offset: 5, length: 5 })).equals(data.subarray(5, 10))).toBe(true);
      expect((await store.get('data/ab/again')).equals(data)).toBe(true);
    });

    it('answers a range past the end with the bytes that exist (a short read), not garbage', async () => {
      const data = randomBytes(1000);
      await store.put('data/ab/short', data);
      expect((await store.get('data/ab/short', { offset: 900, length: 500 })).equals(data.subarray(900))).toBe(true);
      expect((await store.get('data/ab/short', { offset: 1000, length: 10 })).length).toBe(0);
      expect((await store.get('data/ab/short', { offset: 5000, length: 10 })).length).toBe(0);
    });

    it('keeps an empty object', async () => {
      await store.put('data/ab/empty', Buffer.alloc(0));
      expect(await store.stat('data/ab/empty')).toBe(0);
      expect((await store.get('data/ab/empty')).length).toBe(0);
    });

    it('never overwrites: a second put of a name leaves the first object as it is', async () => {
      const first = randomBytes(5000);
      await store.put('data/cd/once', first);
      await store.put('data/cd/once', first); // the same bytes again: accepted
      await store.put('data/cd/once', randomBytes(5000)).catch(() => {}); // other bytes: refused or ignored
      await store.put('data/cd/once', randomBytes(10)).catch(() => {});
      expect((await store.get('data/cd/once')).equals(first)).toBe(true);
      expect(await store.stat('data/cd/once')).toBe(5000);
    });

    it('reports a missing object as PackObjectMissing, and stat as undefined', async () => {
      await expect(store.get('data/ee/nothing')).rejects.toBeInstanceOf(PackObjectMissing);
      await expect(store.get('data/ee/nothing', { offset: 0, length: 10 })).rejects.toBeInstanceOf(PackObjectMissing);
      expect(await store.stat('data/ee/nothing')).toBeUndefined();
    });

    it('lists the objects under a folder prefix with their sizes', async () => {
      await store.put('list/a/one', Buffer.alloc(11, 1));
      await store.put('list/a/two', Buffer.alloc(22, 2));
      await store.put('list/b/three', Buffer.alloc(33, 3));
      await store.put('listing/x', Buffer.alloc(44, 4));
      const names = async (p: string) => {
        const out: { name: string; size: number }[] = [];
        for await (const o of store.list(p)) out.push(o);
        return out.sort((x, y) => (x.name < y.name ? -1 : 1));
      };
      expect(await names('list')).toEqual([
        { name: 'list/a/one', size: 11 },
        { name: 'list/a/two', size: 22 },
        { name: 'list/b/three', size: 33 },
      ]);
      expect(await names('list/b')).toEqual([{ name: 'list/b/three', size: 33 }]);
      expect(await names('nowhere')).toEqual([]);
      const all = (await names('')).map((o) => o.name);
      expect(all).toEqual(expect.arrayContaining(['list/a/one', 'listing/x', 'data/ab/object-1']));
    });

    it('deletes an object; deleting a missing one is no error', async () => {
      await store.put('data/ff/doomed', Buffer.from('bye'));
      await store.delete('data/ff/doomed');
      expect(await store.stat('data/ff/doomed')).toBeUndefined();
      await expect(store.get('data/ff/doomed')).rejects.toBeInstanceOf(PackObjectMissing);
      await store.delete('data/ff/doomed');
      await store.delete('data/ff/never-was');
    });

    it('refuses names that could leave the store', async () => {
      for (const bad of ['../escape', '/absolute', 'a//b', 'a/../b', 'a/./b', '', 'a/b/', 'sp ace']) {
        await expect(store.put(bad, Buffer.from('x')), bad).rejects.toThrow(/invalid pack object name/);
      }
      await expect(store.get('../escape')).rejects.toThrow(/invalid pack object name/);
    });
  });
}
