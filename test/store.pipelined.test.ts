import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import pg from 'pg';
import { PIPELINED_CONNECTIONS, postgresDb, preparedRead, preparedRows, type Db } from '../store/db.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';

// The hot path's reads share a few pipelined connections (store/db.ts, PipelinedConnections).
describe('pipelined reads on PostgreSQL', () => {
  let tdb: TestDatabase;
  let db: Db;
  const backends = async () => {
    const admin = new pg.Client({ connectionString: tdb.url });
    await admin.connect();
    try {
      const r = await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [tdb.name]);
      return r.rows.map((x) => x.pid);
    } finally {
      await admin.end();
    }
  };

  beforeAll(async () => {
    tdb = await createTestDatabase();
    db = postgresDb(tdb.url, 5);
    await sql`create table t (id int primary key, v text not null)`.execute(db);
  });
  afterAll(async () => {
    await db?.destroy();
    await tdb?.drop();
  });

  it('answers each of many concurrent statements with its own rows, over at most the pipelined connections', async () => {
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        preparedRead<{ n: number; pid: number }>(db, 'pipelined-test-echo', 'select $1::int as n, pg_backend_pid() as pid', [i]),
      ),
    );
    expect(answers.map((rows) => rows[0]!.n)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    const pids = new Set(answers.map((rows) => rows[0]!.pid));
    expect(pids.size).toBeGreaterThanOrEqual(1);
    expect(pids.size).toBeLessThanOrEqual(PIPELINED_CONNECTIONS);
    const rows = await preparedRows(db, 'pipelined-test-rows', 'select $1::int, $2::text', [7, 'seven']);
    expect(rows).toEqual([[7, 'seven']]);
  });

  it('hands a text column over as its bytes when asked, on pipelined connections and not', async () => {
    // With Japanese, an emoji and an accent; a text column after the bytes column stays text.
    const text = `{"note": "${'日本語 \ud83d\ude00 é '.repeat(12)}"}`;
    const sqlText = `select $1::int as n, $2::text as t, null::text as z, 'after ' || $1::text as a`;
    const rows = await Promise.all(Array.from({ length: 30 }, (_, i) => preparedRows(db, 'pipelined-test-bytes', sqlText, [i, text], 1)));
    rows.forEach((r, i) => {
      expect(r).toHaveLength(1);
      expect(r[0]![0]).toBe(i);
      expect(Buffer.isBuffer(r[0]![1])).toBe(true);
      expect((r[0]![1] as Buffer).toString('utf8')).toBe(text);
      expect(r[0]!.slice(2)).toEqual([null, `after ${i}`]);
    });
    // Values of many sizes, one after the other: each its own bytes (the slab they are copied
    // into fills and is replaced; the larger ones arrive over several reads of the socket), and
    // one larger than a quarter of a slab (its own Buffer).
    const sizes = [0, 1, 2, 3, 4, 75, 76, 77, 4166, 30_000, 70_000, 100_000, 5];
    const value = (n: number) => `${'é日'.repeat(n >> 2)}${'x'.repeat(n & 3)}`;
    const many = await Promise.all(sizes.flatMap((n) => [n, n + 1]).map((n, i) => preparedRows(db, 'pipelined-test-bytes', sqlText, [i, value(n)], 1)));
    many.forEach((r, i) => {
      expect((r[0]![1] as Buffer).toString('utf8')).toBe(value(sizes.flatMap((k) => [k, k + 1])[i]!));
    });
    // Several rows of one statement, each its own bytes.
    const series = await preparedRows(db, 'pipelined-test-bytes-rows', `select g, repeat('日', g) from generate_series(1, 50) as g`, [], 1);
    expect(series.map((r) => [r[0], (r[1] as Buffer).toString('utf8')])).toEqual(Array.from({ length: 50 }, (_, i) => [i + 1, '日'.repeat(i + 1)]));
    // A null stays null.
    const nulls = `select $1::int as n, null::text as t`;
    expect((await preparedRows(db, 'pipelined-test-bytes-null', nulls, [1], 1))[0]).toEqual([1, null]);
    const plain = postgresDb(tdb.url, 2, 0);
    try {
      const [row] = await preparedRows(plain, 'pipelined-test-bytes', sqlText, [5, text], 1);
      expect(Buffer.isBuffer(row![1]) && (row![1] as Buffer).toString('utf8')).toBe(text);
      expect((await preparedRows(plain, 'pipelined-test-bytes-null', nulls, [1], 1))[0]).toEqual([1, null]);
    } finally {
      await plain.destroy();
    }
  });

  it('reads as bytes only the column of the statement answering, also after a statement that failed', async () => {
    // One pipelined connection: statements with and without a bytes column, and some failing
    // after their row description went out, answer one after the other on it.
    const one = postgresDb(tdb.url, 2, 1);
    try {
      // The failing ones send a row before their error (the division runs row by row).
      const withBytes = 'select $1::int as n, $2::text as t, $2::text as u, 10 / x as q from unnest(array[1, $3::int]) as d(x)';
      // Column 1 a boolean (whose parser would read a Buffer as false: text would still decode).
      const without = 'select $1::int as n, $2::text = $2::text as t, $2::text as u, 10 / x as q from unnest(array[1, $3::int]) as d(x)';
      const asked = Array.from({ length: 60 }, (_, i) => {
        const t = `値 ${i}`;
        const kind = i % 4;
        if (kind === 0) return preparedRows(one, 'pipelined-test-mixed-bytes', withBytes, [i, t, 1], 1).then((r) => ['bytes', r] as const);
        if (kind === 1) return preparedRows(one, 'pipelined-test-mixed-bytes', withBytes, [i, t, 0], 1).then((r) => ['bytes', r] as const, (e: Error) => ['failed', e.message] as const);
        if (kind === 2) return preparedRows(one, 'pipelined-test-mixed-text', without, [i, t, 1]).then((r) => ['text', r] as const);
        return preparedRead(one, 'pipelined-test-mixed-objects', without, [i, t, 1]).then((r) => ['objects', r] as const);
      });
      const answers = await Promise.all(asked);
      answers.forEach(([kind, r], i) => {
        const t = `値 ${i}`;
        if (kind === 'failed') expect(r).toMatch(/division by zero/);
        else if (kind === 'bytes') expect(r.map((row) => [row[0], Buffer.isBuffer(row[1]) && row[1].toString('utf8'), row[2], row[3]])).toEqual([[i, t, t, 10], [i, t, t, 10]]);
        else if (kind === 'text') expect(r).toEqual([[i, true, t, 10], [i, true, t, 10]]);
        else expect(r).toEqual([{ n: i, t: true, u: t, q: 10 }, { n: i, t: true, u: t, q: 10 }]);
        expect(kind).toBe(['bytes', 'failed', 'text', 'objects'][i % 4]);
      });
    } finally {
      await one.destroy();
    }
  });

  it('makes rows with the driver type parsers, as objects and as arrays, as the pool does', async () => {
    const text = `select $1::int8 as big, $2::timestamptz as at, $3::json as doc, $4::bool as yes, null::text as none, $5::text as "日本語"`;
    const values = [9_007_199_254_740_991, new Date('2026-11-22T01:02:03.456Z'), { a: [1, '二'] }, true, 'テキスト'];
    const expected = { big: 9_007_199_254_740_991, at: new Date('2026-11-22T01:02:03.456Z'), doc: { a: [1, '二'] }, yes: true, none: null, 日本語: 'テキスト' };
    // Many at once (the parsers are looked up once per statement name), then the same on the pool.
    const objects = await Promise.all(Array.from({ length: 20 }, () => preparedRead(db, 'pipelined-test-types', text, values)));
    for (const rows of objects) expect(rows).toEqual([expected]);
    const arrays = await preparedRows(db, 'pipelined-test-types-array', text, values);
    expect(arrays).toEqual([Object.values(expected)]);
    const plain = postgresDb(tdb.url, 2, 0);
    try {
      expect(await preparedRead(plain, 'pipelined-test-types', text, values)).toEqual([expected]);
    } finally {
      await plain.destroy();
    }
    // A value its parser refuses (an int8 beyond 2^53: store/db.ts parseInt8) fails that statement
    // alone, after its answer has been read: the connection goes on with the next statements.
    const big = (n: string) => preparedRead<{ big: number }>(db, 'pipelined-test-int8', 'select $1::int8 as big', [n]);
    const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => big(i % 4 === 1 ? '9007199254740993' : String(i))));
    results.forEach((r, i) => {
      if (i % 4 === 1) expect(r.status === 'rejected' && String(r.reason)).toMatch(/exceeds the safe integer range/);
      else expect(r.status === 'fulfilled' && r.value).toEqual([{ big: i }]);
    });
  });

  it('fails a bad statement alone: the statements around it on the same connections still answer', async () => {
    const div = (d: number) => preparedRead<{ q: number }>(db, 'pipelined-test-div', 'select 10 / $1::int as q', [d]);
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => div(i % 10 === 3 ? 0 : 1)));
    results.forEach((r, i) => {
      if (i % 10 === 3) expect(r.status === 'rejected' && String(r.reason)).toMatch(/division by zero/);
      else expect(r.status === 'fulfilled' && r.value[0]!.q).toBe(10);
    });
  });

  it('sees every commit made before the statement was sent', async () => {
    for (let i = 0; i < 20; i++) {
      await db.insertInto('t' as never).values({ id: i, v: `v${i}` } as never).execute();
      const rows = await preparedRead<{ v: string }>(db, 'pipelined-test-read-t', 'select v from t where id = $1', [i]);
      expect(rows).toEqual([{ v: `v${i}` }]);
    }
  });

  it('opens new connections after the server ends its connections', async () => {
    await Promise.all(Array.from({ length: 20 }, () => preparedRead(db, 'pipelined-test-one', 'select 1 as one', [])));
    const admin = new pg.Client({ connectionString: tdb.url });
    await admin.connect();
    await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [tdb.name]);
    await admin.end();
    // The ended connections notice it (their socket closes) and are replaced on the next statement.
    await new Promise((r) => setTimeout(r, 300));
    const rows = await Promise.all(Array.from({ length: 20 }, (_, i) => preparedRead<{ n: number }>(db, 'pipelined-test-echo', 'select $1::int as n, pg_backend_pid() as pid', [i])));
    expect(rows.map((r) => r[0]!.n)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('closes the pipelined connections with the handle', async () => {
    const other = postgresDb(tdb.url, 2);
    await Promise.all(Array.from({ length: 20 }, () => preparedRead(other, 'pipelined-test-one', 'select 1 as one', [])));
    const before = (await backends()).length;
    await other.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect((await backends()).length).toBeLessThan(before);
    await expect(preparedRead(other, 'pipelined-test-one', 'select 1 as one', [])).rejects.toThrow(/the database handle is closed/);
  });
});
