import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import pg from 'pg';
import { base64Column, PIPELINED_CONNECTIONS, postgresDb, preparedRead, preparedRows, type Db } from '../store/db.js';
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

  it('hands a column selected as base64 over as its bytes when asked, on pipelined connections and not', async () => {
    // Longer than one of PostgreSQL's 76-character base64 lines, with Japanese, an emoji and an accent.
    const text = `{"note": "${'日本語 \ud83d\ude00 é '.repeat(12)}"}`;
    const sqlText = `select $1::int as n, ${base64Column('$2::text')} as t, null::text as z`;
    const rows = await Promise.all(Array.from({ length: 30 }, (_, i) => preparedRows(db, 'pipelined-test-bytes', sqlText, [i, text], 1)));
    rows.forEach((r, i) => {
      expect(r).toHaveLength(1);
      expect(r[0]![0]).toBe(i);
      expect(Buffer.isBuffer(r[0]![1])).toBe(true);
      expect((r[0]![1] as Buffer).toString('utf8')).toBe(text);
    });
    // Values of many sizes, one after the other: each its own bytes (the slab they are decoded
    // into fills and is replaced), and one larger than a quarter of a slab (its own Buffer).
    const sizes = [0, 1, 2, 3, 4, 75, 76, 77, 4166, 30_000, 70_000, 100_000, 5];
    const many = await Promise.all(
      sizes.flatMap((n) => [n, n + 1]).map((n, i) => preparedRows(db, 'pipelined-test-bytes', sqlText, [i, `${'é日'.repeat(n >> 2)}${'x'.repeat(n & 3)}`], 1)),
    );
    many.forEach((r, i) => {
      const n = sizes.flatMap((k) => [k, k + 1])[i]!;
      expect((r[0]![1] as Buffer).toString('utf8')).toBe(`${'é日'.repeat(n >> 2)}${'x'.repeat(n & 3)}`);
    });
    // A null stays null.
    const nulls = `select $1::int as n, ${base64Column('null::text')} as t`;
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
