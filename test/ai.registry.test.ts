import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { SecretBox } from '../viewer-api/auth/secret-box.js';
import { createAuditLog, verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import type { AdminContext } from '../viewer-api/auth/admin.service.js';
import { createAiRegistry, type AiRegistry } from '../viewer-api/ai/registry.service.js';
import { assertUsable } from '../viewer-api/ai/registry.js';
import { ExchangeError } from '../store/errors.js';

const admin: AdminContext = { actor: { userId: 1, username: 'netadmin', facilityId: 'F000', role: 'network_admin' }, address: '127.0.0.1', endpoint: 'POST /api/admin/ai/services' };
const physician: AdminContext = { actor: { userId: 2, username: 'dr', facilityId: 'F001', role: 'physician' }, address: '127.0.0.1', endpoint: 'POST /api/admin/ai/services' };

const input = {
  id: 'cv-risk',
  name: '心血管リスク予測',
  baseUrl: 'https://ai.example.jp/fhir',
  operation: '$analyze',
  auth: { kind: 'oauth2', tokenUrl: 'https://ai.example.jp/oauth/token', clientId: 'hakobune', clientSecret: 'very-secret-value' },
  categories: ['labs', 'prescriptions', 'diagnoses'],
  facilities: ['F001', 'F002'],
  location: { country: 'JP', region: 'Tokyo' },
  birthDate: 'age',
};

async function expectError(p: Promise<unknown>, code: string, message: RegExp) {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ExchangeError);
  expect((e as ExchangeError).code).toBe(code);
  expect((e as ExchangeError).message).toMatch(message);
}

for (const kind of ['embedded', 'postgres'] as const) {
  describe(`AI service registry (${kind})`, () => {
    let tmp: ReturnType<typeof tempDir>;
    let pg: TestDatabase | undefined;
    let handle: DatabaseHandle;
    let registry: AiRegistry;
    const now = { t: Date.UTC(2026, 10, 21) };

    beforeAll(async () => {
      tmp = tempDir('hakobune-ai-reg-');
      if (kind === 'postgres') pg = await createTestDatabase('ai');
      handle = await openDatabase({ dataDir: tmp.dir, databaseUrl: pg?.url });
      await migrateToLatest(handle.db);
      const box = SecretBox.fromKeyFile(path.join(tmp.dir, 'secret.key'));
      registry = createAiRegistry({ db: handle.db, box, audit: createAuditLog(handle.db, () => now.t), clock: () => now.t });
    });
    afterAll(async () => {
      await handle?.close();
      await pg?.drop();
      tmp?.remove();
    });

    it('registers a service with defaults; views never show secrets; the stored secret is sealed', async () => {
      const v = await registry.register(admin, input);
      expect(v).toMatchObject({ id: 'cv-risk', roles: ['physician'], timeoutMs: 30_000, rateLimit: { perMinute: 60, burst: 10 }, allowOutsideJapan: false, enabled: true, updatedBy: 'netadmin' });
      expect(v.auth).toEqual({ kind: 'oauth2', tokenUrl: 'https://ai.example.jp/oauth/token', clientId: 'hakobune' });
      expect(JSON.stringify(await registry.list())).not.toContain('very-secret-value');
      const row = await handle.db.selectFrom('ai_service').selectAll().where('id', '=', 'cv-risk').executeTakeFirstOrThrow();
      expect(row.auth_secret_enc!.toString('latin1')).not.toContain('very-secret-value');
      const full = await registry.load('cv-risk');
      expect(full!.auth).toEqual(input.auth);
    });

    it('updates keep the secret unless a new one is given, and are audited without it', async () => {
      const v = await registry.update(admin, 'cv-risk', { timeoutMs: 5000, categories: ['labs'] });
      expect(v.timeoutMs).toBe(5000);
      expect((await registry.load('cv-risk'))!.auth).toEqual(input.auth);
      await registry.update(admin, 'cv-risk', { auth: { kind: 'bearer', token: 'new-bearer-token' } });
      expect((await registry.load('cv-risk'))!.auth).toEqual({ kind: 'bearer', token: 'new-bearer-token' });
      const rows = await handle.db.selectFrom('audit_event').select(['action', 'outcome', 'detail', 'username']).where('action', 'like', 'ai.service.%').orderBy('seq').execute();
      expect(rows.map((r) => [r.action, r.outcome])).toEqual([
        ['ai.service.register', 'success'],
        ['ai.service.update', 'success'],
        ['ai.service.update', 'success'],
      ]);
      const text = JSON.stringify(rows);
      expect(text).not.toContain('very-secret-value');
      expect(text).not.toContain('new-bearer-token');
      expect(JSON.parse(String(rows[2]!.detail))).toMatchObject({ service: 'cv-risk', auth: 'bearer', credentialsChanged: true });
      expect((await verifyAuditChain(handle.db)).ok).toBe(true);
    });

    it('refuses bad definitions with every problem named', async () => {
      await expectError(registry.register(admin, { ...input, id: 'x', baseUrl: 'http://ai.example.jp/fhir' }), 'bad-request', /baseUrl: must be an https/);
      await expectError(registry.register(admin, { ...input, id: 'bad-cat', categories: ['genome'] }), 'bad-request', /categories/);
      await expectError(registry.register(admin, { ...input, id: 'bad-op', operation: 'DROP TABLE' }), 'bad-request', /operation/);
      await expectError(registry.register(admin, { ...input, id: 'bad-auth', auth: { kind: 'bearer' } }), 'bad-request', /auth/);
      await expectError(registry.register(admin, { ...input, id: 'extra', secretBackdoor: true }), 'bad-request', /Unrecognized key/);
      await expectError(registry.register(admin, { ...input }), 'conflict', /already exists/);
      await expectError(registry.update(admin, 'nope', { timeoutMs: 1000 }), 'not-found', /no AI service nope/);
    });

    it('a data centre outside Japan is refused unless explicitly allowed', async () => {
      await expectError(registry.register(admin, { ...input, id: 'us-model', location: { country: 'US', region: 'Oregon' } }), 'forbidden', /outside Japan \(US\)/);
      const v = await registry.register(admin, { ...input, id: 'us-model', location: { country: 'US', region: 'Oregon' }, allowOutsideJapan: true });
      expect(v.allowOutsideJapan).toBe(true);
      // Withdrawing the permission later is refused too: the rule holds on every save.
      await expectError(registry.update(admin, 'us-model', { allowOutsideJapan: false }), 'forbidden', /outside Japan/);
    });

    it('only network administrators manage services; a refused attempt is audited', async () => {
      await expectError(registry.register(physician, { ...input, id: 'sneaky' }), 'forbidden', /network administrators/);
      await expectError(registry.setEnabled(physician, 'cv-risk', false), 'forbidden', /network administrators/);
      const denied = await handle.db.selectFrom('audit_event').select(['action', 'username']).where('outcome', '=', 'denied').where('action', 'like', 'ai.service.%').execute();
      expect(denied).toContainEqual({ action: 'ai.service.register', username: 'dr' });
      expect(denied).toContainEqual({ action: 'ai.service.disable', username: 'dr' });
      // The command line (the machine's operator) may.
      const cli: AdminContext = { actor: { username: 'cli:root' }, address: null, endpoint: 'cli: hakobune ai service add' };
      expect((await registry.setEnabled(cli, 'cv-risk', false)).enabled).toBe(false);
    });

    it('who may use a service: enabled, location, facility, role', async () => {
      const s = (await registry.load('cv-risk'))!;
      expect(() => assertUsable(s, { facilityId: 'F001', role: 'physician' })).toThrow(/disabled/);
      await registry.setEnabled(admin, 'cv-risk', true);
      const on = (await registry.load('cv-risk'))!;
      expect(() => assertUsable(on, { facilityId: 'F001', role: 'physician' })).not.toThrow();
      expect(() => assertUsable(on, { facilityId: 'F009', role: 'physician' })).toThrow(/your facility may not use/);
      expect(() => assertUsable(on, { facilityId: 'F001', role: 'nurse' })).toThrow(/your role may not use/);
      expect(() => assertUsable({ ...on, location: { country: 'SG', region: null } }, { facilityId: 'F001', role: 'physician' })).toThrow(/outside Japan/);
      const count = await sql<{ n: number }>`select count(*)::int as n from ai_service`.execute(handle.db);
      expect(count.rows[0]!.n).toBe(2);
    });
  });
}
