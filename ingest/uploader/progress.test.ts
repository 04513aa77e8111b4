import { describe, expect, it } from 'vitest';
import { describeProgress, formatBytes, progressView } from './progress.js';
import type { UploadProgress } from './upload.js';

const base: UploadProgress = {
  phase: 'scan',
  scan: { files: 5000, bytes: 0, hashed: 1000, hashedBytes: 3 * 1048576, unchanged: 4000, renamed: 0, copied: 0, problems: 2 },
  expectedFiles: 20000,
  manifestTotal: 0,
  manifestSent: 0,
  blobsSent: 0,
  bytesSent: 0,
};

describe('upload progress', () => {
  it('shows scan rate and an ETA from the previous snapshot size', () => {
    const d = describeProgress(base, 10, 10);
    expect(d.line).toBe('scan: 5000 files (500/s), 1000 read (3.0 MiB), 2 problem(s) ETA 30s');
    expect([d.done, d.total]).toEqual([5000, 20000]);
    // No previous snapshot: no ETA rather than a made-up one.
    expect(describeProgress({ ...base, expectedFiles: null }, 10, 10).line).not.toMatch(/ETA/);
    // What was sent while the scan runs.
    expect(describeProgress({ ...base, manifestSent: 4000, blobsSent: 900, bytesSent: 2 * 1048576 }, 10, 10).line).toBe(
      'scan: 5000 files (500/s), 1000 read (3.0 MiB), 2 problem(s) ETA 30s; sent 4000 entries, 900 blobs (2.0 MiB)',
    );
  });

  it('shows entries, blobs, bytes, rate and ETA while sending', () => {
    const d = describeProgress({ ...base, phase: 'blobs', manifestTotal: 30000, manifestSent: 10000, blobsSent: 120, bytesSent: 10 * 1048576 }, 100, 20);
    expect(d.line).toBe('blobs: manifest 10000/30000, 120 blobs sent (10.0 MiB, 512.0 KiB/s) ETA 40s [1m40s]');
    // A delta manifest's size is not known before it is sent: no total, no ETA.
    const delta = describeProgress({ ...base, phase: 'manifest', manifestTotal: 0, manifestSent: 900, blobsSent: 3, bytesSent: 4096 }, 10, 5);
    expect(delta.line).toBe('manifest: manifest 900, 3 blobs sent (4.0 KiB, 819 B/s) [10s]');
  });

  it('writes plain lines at most once per interval when there is no terminal', () => {
    const lines: string[] = [];
    let now = 0;
    const stream = { isTTY: false, write: (s: string) => (lines.push(s), true) } as unknown as NodeJS.WriteStream;
    const v = progressView({ bar: false, stream, intervalMs: 5000, now: () => now });
    for (now = 0; now <= 12_000; now += 100) v.update(base);
    v.stop();
    expect(lines.length).toBe(3);
    expect(lines[0]).toMatch(/^hakobune upload: scan: 5000 files/);
  });

  it('formats byte counts', () => {
    expect([formatBytes(0), formatBytes(1536), formatBytes(5 * 1024 ** 3)]).toEqual(['0 B', '1.5 KiB', '5.0 GiB']);
  });
});
