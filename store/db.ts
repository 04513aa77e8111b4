import fs from 'node:fs';
import path from 'node:path';
import { PGlite, types as pgliteTypes } from '@electric-sql/pglite';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { Database } from './database.js';
import { PGliteDialect } from './pglite-dialect.js';
import { ExchangeError } from './errors.js';

export type Db = Kysely<Database>;

export interface DatabaseHandle {
  db: Db;
  kind: 'postgres' | 'embedded';
  /** Safe to call twice. */
  close(): Promise<void>;
}

export interface DatabaseOptions {
  dataDir: string;
  databaseUrl: string | undefined;
  /** Pool size for PostgreSQL. */
  poolSize?: number;
}

/**
 * Connections of the main PostgreSQL pool. Each serves one statement at a time and a viewer
 * request makes three, so a small pool queues requests while the cores idle: at 1M records and
 * 50 clients, 10 connections gave 263 timeline requests/s, 20 gave 426, 30 gave 452.
 */
export const DEFAULT_POOL_SIZE = 20;

// Both backends return the same JavaScript types: int8 as number (sizes and counts stay far below
// 2^53; a larger value is an error, not a silent rounding), bytea as Buffer, numeric as string.
function parseInt8(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`int8 value ${v} exceeds the safe integer range`);
  return n;
}
pg.types.setTypeParser(pg.types.builtins.INT8, parseInt8);

/** The pg pool behind each PostgreSQL handle's Kysely instance (for preparedQuery). */
const pools = new WeakMap<Db, pg.Pool>();
/** The pipelined connections of each PostgreSQL handle (for preparedRead and preparedRows). */
const pipelines = new WeakMap<Db, PipelinedConnections>();

/**
 * Runs one statement of a hot path (every viewer request makes it) as a named prepared statement
 * on PostgreSQL: each pooled connection parses it once, and PostgreSQL may plan it once, instead of
 * parsing and planning it on every request as it must for Kysely's unnamed statements; and it
 * skips Kysely's query building. `name` must stand for exactly one `text` in the whole process.
 * On PGlite, or on a transaction, the statement runs through Kysely as a plain one.
 */
export async function preparedQuery<R>(db: Db, name: string, text: string, values: readonly unknown[]): Promise<R[]> {
  const pool = pools.get(db);
  if (pool) return (await pool.query<R & pg.QueryResultRow>({ name, text, values: values as unknown[] })).rows;
  return (await db.executeQuery<R>(CompiledQuery.raw(text, values as unknown[]))).rows;
}

/**
 * preparedQuery for a statement that only reads and runs alone (no transaction of the caller's):
 * on PostgreSQL it goes over one of a few pipelined connections (PipelinedConnections), shared by
 * the statements in flight, instead of taking a pooled connection for its round trip. Each
 * statement is still its own implicit transaction with its own snapshot, taken when PostgreSQL
 * runs it: it sees every commit made before it was sent, exactly as on a pooled connection.
 */
export async function preparedRead<R>(db: Db, name: string, text: string, values: readonly unknown[]): Promise<R[]> {
  const pipe = pipelines.get(db);
  if (pipe) return pipe.rows<R>({ name, text, values: values as unknown[] });
  return preparedQuery<R>(db, name, text, values);
}

/**
 * preparedRead with each row as an array of its columns, in the statement's order: the driver
 * then builds no object per row (a timeline page is 10-50 rows of 13 columns, on every request).
 * With `bytesColumn`, that column (a text) comes as its UTF-8 bytes, a Buffer, as PostgreSQL sent
 * them: the driver decodes every field from UTF-8 into a string, and for a large text column (a
 * timeline page's ~44 KB of record content, much of it Japanese) that decode, and encoding the
 * string back into bytes for the answer, cost the server about an eighth of its CPU per request.
 * The pipelined connections copy that column's bytes out of the answer instead (BytesColumnParser).
 */
export async function preparedRows(db: Db, name: string, text: string, values: readonly unknown[], bytesColumn?: number): Promise<unknown[][]> {
  const pipe = pipelines.get(db);
  if (pipe) return pipe.rows<unknown[]>({ name, text, values: values as unknown[], rowMode: 'array' }, bytesColumn);
  const rows = (await db.executeQuery<Record<string, unknown>>(CompiledQuery.raw(text, values as unknown[]))).rows.map((r) => Object.values(r));
  if (bytesColumn !== undefined) {
    for (const r of rows) {
      const v = r[bytesColumn];
      if (typeof v === 'string') r[bytesColumn] = Buffer.from(v, 'utf8');
    }
  }
  return rows;
}

/** The slab copyBytes copies into, and how much of it is taken. */
const BYTES_SLAB = 256 * 1024;
let bytesSlab = Buffer.allocUnsafeSlow(BYTES_SLAB);
let bytesSlabUsed = 0;

/**
 * A copy of bytes[start, end), as a view of a shared slab, as Node's own pool does for Buffers
 * under 4 KB: a timeline row's content is a little over 4 KB, so a Buffer of its own each would be
 * about ten allocations (and as many for the garbage collector to track and free) per request. A
 * slab lives until the last view of it dies; a value of more than a quarter of one gets its own
 * Buffer. A copy, because the parser reuses its buffer for the messages that follow.
 */
function copyBytes(bytes: Buffer, start: number, end: number): Buffer {
  const size = end - start;
  if (size > BYTES_SLAB / 4) return Buffer.copyBytesFrom(bytes, start, size);
  if (bytesSlabUsed + size > BYTES_SLAB) {
    bytesSlab = Buffer.allocUnsafeSlow(BYTES_SLAB);
    bytesSlabUsed = 0;
  }
  const at = bytesSlabUsed;
  bytes.copy(bytesSlab, at, start, end);
  // The next value starts 8-aligned, as in Node's pool.
  bytesSlabUsed = (at + size + 7) & ~7;
  return bytesSlab.subarray(at, at + size);
}

/** PostgreSQL (or PGlite) refused a row for a unique constraint (unique_violation, 23505). */
export function isUniqueViolation(e: unknown): boolean {
  return (e as { code?: string })?.code === '23505';
}

/** What a named statement's rows are made with: its column names and the driver's parser of each. */
interface RowShape {
  names: string[];
  typeIds: number[];
  parsers: ((v: string) => unknown)[];
}

/** Row shapes by statement name (a name stands for one text in the whole process: preparedQuery). */
const rowShapes = new Map<string, RowShape>();

/** A pipelined statement: its name (one text in the whole process), text, values and row form. */
interface StatementConfig {
  name: string;
  text: string;
  values: unknown[];
  rowMode?: 'array';
}

/** The row description of pg's protocol, as far as a statement reads it. */
interface RowDescription {
  fields: { name: string; dataTypeID: number; format: string }[];
}

/**
 * One pipelined statement, as pg's Query (the driver's own submittable: it writes the statement
 * and hands the answer's messages to these handlers) but making its rows itself. The driver's
 * Result, for every statement it runs, looks up each column's type parser and builds a template
 * row object from the column names (a dictionary-mode object, copied for every row even when rows
 * are arrays): about 5% of the server's CPU on a timeline request, which runs two such
 * statements. A named statement's columns never change, so the parsers are looked up once per
 * name; rows are built straight from the fields, and the bytes column (see preparedRows) arrives as bytes:
 * the statement tells its connection's parser which column that is when its row description
 * comes, before its first row.
 */
class PipelinedStatement extends pg.Query {
  readonly #name: string;
  readonly #arrays: boolean;
  readonly #bytesColumn: number;
  readonly #parser: BytesColumnParser;
  readonly #done: (err: Error | undefined, rows: unknown[]) => void;
  #shape: RowShape | undefined;
  #rows: unknown[] = [];
  #failed: Error | undefined;

  constructor(config: StatementConfig, bytesColumn: number | undefined, parser: BytesColumnParser, done: (err: Error | undefined, rows: unknown[]) => void) {
    // The text alone: pg copies a config object property by property (getOwnPropertyDescriptors).
    super(config.text);
    const self = this as unknown as { name: string; values: unknown[]; callback: (err: Error | undefined, res?: unknown) => void };
    self.name = config.name;
    self.values = config.values;
    this.#name = config.name;
    this.#arrays = config.rowMode === 'array';
    this.#bytesColumn = bytesColumn ?? -1;
    this.#parser = parser;
    this.#done = done;
    // pg answers through `callback` (also with errors of the connection); the rows are ours.
    self.callback = (err) => this.#done(err ?? this.#failed, err || this.#failed ? [] : this.#rows);
  }

  handleRowDescription(msg: RowDescription): void {
    // This statement's rows come next on this connection (answers arrive in order).
    this.#parser.bytesColumn = this.#bytesColumn;
    const name = this.#name;
    let shape = rowShapes.get(name);
    if (!shape || !sameColumns(shape, msg.fields)) {
      shape = {
        names: msg.fields.map((f) => f.name),
        typeIds: msg.fields.map((f) => f.dataTypeID),
        parsers: msg.fields.map((f) => pg.types.getTypeParser(f.dataTypeID, f.format === 'binary' ? 'binary' : 'text') as (v: string) => unknown),
      };
      rowShapes.set(name, shape);
    }
    this.#shape = shape;
  }

  handleDataRow(msg: { fields: (string | Buffer | null)[] }): void {
    const shape = this.#shape;
    if (this.#failed || !shape) return;
    const fields = msg.fields;
    try {
      if (this.#arrays) {
        const bytes = this.#bytesColumn;
        const row: unknown[] = new Array(fields.length);
        for (let i = 0; i < fields.length; i++) {
          const v = fields[i];
          // The bytes column is a Buffer already (BytesColumnParser).
          row[i] = v === null || i === bytes ? v : shape.parsers[i]!(v as string);
        }
        this.#rows.push(row);
      } else {
        const row: Record<string, unknown> = {};
        for (let i = 0; i < fields.length; i++) {
          const v = fields[i];
          row[shape.names[i]!] = v === null ? null : shape.parsers[i]!(v as string);
        }
        this.#rows.push(row);
      }
    } catch (e) {
      // A value its parser refuses fails the statement (pg does the same), once its answer ends.
      this.#failed = e as Error;
    }
  }

  // This statement's answer has ended: the rows that follow on the connection are another's.
  handleCommandComplete(msg: unknown, connection: unknown): void {
    this.#parser.bytesColumn = -1;
    (pg.Query.prototype as unknown as { handleCommandComplete(m: unknown, c: unknown): void }).handleCommandComplete.call(this, msg, connection);
  }

  handleError(err: Error, connection: unknown): void {
    this.#parser.bytesColumn = -1;
    (pg.Query.prototype as unknown as { handleError(e: Error, c: unknown): void }).handleError.call(this, err, connection);
  }
}

/**
 * What a pipelined connection's parser reads as bytes: `bytesColumn` of each data row, set by the
 * statement whose answer is arriving (from its row description) and cleared when the answer ends;
 * -1 for none. pg-protocol's parser decodes every field of a data row as UTF-8 text; this one
 * copies that column's bytes out as they are (copyBytes) and leaves every other message, and
 * every other column, to pg-protocol. The parser hands each message to pg as soon as it is read,
 * and pg to the statement answering, so a row description is seen by its statement before the
 * next message is read.
 */
class BytesColumnParser {
  bytesColumn = -1;

  /** Has `connection` read its server's messages with this parser (pg's Connection reads them in attachListeners). */
  attach(connection: pg.Connection): void {
    const parser = new Parser();
    // pg-protocol's own dispatch by message code; its data rows are the one kind read here instead.
    const packets = parser as unknown as { handlePacket(offset: number, code: number, length: number, bytes: Buffer): unknown };
    const handlePacket = packets.handlePacket.bind(parser);
    packets.handlePacket = (offset, code, length, bytes) =>
      code === DATA_ROW && this.bytesColumn >= 0 ? dataRowWithBytes(bytes, offset, length, this.bytesColumn) : handlePacket(offset, code, length, bytes);
    const events = connection as unknown as { _emitMessage: boolean; attachListeners(stream: NodeJS.ReadableStream): void };
    // As pg's Connection.attachListeners, with this parser (it is called again after a TLS upgrade).
    events.attachListeners = (stream) => {
      stream.on('data', (buffer: Buffer) =>
        parser.parse(buffer, (msg) => {
          if (events._emitMessage) connection.emit('message', msg);
          connection.emit(msg.name === 'error' ? 'errorMessage' : msg.name, msg);
        }),
      );
    };
  }
}

/** The message code of a data row ('D'). */
const DATA_ROW = 0x44;

/**
 * A data row (PostgreSQL's protocol: a 16-bit field count, then each field as a 32-bit length,
 * -1 for null, and its bytes), as pg-protocol makes it but for `column`, copied out as bytes.
 */
function dataRowWithBytes(bytes: Buffer, offset: number, length: number, column: number) {
  const count = bytes.readInt16BE(offset);
  const fields: (string | Buffer | null)[] = new Array(count);
  let at = offset + 2;
  for (let i = 0; i < count; i++) {
    const size = bytes.readInt32BE(at);
    at += 4;
    if (size < 0) {
      fields[i] = null;
      continue;
    }
    fields[i] = i === column ? copyBytes(bytes, at, at + size) : bytes.toString('utf8', at, at + size);
    at += size;
  }
  return { name: 'dataRow', length, fields, fieldCount: count };
}

function sameColumns(shape: RowShape, fields: RowDescription['fields']): boolean {
  if (shape.typeIds.length !== fields.length) return false;
  for (let i = 0; i < fields.length; i++) if (shape.typeIds[i] !== fields[i]!.dataTypeID || shape.names[i] !== fields[i]!.name) return false;
  return true;
}

/**
 * Connections the hot path's reads share (see PipelinedConnections). Two, not four: at 1M
 * records, four interleaved timeline pairs on an Intel Xeon VM of 2 cores gave 1,934-2,085
 * requests/s against 1,705-1,853, with the server's and PostgreSQL's CPU per request 5-10% lower
 * (more statements to a write, and fewer backends to wake, on cores the server shares with them);
 * two backends carry the ~0.6 of a core PostgreSQL spends at that rate. One was as fast in a quiet
 * pair, but then a slow statement would hold up every read behind it.
 */
export const PIPELINED_CONNECTIONS = 2;

interface PipelinedConnection {
  client: pg.Client;
  /** Its parser (see BytesColumnParser). */
  parser: BytesColumnParser;
  /** Statements sent and not yet answered. */
  inFlight: number;
  /** Whether its socket holds this turn's writes until the turn ends. */
  corked: boolean;
  broken: boolean;
}

/**
 * A few connections in pg's pipeline mode, over which the hot path's read-only statements go:
 * each statement is written at once behind those still running on its connection (the one with
 * the fewest in flight), and the answers come back in order. The statements written in one turn of
 * the event loop leave together, in one write per connection at the end of the turn.
 *
 * Why: on a pooled connection every statement is a round trip of its own, and each write to an
 * idle PostgreSQL backend wakes it. On two cores the woken backend mostly runs on the core of the
 * Node process and preempts it: the profile showed the server's one thread off its core inside
 * `writev` for about a third of the measured window, once per statement. Written together, a
 * turn's statements wake each backend once, and a backend still busy with the previous ones needs
 * no waking at all. A connection that fails is dropped (its statements fail with it) and a new one
 * is opened for the next statement.
 */
class PipelinedConnections {
  readonly #slots: (PipelinedConnection | undefined)[];
  #closed = false;

  constructor(
    private readonly url: string,
    size: number,
  ) {
    this.#slots = new Array<PipelinedConnection | undefined>(size).fill(undefined);
  }

  /**
   * The rows of one statement, sent on the connection with the fewest in flight. With
   * `bytesColumn` (rows as arrays), that column arrives as its bytes (BytesColumnParser): a
   * pipelined read often ends in the middle of an answer (its backend is still writing it), so the
   * rows read so far wait for the rest until a later turn of the event loop; large strings that
   * waited like that outlived a scavenge and were promoted to V8's old space, a timeline page's
   * contents on every request. Bytes in a slab are no work for the scavenger.
   */
  rows<R>(config: StatementConfig, bytesColumn?: number): Promise<R[]> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new Error('the database handle is closed'));
      const c = this.#pick();
      this.#send(c, new PipelinedStatement(config, bytesColumn, c.parser, (err, rows) => (err ? reject(err) : resolve(rows as R[]))));
    });
  }

  /** Writes a statement behind those in flight on its connection, held until the end of the turn. */
  #send(c: PipelinedConnection, query: PipelinedStatement): void {
    const q = query as unknown as { callback: (err: Error | undefined, res: unknown) => void };
    c.inFlight++;
    if (!c.corked) {
      // Hold this turn's writes (pg corks and uncorks around each statement: the counts nest).
      c.corked = true;
      const stream = (c.client as unknown as { connection: { stream: { cork(): void; uncork(): void } } }).connection.stream;
      stream.cork();
      setImmediate(() => {
        c.corked = false;
        stream.uncork();
      });
    }
    // The query answers through its callback, whether it succeeds or fails: count it out there.
    const callback = q.callback;
    q.callback = (err, res) => {
      c.inFlight--;
      callback(err, res);
    };
    c.client.query(query as unknown as pg.Query);
  }

  /** The connection with the fewest statements in flight (the first of equals), opened if needed. */
  #pick(): PipelinedConnection {
    let best = -1;
    for (let i = 0; i < this.#slots.length; i++) {
      const c = this.#slots[i];
      if (!c || c.broken) {
        this.#slots[i] = this.#open();
        return this.#slots[i]!;
      }
      if (best < 0 || c.inFlight < this.#slots[best]!.inFlight) best = i;
    }
    return this.#slots[best]!;
  }

  #open(): PipelinedConnection {
    const client = new pg.Client({ connectionString: this.url, pipeline: true } as pg.ClientConfig);
    const parser = new BytesColumnParser();
    parser.attach((client as unknown as { connection: pg.Connection }).connection);
    const c: PipelinedConnection = { client, parser, inFlight: 0, corked: false, broken: false };
    const broken = () => {
      c.broken = true;
    };
    // A failed connection fails its statements (pg rejects them); it must not crash the process.
    client.on('error', broken);
    client.on('end', broken);
    // Statements written before the connection is up wait in pg's queue; a failed connect fails them.
    client.connect().catch(broken);
    return c;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const open = this.#slots.filter((c): c is PipelinedConnection => c !== undefined);
    this.#slots.fill(undefined);
    await Promise.all(open.map((c) => c.client.end().catch(() => {})));
  }
}

/** A PostgreSQL handle over a pool of connections (a second pool of its own for a feature: see the AI flow). */
export function postgresDb(url: string, max: number, pipelined = PIPELINED_CONNECTIONS): Db {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client that loses its server must not crash the process.
  pool.on('error', () => {});
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  pools.set(db, pool);
  if (pipelined > 0) {
    const pipe = new PipelinedConnections(url, pipelined);
    pipelines.set(db, pipe);
    // The pipelined connections close with the handle (Kysely ends the pool only if it used it).
    const destroy = db.destroy.bind(db);
    db.destroy = async () => {
      await pipe.close();
      await destroy();
    };
  }
  return db;
}

export async function openDatabase(opts: DatabaseOptions): Promise<DatabaseHandle> {
  if (opts.databaseUrl) {
    const db = postgresDb(opts.databaseUrl, opts.poolSize ?? DEFAULT_POOL_SIZE);
    let closed: Promise<void> | undefined;
    return { db, kind: 'postgres', close: () => (closed ??= db.destroy()) };
  }
  const dir = path.join(opts.dataDir, 'pglite');
  fs.mkdirSync(dir, { recursive: true });
  const release = acquireEmbeddedLock(opts.dataDir);
  try {
    const pglite = await PGlite.create(dir, {
      parsers: {
        [pgliteTypes.INT8]: parseInt8,
        [pgliteTypes.BYTEA]: (v: string) => Buffer.from(v.slice(2), 'hex'),
      },
    });
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
    let closed: Promise<void> | undefined;
    const close = () =>
      (closed ??= db.destroy().finally(release));
    return { db, kind: 'embedded', close };
  } catch (e) {
    release();
    throw e;
  }
}

/**
 * The embedded database is one process's: PGlite corrupts a data folder opened twice. The owner
 * holds `exchange.lock`; when a server owns it, the lock names the URL the CLI can talk to.
 */
export interface EmbeddedLock {
  pid: number;
  url?: string;
  since: string;
}

export function lockPath(dataDir: string): string {
  return path.join(dataDir, 'exchange.lock');
}

export function readEmbeddedLock(dataDir: string): EmbeddedLock | undefined {
  try {
    const lock = JSON.parse(fs.readFileSync(lockPath(dataDir), 'utf8')) as EmbeddedLock;
    return isAlive(lock.pid) ? lock : undefined;
  } catch {
    return undefined;
  }
}

/** Records the URL a running server answers on, so that CLI commands can find it. */
export function advertiseServerUrl(dataDir: string, url: string): void {
  const lock: EmbeddedLock = { pid: process.pid, url, since: new Date().toISOString() };
  fs.writeFileSync(lockPath(dataDir), JSON.stringify(lock));
}

function acquireEmbeddedLock(dataDir: string): () => void {
  const file = lockPath(dataDir);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, since: new Date().toISOString() }), { flag: 'wx' });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          const held = JSON.parse(fs.readFileSync(file, 'utf8')) as EmbeddedLock;
          if (held.pid === process.pid) fs.unlinkSync(file);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const held = readEmbeddedLock(dataDir);
      if (held) {
        const where = held.url ? ` and serves ${held.url}` : '';
        const api = held.url ? `its HTTP API (${held.url}/api/openapi.json) and \`hakobune upload\`` : '`hakobune upload`';
        throw new ExchangeError(
          'conflict',
          `the embedded database in ${dataDir} is in use by process ${held.pid}${where}; ` +
            `this command opens the database itself: stop that exchange first (Ctrl+C, or kill ${held.pid}), then run it again. ` +
            `While it runs, ${api} work through it; with PostgreSQL (DATABASE_URL) commands run beside the server`,
          { pid: held.pid, url: held.url },
        );
      }
      fs.rmSync(file, { force: true }); // left by a process that is gone
    }
  }
  throw new ExchangeError('conflict', `could not take the lock ${file}`);
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
