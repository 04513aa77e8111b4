import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { tempDir } from './support/tmp.js';
import { SecretBox } from '../viewer-api/auth/secret-box.js';
import { createAuditLog, verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import type { AuditCompanion } from '../viewer-api/audit/audit.repository.js';
import type { AdminContext } from '../viewer-api/auth/admin.service.js';
import { createAiRegistry } from '../viewer-api/ai/registry.service.js';
import { claimRequests, findRequest, finishWithAudit, insertWithAudit, type NewAiRequest, type RequestOutcome } from '../viewer-api/ai/requests.repository.js';

/**
 * The AI request's statements that take many requests at once (group commit, store/group.ts): insert,
 * claim (each request claimed once, even when its id comes twice in one statement) and finish,
 * on the embedded database and on PostgreSQL; the insert and the finish also in the audit
 * append's statement, with the entries that explain them.
 */

const admin: AdminContext = { actor: { userId: 1, username: 'netadmin', facilityId: 'F000', role: 'network_admin' }, address: '127.0.0.1', endpoint: 'test' };

for (const kind of ['embedded', 'postgres'] as const) {
  describe(`AI request statements (${kind})`, () => {
    let tmp: ReturnType<typeof tempDir>;
    let pg: TestDatabase | undefined;
    let handle: DatabaseHandle;
    const t0 = Date.UTC(2026, 10, 21, 9, 30, 0, 123);

    const request = (id: string, over: Partial<NewAiRequest> = {}): NewAiRequest => ({
      id,
      serviceId: 'svc',
      regionalId: `R-${id}`,
      userId: 7,
      facilityId: 'F001',
      role: 'physician',
      categories: ['labs', 'prescriptions'],
      records: 0,
      report: null,
      outgoingEnc: null,
      reidKeyEnc: Buffer.from(`sealed key of ${id} \u0000\u00ff`, 'latin1'),
      at: t0,
      ...over,
    });

    beforeAll(async () => {
      tmp = tempDir('hakobune-ai-req-');
      if (kind === 'postgres') pg = await createTestDatabase('ai');
      handle = await openDatabase({ dataDir: tmp.dir, databaseUrl: pg?.url });
      await migrateToLatest(handle.db);
      const box = SecretBox.fromKeyFile(path.join(tmp.dir, 'secret.key'));
      const registry = createAiRegistry({ db: handle.db, box, audit: createAuditLog(handle.db, () => t0), clock: () => t0 });
      await registry.register(admin, {
        id: 'svc',
        name: 'service',
        baseUrl: 'https://ai.example.jp/fhir',
        operation: '$analyze',
        auth: { kind: 'none' },
        categories: ['labs', 'prescriptions'],
        facilities: 'all',
        location: { country: 'JP', region: 'Tokyo' },
      });
    });
    afterAll(async () => {
      await handle?.close();
      await pg?.drop();
      tmp?.remove();
    });

    // Requests are written only with the audit entries that explain them (the append's statement).
    const withEntries = <T>(companion: AuditCompanion<T>, writes: T[]) => {
      const audit = createAuditLog(handle.db, () => t0);
      return Promise.all(writes.map((w) => audit.recordWith({ action: `test.${companion.name}`, outcome: 'success' }, companion, w)));
    };

    it('inserts many requests in one statement, each as given', async () => {
      await withEntries(insertWithAudit, [request('a'), request('b', { userId: 8, report: { x: 1 }, outgoingEnc: Buffer.from([1, 2, 3]), at: t0 + 5 }), request('c')]);
      const b = (await findRequest(handle.db, 'b'))!;
      expect(b).toMatchObject({ id: 'b', serviceId: 'svc', regionalId: 'R-b', userId: 8, status: 'queued', categories: ['labs', 'prescriptions'], report: { x: 1 }, createdAt: t0 + 5, updatedAt: t0 + 5, completedAt: null });
      expect(b.outgoingEnc).toEqual(Buffer.from([1, 2, 3]));
      expect(b.reidKeyEnc).toEqual(Buffer.from('sealed key of b \u0000\u00ff', 'latin1'));
      expect((await findRequest(handle.db, 'a'))!.createdAt).toBe(t0);
    });

    it('claims each queued request once: a repeated id, an unknown one and one already claimed get nothing', async () => {
      const got = await claimRequests(handle.db, ['a', 'a', 'nope', 'b'], t0 + 1000);
      expect(got.map((c) => c?.row.id)).toEqual(['a', undefined, undefined, 'b']);
      expect(got[0]!.row.status).toBe('sending');
      // No such regional patient: no decision context (the gate then refuses).
      expect(got[0]!.decision).toBeUndefined();
      expect(got[0]!.versions.size).toBe(0);
      expect((await claimRequests(handle.db, ['a', 'c'], t0 + 2000)).map((c) => c?.row.id)).toEqual([undefined, 'c']);
    });

    it('finishes many requests in one statement, keeping what was not given', async () => {
      await withEntries<RequestOutcome>(finishWithAudit, [
        { id: 'a', status: 'done', detail: 'RiskAssessment received', attempts: 2, sentSha256: 'ab'.repeat(32), sentBytes: 1234, receivedBytes: 99, result: { resourceType: 'RiskAssessment', status: 'final' }, prepared: { records: 5, report: { names: 3 }, reidKeyEnc: Buffer.from('new key') }, at: t0 + 3000 },
        { id: 'b', status: 'failed', detail: 'the AI service is unavailable', attempts: 4, at: t0 + 4000 },
        // A second key in the same statement: its own slice of the keys' parameter.
        { id: 'c', status: 'denied', detail: 'consent narrowed', attempts: 0, prepared: { records: 1, report: {}, reidKeyEnc: Buffer.from([0, 255, 0x5c, 0x27, 7]) }, at: t0 + 4500 },
      ]);
      expect((await findRequest(handle.db, 'c'))!.reidKeyEnc).toEqual(Buffer.from([0, 255, 0x5c, 0x27, 7]));
      const a = (await findRequest(handle.db, 'a'))!;
      expect(a).toMatchObject({ status: 'done', statusDetail: 'RiskAssessment received', attempts: 2, sentSha256: 'ab'.repeat(32), sentBytes: 1234, receivedBytes: 99, records: 5, report: { names: 3 }, result: { resourceType: 'RiskAssessment', status: 'final' }, completedAt: t0 + 3000 });
      expect(a.reidKeyEnc).toEqual(Buffer.from('new key'));
      const b = (await findRequest(handle.db, 'b'))!;
      expect(b).toMatchObject({ status: 'failed', attempts: 4, sentSha256: null, result: null, report: { x: 1 }, records: 0, outgoingEnc: null, completedAt: t0 + 4000 });
      expect(b.reidKeyEnc).toEqual(Buffer.from('sealed key of b \u0000\u00ff', 'latin1'));
    });

    it('inserts and finishes requests in the statement of their audit entries: both committed, or neither', async () => {
      const audit = createAuditLog(handle.db, () => t0 + 6000);
      const entry = (request: string) => ({ action: 'ai.request.submit', outcome: 'success' as const, patient: `R-${request}`, detail: { request } });
      // One turn: the three go in one append; the one for a service that does not exist is
      // refused by the database and fails alone, without its entry.
      const got = await Promise.allSettled([
        audit.recordWith(entry('w1'), insertWithAudit, request('w1')),
        audit.recordWith(entry('w2'), insertWithAudit, request('w2', { serviceId: 'gone' })),
        audit.recordWith(entry('w3'), insertWithAudit, request('w3', { at: t0 + 7 })),
        audit.record({ action: 'test.plain', outcome: 'success' }),
      ]);
      expect(got.map((g) => g.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
      expect(String((got[1] as PromiseRejectedResult).reason)).toMatch(/foreign key/);
      expect(await findRequest(handle.db, 'w1')).toMatchObject({ status: 'queued', serviceId: 'svc', createdAt: t0 });
      expect(await findRequest(handle.db, 'w2')).toBeUndefined();
      expect((await findRequest(handle.db, 'w3'))!.reidKeyEnc).toEqual(Buffer.from('sealed key of w3 \u0000\u00ff', 'latin1'));
      const entries = async () => (await handle.db.selectFrom('audit_event').select(['action', 'patient']).where('action', 'in', ['ai.request.submit', 'ai.request.send', 'test.plain']).orderBy('seq').execute()).map((e) => `${e.action} ${e.patient}`);
      expect(await entries()).toEqual(['ai.request.submit R-w1', 'ai.request.submit R-w3', 'test.plain null']);

      await audit.recordWith({ action: 'ai.request.send', outcome: 'success', patient: 'R-w1' }, finishWithAudit, {
        id: 'w1', status: 'done', detail: 'RiskAssessment received', attempts: 1, result: { resourceType: 'RiskAssessment' }, prepared: { records: 2, report: { n: 1 }, reidKeyEnc: Buffer.from('k1') }, at: t0 + 8000,
      });
      const w1 = (await findRequest(handle.db, 'w1'))!;
      expect(w1).toMatchObject({ status: 'done', attempts: 1, records: 2, result: { resourceType: 'RiskAssessment' }, completedAt: t0 + 8000 });
      expect(w1.reidKeyEnc).toEqual(Buffer.from('k1'));
      expect((await entries()).at(-1)).toBe('ai.request.send R-w1');
      expect((await verifyAuditChain(handle.db)).ok).toBe(true);
    });
  });
}
