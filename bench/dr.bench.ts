/**
 * Disaster-recovery storage benchmark.
 *
 *   npx tsx bench/dr.bench.ts                  # 256 MiB, second site a folder and s3rver
 *   npx tsx bench/dr.bench.ts --mb 512 --reads 5000 --no-s3
 *
 * 1. Encryption at rest: AES-256-GCM encrypt and decrypt of whole 4 MiB packs (one core), MB/s.
 * 2. Ranged reads of 2 KiB at random places in the packs (a blob read): latency of the local
 *    folder in clear and encrypted (the covering 64 KiB chunk or two decrypted), p50/p99.
 * 3. Replication: the same packs stored through the blob store (encrypted, index in
 *    PostgreSQL), then `replicate` to a second site in a folder and to s3rver on 127.0.0.1
 *    (a real S3 protocol server; its disk writes are part of the figure), MB/s, with the
 *    read-back verification on.
 * Data: random bytes (incompressible, so the blob store stores them as they are).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { LocalPackStore } from '../store/backup/pack-store.js';
import { BlobStore, type BlobFrame } from '../store/backup/blob-store.js';
import { openDatabase } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { CHUNK, DbPackKeys, EncryptedPackStore, decryptChunks, encryptObject } from '../store/dr/encrypted-pack-store.js';
import { ConfiguredKeyProvider } from '../store/dr/key-provider.js';
import { replicate } from '../store/dr/replication.js';
import { createTestDatabase } from '../test/support/postgres.js';
import { tempDir } from '../test/support/tmp.js';
import { s3Store, startS3Server } from '../test/dr.support.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}
const MB = arg('mb', 256);
const READS = arg('reads', 2000);
const S3 = !process.argv.includes('--no-s3');
const PACK = 4 * 1024 * 1024;

const mbps = (bytes: number, ms: number) => (bytes / 1024 / 1024 / (ms / 1000)).toFixed(1);
function pct(xs: number[], p: number): string {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!.toFixed(3);
}

async function main() {
  const work = tempDir('hakobune-drbench-');
  const packs = Math.max(1, Math.round((MB * 1024 * 1024) / PACK));
  const total = packs * PACK;
  console.log(`disaster-recovery storage bench: ${packs} packs of 4 MiB (${(total / 1024 / 1024).toFixed(0)} MiB), ${READS} ranged reads`);
  const rows: string[][] = [['measure', 'figure']];
  try {
    // 1. encryption throughput
    const dek = randomBytes(32);
    const data = Array.from({ length: packs }, () => randomBytes(PACK));
    // Wall time and CPU time: on a shared machine the second says what one free core would do.
    const cpuMs = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
    let t = performance.now();
    let c = process.cpuUsage();
    const sealed = data.map((d, i) => encryptObject(`data/bench/${i}`, dek, d));
    const encMs = performance.now() - t;
    const encCpu = cpuMs(process.cpuUsage(c));
    t = performance.now();
    c = process.cpuUsage();
    for (let i = 0; i < packs; i++) decryptChunks(`data/bench/${i}`, dek, PACK, 0, sealed[i]!.subarray(8));
    const decMs = performance.now() - t;
    const decCpu = cpuMs(process.cpuUsage(c));
    rows.push(['encrypt (AES-256-GCM, 64 KiB chunks)', `${mbps(total, encMs)} MB/s wall, ${mbps(total, encCpu)} MB/s per CPU-second`]);
    rows.push(['decrypt whole packs', `${mbps(total, decMs)} MB/s wall, ${mbps(total, decCpu)} MB/s per CPU-second`]);
    rows.push(['stored overhead', `${(((sealed[0]!.length - PACK) / PACK) * 100).toFixed(3)} %`]);

    // 2. ranged read latency, clear vs encrypted, keys in PostgreSQL
    const pg = await createTestDatabase('hkdrbench');
    const database = await openDatabase({ dataDir: path.join(work.dir, 'db'), databaseUrl: pg.url });
    try {
      await migrateToLatest(database.db);
      const clear = new LocalPackStore(path.join(work.dir, 'clear'));
      const enc = new EncryptedPackStore(new LocalPackStore(path.join(work.dir, 'enc')), new DbPackKeys(database.db), new ConfiguredKeyProvider([{ id: 'bench', key: randomBytes(32) }]));
      for (let i = 0; i < packs; i++) {
        await clear.put(`data/r/${i}`, data[i]!);
        await enc.put(`data/r/${i}`, data[i]!);
      }
      for (const [label, store] of [['local, clear', clear], ['local, encrypted', enc]] as const) {
        const lat: number[] = [];
        for (let i = 0; i < READS; i++) {
          const p = i % packs;
          const off = Math.floor(Math.random() * (PACK - 2048));
          const s = performance.now();
          const got = await store.get(`data/r/${p}`, { offset: off, length: 2048 });
          lat.push(performance.now() - s);
          if (!got.equals(data[p]!.subarray(off, off + 2048))) throw new Error('ranged read returned other bytes');
        }
        rows.push([`2 KiB ranged read, ${label}`, `p50 ${pct(lat, 50)} ms, p99 ${pct(lat, 99)} ms`]);
      }
      await clear.close();
      await enc.close();

      // 3. replication throughput
      const primaryInner = new LocalPackStore(path.join(work.dir, 'primary'));
      const keys = new ConfiguredKeyProvider([{ id: 'bench', key: randomBytes(32) }]);
      const primary = new EncryptedPackStore(primaryInner, new DbPackKeys(database.db), keys);
      const blobs = new BlobStore(database.db, primary, { packTarget: PACK, trainAfter: 1e9 });
      const BLOB = 512 * 1024;
      for (let i = 0; i < packs; i++) {
        const frames: BlobFrame[] = [];
        for (let o = 0; o < PACK; o += BLOB) {
          const d = data[i]!.subarray(o, o + BLOB);
          frames.push({ sha256: createHash('sha256').update(d).digest(), data: d });
        }
        await blobs.store(frames);
      }
      const targets: [string, () => Promise<{ store: import('../store/backup/pack-store.js').PackStore; stop: () => Promise<void> }>][] = [
        ['folder', async () => ({ store: new LocalPackStore(path.join(work.dir, 'second-folder')), stop: async () => {} })],
      ];
      if (S3) {
        targets.push([
          's3rver on 127.0.0.1',
          async () => {
            const server = await startS3Server(path.join(work.dir, 's3'));
            return { store: s3Store(server, { prefix: 'second' }), stop: () => server.stop() };
          },
        ]);
      }
      for (const [label, open] of targets) {
        const { store, stop } = await open();
        const s = performance.now();
        const r = await replicate(database.db, primaryInner, store, { keys });
        const ms = performance.now() - s;
        const s2 = performance.now();
        const again = await replicate(database.db, primaryInner, store, { keys });
        const ms2 = performance.now() - s2;
        rows.push([`replicate to ${label} (${r.packsCopied} packs, verified)`, `${mbps(r.bytesCopied, ms)} MB/s, ${(ms / 1000).toFixed(1)} s`]);
        rows.push([`replicate again to ${label} (nothing new, ${again.packsAlreadyThere} present)`, `${(ms2 / 1000).toFixed(2)} s`]);
        await store.close();
        await stop();
      }
      await primary.close();
    } finally {
      await database.close();
      await pg.drop();
    }
  } finally {
    work.remove();
  }
  const w = Math.max(...rows.map((r) => r[0]!.length));
  for (const r of rows) console.log(`${r[0]!.padEnd(w)}  ${r[1]}`);
  console.log(`(chunk ${CHUNK / 1024} KiB; load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ')})`);
}

await main();
