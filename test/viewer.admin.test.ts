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

  it('disables a user: their session ends at once', async () => {
    const before = await get(h, '/api/auth/me', tokens.get(nurseA));
    expect(before.status).toBe(200);
    expect((await post(adminA, '/api/admin/users/FA/nurse/disable')).status).toBe(200);
    expect((await get(h, '/api/auth/me', tokens.get(nurseA))).status).toBe(401);
  });
});
