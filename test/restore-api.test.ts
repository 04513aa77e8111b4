import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InProcessRunner } from '../jobs/in-process.js';
import { fileHeaders, paxRecord } from '../store/backup/restore-tar.js';
import { backupTree, scanTree, type TreeFile } from './index.support.js';
import { enrol, startViewer, tokenFor, type TestUser, type ViewerHarness } from './viewer.support.js';
import { SAMPLES_ROOT, tempDir } from './support/tmp.js';

const FACILITY = 'F100';

describe('restores through the viewer API (embedded)', () => {
  let h: ViewerHarness;
  let operator: TestUser;
  let physician: TestUser;
  let restoreRoot: { dir: string; remove: () => void };
  let files: TreeFile[];
  let snapshotId: string;
  const tokens = new Map<TestUser, string>();

  beforeAll(async () => {
    restoreRoot = tempDir('hakobune-restore-root-');
    h = await startViewer('embedded', (c) => ({ restoreRoot: restoreRoot.dir, auth: { ...c.auth, loginAttemptsPerMinute: 1000 } }));
    await h.exchange.backup.addFacility({ id: FACILITY, name: 'Sample hospital', kind: 'hospital' });
    files = scanTree(SAMPLES_ROOT);
    snapshotId = await backupTree(h.exchange.backup, FACILITY, files);
    operator = await enrol(h, 'NET', 'dr', 'dr_operator');
    physician = await enrol(h, FACILITY, 'doc', 'physician');
    for (const u of [operator, physician]) tokens.set(u, await tokenFor(h, u));
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    restoreRoot?.remove();
  });

  const post = (u: TestUser, body: unknown) =>
    fetch(`${h.url}/api/restores`, { method: 'POST', headers: { authorization: `Bearer ${tokens.get(u)}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const get = (u: TestUser, p: string) => fetch(`${h.url}${p}`, { headers: { authorization: `Bearer ${tokens.get(u)}` } });
  const requestCount = async () => Number((await h.exchange.db.selectFrom('restore_request').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  const auditActions = async (n: number) =>
    (await h.exchange.db.selectFrom('audit_event').selectAll().orderBy('seq', 'desc').limit(n).execute()).map((e) => ({ action: e.action, outcome: e.outcome, detail: JSON.parse(e.detail) as Record<string, unknown>, username: e.username }));

  async function untilDone(id: string): Promise<Record<string, any>> {
    for (let i = 0; i < 300; i++) {
      const r = await get(operator, `/api/restores/${id}`);
      expect(r.status).toBe(200);
      const body = (await r.json()) as Record<string, any>;
      if (body.state === 'ready' || body.state === 'failed') return body;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`restore ${id} did not finish`);
  }

  function expectSameTree(dir: string) {
    let seen = 0;
    for (const f of files) {
      const out = path.join(dir, ...f.path.split('/'));
      expect(fs.readFileSync(out).equals(fs.readFileSync(f.abs)), f.path).toBe(true);
      expect(Math.floor(fs.statSync(out).mtimeMs), f.path).toBe(f.mtime);
      seen++;
    }
    const count = (d: string): number => fs.readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? count(path.join(d, e.name)) : 1), 0);
    expect(count(dir)).toBe(seen);
  }

  it('restores a facility as a tar download, byte for byte with mtimes, every step audited', async () => {
    const res = await post(operator, { facilityId: FACILITY, mode: 'download' });
    expect(res.status).toBe(202);
    const created = (await res.json()) as { id: string; state: string; snapshotId: string; priority: number };
    expect(created.state).toBe('queued');
    expect(created.snapshotId).toBe(snapshotId);
    const done = await untilDone(created.id);
    expect(done.state).toBe('ready');
    const totalBytes = files.reduce((n, f) => n + f.size, 0);
    expect(done.progress).toEqual({ files: files.length, bytes: totalBytes, totalFiles: files.length, totalBytes });

    const dl = await get(operator, `/api/restores/${created.id}/download`);
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('application/x-tar');
    const tarBytes = Buffer.from(await dl.arrayBuffer());
    expect(tarBytes.length % 512).toBe(0);
    const out = tempDir('hakobune-untar-');
    try {
      fs.writeFileSync(path.join(out.dir, 'r.tar'), tarBytes);
      fs.mkdirSync(path.join(out.dir, 'x'));
      execFileSync('tar', ['-xf', path.join(out.dir, 'r.tar'), '-C', path.join(out.dir, 'x')]);
      expectSameTree(path.join(out.dir, 'x'));
    } finally {
      out.remove();
    }
    const trail = await auditActions(10);
    const mine = trail.filter((e) => e.detail.requestId === created.id);
    expect(mine.map((e) => `${e.action}:${e.outcome}`).reverse()).toEqual(['restore.request:success', 'restore.start:success', 'restore.finish:success', 'restore.download:success']);
    for (const e of mine) {
      expect(e.username).toBe('dr');
      expect(e.detail.facility).toBe(FACILITY);
      expect(e.detail.snapshot).toBe(snapshotId);
    }
  });

  it('restores some patients to a folder under the restore root', async () => {
    const pid = files.map((f) => f.path.split('/')[3]!).find((p) => /^[A-Za-z0-9_-]+$/.test(p))!;
    const res = await post(operator, { facilityId: FACILITY, mode: 'path', path: 'night1', patients: [pid] });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const done = await untilDone(id);
    expect(done.state).toBe('ready');
    const mine = files.filter((f) => f.path.split('/')[3] === pid);
    expect(mine.length).toBeGreaterThan(0);
    expect(done.progress.totalFiles).toBe(mine.length);
    for (const f of mine) expect(fs.readFileSync(path.join(restoreRoot.dir, 'night1', ...f.path.split('/'))).equals(fs.readFileSync(f.abs))).toBe(true);
    // A download of a path restore has nothing to send.
    expect((await get(operator, `/api/restores/${id}/download`)).status).toBe(409);
    // The same folder again: not empty any more.
    const again = await post(operator, { facilityId: FACILITY, mode: 'path', path: 'night1' });
    expect(again.status).toBe(400);
    expect(((await again.json()) as { detail: string }).detail).toMatch(/not empty/);
  });

  it('refuses path restores outside the restore root, with nothing queued', async () => {
    const before = await requestCount();
    for (const p of ['../escape', '/etc/hakobune', 'a/../../b', restoreRoot.dir]) {
      const res = await post(operator, { facilityId: FACILITY, mode: 'path', path: p });
      expect(res.status, p).toBe(400);
    }
    fs.symlinkSync('/tmp', path.join(restoreRoot.dir, 'link'));
    expect((await post(operator, { facilityId: FACILITY, mode: 'path', path: 'link/x' })).status).toBe(400);
    expect((await post(operator, { facilityId: FACILITY, mode: 'path' })).status).toBe(400);
    expect((await post(operator, { facilityId: FACILITY, mode: 'download', path: 'x' })).status).toBe(400);
    expect(await requestCount()).toBe(before);
    expect((await auditActions(1))[0]).toMatchObject({ action: 'restore.request', outcome: 'failure' });
  });

  it('answers 404 for a facility or night that does not exist, audited, nothing queued', async () => {
    const before = await requestCount();
    const a = await post(operator, { facilityId: 'NOPE', mode: 'download' });
    expect(a.status).toBe(404);
    expect(((await a.json()) as { detail: string }).detail).toMatch(/no facility NOPE/);
    const b = await post(operator, { facilityId: FACILITY, at: '2001-01-01', mode: 'download' });
    expect(b.status).toBe(404);
    expect(((await b.json()) as { detail: string }).detail).toMatch(/no snapshot on or before 2001-01-01/);
    const c = await post(operator, { facilityId: FACILITY, snapshotId: 'S20010101T000000Z-abcdef', mode: 'download' });
    expect(c.status).toBe(404);
    expect((await post(operator, { facilityId: FACILITY, at: '2026-13-45', mode: 'download' })).status).toBe(400);
    expect((await get(operator, '/api/restores/R000000000000000000000000')).status).toBe(404);
    expect(await requestCount()).toBe(before);
    const last = await auditActions(1);
    expect(last[0]).toMatchObject({ action: 'restore.request', outcome: 'failure', detail: { facility: FACILITY, snapshot: 'S20010101T000000Z-abcdef' } });
  });

  it('describes the restore endpoints in the OpenAPI document', async () => {
    const doc = (await (await fetch(`${h.url}/api/openapi.json`)).json()) as { paths: Record<string, Record<string, any>> };
    expect(Object.keys(doc.paths['/api/restores']!)).toEqual(['post']);
    expect(doc.paths['/api/restores']!.post.requestBody.content['application/json'].schema.required).toEqual(['facilityId', 'mode']);
    expect(Object.keys(doc.paths['/api/restores']!.post.responses)).toContain('202');
    expect(Object.keys(doc.paths['/api/restores/{id}']!)).toEqual(['get']);
    expect(Object.keys(doc.paths['/api/restores/{id}/download']!.get.responses['200'].content)).toEqual(['application/x-tar']);
  });

  it('refuses a physician (403, audited)', async () => {
    const res = await post(physician, { facilityId: FACILITY, mode: 'download' });
    expect(res.status).toBe(403);
    expect((await auditActions(1))[0]).toMatchObject({ action: 'restore.request', outcome: 'denied', username: 'doc' });
    expect((await get(physician, '/api/restores/R000000000000000000000000')).status).toBe(403);
  });

  it('gives the restores of a facility under a declared disaster the first priority', async () => {
    const normal = (await (await post(operator, { facilityId: FACILITY, mode: 'download' })).json()) as { id: string; priority: number };
    expect(normal.priority).toBe(10);
    await h.exchange.consent.consent.declareDisaster('dr', { facilities: [FACILITY], from: h.clock.ms - 60_000, to: h.clock.ms + 86_400_000, reason: 'flood' });
    const urgent = (await (await post(operator, { facilityId: FACILITY, mode: 'download' })).json()) as { id: string; priority: number };
    expect(urgent.priority).toBe(1);
    const row = await h.exchange.db.selectFrom('restore_request').select(['priority']).where('id', '=', urgent.id).executeTakeFirstOrThrow();
    expect(row.priority).toBe(1);
    expect((await untilDone(urgent.id)).state).toBe('ready');
    expect((await untilDone(normal.id)).state).toBe('ready');
  });

  it('cuts the download of a damaged blob short, and audits it', async () => {
    const res = await post(operator, { facilityId: FACILITY, mode: 'download' });
    const { id } = (await res.json()) as { id: string };
    expect((await untilDone(id)).state).toBe('ready');
    // Damage after the job verified: every pack file on disk is overwritten in place.
    const packs = h.exchange.config.packDir;
    const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
    const saved = walk(packs).map((p) => ({ p, data: fs.readFileSync(p) }));
    try {
      for (const { p, data } of saved) fs.writeFileSync(p, Buffer.alloc(data.length, 0x55));
      // The status line may already be out: the client sees the transfer cut, never a whole tar.
      const outcome = await get(operator, `/api/restores/${id}/download`)
        .then((r) => r.arrayBuffer())
        .then(() => 'complete', () => 'cut');
      expect(outcome).toBe('cut');
      let abort;
      for (let i = 0; i < 50 && !abort; i++) {
        abort = (await auditActions(5)).find((e) => e.action === 'restore.download.abort' && e.detail.requestId === id);
        if (!abort) await new Promise((r) => setTimeout(r, 50));
      }
      expect(abort).toMatchObject({ outcome: 'failure' });
    } finally {
      for (const { p, data } of saved) fs.writeFileSync(p, data);
    }
  });
});

describe('tar headers', () => {
  it('sizes pax records including their own length', () => {
    for (const v of ['a', 'x'.repeat(80), 'y'.repeat(95), 'z'.repeat(994)]) {
      const r = paxRecord('path', v);
      expect(Number(r.split(' ')[0])).toBe(Buffer.byteLength(r));
    }
  });
  it('puts long paths and millisecond mtimes in a pax header, short ones in ustar alone', () => {
    expect(fileHeaders('standard/a.txt', 3, 1_700_000_000_000)).toHaveLength(1);
    const long = fileHeaders(`standard/${'d'.repeat(120)}/f`, 3, 1_700_000_000_123);
    // pax header, its records, their padding, then the file's ustar header
    expect(long).toHaveLength(4);
    expect(long[0]![156]).toBe('x'.charCodeAt(0));
    expect(long[1]!.toString()).toContain(`path=standard/${'d'.repeat(120)}/f\n`);
    expect(long[1]!.toString()).toContain('mtime=1700000000.123\n');
    const h = long[3]!;
    expect(h.length).toBe(512);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    expect(parseInt(h.subarray(148, 154).toString(), 8)).toBe(sum);
  });
});

describe('in-process jobs', () => {
  it('runs prioritised jobs of a kind first, lowest number first, arrival order within a priority', async () => {
    const order: string[] = [];
    const runner = new InProcessRunner({ 'index-snapshot': async () => undefined, restore: async (p) => void order.push(p.requestId) }, pino({ level: 'silent' }));
    await runner.enqueue('restore', { requestId: 'plain' });
    await runner.enqueue('restore', { requestId: 'normal-1' }, { priority: 10 });
    await runner.enqueue('restore', { requestId: 'disaster' }, { priority: 1 });
    await runner.enqueue('restore', { requestId: 'normal-2' }, { priority: 10 });
    await runner.startWorkers();
    await runner.idle();
    await runner.close();
    expect(order).toEqual(['disaster', 'normal-1', 'normal-2', 'plain']);
  });

  it('runs one job of each kind at a time, and a long job of one kind does not hold back another kind', async () => {
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let running = 0;
    let most = 0;
    const runner = new InProcessRunner(
      {
        'index-snapshot': async (p) => {
          running++;
          most = Math.max(most, running);
          events.push(`index ${p.snapshotId}`);
          await new Promise((r) => setTimeout(r, 5));
          running--;
        },
        'identity-match': async (p) => {
          events.push(`match ${p.runId} start`);
          await held;
          events.push(`match ${p.runId} end`);
        },
      },
      pino({ level: 'silent' }),
    );
    await runner.startWorkers();
    await runner.enqueue('identity-match', { runId: 'm1' });
    await runner.enqueue('identity-match', { runId: 'm2' });
    for (const id of ['a', 'b', 'c']) await runner.enqueue('index-snapshot', { snapshotId: id });
    // Every indexing job finishes while the first match run is still held.
    await expect.poll(() => events.filter((e) => e.startsWith('index')).length).toBe(3);
    expect(events).toEqual(['match m1 start', 'index a', 'index b', 'index c']);
    expect(most).toBe(1);
    release();
    await runner.idle();
    await runner.close();
    expect(events.slice(4)).toEqual(['match m1 end', 'match m2 start', 'match m2 end']);
  });
});
