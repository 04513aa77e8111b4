/**
 * Fixture generation throughput: `npx tsx bench/fixtures.bench.ts --files 100000 [--out DIR] [--keep]`.
 * Picks --patients for the requested number of files (8 facilities, 60 days, about 22 files per
 * person), generates into bench/out/ (or --out), prints files/s, MB/s, peak memory and the
 * machine, and deletes the tree unless --keep.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateFixtures } from '../fixtures/generate.js';

const FILES_PER_PERSON = 22;
const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '100000' },
    out: { type: 'string' },
    keep: { type: 'boolean', default: false },
    seed: { type: 'string', default: 'bench' },
    extended: { type: 'boolean', default: false },
  },
});
const target = Number(values.files);
if (!Number.isSafeInteger(target) || target < 1000) {
  process.stderr.write('--files must be a whole number of at least 1000\n');
  process.exit(2);
}
const out = path.resolve(values.out ?? path.join(import.meta.dirname, 'out', `fixtures-${target}`));
fs.rmSync(out, { recursive: true, force: true });
const patients = Math.ceil(target / FILES_PER_PERSON);
const args = { facilities: 8, patients, days: 60, seed: values.seed, extended: values.extended };

let lastReport = 0;
const cpuBefore = process.cpuUsage();
const result = await generateFixtures({
  out,
  ...args,
  onProgress: ({ files }) => {
    if (files - lastReport >= 100_000) {
      lastReport = files;
      process.stderr.write(`  ${files} files, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB\n`);
    }
  },
});
const cpu = process.cpuUsage(cpuBefore);
const cpus = os.cpus();
const figures = {
  requestedFiles: target,
  arguments: args,
  files: result.files,
  megabytes: +(result.bytes / 1e6).toFixed(1),
  seconds: +result.seconds.toFixed(1),
  filesPerSecond: Math.round(result.files / result.seconds),
  megabytesPerSecond: +(result.bytes / 1e6 / result.seconds).toFixed(2),
  // CPU time of this process (main thread and the libuv threads doing the file system calls):
  // a figure that depends less on what else the machine is doing than the wall clock.
  cpuSeconds: { user: +(cpu.user / 1e6).toFixed(1), system: +(cpu.system / 1e6).toFixed(1) },
  cpuMicrosecondsPerFile: Math.round((cpu.user + cpu.system) / result.files),
  peakRssMegabytes: Math.round(process.resourceUsage().maxRSS / 1024),
  machine: {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGigabytes: +(os.totalmem() / 2 ** 30).toFixed(1),
    loadAverageAtEnd: os.loadavg().map((l) => +l.toFixed(1)),
    node: process.version,
  },
};
process.stdout.write(JSON.stringify(figures, null, 2) + '\n');
process.stdout.write(
  `${figures.files} files, ${figures.megabytes} MB in ${figures.seconds} s: ${figures.filesPerSecond} files/s, ` +
    `${figures.megabytesPerSecond} MB/s, peak RSS ${figures.peakRssMegabytes} MB\n`,
);
if (!values.keep) fs.rmSync(out, { recursive: true, force: true });
