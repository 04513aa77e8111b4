/**
 * Backup and restore benchmark: one generated facility tree, side by side with restic in the
 * same run. Prints the figures recorded in bench/README.md ("Backup and restore").
 *
 *   npx tsx bench/backup.bench.ts --patients 1450 --days 365 --work /tmp/hk-bench-100k
 *   npx tsx bench/backup.bench.ts --patients 14500 --days 365 --work /tmp/hk-bench-1m
 *   options: --database-url postgres://... (default: the embedded PGlite), --skip-restic,
 *            --with-indexing (let the exchange index the snapshots as it does in service),
 *            --skip-restore (stop after the nightly upload and backup: the 1M restores take long),
 *            --no-overlap (the uploader scans the whole tree before sending; by default it sends while it scans)
 *
 * Steps: generate (once; reused when the work folder has it), first upload (the real uploader,
 * `hakobune upload`, as a child process so its peak memory is its own), restic backup, one
 * night of `fixtures evolve`, nightly upload and restic backup, full restore by both.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { generateFixtures } from '../fixtures/generate.js';
import { changeLogPath, evolveFacility } from '../fixtures/evolve.js';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { restoreSnapshot } from '../store/backup/restore.js';
import { storeStats } from '../store/backup/backup.repository.js';

const args = process.argv.slice(2);
const arg = (name: string, def?: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const patients = Number(arg('patients', '1450'));
const days = Number(arg('days', '365'));
const work = path.resolve(arg('work', `/tmp/hk-bench-${patients}`)!);
const databaseUrl = arg('database-url');
const skipRestic = args.includes('--skip-restic');
const withIndexing = args.includes('--with-indexing');
const skipRestore = args.includes('--skip-restore');
/** The uploader sends while it scans (its default) unless --no-overlap. */
const overlap = !args.includes('--no-overlap');
const root = path.join(work, 'gen', 'F001');
const repo = path.join(work, 'restic-repo');
const HAKOBUNE = path.resolve(import.meta.dirname, '..', 'hakobune.js');

function du(p: string): number {
  if (!fs.existsSync(p)) return 0;
  return Number(execFileSync('du', ['-sb', p]).toString().split('\t')[0]);
}

/** Runs a command under /usr/bin/time -v; returns seconds, CPU seconds (user + system) and peak RSS (KiB). */
async function timed(cmd: string, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ seconds: number; cpu: number; maxRssKiB: number; stdout: string }> {
  const t0 = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-v', cmd, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code: number = await new Promise((r) => child.on('close', r));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${code}):\n${err.slice(-3000)}`);
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(err);
  const user = /User time \(seconds\): ([\d.]+)/.exec(err);
  const sys = /System time \(seconds\): ([\d.]+)/.exec(err);
  return { seconds, cpu: Number(user?.[1] ?? NaN) + Number(sys?.[1] ?? NaN), maxRssKiB: m ? Number(m[1]) : NaN, stdout: out };
}

function countFiles(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        files++;
        bytes += fs.statSync(p).size;
      }
    }
  };
  walk(dir);
  return { files, bytes };
}

const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
const rows: { step: string; tool: string; seconds: number; cpuSeconds: number; files: number; rssMiB?: number; load: string; note?: string }[] = [];
/** `cpu`: CPU seconds of the tool (for hakobune: uploader + exchange process + its PostgreSQL backends). */
const record = (step: string, tool: string, seconds: number, cpu: number, files: number, rssKiB?: number, note?: string) => {
  rows.push({ step, tool, seconds, cpuSeconds: Math.round(cpu * 10) / 10, files, rssMiB: rssKiB === undefined ? undefined : Math.round(rssKiB / 1024), load: load(), note });
  console.log(
    `${step.padEnd(14)} ${tool.padEnd(9)} ${seconds.toFixed(1).padStart(8)} s  cpu ${cpu.toFixed(1).padStart(7)} s ${Math.round(files / seconds).toString().padStart(8)} files/s${rssKiB ? `  peak RSS ${Math.round(rssKiB / 1024)} MiB` : ''}  load ${load()}${note ? `  ${note}` : ''}`,
  );
};

/** CPU seconds of this process so far. */
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** CPU seconds of this process's main thread (the event loop, and PGlite in it) so far. */
const mainThreadCpu = () => {
  const f = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};

/** CPU seconds used so far by the PostgreSQL backends serving this database (from /proc). */
async function backendCpu(db: import('../store/db.js').Db | undefined): Promise<number> {
  if (!db) return 0;
  const r = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database()`.execute(db);
  const tick = 100; // USER_HZ
  let sum = 0;
  for (const { pid } of r.rows) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      sum += (Number(f[11]) + Number(f[12])) / tick; // utime, stime (fields 14 and 15)
    } catch {
      // a backend that ended meanwhile
    }
  }
  return sum;
}

async function main() {
  fs.mkdirSync(work, { recursive: true });
  if (!fs.existsSync(path.join(root, '..', 'fixtures.json'))) {
    console.log(`generating ${patients} patients x ${days} days into ${path.join(work, 'gen')} ...`);
    const g = await generateFixtures({ out: path.join(work, 'gen'), facilities: 1, patients, days, seed: 'bench', force: true });
    console.log(`generated ${g.files} files, ${g.bytes} bytes in ${g.seconds.toFixed(0)} s`);
  }
  // Start from the generated night: remove state of a previous run of the bench.
  for (const p of ['hk-data', 'restic-repo', 'uploader.cache', 'restore-hk', 'restore-restic']) fs.rmSync(path.join(work, p), { recursive: true, force: true });
  const tree0 = countFiles(root);
  console.log(`tree: ${tree0.files} files, ${(tree0.bytes / 1e6).toFixed(1)} MB; machine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);

  const dataDir = path.join(work, 'hk-data');
  const exchange = await createExchange(testConfig(dataDir, { port: 0, ...(databaseUrl ? { databaseUrl } : {}) }));
  const url = await exchange.listen();
  // The exchange indexes each committed snapshot (records for the viewer) in the background:
  // that is not backup work, and run here it would take CPU from whichever tool runs next.
  if (!withIndexing) await exchange.jobs.close();
  const { token } = await exchange.backup.addFacility({ id: 'F001', name: 'Bench Hospital', kind: 'hospital' });
  const upload = () =>
    timed(process.execPath, [HAKOBUNE, 'upload', '--server', url, '--facility', 'F001', '--root', root, '--cache', path.join(work, 'uploader.cache'), '--json', ...(overlap ? [] : ['--no-overlap'])], {
      HAKOBUNE_UPLOAD_TOKEN: token,
      LOG_LEVEL: 'silent',
    });
  const restic = (argv: string[]) => timed('restic', ['--repo', repo, '--quiet', ...argv], { RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: path.join(work, 'restic-cache') });

  /** The store's bytes: pack objects, and every backup table with its indexes and TOAST. */
  const storeSizes = async () => {
    const tables: Record<string, number> = {};
    for (const t of ['blob', 'tree', 'pack', 'snapshot', 'upload', 'upload_entry', 'compression_dictionary', 'facility', 'uploader_credential']) {
      const r = await sql<{ n: string }>`select pg_total_relation_size(${t}::regclass)::text as n`.execute(exchange.db);
      tables[t] = Number(r.rows[0]!.n);
    }
    const packs = du(exchange.config.packDir);
    return { packs, tables, total: packs + Object.values(tables).reduce((a, b) => a + b, 0) };
  };
  const pgDb = databaseUrl ? exchange.db : undefined;
  // Exchange CPU of a step: this process (the exchange runs in it) and its database backends.
  const exchangeCpu = async () => selfCpu() + (await backendCpu(pgDb));
  try {
    let c0 = await exchangeCpu();
    const m0 = mainThreadCpu();
    const first = await upload();
    const exCpu = (await exchangeCpu()) - c0;
    const mainCpu = mainThreadCpu() - m0;
    record(
      'first upload',
      'hakobune',
      first.seconds,
      first.cpu + exCpu,
      tree0.files,
      first.maxRssKiB,
      `uploader cpu ${first.cpu.toFixed(1)} s (its scan ${JSON.parse(first.stdout).scanSeconds} s), exchange ${exCpu.toFixed(1)} s (${((exCpu / tree0.files) * 1e3).toFixed(3)} ms/file; main thread ${mainCpu.toFixed(1)} s, idle ${(100 * (1 - mainCpu / first.seconds)).toFixed(0)}%)`,
    );
    if (!skipRestic) {
      await restic(['init', '--repository-version', '2']);
      const r = await restic(['backup', '--compression', 'max', root]);
      record('first backup', 'restic', r.seconds, r.cpu, tree0.files, r.maxRssKiB);
    }
    const sizeAfterFirst = { packs: du(exchange.config.packDir), restic: du(repo) };

    const t0 = Date.now();
    // The next night not yet applied to this tree, so that the bench can run again on its work folder.
    let day = 1;
    while (fs.existsSync(changeLogPath(root, 'F001', day))) day++;
    const log = await evolveFacility({ root, day, seed: 'bench' });
    console.log(`evolve (night ${day}): ${JSON.stringify(log.counts)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const tree1 = countFiles(root);

    const sizesBeforeNight = await storeSizes();
    c0 = await exchangeCpu();
    const night = await upload();
    const summary = JSON.parse(night.stdout);
    record('nightly upload', 'hakobune', night.seconds, night.cpu + (await exchangeCpu()) - c0, tree1.files, night.maxRssKiB, `${summary.manifest} manifest, ${summary.blobsSent} blobs sent`);
    if (!skipRestic) {
      const r = await restic(['backup', '--compression', 'max', root]);
      record('nightly backup', 'restic', r.seconds, r.cpu, tree1.files, r.maxRssKiB);
    }
    const sizesAfterNight = await storeSizes();
    console.log(`the night added ${((sizesAfterNight.total - sizesBeforeNight.total) / 1e6).toFixed(2)} MB to the store (${(((sizesAfterNight.total - sizesBeforeNight.total) / sizesBeforeNight.total) * 100).toFixed(1)}% of it); restic ${((du(repo) - sizeAfterFirst.restic) / 1e6).toFixed(2)} MB`);

    if (skipRestore) {
      console.log(JSON.stringify({ tree: tree1, rows, load: load() }, null, 2));
      return;
    }
    const snaps = await exchange.backup.listSnapshots('F001');
    const latest = snaps.at(-1)!;
    c0 = await exchangeCpu();
    const t1 = process.hrtime.bigint();
    const res = await restoreSnapshot(exchange.backup, latest, { to: path.join(work, 'restore-hk') });
    const rs = Number(process.hrtime.bigint() - t1) / 1e9;
    if (res.failed.length) throw new Error(`restore failed for ${res.failed.length} files`);
    record('full restore', 'hakobune', rs, (await exchangeCpu()) - c0, res.files, undefined, 'in-process (same code as hakobune restore)');
    if (!skipRestic) {
      const r = await restic(['restore', 'latest', '--target', path.join(work, 'restore-restic')]);
      record('full restore', 'restic', r.seconds, r.cpu, tree1.files, r.maxRssKiB);
    }
    // Byte-identical check of our restore against the tree.
    execFileSync('diff', ['-rq', root, path.join(work, 'restore-hk', 'standard')], { stdio: 'inherit' });
    console.log('hakobune restore: byte-identical to the tree (diff -r)');

    const stats = await storeStats(exchange.db);
    const store = await storeSizes();
    console.log(
      `store: packs ${(store.packs / 1e6).toFixed(2)} MB + ${Object.entries(store.tables)
        .filter(([, n]) => n > 0)
        .map(([t, n]) => `${t} ${(n / 1e6).toFixed(2)} MB`)
        .join(' + ')} = ${(store.total / 1e6).toFixed(2)} MB; restic ${(du(repo) / 1e6).toFixed(2)} MB: ${((store.total / du(repo)) * 100).toFixed(1)}%`,
    );
    const dbBytes = databaseUrl
      ? Number((await sql<{ n: string }>`select pg_database_size(current_database())::text as n`.execute(exchange.db)).rows[0]!.n)
      : du(path.join(dataDir, 'pglite'));
    const sizes = {
      rawTreeBytes: tree1.bytes,
      packsBytes: du(exchange.config.packDir),
      packsAfterFirstUpload: sizeAfterFirst.packs,
      blobBytesRaw: stats.raw_bytes,
      blobBytesStored: stats.stored_bytes,
      treeBytes: stats.tree_bytes,
      databaseBytes: dbBytes,
      resticRepoBytes: du(repo),
      resticAfterFirst: sizeAfterFirst.restic,
      store,
    };
    console.log(JSON.stringify({ tree: tree1, sizes, stats, rows, load: load() }, null, 2));
    console.log(
      `per-blob compression: ${(stats.raw_bytes / stats.stored_bytes).toFixed(2)}x; packs ${(sizes.packsBytes / 1e6).toFixed(1)} MB + database ${(sizes.databaseBytes / 1e6).toFixed(1)} MB` +
        ` vs restic ${(sizes.resticRepoBytes / 1e6).toFixed(1)} MB (raw tree ${(tree1.bytes / 1e6).toFixed(1)} MB)`,
    );
  } finally {
    await exchange.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
