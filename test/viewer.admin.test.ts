import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { totpCode } from '../viewer-api/auth/totp.js';
import { enrol, get, login, startViewer, tokenFor, type TestUser, type ViewerHarness } from './viewer.support.js';

describe('administration of users and devices over HTTP (embedded)', () => {
  let h: ViewerHarness;
  let adminA: TestUser;
  let adminB: TestUser;
  let nurseA: TestUser;
  let netAdmin: TestUser;
  const tokens = new Map<TestUser, string>();
  beforeAll(async () => {
    h = await startViewer('embedded', (c) => ({ auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    adminA = await enrol(h, 'FA', 'admin', 'facility_admin');
    adminB = await enrol(h, 'FB', 'admin', 'facility_admin');
    nurseA = await enrol(h, 'FA', 'nurse', 'nurse');
    netAdmin = await enrol(h, 'NET', 'root', 'network_admin');
    for (const u of [adminA, adminB, nurseA, netAdmin]) tokens.set(u, await tokenFor(h, u));
  }, 240_000);
  afterAll(async () => h?.close());

  const post = (u: TestUser, path: string, body?: unknown) =>
    fetch(`${h.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.get(u)}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });

  it('lets a facility administrator enrol a user and a device that then log in', async () => {
    const u = await post(adminA, '/api/admin/users', { username: 'newdoc', displayName: 'New Doctor', role: 'physician', password: 'a long enough password' });
    expect(u.status).toBe(201);
    const enrolled = (await u.json()) as { totpSecret: string; facilityId: string };
    expect(enrolled.facilityId).toBe('FA');
    const d = await post(adminA, '/api/admin/devices', { label: 'clinic room 2' });
    expect(d.status).toBe(201);
    const device = (await d.json()) as { credential: string; deviceId: string };
    h.clock.advance(31_000);
    const res = await login(h, { ...adminA, username: 'newdoc', password: 'a long enough password', totpSecret: enrolled.totpSecret, device: device.credential }, { freshStep: false });
    expect(res.status).toBe(200);
    const list = (await (await get(h, '/api/admin/devices', tokens.get(adminA))).json()) as { devices: Array<{ id: string }> };
    expect(list.devices.map((x) => x.id)).toContain(device.deviceId);
    expect(await totpCode(enrolled.totpSecret, h.clock.ms)).toMatch(/^\d{6}$/);
  });

  it("refuses another facility, network-wide roles and non-administrators, and audits it", async () => {
    expect((await post(adminA, '/api/admin/users', { facilityId: 'FB', username: 'x', displayName: 'x', role: 'nurse', password: 'a long enough password' })).status).toBe(403);
    expect((await post(adminA, '/api/admin/users', { username: 'aud', displayName: 'x', role: 'auditor', password: 'a long enough password' })).status).toBe(403);
    expect((await post(nurseA, '/api/admin/devices', { label: 'mine' })).status).toBe(403);
    expect((await post(adminA, '/api/admin/users/FB/admin/disable')).status).toBe(403);
    const denied = await h.exchange.db.selectFrom('audit_event').select(['reason']).where('outcome', '=', 'denied').where('action', 'like', 'admin.%').execute();
    expect(denied.length).toBeGreaterThanOrEqual(3);
    // The network administrator may.
    expect((await post(netAdmin, '/api/admin/users', { facilityId: 'FB', username: 'aud', displayName: 'Auditor', role: 'auditor', password: 'a long enough password' })).status).toBe(201);
  });

  it("answers another facility's device like a missing one, and revokes its own", async () => {
    const other = (await (await post(adminB, '/api/admin/devices', { label: 'B terminal' })).json()) as { deviceId: string };
    const probe = await post(adminA, `/api/admin/devices/${other.deviceId}/revoke`);
    const missing = await post(adminA, '/api/admin/devices/dev_AAAAAAAAAAAAAAAA/revoke');
    expect(probe.status).toBe(404);
    expect(missing.status).toBe(404);
    expect((await post(adminB, `/api/admin/devices/${other.deviceId}/revoke`)).status).toBe(200);
    expect((await post(adminB, `/api/admin/devices/${other.deviceId}/revoke`)).status).toBe(409);
  });

  it("lists a facility's users without secrets, to their administrators only", async () => {
    const res = await get(h, '/api/admin/users', tokens.get(adminA));
    expect(res.status).toBe(200);
    const text = await res.text();
    const { users } = JSON.parse(text) as { users: Array<{ username: string; role: string; facilityId: string }> };
    expect(users.map((u) => u.username)).toEqual(expect.arrayContaining(['admin', 'nurse']));
    expect(users.every((u) => u.facilityId === 'FA')).toBe(true);
    expect(text).not.toMatch(/password|totp|scrypt/i);
    expect((await get(h, '/api/admin/users?facility=FB', tokens.get(adminA))).status).toBe(403);
    expect((await get(h, '/api/admin/users?facility=FB', tokens.get(netAdmin))).status).toBe(200);
    expect((await get(h, '/api/admin/users', tokens.get(nurseA))).status).toBe(403);
    expect((await get(h, '/api/admin/users?facility=F%27%3B--', tokens.get(adminA))).status).toBe(400);
  });

  it("changes a user's role with a reason, effective from their next request, and audits it", async () => {
    const clerk = await enrol(h, 'FA', 'clerk2', 'clerk');
    const clerkToken = await tokenFor(h, clerk);
    const me = async () => ((await (await get(h, '/api/auth/me', clerkToken)).json()) as { user: { role: string } }).user.role;
    expect(await me()).toBe('clerk');
    const res = await post(adminA, '/api/admin/users/FA/clerk2/role', { role: 'nurse', reason: 'qualified as a nurse' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ facilityId: 'FA', username: 'clerk2', from: 'clerk', to: 'nurse', changed: true });
    // The same session, the next request: the new role.
    expect(await me()).toBe('nurse');
    const entry = await h.exchange.db.selectFrom('audit_event').selectAll().where('action', '=', 'admin.user.role').where('outcome', '=', 'success').orderBy('seq', 'desc').executeTakeFirstOrThrow();
    expect(entry.reason).toBe('qualified as a nurse');
    expect([entry.username, entry.facility_id, entry.role]).toEqual(['admin', 'FA', 'facility_admin']);
    expect(JSON.parse(String(entry.detail))).toMatchObject({ from: 'clerk', to: 'nurse', changed: true });
    // Asking for the role it has changes nothing, and says so.
    expect(await (await post(adminA, '/api/admin/users/FA/clerk2/role', { role: 'nurse', reason: 'again' })).json()).toMatchObject({ changed: false });
  });

  it("refuses role changes that are not the caller's to make, and bad requests, clearly", async () => {
    const audBefore = await h.exchange.db.selectFrom('audit_event').select(['seq']).where('action', '=', 'admin.user.role').where('outcome', '=', 'denied').execute();
    const status = async (u: TestUser, path: string, body: unknown) => (await post(u, path, body)).status;
    // One's own role, a network-wide role given or taken by a facility administrator, another facility.
    expect(await status(adminA, '/api/admin/users/FA/admin/role', { role: 'physician', reason: 'x' })).toBe(403);
    expect(await status(adminA, '/api/admin/users/FA/clerk2/role', { role: 'network_admin', reason: 'x' })).toBe(403);
    expect(await status(netAdmin, '/api/admin/users/FA/clerk2/role', { role: 'auditor', reason: 'audits the ward' })).toBe(200);
    expect(await status(adminA, '/api/admin/users/FA/clerk2/role', { role: 'nurse', reason: 'x' })).toBe(403);
    expect(await status(adminA, '/api/admin/users/FB/admin/role', { role: 'nurse', reason: 'x' })).toBe(403);
    expect(await status(nurseA, '/api/admin/users/FA/admin/role', { role: 'nurse', reason: 'x' })).toBe(403);
    const audAfter = await h.exchange.db.selectFrom('audit_event').select(['seq', 'reason']).where('action', '=', 'admin.user.role').where('outcome', '=', 'denied').execute();
    expect(audAfter.length - audBefore.length).toBe(3);
    // Bad input: unknown role, no reason, extra fields, not JSON, unknown user, malformed facility.
    expect(await status(netAdmin, '/api/admin/users/FA/clerk2/role', { role: 'surgeon', reason: 'x' })).toBe(400);
    expect(await status(netAdmin, '/api/admin/users/FA/clerk2/role', { role: 'nurse' })).toBe(400);
    expect(await status(netAdmin, '/api/admin/users/FA/clerk2/role', { role: 'nurse', reason: '   ' })).toBe(400);
    expect(await status(netAdmin, '/api/admin/users/FA/clerk2/role', { role: 'nurse', reason: 'x', admin: true })).toBe(400);
    const notJson = await fetch(`${h.url}/api/admin/users/FA/clerk2/role`, { method: 'POST', headers: { authorization: `Bearer ${tokens.get(netAdmin)}`, 'content-type': 'application/json' }, body: '{"role": nurse' });
    expect(notJson.status).toBe(400);
    expect(notJson.headers.get('content-type')).toMatch(/problem\+json/);
    expect(await status(netAdmin, '/api/admin/users/FA/nobody/role', { role: 'nurse', reason: 'x' })).toBe(404);
    expect(await status(netAdmin, '/api/admin/users/F%20A/clerk2/role', { role: 'nurse', reason: 'x' })).toBe(400);
    // None of it changed the role.
    expect((await get(h, '/api/admin/users', tokens.get(adminA)).then((r) => r.json()) as { users: Array<{ username: string; role: string }> }).users.find((u) => u.username === 'clerk2')!.role).toBe('auditor');
  });

  it('disables a user: their session ends at once', async () => {
    const before = await get(h, '/api/auth/me', tokens.get(nurseA));
    expect(before.status).toBe(200);
    expect((await post(adminA, '/api/admin/users/FA/nurse/disable')).status).toBe(200);
    expect((await get(h, '/api/auth/me', tokens.get(nurseA))).status).toBe(401);
  });
});
