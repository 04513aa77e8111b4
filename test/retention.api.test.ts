import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDeleteKeyPair, signDeleteRequest, type SignedDeleteRequest } from '../store/retention/delete-authorization.js';
import { parseRetentionPolicy } from '../store/retention/retention-policy.js';
import { searchAudit } from '../viewer-api/audit/audit.repository.js';
import { enrol, startViewer, tokenFor, type TestUser, type ViewerHarness } from './viewer.support.js';
import { tempDir } from './support/tmp.js';
import { backdateSnapshot, randomFiles, uploadTree } from './retention.support.js';

const keys = generateDeleteKeyPair();
const operatorKey = createPrivateKey(keys.privateKeyPem);
const strangerKey = createPrivateKey(generateDeleteKeyPair().privateKeyPem);
const dir = tempDir('hakobune-retention-api-');
const publicKeyFile = path.join(dir.dir, 'delete.pub');
fs.writeFileSync(publicKeyFile, keys.publicKeyPem);

describe('retention over the viewer API', () => {
  let h: ViewerHarness;
  let operator: TestUser;
  let physician: TestUser;
  const tokens = new Map<TestUser, string>();
  const snaps: string[] = [];
  let young: string;

  beforeAll(async () => {
    h = await startViewer('embedded', (c) => ({
      retention: { policy: parseRetentionPolicy('daily=1'), lockDays: 30, deletePublicKeyFile: publicKeyFile, deleteKeyFile: undefined },
      auth: { ...c.auth, loginAttemptsPerMinute: 1000 },
    }));
    await h.exchange.backup.addFacility({ id: 'F1', name: 'Yamada Hospital', kind: 'hospital' });
    for (let i = 0; i < 3; i++) {
      const id = await uploadTree(h.exchange.backup, 'F1', randomFiles(`n${i}`, 2, 1000));
      await backdateSnapshot(h.exchange.db, id, 100 - i, h.clock.ms);
      snaps.push(id);
    }
    await h.exchange.backup.addFacility({ id: 'F2', name: 'Otsuchi Clinic', kind: 'clinic' });
    young = await uploadTree(h.exchange.backup, 'F2', randomFiles('y1', 1, 1000));
    await backdateSnapshot(h.exchange.db, young, 10, h.clock.ms);
    await backdateSnapshot(h.exchange.db, await uploadTree(h.exchange.backup, 'F2', randomFiles('y2', 1, 1000)), 2, h.clock.ms);
    operator = await enrol(h, 'NET', 'dr', 'dr_operator');
    physician = await enrol(h, 'F1', 'doc', 'physician');
    for (const u of [operator, physician]) tokens.set(u, await tokenFor(h, u));
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    dir.remove();
  });

  const forget = (u: TestUser, body: unknown) =>
    fetch(`${h.url}/api/retention/forget`, { method: 'POST', headers: { authorization: `Bearer ${tokens.get(u)}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const sign = (ids: string[], facility: string | null = 'F1', at = h.clock.ms, key = operatorKey): SignedDeleteRequest =>
    signDeleteRequest(key, { action: 'forget', facility, snapshotIds: ids }, new Date(at));
  const detail = async (res: Response) => ((await res.json()) as { detail: string }).detail;

  it('shows the plan to a disaster-recovery operator only', async () => {
    const res = await fetch(`${h.url}/api/retention/plan?facility=F1`, { headers: { authorization: `Bearer ${tokens.get(operator)}` } });
    expect(res.status).toBe(200);
    const plan = (await res.json()) as { policy: string; forget: { id: string; reasons: string[] }[]; keep: { id: string }[] };
    expect(plan.policy).toBe('daily=1');
    expect(plan.forget.map((d) => d.id)).toEqual(snaps.slice(0, 2));
    expect(plan.keep.map((d) => d.id)).toEqual([snaps[2]]);
    const denied = await fetch(`${h.url}/api/retention/plan`, { headers: { authorization: `Bearer ${tokens.get(physician)}` } });
    expect(denied.status).toBe(403);
    const doc = (await (await fetch(`${h.url}/api/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths['/api/retention/plan']!)).toEqual(['get']);
    expect(Object.keys(doc.paths['/api/retention/forget']!)).toEqual(['post']);
    expect((await fetch(`${h.url}/api/retention/plan?facility=NOPE`, { headers: { authorization: `Bearer ${tokens.get(operator)}` } })).status).toBe(404);
  });

  it('refuses forged, tampered, expired and replayed requests and snapshots inside the lock, each audited', async () => {
    const forged = await forget(operator, sign([snaps[0]!], 'F1', h.clock.ms, strangerKey));
    expect(forged.status).toBe(403);
    expect(await detail(forged)).toMatch(/signature is not valid/);
    const tampered = await forget(operator, { ...sign([snaps[0]!]), snapshotIds: [snaps[2]] });
    expect(tampered.status).toBe(403);
    const expired = await forget(operator, sign([snaps[0]!], 'F1', h.clock.ms - 6 * 60_000));
    expect(expired.status).toBe(403);
    expect(await detail(expired)).toMatch(/has expired/);
    // A physician with a valid signature is still refused: the session must be an operator's too.
    expect((await forget(physician, sign([snaps[0]!]))).status).toBe(403);

    const good = sign([snaps[0]!, snaps[1]!]);
    const ok = await forget(operator, good);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ forgotten: [snaps[0], snaps[1]] });
    const replayed = await forget(operator, good);
    expect(replayed.status).toBe(403);
    expect(await detail(replayed)).toMatch(/used already/);

    const locked = await forget(operator, sign([young], 'F2'));
    expect(locked.status).toBe(409);
    expect(await detail(locked)).toMatch(/locked: younger than the 30-day delete lock/);
    const unknown = await forget(operator, sign(['S-none'], 'F1'));
    expect(unknown.status).toBe(404);
    const malformed = await forget(operator, { action: 'prune', facility: null, snapshotIds: [] });
    expect(malformed.status).toBe(400);

    const trail = await searchAudit(h.exchange.db, { action: 'retention.forget', limit: 100 });
    expect(trail.map((e) => e.outcome)).toEqual(['denied', 'denied', 'denied', 'denied', 'success', 'denied', 'failure', 'failure']);
    expect(trail.find((e) => e.outcome === 'success')!.username).toBe('dr');
    expect((await h.exchange.backup.listSnapshots('F1')).map((s) => s.id)).toEqual([snaps[2]]);
  });
});
