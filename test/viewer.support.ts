import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { createExchange, type Exchange, type ExchangeOptions } from '../viewer-api/exchange.js';
import { testConfig, type Config } from '../viewer-api/config.js';
import type { AdminContext, Enrolment } from '../viewer-api/auth/admin.service.js';
import { totpCode } from '../viewer-api/auth/totp.js';
import { findFacility, insertFacility } from '../store/backup/backup.repository.js';
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

/** A clock the test moves by hand: sessions, lockouts, TOTP steps and audit times all follow it. */
export class TestClock {
  constructor(public ms = Date.parse('2026-11-21T09:00:00.000Z')) {}
  readonly now = () => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export type Backend = 'embedded' | 'postgres';

export interface ViewerHarness {
  exchange: Exchange;
  url: string;
  clock: TestClock;
  /** The command line as actor (what `hakobune user add` uses). */
  cli: AdminContext;
  close(): Promise<void>;
}

/** `options`: the exchange's own (its jobs' queue prefix and retries, say); the clock is the harness's. */
export async function startViewer(backend: Backend, overrides: (c: Config) => Partial<Config> = () => ({}), options: Omit<ExchangeOptions, 'clock'> = {}): Promise<ViewerHarness> {
  const tmp = tempDir('hakobune-viewer-');
  let pg: TestDatabase | undefined;
  try {
    if (backend === 'postgres') pg = await createTestDatabase('hkviewer');
    const base = testConfig(tmp.dir, pg ? { databaseUrl: pg.url } : {});
    const config = { ...base, ...overrides(base) };
    const clock = new TestClock();
    const exchange = await createExchange(config, { ...options, clock: clock.now });
    const url = await exchange.listen();
    return {
      exchange,
      url,
      clock,
      cli: { actor: { username: 'cli:test' }, address: null, endpoint: 'cli' },
      async close() {
        await exchange.stop();
        await pg?.drop();
        tmp.remove();
      },
    };
  } catch (e) {
    await pg?.drop();
    tmp.remove();
    throw e;
  }
}

/**
 * BullMQ queues under a test's own key prefix (the exchange's jobs with `queuePrefix`), to look at
 * what was queued; close() removes the keys of every queue asked for.
 */
export function testQueues(prefix: string) {
  // Connected on the first queue asked for, not where a test file declares its queues.
  let connection: Redis | undefined;
  const opened = new Map<string, Queue>();
  return {
    queue(name: string): Queue {
      let q = opened.get(name);
      if (!q) opened.set(name, (q = new Queue(name, { connection: (connection ??= new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null })), prefix })));
      return q;
    },
    async close(): Promise<void> {
      for (const q of opened.values()) {
        await q.obliterate({ force: true }).catch(() => {});
        await q.close();
      }
      await connection?.quit();
    },
  };
}

export const PASSWORD = 'a long test passphrase';

export interface TestUser extends Enrolment {
  password: string;
  device: string;
}

/** Enrols a user and registers a device of the same facility (adding the facility when new). */
export async function enrol(h: ViewerHarness, facilityId: string, username: string, role: string): Promise<TestUser> {
  if (!(await findFacility(h.exchange.db, facilityId))) {
    await insertFacility(h.exchange.db, { id: facilityId, name: `Facility ${facilityId}`, kind: 'hospital' });
  }
  const e = await h.exchange.viewer.admin.addUser(h.cli, { facilityId, username, displayName: username, role, password: PASSWORD });
  const d = await h.exchange.viewer.admin.registerDevice(h.cli, facilityId, `${username}'s terminal`);
  return { ...e, password: PASSWORD, device: d.credential };
}

export interface LoginOptions {
  password?: string;
  totp?: string;
  device?: string | null;
  /** Move the clock to a fresh TOTP step first (default true): a code is accepted once only. */
  freshStep?: boolean;
}

export async function login(h: ViewerHarness, u: TestUser, o: LoginOptions = {}): Promise<Response> {
  if (o.freshStep !== false) h.clock.advance(31_000);
  const totp = o.totp ?? (await totpCode(u.totpSecret, h.clock.ms));
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const device = o.device === undefined ? u.device : o.device;
  if (device !== null) headers['x-device-credential'] = device;
  return fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ facilityId: u.facilityId, username: u.username, password: o.password ?? u.password, totp }),
  });
}

/** Logs in and resolves with the bearer token (fails the test when the login fails). */
export async function tokenFor(h: ViewerHarness, u: TestUser): Promise<string> {
  const res = await login(h, u);
  if (res.status !== 200) throw new Error(`login of ${u.username} failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}

/**
 * Enrols each (facility, username, role) and logs them in, filling `users` and `tokens` under
 * "facility/username" (the keys the tests use to act as someone).
 */
export async function signIn(
  h: ViewerHarness,
  people: readonly (readonly [facilityId: string, username: string, role: string])[],
  users: Record<string, TestUser>,
  tokens: Record<string, string>,
): Promise<void> {
  for (const [f, name, role] of people) {
    const user = (users[`${f}/${name}`] = await enrol(h, f, name, role));
    tokens[`${f}/${name}`] = await tokenFor(h, user);
  }
}

export function get(h: ViewerHarness, path: string, token?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${h.url}${path}`, { headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });
}

/** The newest audit entries (newest first), read straight from the table. */
export async function lastAudit(h: ViewerHarness, n = 1) {
  return h.exchange.db.selectFrom('audit_event').selectAll().orderBy('seq', 'desc').limit(n).execute();
}

/** What an intruder with the database owner's rights does first: switch the append-only guard off. */
export async function withGuardOff<T>(h: ViewerHarness, fn: () => Promise<T>): Promise<T> {
  await sql`alter table audit_event disable trigger user`.execute(h.exchange.db);
  try {
    return await fn();
  } finally {
    await sql`alter table audit_event enable trigger user`.execute(h.exchange.db);
  }
}
