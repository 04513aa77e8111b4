import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { sql } from 'kysely';
import { main } from '../viewer-api/cli/main.js';
import { createExchange } from '../viewer-api/exchange.js';
import { readConfig } from '../viewer-api/config.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';

/** Runs `hakobune ...` in this process; resolves with its exit code and what it printed. */
async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
  try {
    const code = await main(['node', 'hakobune', ...args]);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

// The commands read their configuration from the environment, as they do in production; this
// test file runs in its own process, so setting it here touches no other test.
describe('viewer commands on PostgreSQL', () => {
  const tmp = tempDir();
  let pg: TestDatabase;
  beforeAll(async () => {
    pg = await createTestDatabase('hkvcli');
    process.env.DATABASE_URL = pg.url;
    process.env.HAKOBUNE_DATA_DIR = tmp.dir;
    process.env.LOG_LEVEL = 'silent';
    expect((await run('facility', 'add', '--id', 'F001', '--name', 'Hospital A', '--kind', 'hospital')).code).toBe(0);
  }, 240_000);
  afterAll(async () => {
    await pg.drop();
    tmp.remove();
  });

  it('enrols a user once, showing the TOTP secret and a generated password', async () => {
    const r = await run('user', 'add', '--facility', 'F001', '--username', 'alice', '--role', 'physician', '--json');
    expect(r.code).toBe(0);
    const e = JSON.parse(r.out) as { totpSecret: string; totpUri: string; password: string };
    expect(e.totpSecret).toMatch(/^[A-Z2-7]{32}$/);
    expect(e.totpUri).toContain('otpauth://totp/');
    expect(e.password.length).toBeGreaterThanOrEqual(20);
    const again = await run('user', 'add', '--facility', 'F001', '--username', 'alice', '--role', 'physician');
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/already exists/);
  });

  it('refuses an unknown facility, role or malformed name with exit code 2', async () => {
    expect((await run('user', 'add', '--facility', 'F999', '--username', 'bob', '--role', 'nurse')).err).toMatch(/no facility F999/);
    expect((await run('user', 'add', '--facility', 'F001', '--username', 'bob', '--role', 'janitor')).code).toBe(2);
    expect((await run('user', 'add', '--facility', 'F001', '--username', "bob'; drop table", '--role', 'nurse')).code).toBe(2);
    expect((await run('device', 'register', '--facility', 'F999', '--label', 'x')).code).toBe(2);
  });

  it('registers, lists and revokes a device', async () => {
    const r = await run('device', 'register', '--facility', 'F001', '--label', 'ward 3 terminal', '--json');
    expect(r.code).toBe(0);
    const d = JSON.parse(r.out) as { deviceId: string; credential: string };
    expect(d.credential).toMatch(/^hkd_/);
    expect((await run('device', 'list', '--facility', 'F001')).out).toMatch(new RegExp(`${d.deviceId}\\s+active`));
    expect((await run('device', 'revoke', d.deviceId)).code).toBe(0);
    expect((await run('device', 'list', '--facility', 'F001')).out).toMatch(new RegExp(`${d.deviceId}\\s+revoked`));
    expect((await run('device', 'revoke', d.deviceId)).code).toBe(2);
  });

  it('verifies, anchors and exports the audit trail as FHIR AuditEvents', async () => {
    const v = await run('audit', 'verify', '--json');
    expect(v.code).toBe(0);
    const report = JSON.parse(v.out) as { ok: boolean; entries: number };
    expect(report).toMatchObject({ ok: true, entries: 3 }); // user add, device register, device revoke
    const anchor = JSON.parse((await run('audit', 'anchor', '--json')).out) as { count: number; lastHash: string };
    expect(anchor.count).toBe(3);
    expect(anchor.lastHash).toMatch(/^[0-9a-f]{64}$/);

    const file = path.join(tmp.dir, 'audit.json');
    const x = await run('audit', 'export', '--from', '2000-01-01', '--to', '2100-01-01', '--out', file);
    expect(x.code).toBe(0);
    const bundle = JSON.parse(fs.readFileSync(file, 'utf8')) as { resourceType: string; entry: Array<{ resource: Record<string, unknown> }> };
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.entry.map((e) => (e.resource.subtype as Array<{ code: string }>)[0]!.code)).toEqual([
      'admin.user.add',
      'admin.device.register',
      'admin.device.revoke',
    ]);
    // The export is itself audited.
    expect(JSON.parse((await run('audit', 'verify', '--json')).out)).toMatchObject({ ok: true, entries: 4 });
    expect((await run('audit', 'export', '--from', 'yesterday', '--to', '2100-01-01')).code).toBe(2);
    expect((await run('audit', 'export', '--from', '2100-01-01', '--to', '2000-01-01')).code).toBe(2);
  });

  it('exits 1 and names the entry when the chain is broken', async () => {
    const ex = await createExchange(readConfig());
    try {
      await sql`alter table audit_event disable trigger user`.execute(ex.db);
      await sql`update audit_event set detail = '{}' where seq = 2`.execute(ex.db);
    } finally {
      await ex.stop();
    }
    const v = await run('audit', 'verify');
    expect(v.code).toBe(1);
    expect(v.out).toMatch(/BROKEN at entry 2 \(altered\)/);
  });
});
