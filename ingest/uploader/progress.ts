import cliProgress from 'cli-progress';
import type { UploadProgress } from './upload.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line describing where the upload is: counts, rate and, when the total is known, ETA. */
export function describeProgress(p: Readonly<UploadProgress>, elapsedS: number, phaseElapsedS: number): { line: string; done: number; total: number } {
  const s = p.scan;
  if (p.phase === 'scan') {
    const rate = phaseElapsedS > 0 ? s.files / phaseElapsedS : 0;
    const total = p.expectedFiles ?? 0;
    const eta = total > s.files && rate > 0 ? ` ETA ${formatDuration((total - s.files) / rate)}` : '';
    return {
      // The manifest and blobs go out while the scan runs.
      line:
        `scan: ${s.files} files (${Math.round(rate)}/s), ${s.hashed} read (${formatBytes(s.hashedBytes)}), ${s.problems} problem(s)${eta}` +
        (p.manifestSent > 0 ? `; sent ${p.manifestSent} entries, ${p.blobsSent} blobs (${formatBytes(p.bytesSent)})` : ''),
      done: s.files,
      total: Math.max(total, s.files),
    };
  }
  const rate = phaseElapsedS > 0 ? p.bytesSent / phaseElapsedS : 0;
  const entryRate = phaseElapsedS > 0 ? p.manifestSent / phaseElapsedS : 0;
  const eta = p.manifestTotal > p.manifestSent && entryRate > 0 ? ` ETA ${formatDuration((p.manifestTotal - p.manifestSent) / entryRate)}` : '';
  return {
    line:
      `${p.phase}: manifest ${p.manifestSent}${p.manifestTotal > 0 ? `/${p.manifestTotal}` : ''}, ${p.blobsSent} blobs sent ` +
      `(${formatBytes(p.bytesSent)}, ${formatBytes(rate)}/s)${eta} [${formatDuration(elapsedS)}]`,
    done: p.manifestSent,
    total: Math.max(p.manifestTotal, p.manifestSent),
  };
}

export interface ProgressView {
  update(p: Readonly<UploadProgress>): void;
  stop(): void;
}

/**
 * A bar on a terminal (or with --progress), else a plain line on stderr at most every
 * `intervalMs`, so cron logs stay readable.
 */
export function progressView(opts: { bar: boolean; stream: NodeJS.WriteStream; intervalMs?: number; now?: () => number }): ProgressView {
  const now = opts.now ?? Date.now;
  const start = now();
  let phase: string | null = null;
  let phaseStart = start;
  let lastLine = -Infinity;
  const interval = opts.intervalMs ?? 5000;
  const bar = opts.bar
    ? new cliProgress.SingleBar(
        {
          format: '{bar} {percentage}% | {line}',
          stream: opts.stream,
          hideCursor: true,
          fps: 5,
          barsize: 20,
          // --progress without a terminal: cli-progress otherwise prints nothing at all.
          noTTYOutput: !opts.stream.isTTY,
          notTTYSchedule: interval,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let started = false;
  return {
    update(p) {
      const t = now();
      if (p.phase !== phase) {
        // Rates and ETA are per phase: the manifest phase has nothing to do with scan speed.
        if (!(phase === 'manifest' && p.phase === 'blobs') && !(phase === 'blobs' && p.phase === 'manifest')) phaseStart = t;
        phase = p.phase;
      }
      // Called per folder while scanning: without a bar, only a line that is printed is described.
      if (!bar && !(t - lastLine >= interval || p.phase === 'done')) return;
      const d = describeProgress(p, (t - start) / 1000, (t - phaseStart) / 1000);
      if (bar) {
        if (!started) {
          bar.start(Math.max(d.total, 1), d.done, { line: d.line });
          started = true;
        } else {
          bar.setTotal(Math.max(d.total, 1));
          bar.update(d.done, { line: d.line });
        }
      } else if (t - lastLine >= interval || p.phase === 'done') {
        lastLine = t;
        if (p.phase !== 'done') opts.stream.write(`hakobune upload: ${d.line}\n`);
      }
    },
    stop() {
      if (bar && started) bar.stop();
    },
  };
}
