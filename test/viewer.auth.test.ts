import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { totpCode } from '../viewer-api/auth/totp.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { buildEntry } from '../viewer-api/audit/audit.entry.js';
import {
  enrol,
  get,
  lastAudit,
  login,
  startViewer,
  tokenFor,
  withGuardOff,
  type Backend,
  type TestUser,
  type ViewerHarness,
} from './viewer.support.js';

const GENERIC = 'login failed: the credentials, the one-time code or this device were not accepted';

describe.each<Backend>(['embedded', 'postgres'])('viewer authentication on %s', (backend) => {
  let h: ViewerHarness;
  let alice: TestUser; // physician at F001
  let bob: TestUser; // nurse at F002

  beforeAll(async () => {
    h = await startViewer(backend, (c) => ({ auth: { ...c.auth, sessionMaxMinutes: 60, sessionIdleMinutes: 15, loginAttemptsPerMinute: 8 } }));
    alice = await enrol(h, 'F001', 'alice', 'physician');
    bob = await enrol(h, 'F002', 'bob', 'nurse');
    // Opening PGlite, migrating and two enrolments (scrypt) can take a minute on a busy 2-core machine.
  }, 240_000);
  afterAll(async () => h?.close());

  async function expectGenericFailure(res: Response, reason: RegExp) {
    expect(res.status).toBe(401);
    const body = (await res.json()) as { detail: string };
    expect(body.detail).toBe(GENERIC);
    const [entry] = await lastAudit(h);
    expect(entry).toMatchObject({ action: 'auth.login', outcome: 'denied' });
    expect(entry!.reason).toMatch(reason);
  }

  it('logs in with password, TOTP and a registered device, and answers /me', async () => {
    const res = await login(h, alice);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const body = (await res.json()) as { token: string; expiresAt: string; user: Record<string, unknown> };
    expect(body.token).toMatch(/^hks_[A-Za-z0-9_-]{43}$/);
    expect(Date.parse(body.expiresAt)).toBe(h.clock.ms + 60 * 60_000);
    expect(body.user).toEqual({ id: alice.userId, username: 'alice', displayName: 'alice', facilityId: 'F001', role: 'physician' });
    const me = await get(h, '/api/auth/me', body.token);
    expect(me.status).toBe(200);
    expect(me.headers.get('cache-control')).toBe('no-store');
    expect(((await me.json()) as { user: { username: string } }).user.username).toBe('alice');
    const [entry] = await lastAudit(h, 2).then((r) => r.filter((e) => e.action === 'auth.login'));
    expect(entry).toMatchObject({ outcome: 'success', user_id: alice.userId, facility_id: 'F001', role: 'physician', address: '127.0.0.1' });
    expect(entry!.device_id).toMatch(/^dev_/);
  });

  it('stores neither the token, the device credential, the password nor the TOTP secret in clear', async () => {
    const token = await tokenFor(h, alice);
    const dump = JSON.stringify([
      await h.exchange.db.selectFrom('viewer_session').selectAll().execute(),
      await h.exchange.db.selectFrom('viewer_device').selectAll().execute(),
      (await h.exchange.db.selectFrom('viewer_user').selectAll().execute()).map((u) => ({ ...u, totp: u.totp_secret_enc.toString('latin1') })),
      await h.exchange.db.selectFrom('audit_event').selectAll().execute(),
    ]);
    for (const secret of [token, alice.device, alice.password, alice.totpSecret]) expect(dump).not.toContain(secret);
  });

  it('refuses a wrong password with the generic message and audits the real reason', async () => {
    await expectGenericFailure(await login(h, alice, { password: 'not the password at all' }), /^wrong password/);
  });

  it('refuses a wrong TOTP code and a replayed one', async () => {
    const right = await totpCode(alice.totpSecret, h.clock.ms + 31_000);
    const wrong = String((Number(right) + 1) % 1_000_000).padStart(6, '0');
    await expectGenericFailure(await login(h, alice, { totp: wrong }), /^TOTP code wrong/);
    await expectGenericFailure(await login(h, alice, { totp: 'abcdef', freshStep: false }), /^TOTP code malformed/);

    const first = await login(h, alice);
    expect(first.status).toBe(200);
    // The same code again, within the same step: a replay.
    await expectGenericFailure(await login(h, alice, { freshStep: false }), /^TOTP code already used/);
    // The previous step's code is within drift but older than the one used: also refused.
    const previous = await totpCode(alice.totpSecret, h.clock.ms - 30_000);
    await expectGenericFailure(await login(h, alice, { totp: previous, freshStep: false }), /^TOTP code already used/);
  });

  it('refuses a missing, unknown, other facility\'s or revoked device', async () => {
    await expectGenericFailure(await login(h, alice, { device: null }), /^no device credential/);
    await expectGenericFailure(await login(h, alice, { device: 'hkd_' + 'A'.repeat(43) }), /^unknown device credential/);
    await expectGenericFailure(await login(h, alice, { device: bob.device }), /belongs to facility F002/);
    const spare = await h.exchange.viewer.admin.registerDevice(h.cli, 'F001', 'spare');
    expect((await login(h, alice, { device: spare.credential })).status).toBe(200);
    await h.exchange.viewer.admin.revokeDevice(h.cli, spare.deviceId);
    await expectGenericFailure(await login(h, alice, { device: spare.credential }), /^device revoked/);
  });

  it('refuses an unknown user the same way, in comparable time', async () => {
    const ghost = { ...alice, username: 'ghost' };
    const t0 = performance.now();
    await expectGenericFailure(await login(h, ghost), /^unknown user/);
    // The dummy hash makes an unknown user cost a full scrypt, like a wrong password does.
    expect(performance.now() - t0).toBeGreaterThan(50);
  });

  it('ends sessions by logout, administrator revocation, disabling the user, device revocation', async () => {
    const t1 = await tokenFor(h, alice);
    const out = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${t1}` } });
    expect(out.status).toBe(204);
    expect((await get(h, '/api/auth/me', t1)).status).toBe(401);
    expect((await lastAudit(h))[0]).toMatchObject({ action: 'auth.session', outcome: 'denied', reason: 'session revoked' });

    const t2 = await tokenFor(h, alice);
    expect(await h.exchange.viewer.admin.revokeUserSessions(h.cli, 'F001', 'alice')).toBeGreaterThanOrEqual(1);
    expect((await get(h, '/api/auth/me', t2)).status).toBe(401);

    const carol = await enrol(h, 'F001', 'carol', 'pharmacist');
    const t3 = await tokenFor(h, carol);
    await h.exchange.viewer.admin.setUserDisabled(h.cli, 'F001', 'carol', true);
    expect((await get(h, '/api/auth/me', t3)).status).toBe(401);
    expect((await login(h, carol)).status).toBe(401);
    expect((await lastAudit(h))[0]!.reason).toBe('user disabled');

    const dave = await enrol(h, 'F001', 'dave', 'clerk');
    const t4 = await tokenFor(h, dave);
    const devId = (await lastAudit(h))[0]!.device_id!;
    await h.exchange.viewer.admin.revokeDevice(h.cli, devId);
    expect((await get(h, '/api/auth/me', t4)).status).toBe(401);
    expect((await lastAudit(h))[0]!.reason).toBe('device revoked');
  });

  it('ends a session after its idle timeout and after its absolute lifetime', async () => {
    const idle = await tokenFor(h, alice);
    h.clock.advance(14 * 60_000);
    expect((await get(h, '/api/auth/me', idle)).status).toBe(200);
    h.clock.advance(15 * 60_000 + 1);
    expect((await get(h, '/api/auth/me', idle)).status).toBe(401);
    expect((await lastAudit(h))[0]!.reason).toBe('session idle timeout');

    const old = await tokenFor(h, alice);
    for (let i = 0; i < 4; i++) {
      h.clock.advance(14 * 60_000);
      expect((await get(h, '/api/auth/me', old)).status).toBe(200);
    }
    h.clock.advance(5 * 60_000); // 61 minutes since login, never idle
    expect((await get(h, '/api/auth/me', old)).status).toBe(401);
    expect((await lastAudit(h))[0]!.reason).toBe('session expired');
  });

  it('refuses forged, malformed and absent tokens, and a token shown with another device', async () => {
    expect((await get(h, '/api/auth/me')).status).toBe(401);
    const forged = await get(h, '/api/auth/me', 'hks_' + 'B'.repeat(43));
    expect(forged.status).toBe(401);
    expect(forged.headers.get('www-authenticate')).toBe('Bearer');
    expect(forged.headers.get('cache-control')).toBe('no-store');
    expect((await lastAudit(h))[0]!.reason).toBe('unknown bearer token');
    expect((await get(h, '/api/auth/me', "x' or '1'='1")).status).toBe(401);
    const token = await tokenFor(h, alice);
    expect((await get(h, '/api/auth/me', token, { 'x-device-credential': bob.device })).status).toBe(401);
    expect((await get(h, '/api/auth/me', token, { 'x-device-credential': alice.device })).status).toBe(200);
  });

  it('checks the sessions of requests arriving together, each on its own (valid, revoked, unknown)', async () => {
    const a = await tokenFor(h, alice);
    const b = await tokenFor(h, bob);
    const revoked = await tokenFor(h, alice);
    expect((await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${revoked}` } })).status).toBe(204);
    const forged = 'hks_' + 'C'.repeat(43);
    const asks = [a, b, revoked, forged, a, b, a, revoked, b, forged, a, a];
    const answers = await Promise.all(asks.map(async (t) => {
      const res = await get(h, '/api/auth/me', t);
      return res.status === 200 ? ((await res.json()) as { user: { username: string } }).user.username : res.status;
    }));
    expect(answers).toEqual(asks.map((t) => (t === a ? 'alice' : t === b ? 'bob' : 401)));
    // One statement for several token hashes answers each in order, a repeated or unknown one too.
    const { findSessions } = await import('../viewer-api/auth/auth.repository.js');
    const { secretDigest } = await import('../viewer-api/auth/tokens.js');
    const got = await findSessions(h.exchange.db, [a, forged, b, a, revoked].map(secretDigest));
    expect(got.map((s) => s && { user: s.user.username, revoked: s.revokedAt !== null })).toEqual([
      { user: 'alice', revoked: false }, undefined, { user: 'bob', revoked: false }, { user: 'alice', revoked: false }, { user: 'alice', revoked: true },
    ]);
  });

  it('locks an account after repeated failures and unlocks it after the lockout time', async () => {
    const erin = await enrol(h, 'F001', 'erin', 'nurse');
    for (let i = 0; i < 5; i++) expect((await login(h, erin, { password: 'wrong wrong wrong' })).status).toBe(401);
    expect((await lastAudit(h))[0]!.reason).toMatch(/account locked for 15 min/);
    // Now even the right password and code are refused, and the audit says why.
    await expectGenericFailure(await login(h, erin), /^account locked until/);
    h.clock.advance(15 * 60_000);
    expect((await login(h, erin)).status).toBe(200);
  });

  it('limits login attempts per address', async () => {
    h.clock.advance(60_000);
    let limited: Response | undefined;
    for (let i = 0; i < 25 && !limited; i++) {
      const res = await login(h, alice, { password: 'guess guess guess' + i, freshStep: false });
      if (res.status === 429) limited = res;
    }
    expect(limited).toBeDefined();
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThan(0);
    // Even the right credentials wait for the window to pass.
    expect((await login(h, alice, { freshStep: false })).status).toBe(429);
    h.clock.advance(61_000);
    expect((await h.exchange.db.selectFrom('audit_event').select('seq').where('reason', '=', 'rate-limited').execute()).length).toBe(1);
    // Alice's account was locked by the guesses; wait that out too.
    h.clock.advance(15 * 60_000);
    expect((await login(h, alice)).status).toBe(200);
  });

  it('refuses oversized, malformed and unexpected bodies', async () => {
    const post = (body: string, type = 'application/json') =>
      fetch(`${h.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': type, 'x-device-credential': alice.device }, body });
    const big = await post(JSON.stringify({ facilityId: 'F001', username: 'alice', password: 'x'.repeat(10_000), totp: '123456' }));
    expect(big.status).toBe(413);
    expect(big.headers.get('cache-control')).toBe('no-store');
    expect((await post('{"facilityId": ')).status).toBe(400);
    expect((await post('facilityId=F001', 'application/x-www-form-urlencoded')).status).toBe(400);
    expect((await post(JSON.stringify({ facilityId: 'F001', username: 'alice', password: 'p', totp: '1', admin: true }))).status).toBe(400);
    expect((await post(JSON.stringify({ facilityId: ['F001'], username: 'alice', password: 'p', totp: '1' }))).status).toBe(400);
    const inj = await post(JSON.stringify({ facilityId: "F001' OR '1'='1", username: "alice'--", password: 'p', totp: '000000' }));
    expect(inj.status).toBe(401);
  });

  it('keeps an audit chain that verifies, and detects an altered, inserted or removed entry', async () => {
    const ok = await verifyAuditChain(h.exchange.db);
    expect(ok.ok).toBe(true);
    expect(ok.entries).toBeGreaterThan(20);
    expect(ok.entries).toBe(ok.head.count);

    // The table refuses changes from the application's own connection.
    await expect(sql`update audit_event set reason = 'nothing to see' where seq = 3`.execute(h.exchange.db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from audit_event where seq = 3`.execute(h.exchange.db)).rejects.toThrow(/append-only/);

    const row = await h.exchange.db.selectFrom('audit_event').selectAll().where('seq', '=', 3).executeTakeFirstOrThrow();
    await withGuardOff(h, async () => {
      // Altered.
      await sql`update audit_event set reason = 'nothing to see' where seq = 3`.execute(h.exchange.db);
      expect((await verifyAuditChain(h.exchange.db)).problem).toMatchObject({ kind: 'altered', seq: 3 });
      await sql`update audit_event set reason = ${row.reason} where seq = 3`.execute(h.exchange.db);
      expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);

      // Removed from the middle.
      await sql`delete from audit_event where seq = 3`.execute(h.exchange.db);
      expect((await verifyAuditChain(h.exchange.db)).problem).toMatchObject({ kind: 'removed', seq: 3 });
      // Replaced by a forged entry with a self-consistent hash but not chained to its predecessor.
      await h.exchange.db.insertInto('audit_event').values({ ...row, reason: 'forged', hash: 'f'.repeat(64) }).execute();
      expect((await verifyAuditChain(h.exchange.db)).problem).toMatchObject({ kind: 'altered', seq: 3 });
      await sql`delete from audit_event where seq = 3`.execute(h.exchange.db);
      await h.exchange.db.insertInto('audit_event').values(row).execute();
      expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);

      // The last entry removed: only the head can tell.
      const head = await verifyAuditChain(h.exchange.db);
      const last = await h.exchange.db.selectFrom('audit_event').selectAll().where('seq', '=', head.head.count).executeTakeFirstOrThrow();
      await sql`delete from audit_event where seq = ${last.seq}`.execute(h.exchange.db);
      expect((await verifyAuditChain(h.exchange.db)).problem).toMatchObject({ kind: 'removed', seq: last.seq });
      await h.exchange.db.insertInto('audit_event').values(last).execute();

      // An entry appended behind the exchange's back (not counted by the head).
      // A forger who knows the scheme computes a correct hash for it; the head still does not count it.
      const forged = buildEntry({ action: 'auth.login', outcome: 'success' }, last.seq + 1, new Date(h.clock.ms), last.hash);
      await h.exchange.db
        .insertInto('audit_event')
        .values({
          seq: forged.seq,
          at: new Date(forged.at),
          action: forged.action,
          outcome: forged.outcome,
          detail: forged.detail,
          prev_hash: forged.prevHash,
          hash: forged.hash,
        })
        .execute();
      expect((await verifyAuditChain(h.exchange.db)).problem).toMatchObject({ kind: 'inserted', seq: last.seq + 1 });
      await sql`delete from audit_event where seq = ${last.seq + 1}`.execute(h.exchange.db);
    });
    expect((await verifyAuditChain(h.exchange.db)).ok).toBe(true);
  });
});
