import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pgDriver from 'pg';
import { createExchange, type Exchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { verifyAuditChain } from '../viewer-api/audit/audit.service.js';
import { totpCode } from '../viewer-api/auth/totp.js';
import { readStoredFile } from '../ingest/records/read.js';
import { insertFacility } from '../store/backup/backup.repository.js';
import { createTestDatabase, type TestDatabase } from './support/postgres.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

/**
 * Two exchange processes' worth of parts on one PostgreSQL: A serves the clinician, B is where an
 * administrator (or the consent desk) makes a change. Whatever A keeps in memory to go fast, a
 * change made through B holds on A's very next request: withdrawal, unlink, session revocation,
 * device revocation; and both appending to the audit trail at once keep one verifiable chain.
 */
describe('changes made through another exchange on the same database', () => {
  const tmp = tempDir();
  let pg: TestDatabase;
  let a: Exchange;
  let b: Exchange;
  let url: string;
  const actor = 'test:desk';
  const cli = { actor: { username: 'cli:test' }, address: null, endpoint: 'cli' };
  const password = 'a long test passphrase';
  let users = 0;
  /** The content every seeded record holds, as a client gets it back. */
  let stored: unknown;

  /** A physician of F01 with a device of its own, signed in on A. */
  async function signIn(): Promise<{ token: string; deviceId: string; username: string }> {
    const username = `doc${++users}`;
    const e = await b.viewer.admin.addUser(cli, { facilityId: 'F01', username, displayName: username, role: 'physician', password });
    const d = await b.viewer.admin.registerDevice(cli, 'F01', `${username}'s terminal`);
    const res = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-credential': d.credential },
      body: JSON.stringify({ facilityId: 'F01', username, password, totp: await totpCode(e.totpSecret, Date.now()) }),
    });
    expect(res.status).toBe(200);
    return { token: ((await res.json()) as { token: string }).token, deviceId: d.deviceId, username };
  }

  const timeline = (token: string, patient: string) =>
    fetch(`${url}/api/patients/${patient}/timeline`, { headers: { authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    pg = await createTestDatabase('hkfresh');
    a = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }));
    b = await createExchange(testConfig(tmp.dir, { databaseUrl: pg.url }), { migrate: false });
    url = await a.listen();
    const db = a.db;
    for (const f of ['F01', 'F02']) {
      await insertFacility(db, { id: f, name: `Hospital ${f}`, kind: 'hospital' });
      await b.consent.consent.setParticipation(actor, { facilityId: f, kind: 'hospital', discloses: true, views: true }, 'joins');
    }
    const sample = path.join(SAMPLES_ROOT, '999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1');
    const bytes = fs.readFileSync(sample);
    const read = readStoredFile({ facilityId: 'F02', path: path.relative(SAMPLES_ROOT, sample), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
    stored = JSON.parse(JSON.stringify(read.record));
    // Patients P1..P3, each with local id L<i> at F02 holding two prescriptions, opted in for hospitals.
    for (const i of [1, 2, 3]) {
      const link = await b.consent.identity.enrol(actor, { facilityId: 'F02', localId: `L${i}` }, { evidence: 'ID card checked' });
      await b.consent.consent.record(actor, link.regionalId, {
        terms: {
          status: 'opted-in',
          disclosing: { mode: 'all' },
          receiving: { kinds: ['hospital'], facilities: [], exclude: [] },
          categories: { mode: 'all' },
          purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
          validFrom: Date.now() - 86_400_000,
          validTo: null,
        },
      });
      for (const n of [1, 2]) {
        await db
          .insertInto('record')
          .values({
            facility_id: 'F02', path: `p${i}/${n}`, sha256: createHash('sha256').update(`${i}/${n}`).digest('hex'), added_seq: 1, snapshot_id: 's',
            patient_id: `L${i}`, data_type: 'OMP-01', category: 'prescription', care_date: `2020-01-0${n}`, order_no: `${n}`,
            message_ts: '20200101000000', department: '01', condition_flag: '1', status: 'ok', content: JSON.stringify(read.record),
          })
          .execute();
      }
    }
    await db.insertInto('record_index_state').values({ facility_id: 'F02', published_seq: 1, published_snapshot_id: 's', published_at: new Date() }).execute();
  }, 240_000);

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await pg?.drop();
    tmp.remove();
  });

  const regionalOf = async (localId: string) => (await b.consent.identity.linkOf({ facilityId: 'F02', localId }))!.regionalId;

  it('a withdrawal through the other exchange refuses the very next request, and the content is the stored record', async () => {
    const { token } = await signIn();
    const p = await regionalOf('L1');
    const before = await timeline(token, p);
    expect(before.status).toBe(200);
    const body = (await before.json()) as { records: { content: { content: { kind: string } }; careDate: string }[] };
    expect(body.records.map((r) => r.careDate)).toEqual(['2020-01-02', '2020-01-01']);
    expect(body.records[0]!.content).toEqual(stored);
    expect(body.records[0]!.content.content.kind).toBe('medication-order');
    await b.consent.consent.withdraw(actor, p, 'asked at the front desk');
    expect((await timeline(token, p)).status).toBe(403);
  });

  it('an unlink through the other exchange hides the local records on the very next request', async () => {
    const { token } = await signIn();
    const p = await regionalOf('L2');
    expect((await timeline(token, p)).status).toBe(200);
    await b.consent.identity.unlink(actor, { facilityId: 'F02', localId: 'L2' }, 'wrong person');
    expect((await timeline(token, p)).status).toBe(403);
  });

  it("revoking the user's sessions or the device through the other exchange refuses the very next request", async () => {
    const p = await regionalOf('L3');
    const s = await signIn();
    expect((await timeline(s.token, p)).status).toBe(200);
    await b.viewer.admin.revokeUserSessions(cli, 'F01', s.username);
    expect((await timeline(s.token, p)).status).toBe(401);

    const d = await signIn();
    expect((await timeline(d.token, p)).status).toBe(200);
    await b.viewer.admin.revokeDevice(cli, d.deviceId);
    expect((await timeline(d.token, p)).status).toBe(401);
  });

  it('a timeline reads its session and the patient\'s decision context in one statement; an unknown token gets 401', async () => {
    const { token } = await signIn();
    const p = await regionalOf('L3');
    const sent: string[] = [];
    const query = pgDriver.Client.prototype.query as (...a: unknown[]) => unknown;
    pgDriver.Client.prototype.query = function (this: pgDriver.Client, ...args: unknown[]) {
      const q = args[0] as string | { name?: string; text?: string };
      sent.push(typeof q === 'string' ? q : (q.name ?? q.text ?? ''));
      return query.apply(this, args);
    } as typeof pgDriver.Client.prototype.query;
    try {
      expect((await timeline(token, p)).status).toBe(200);
      expect(sent).toContain('viewer-session-and-context');
      expect(sent).not.toContain('viewer-find-session');
      expect(sent).not.toContain('consent-decision-rows');
      expect((await timeline(`hks_${'A'.repeat(43)}`, p)).status).toBe(401);
      expect((await timeline(token, p)).status).toBe(200);
    } finally {
      pgDriver.Client.prototype.query = query as typeof pgDriver.Client.prototype.query;
    }
  });

  it('reads on A while B appends administrative entries leave one chain that verifies', async () => {
    const { token } = await signIn();
    const p = await regionalOf('L3');
    const reads = Array.from({ length: 40 }, () => timeline(token, p).then((r) => r.status));
    const writes = Array.from({ length: 40 }, (_, i) => b.viewer.audit.record({ action: 'admin.test', outcome: 'success', detail: { i } }));
    const [statuses] = await Promise.all([Promise.all(reads), Promise.all(writes)]);
    expect(new Set(statuses)).toEqual(new Set([200]));
    const report = await verifyAuditChain(a.db);
    expect(report.ok).toBe(true);
    const head = await a.db.selectFrom('audit_head').select('count').executeTakeFirstOrThrow();
    expect(report.entries).toBe(head.count);
  });
});
