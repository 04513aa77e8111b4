/**
 * Uploader benchmark: scan speed (cold and warm cache), upload times and the uploader's peak
 * memory on a generated facility tree, against a real exchange (embedded PGlite) in this process.
 * The uploader runs as its own process (`hakobune upload`) under /usr/bin/time, so its peak
 * RSS is its own.
 *
 *   node hakobune.js fixtures generate --out /tmp/b --facilities 1 --patients 9000 --days 30 --seed s
 *   npx tsx bench/upload.bench.ts --root /tmp/b/F001 [--work /tmp/upload-bench] [--evolve]
 *
 * --evolve changes the tree in place (`fixtures evolve`, two nights): use a tree made for the
 * benchmark. The first night is uploaded with a full scan, the second through a
 * transaction-storage change feed written from the evolve change log (TR_*.DAT files, as a
 * hospital system would).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createExchange } from '../viewer-api/exchange.js';
import { testConfig } from '../viewer-api/config.js';
import { parseSsmix2FileName } from '../ingest/ssmix2/filename.js';
import type { UploadSummary } from '../ingest/uploader/upload.js';

const CLI = path.resolve(import.meta.dirname, '../hakobune.js');

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

interface Measured {
  label: string;
  summary: UploadSummary;
  wallSeconds: number;
  peakRssMiB: number;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function upload(label: string, url: string, token: string, root: string, cache: string, extra: string[] = []): Promise<Measured> {
  const entry = [CLI, 'upload'];
  const r = await run(
    '/usr/bin/time',
    ['-f', 'TIME %M %e', process.execPath, ...entry, '--server', url, '--facility', 'F001', '--root', root, '--cache', cache, '--json', ...extra],
    { HAKOBUNE_UPLOAD_TOKEN: token },
  );
  const t = /TIME (\d+) ([\d.]+)\s*$/.exec(r.stderr);
  if (r.code !== 0 || !t) throw new Error(`${label}: upload failed (${r.code}):\n${r.stderr.slice(-2000)}`);
  return { label, summary: JSON.parse(r.stdout) as UploadSummary, wallSeconds: Number(t[2]), peakRssMiB: Math.round(Number(t[1]) / 1024) };
}

/** Writes the evolve change log as SS-MIX2 transaction-storage files (ssmix2.md "Transaction storage"). */
function writeFeed(logFile: string, feedDir: string, day: number): number {
  fs.mkdirSync(feedDir, { recursive: true });
  let n = 0;
  for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const a = JSON.parse(line) as { op: string; tree?: string; path?: string; to?: string };
    const rel = a.op === 'write' ? a.path : a.op === 'rename' ? a.to : undefined;
    if (!rel || a.tree === 'extended') continue;
    const f = parseSsmix2FileName(path.posix.basename(rel));
    const action = f.conditionFlag === '0' ? 'DEL' : 'INS';
    const header = `#SSMIX,2.00,F001,${f.patientId},${f.careDate ?? '-'},${f.dataType},${f.orderNo},${action},${f.department ?? '-'},${f.timestamp}`;
    n++;
    const ts = `2099${String(day).padStart(4, '0')}000000000`;
    fs.writeFileSync(path.join(feedDir, `TR_${ts}_${String(n).padStart(5, '0')}.DAT`), `${header}\r\n`);
  }
  return n;
}

async function main() {
  const root = arg('--root');
  if (!root || !fs.existsSync(root)) throw new Error('usage: npx tsx bench/upload.bench.ts --root <facility tree> [--work DIR] [--evolve]');
  const work = arg('--work') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hakobune-upload-bench-'));
  fs.rmSync(path.join(work, 'exchange'), { recursive: true, force: true });
  fs.rmSync(path.join(work, 'cache'), { recursive: true, force: true });
  const exchange = await createExchange(testConfig(path.join(work, 'exchange')));
  const url = await exchange.listen();
  const { token } = await exchange.backup.addFacility({ id: 'F001', name: 'Bench Hospital', kind: 'hospital' });
  const cache = path.join(work, 'cache', 'F001.cache');
  const feed = path.join(work, 'transaction');
  fs.rmSync(feed, { recursive: true, force: true });
  fs.mkdirSync(feed, { recursive: true });
  const results: Measured[] = [];
  try {
    results.push(await upload('first upload (cold cache: every file read)', url, token, root, cache, ['--changes', feed]));
    results.push(await upload('unchanged tree (warm cache: nothing read)', url, token, root, cache));
    if (process.argv.includes('--evolve')) {
      // The next two nights not yet applied to this tree (evolve refuses a day twice).
      let first = 1;
      while (fs.existsSync(path.join(path.dirname(root), `F001.changes-day${first}.jsonl`))) first++;
      for (const day of [first, first + 1]) {
        const ev = await run(process.execPath, [CLI, 'fixtures', 'evolve', '--root', root, '--day', String(day), '--seed', 'bench', '--json']);
        if (ev.code !== 0) throw new Error(`fixtures evolve: ${ev.stderr}`);
        const logFile = path.join(path.dirname(root), `F001.changes-day${day}.jsonl`);
        if (day === first) {
          results.push(await upload(`nightly after evolve day ${day} (full scan, warm cache)`, url, token, root, cache));
        } else {
          const n = writeFeed(logFile, feed, day);
          results.push(await upload(`nightly after evolve day ${day} (--changes, ${n} feed records)`, url, token, root, cache, ['--changes', feed]));
        }
      }
    }
  } finally {
    await exchange.stop();
  }
  const rows = results.map((r) => {
    const s = r.summary;
    const scanRate = s.scanSeconds > 0 ? Math.round(s.files / s.scanSeconds) : 0;
    return `| ${r.label} | ${s.files} | ${s.scanSeconds} | ${scanRate} | ${s.hashedFiles} | ${s.manifestEntries} | ${s.blobsSent} | ${(s.bytesSent / 1048576).toFixed(1)} | ${r.wallSeconds} | ${r.peakRssMiB} |`;
  });
  const table = [
    '| run | files | scan s | files/s scanned | files read | manifest entries | blobs sent | MiB sent | total s (process) | peak RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  process.stdout.write(`${table}\n\n(load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}, ${os.cpus().length} cores)\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
