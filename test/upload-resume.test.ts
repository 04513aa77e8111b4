import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startContractServer, type ContractServer } from './upload-contract-server.js';
import { tempDir } from './support/tmp.js';

const CLI = path.resolve(import.meta.dirname, '../hakobune.js');

interface Run {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

const children = new Set<ChildProcess>();

function runCli(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

describe('hakobune upload, killed and run again', () => {
  let server: ContractServer;
  const tmp = tempDir('hakobune-resume-');
  const root = path.join(tmp.dir, 'tree');
  const cache = path.join(tmp.dir, 'state', 'F001.cache');
  const files = new Map<string, Buffer>();

  beforeAll(async () => {
    server = await startContractServer();
    // 80 files of 256 KiB: three blob batches (filled to 8 MiB each).
    for (let i = 0; i < 80; i++) {
      const rel = `${String(i % 4).padStart(3, '0')}/000/000000${i % 4}/-/ADT-00/f${String(i).padStart(3, '0')}`;
      const bytes = randomBytes(1 << 18);
      files.set(`standard/${rel}`, bytes);
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.writeFileSync(path.join(root, rel), bytes);
    }
  });
  afterAll(async () => {
    // A test that failed or timed out must not leave an uploader running.
    for (const c of children) c.kill('SIGKILL');
    await server.close();
    tmp.remove();
  });

  const args = () => ['upload', '--server', server.url, '--facility', 'F001', '--root', root, '--cache', cache, '--json', '--no-overlap'];
  const env = () => ({ HAKOBUNE_UPLOAD_TOKEN: server.token });

  /** Runs the CLI and SIGKILLs it when its n-th blob batch reaches the exchange (which never answers that one). */
  async function runAndKillAtBlobBatch(n: number) {
    const before = server.log.filter((l) => /blobs 200/.test(l)).length;
    let run: Run | undefined;
    let seen = 0;
    server.faults.push({
      method: 'POST',
      path: { test: (u: string) => /blobs$/.test(u) && ++seen === n } as RegExp,
      times: 1,
      action: { hang: true },
      onFire: () => run!.child.kill('SIGKILL'),
    });
    run = runCli(args(), env());
    const r = await run.done;
    expect(r.signal).toBe('SIGKILL');
    server.faults.length = 0;
    return server.log.filter((l) => /blobs 200/.test(l)).length - before;
  }

  // Five processes start here; on a loaded 2-core machine each start takes seconds.
  it('with --no-overlap (scan first), resumes after SIGKILL mid-upload without resending what the exchange already has', { timeout: 240_000 }, async () => {
    // First run: killed while its second blob batch is in flight (the exchange never stores it).
    expect(await runAndKillAtBlobBatch(2)).toBe(1);
    expect(fs.existsSync(`${cache}.session`)).toBe(true);
    expect(fs.existsSync(cache)).toBe(false);
    const afterFirst = new Set(server.blobArrivals);
    expect(afterFirst.size).toBeGreaterThan(0);

    // Second run: resumes, sends one more batch, killed again in the next one.
    expect(await runAndKillAtBlobBatch(2)).toBe(1);

    // Third run completes.
    const r = await runCli(args(), env()).done;
    expect(r.stderr).toMatch(/resuming the upload started/);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { resumed: boolean; scan: string; files: number; snapshotId: string; blobsSent: number };
    expect(summary).toMatchObject({ resumed: true, scan: 'none', files: 80 });

    // Every blob reached the exchange exactly once over the three runs.
    expect(server.blobArrivals.length).toBe(80);
    expect(new Set(server.blobArrivals).size).toBe(80);
    expect([...server.uploads.values()].map((u) => u.state)).toEqual(['committed']);
    const snap = server.snapshots.get(summary.snapshotId)!;
    expect(snap.size).toBe(80);
    for (const [p, bytes] of files) {
      const e = snap.get(p)!;
      expect(e.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(server.blobs.get(e.sha256)!.equals(bytes)).toBe(true);
    }
    expect(fs.existsSync(`${cache}.session`)).toBe(false);

    // And the next night, nothing changed: nothing is read or sent.
    const again = await runCli(args(), env()).done;
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ manifest: 'delta', manifestEntries: 0, blobsSent: 0, hashedFiles: 0 });
  });

  it('by default (sending while scanning), resumes after SIGKILL while the scan is still sending, without resending an entry or a blob', { timeout: 240_000 }, async () => {
    // 240 files of 128 KiB (30 MiB): more than the scan may run ahead of the sender (one manifest
    // batch of 4 MiB of kept bytes in flight, one being built, 4 MiB queued), so the second
    // manifest batch goes out long before the scan ends.
    const root2 = path.join(tmp.dir, 'tree2');
    const cache2 = path.join(tmp.dir, 'state2', 'F001.cache');
    const files2 = new Map<string, Buffer>();
    for (let i = 0; i < 240; i++) {
      const rel = `${String(i % 6).padStart(3, '0')}/000/000000${i % 6}/-/ADT-00/g${String(i).padStart(3, '0')}`;
      const bytes = randomBytes(1 << 17);
      files2.set(`standard/${rel}`, bytes);
      fs.mkdirSync(path.dirname(path.join(root2, rel)), { recursive: true });
      fs.writeFileSync(path.join(root2, rel), bytes);
    }
    const args2 = ['upload', '--server', server.url, '--facility', 'F001', '--root', root2, '--cache', cache2, '--json'];
    const arrivalsBefore = server.blobArrivals.length;
    let run: Run | undefined;
    let seen = 0;
    let sessionAtKill: { next: unknown } | null = null;
    server.faults.push({
      method: 'POST',
      path: { test: (u: string) => /manifest$/.test(u) && ++seen === 2 } as RegExp,
      times: 1,
      action: { hang: true },
      onFire: () => {
        sessionAtKill = JSON.parse(fs.readFileSync(`${cache2}.session`, 'utf8')) as { next: unknown };
        run!.child.kill('SIGKILL');
      },
    });
    run = runCli(args2, env());
    expect((await run.done).signal).toBe('SIGKILL');
    server.faults.length = 0;
    expect(sessionAtKill).toMatchObject({ next: null });
    expect(fs.existsSync(`${cache2}.next`)).toBe(false);
    // Blobs the killed run recorded as stored (a batch in flight at the kill may have been stored
    // without being recorded: that one may go again, as after any kill).
    const recorded = new Set(
      fs.readFileSync(`${cache2}.journal`, 'utf8').split('\n').filter((l) => l.startsWith('B\t')).map((l) => l.slice(2)),
    );
    const arrivalsAtKill = server.blobArrivals.length;

    const r = await runCli(args2, env()).done;
    expect(r.stderr).toMatch(/its scan did not finish: scanning again/);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { resumed: boolean; scan: string; files: number; snapshotId: string };
    expect(summary).toMatchObject({ resumed: true, scan: 'full', files: 240 });
    expect(server.log.filter((l) => /manifest 400/.test(l))).toEqual([]);
    const arrived = server.blobArrivals.slice(arrivalsBefore);
    expect(new Set(arrived).size).toBe(240);
    expect(server.blobArrivals.slice(arrivalsAtKill).filter((h) => recorded.has(h))).toEqual([]);
    // At most the one batch in flight at the kill (4 MiB of 128 KiB files) crossed twice.
    expect(arrived.length).toBeLessThanOrEqual(240 + 32);
    const snap = server.snapshots.get(summary.snapshotId)!;
    expect(snap.size).toBe(240);
    for (const [p, bytes] of files2) expect(server.blobs.get(snap.get(p)!.sha256)!.equals(bytes)).toBe(true);
  });

  it('exits 2 with a clear message for a wrong token and a bad URL', { timeout: 120_000 }, async () => {
    const bad = await runCli(args(), { HAKOBUNE_UPLOAD_TOKEN: 'wrong' }).done;
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/refused the uploader token for facility F001 \(401\)/);
    const url = await runCli(['upload', '--server', 'ftp://x', '--facility', 'F001', '--root', root, '--cache', cache], env()).done;
    expect(url.code).toBe(2);
    expect(url.stderr).toMatch(/--server must be an http/);
  });
});
