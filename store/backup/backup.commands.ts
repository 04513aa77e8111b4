import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { report, UsageError, type OutputOptions } from '../../viewer-api/cli/output.js';
import { FACILITY_KINDS } from '../facility-kind.js';
import type { FacilityKind } from './backup.repository.js';
import { restoreSnapshot, type RestoreProgress } from './restore.js';
import { verifyStore } from './verify.js';
import { withExchange } from '../../viewer-api/cli/command-context.js';

/**
 * `hakobune facility add|list|rotate-token`, `snapshots`, `restore`, `verify`,
 * `backup train-dictionary`. They open the exchange's store directly; in the embedded mode,
 * while a server owns the database, openDatabase stops them with a message naming its URL.
 */

function mib(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

function percent(v: string): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(v.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0 && n <= 100)) throw new UsageError(`--read-data-subset takes a percentage in (0, 100], got "${v}"`);
  return n / 100;
}

function date(v: string): string {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) {
    throw new UsageError(`--at takes a date YYYY-MM-DD, got "${v}"`);
  }
  return v;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function registerBackupCommands(program: Command): void {
  const facility = program.command('facility').description('facilities that back up to the exchange');

  facility
    .command('add')
    .description('register a facility; prints its uploader token once (only its hash is kept)')
    .requiredOption('--id <id>', 'facility id, e.g. F001')
    .requiredOption('--name <name>', 'facility name')
    .requiredOption('--kind <kind>', FACILITY_KINDS.join(' | '))
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { id: string; name: string; kind: string }) => {
      if (!(FACILITY_KINDS as readonly string[]).includes(opts.kind)) {
        throw new UsageError(`--kind must be one of ${FACILITY_KINDS.join(', ')}, got "${opts.kind}"`);
      }
      const { facility: f, token } = await withExchange((ex) =>
        ex.backup.addFacility({ id: opts.id, name: opts.name, kind: opts.kind as FacilityKind }),
      );
      report(opts, { id: f.id, name: f.name, kind: f.kind, token }, () =>
        [
          `facility ${f.id} (${f.name}, ${f.kind}) registered.`,
          `uploader token (shown only now; store it in the facility's uploader configuration):`,
          `  ${token}`,
        ].join('\n'),
      );
    });

  facility
    .command('list')
    .description('list facilities with their snapshots')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const rows = await withExchange((ex) => ex.backup.listFacilities());
      report(opts, rows, () =>
        rows.length === 0
          ? 'no facilities registered'
          : table([
              ['ID', 'KIND', 'SNAPSHOTS', 'LAST SNAPSHOT', 'TOKENS', 'NAME'],
              ...rows.map((r) => [r.id, r.kind, String(r.snapshots), r.lastSnapshotAt?.toISOString() ?? '-', String(r.activeTokens), r.name]),
            ]),
      );
    });

  facility
    .command('rotate-token')
    .description("revoke a facility's uploader tokens and print a new one (once)")
    .requiredOption('--id <id>', 'facility id')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { id: string }) => {
      const r = await withExchange((ex) => ex.backup.rotateToken(opts.id));
      report(opts, { id: opts.id, ...r }, () => `revoked ${r.revoked} token(s) of ${opts.id}; new uploader token (shown only now):\n  ${r.token}`);
    });

  program
    .command('snapshots')
    .description("list a facility's snapshots with counts and sizes")
    .requiredOption('--facility <id>', 'facility id')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { facility: string }) => {
      const rows = await withExchange((ex) => ex.backup.listSnapshots(opts.facility));
      const out = rows.map((s) => ({
        id: s.id,
        facilityId: s.facilityId,
        night: s.nightlyDate,
        createdAt: s.createdAt.toISOString(),
        files: s.files,
        bytes: s.bytes,
        newBlobs: s.newBlobs,
        newBytes: s.newBytes,
      }));
      report(opts, out, () =>
        out.length === 0
          ? `facility ${opts.facility} has no snapshots`
          : table([
              ['SNAPSHOT', 'NIGHT (JST)', 'CREATED (UTC)', 'FILES', 'SIZE', 'NEW BLOBS', 'NEW BYTES'],
              ...out.map((s) => [s.id, s.night, s.createdAt, String(s.files), mib(s.bytes), String(s.newBlobs), mib(s.newBytes)]),
            ]),
      );
    });

  program
    .command('restore')
    .description("write a facility's tree as it was in a snapshot, byte for byte, into a folder")
    .requiredOption('--facility <id>', 'facility id')
    .option('--snapshot <id>', 'the snapshot (default: the latest)')
    .option('--at <YYYY-MM-DD>', "the last snapshot of that night or before (Asia/Tokyo date)", date)
    .requiredOption('--to <dir>', 'target folder (must be empty unless --force)')
    .option('--patient <pid>', 'only this patient (repeatable)', collect)
    .option('--force', 'write into a non-empty folder')
    .option('--progress', 'show a progress bar even when stderr is not a terminal')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        opts: OutputOptions & { facility: string; snapshot?: string; at?: string; to: string; patient?: string[]; force?: boolean; progress?: boolean },
      ) => {
        if (opts.snapshot && opts.at) throw new UsageError('give --snapshot or --at, not both');
        const result = await withExchange(async (ex) => {
          const snap = await ex.backup.chooseSnapshot(opts.facility, { snapshotId: opts.snapshot, at: opts.at });
          const bar = opts.progress || process.stderr.isTTY ? new cliProgress.SingleBar({ stream: process.stderr, format: 'restore [{bar}] {value}/{total} files {percentage}% eta {eta}s' }, cliProgress.Presets.shades_classic) : undefined;
          bar?.start(snap.files, 0);
          try {
            return await restoreSnapshot(ex.backup, snap, {
              to: opts.to,
              patients: opts.patient,
              force: opts.force,
              onProgress: (p: RestoreProgress) => bar?.update(p.files),
            });
          } finally {
            bar?.stop();
          }
        });
        report(opts, result, () => {
          const lines = [`restored ${result.files} files (${mib(result.bytes)}) of snapshot ${result.snapshotId} (facility ${result.facilityId}) into ${opts.to}`];
          if (result.failed.length) {
            lines.push(`${result.failed.length} file(s) could NOT be restored (their stored bytes are missing or damaged):`);
            for (const f of result.failed) lines.push(`  ${f.path}  (blob ${f.sha256}: ${f.reason})`);
          }
          return lines.join('\n');
        });
        // Exit non-zero (after the report) when any file could not be written.
        if (result.failed.length) throw new Error(`${result.failed.length} file(s) could not be restored`);
      },
    );

  program
    .command('verify')
    .description('check that every snapshot can be restored: trees, blob index, packs; with --read-data re-hash the stored bytes')
    .option('--read-data', 'read and re-hash every blob')
    .option('--read-data-subset <percent>', 'read and re-hash the blobs of this share of the packs, e.g. 10%', percent)
    .option('--json', 'print the report as JSON')
    .action(async (opts: OutputOptions & { readData?: boolean; readDataSubset?: number }) => {
      if (opts.readData && opts.readDataSubset !== undefined) throw new UsageError('give --read-data or --read-data-subset, not both');
      const rep = await withExchange((ex) => verifyStore(ex.backup, { readData: opts.readData ? 1 : (opts.readDataSubset ?? 0) }));
      report(opts, rep, () => {
        const lines = [
          `${rep.ok ? 'OK' : 'DAMAGED'}: ${rep.snapshots} snapshots, ${rep.trees} trees, ${rep.blobsReferenced} blobs referenced, ${rep.packs} packs, ${rep.blobsRead} blobs read back`,
        ];
        for (const s of rep.damagedSnapshots) lines.push(`snapshot ${s.snapshotId} (facility ${s.facilityId}): ${s.reason}`);
        for (const p of rep.missingPacks) lines.push(`pack missing: ${p}`);
        for (const b of rep.damagedBlobs) {
          lines.push(`blob ${b.sha256}: ${b.reason}`);
          for (const h of b.heldBy) lines.push(`  held by facility ${h.facilityId} snapshot ${h.snapshotId}: ${h.path}`);
          if (!b.heldBy.length) lines.push('  held by no snapshot');
        }
        if (rep.orphanPacks.length) lines.push(`${rep.orphanPacks.length} orphan pack(s) (written, never indexed; harmless): ${rep.orphanPacks.slice(0, 10).join(', ')}`);
        return lines.join('\n');
      });
      if (!rep.ok) throw new Error('the store is damaged (see above)');
    });

  program
    .command('backup')
    .description('maintenance of the backup store')
    .command('train-dictionary')
    .description('train a new compression dictionary from a sample of stored messages (old packs keep theirs)')
    .option('--samples <n>', 'how many stored blobs to sample', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 10) throw new UsageError(`--samples must be a whole number of at least 10, got "${v}"`);
      return n;
    })
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { samples?: number }) => {
      const r = await withExchange((ex) => ex.backup.blobs.retrainDictionary(opts.samples ?? 1000));
      report(opts, r ?? { trained: false }, () =>
        r ? `dictionary ${r.dictionaryId}: ${r.bytes} bytes from ${r.samples} stored messages; new blobs use it` : 'too few stored messages to train a useful dictionary',
      );
    });
}
