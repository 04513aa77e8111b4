/**
 * The uploader's scan alone (walk + cache + hashing, no network), one process per run so the
 * peak RSS is the scan's: the part of the upload whose cost grows with the tree.
 *
 *   npx tsx bench/upload-scan.bench.ts --root <facility tree> --cache <file> [--fresh]
 *
 * --fresh deletes the cache first (cold: every file read and hashed); without it the cache of
 * the previous run is used (warm: only changed files read) and then replaced.
 */
import fs from 'node:fs';
import os from 'node:os';
import { CacheReader, CacheWriter, replaceFile } from '../ingest/uploader/cache.js';
import { scanTree } from '../ingest/uploader/scan.js';
import { nodeTreeFs } from '../ingest/uploader/walk.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main() {
  const root = arg('--root');
  const cache = arg('--cache');
  if (!root || !cache) throw new Error('usage: npx tsx bench/upload-scan.bench.ts --root DIR --cache FILE [--fresh]');
  if (process.argv.includes('--fresh')) fs.rmSync(cache, { force: true });
  const t0 = performance.now();
  const previous = await CacheReader.open(cache);
  const out = await CacheWriter.create(`${cache}.next`, { facilityId: 'F001', server: 'bench', feedPosition: null });
  let problems = 0;
  const s = await scanTree({
    mounts: [{ prefix: 'standard', root }],
    previous,
    out,
    fs: nodeTreeFs,
    maxBlobBytes: 32 * 1024 * 1024 - 36,
    onProblem: () => problems++,
  });
  await out.finish();
  await replaceFile(`${cache}.next`, cache);
  const seconds = (performance.now() - t0) / 1000;
  const peak = Math.round(process.resourceUsage().maxRSS / 1024);
  process.stdout.write(
    JSON.stringify({
      mode: previous ? 'warm' : 'cold',
      files: s.files,
      hashed: s.hashed,
      unchanged: s.unchanged,
      problems,
      seconds: Math.round(seconds * 10) / 10,
      filesPerSecond: Math.round(s.files / seconds),
      peakRssMiB: peak,
      cacheMiB: Math.round(fs.statSync(cache).size / 1048576),
      load: os.loadavg().map((l) => Math.round(l * 10) / 10),
    }) + '\n',
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
