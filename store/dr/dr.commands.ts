import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { readConfig } from '../../viewer-api/config.js';
import { report, UsageError, type OutputOptions } from '../../viewer-api/cli/output.js';
import { openDatabase } from '../db.js';
import { migrateToLatest } from '../migrate.js';
import type { PackStore } from '../backup/pack-store.js';
import { ConfiguredKeyProvider } from './key-provider.js';
import { rotatePackKeys } from './key-rotation.js';
import { countKeysByMasterKey } from './pack-key.repository.js';
import { EncryptedPackStore } from './encrypted-pack-store.js';
import { openPackStore } from './open-pack-store.js';
import { replicate, restoreFromReplica } from './replication.js';
import { describeStoreSpec, openStoreSpec, parseStoreSpec } from './store-spec.js';

/**
 * `hakobune keys rotate|status`, `hakobune replicate --to`, `hakobune replica restore --from`.
 * They open the database directly; in the embedded mode, while a server owns it, openDatabase
 * stops them with a message naming the server.
 */

function bar(label: string, json: boolean | undefined): cliProgress.SingleBar | undefined {
  if (json || !process.stderr.isTTY) return undefined;
  return new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {value}/{total} {percentage}% eta {eta}s` },
    cliProgress.Presets.shades_classic,
  );
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function registerDrCommands(program: Command): void {
  const keys = program.command('keys').description('master keys of encryption at rest (HAKOBUNE_MASTER_KEYS)');

  keys
    .command('rotate')
    .description('re-wrap every pack data key with the current (first) master key; packs are not rewritten; a rerun finishes an interrupted rotation')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const config = readConfig();
      if (!config.masterKeys?.length) throw new UsageError('HAKOBUNE_MASTER_KEYS is not set: there is no master key to rotate to');
      const database = await openDatabase(config);
      try {
        await migrateToLatest(database.db);
        const provider = new ConfiguredKeyProvider(config.masterKeys);
        const b = bar(`re-wrapping data keys under "${provider.currentKeyId()}"`, opts.json);
        let started = false;
        const r = await rotatePackKeys(database.db, provider, {
          onProgress: (p) => {
            if (!b) return;
            if (!started) b.start(p.total, 0);
            started = true;
            b.update(p.rewrapped);
          },
        }).finally(() => b?.stop());
        report(opts, r, () =>
          [
            `${r.rewrapped} data key(s) re-wrapped under master key "${r.keyId}"`,
            ...r.byKey.map((k) => `  ${k.keyId}: ${k.objects} object(s)`),
            r.byKey.every((k) => k.keyId === r.keyId) ? 'every data key is under the current master key; older keys may be retired' : '',
          ]
            .filter(Boolean)
            .join('\n'),
        );
      } finally {
        await database.close();
      }
    });

  keys
    .command('status')
    .description('how many pack data keys each master key wraps')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const config = readConfig();
      const database = await openDatabase(config);
      try {
        await migrateToLatest(database.db);
        const byKey = await countKeysByMasterKey(database.db);
        const configured = config.masterKeys?.map((k) => k.id) ?? [];
        const value = { current: configured[0] ?? null, configured, byKey, unconfigured: byKey.filter((k) => !configured.includes(k.keyId)).map((k) => k.keyId) };
        report(opts, value, () =>
          [
            `current master key: ${value.current ?? '(none: packs are stored in clear)'}`,
            ...byKey.map((k) => `  ${k.keyId}: ${k.objects} object(s)${configured.includes(k.keyId) ? '' : '  (NOT configured: these packs cannot be read)'}`),
          ].join('\n'),
        );
        if (value.unconfigured.length) throw new Error(`data keys under master key(s) ${value.unconfigured.join(', ')} cannot be unwrapped with the configured keys`);
      } finally {
        await database.close();
      }
    });

  program
    .command('replicate')
    .description('copy to a second site the packs it lacks (verified) and a consistent metadata generation for restoring without this site')
    .requiredOption('--to <store>', 'the second site: a folder, file:/folder or s3://bucket/prefix?endpoint=URL')
    .option('--no-verify', 'do not read each copied pack back from the second site')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { to: string; verify: boolean }) => {
      const config = readConfig();
      const spec = parseStoreSpec(opts.to);
      if (spec.kind === 'folder' && config.s3 === undefined && path.resolve(spec.dir) === path.resolve(config.packDir)) {
        throw new UsageError('the second site cannot be the first site\'s own pack folder');
      }
      const database = await openDatabase(config);
      const packs = openPackStore(config, database.db);
      const target = openStoreSpec(spec);
      try {
        await migrateToLatest(database.db);
        const source: PackStore = packs instanceof EncryptedPackStore ? packs.inner : packs;
        const b = bar('packs', opts.json);
        let started = false;
        const r = await replicate(database.db, source, target, {
          verify: opts.verify,
          keys: config.masterKeys?.length ? new ConfiguredKeyProvider(config.masterKeys) : undefined,
          onProgress: (p) => {
            if (!b || p.stage !== 'packs') return;
            if (!started) b.start(p.total, 0);
            started = true;
            b.update(p.done);
          },
        }).finally(() => b?.stop());
        report(opts, { to: describeStoreSpec(spec), ...r }, () =>
          [
            `replicated to ${describeStoreSpec(spec)}: generation ${r.generation}`,
            `  packs: ${r.packs} (${r.packsCopied} copied, ${mib(r.bytesCopied)}; ${r.packsAlreadyThere} already there)`,
            `  metadata: ${r.metadataObjects} object(s), ${mib(r.metadataBytes)}`,
            ...r.damagedAtReplica.map((n) => `  DAMAGED at the second site (size differs, left as is): ${n}`),
            ...r.missingAtSource.map((n) => `  MISSING at this site (run hakobune verify): ${n}`),
          ].join('\n'),
        );
        if (r.damagedAtReplica.length || r.missingAtSource.length) {
          throw new Error(`${r.damagedAtReplica.length} pack(s) damaged at the second site and ${r.missingAtSource.length} missing at this site (listed above)`);
        }
      } finally {
        await target.close();
        await packs.close();
        await database.close();
      }
    });

  const replica = program.command('replica').description('the second site');
  replica
    .command('restore')
    .description('restore a facility from the second site alone (its latest metadata generation and packs), without this site\'s database or packs')
    .requiredOption('--from <store>', 'the second site: a folder, file:/folder or s3://bucket/prefix?endpoint=URL')
    .requiredOption('--facility <id>', 'facility id')
    .option('--snapshot <id>', 'a snapshot id (default: the latest)')
    .option('--at <date>', 'the last snapshot of this night or before (YYYY-MM-DD, Asia/Tokyo)')
    .requiredOption('--to <dir>', 'an empty folder to restore into')
    .option('--patient <pid>', 'only this patient (repeatable)', collect)
    .option('--force', 'restore into a non-empty folder')
    .option('--generation <g>', 'a metadata generation (default: the latest)')
    .option('--work-dir <dir>', 'folder for the scratch database (default: a temporary folder, removed after)')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        opts: OutputOptions & { from: string; facility: string; snapshot?: string; at?: string; to: string; patient?: string[]; force?: boolean; generation?: string; workDir?: string },
      ) => {
        if (opts.snapshot && opts.at) throw new UsageError('give --snapshot or --at, not both');
        if (opts.at && !/^\d{4}-\d{2}-\d{2}$/.test(opts.at)) throw new UsageError(`--at takes a date YYYY-MM-DD, got "${opts.at}"`);
        const config = readConfig();
        const spec = parseStoreSpec(opts.from);
        const scratch = opts.workDir ? path.resolve(opts.workDir) : fs.mkdtempSync(path.join(os.tmpdir(), 'hakobune-replica-'));
        if (opts.workDir && fs.existsSync(scratch) && fs.readdirSync(scratch).length > 0) throw new UsageError(`--work-dir ${opts.workDir} is not empty`);
        const store = openStoreSpec(spec);
        const database = await openDatabase({ dataDir: scratch, databaseUrl: undefined });
        try {
          await migrateToLatest(database.db);
          const b = bar('restore', opts.json);
          let started = false;
          const r = await restoreFromReplica(store, database.db, {
            facilityId: opts.facility,
            snapshotId: opts.snapshot,
            at: opts.at,
            generation: opts.generation,
            to: opts.to,
            patients: opts.patient,
            force: opts.force,
            masterKeys: config.masterKeys,
            onProgress: (p) => {
              if (!b) return;
              if (!started) b.start(p.totalFiles, 0);
              started = true;
              b.update(p.files);
            },
          }).finally(() => b?.stop());
          report(opts, { from: describeStoreSpec(spec), ...r }, () =>
            [
              `restored ${r.files} file(s), ${mib(r.bytes)} of snapshot ${r.snapshotId} (facility ${r.facilityId}) from ${describeStoreSpec(spec)}, generation ${r.generation}, into ${opts.to}`,
              ...r.missingPacks.map((n) => `  MISSING at the second site: pack ${n}`),
              ...r.failed.slice(0, 50).map((f) => `  NOT restored: ${f.path}: ${f.reason}`),
              r.failed.length > 50 ? `  … and ${r.failed.length - 50} more not restored (see --json)` : '',
            ]
              .filter(Boolean)
              .join('\n'),
          );
          if (r.failed.length) throw new Error(`${r.failed.length} file(s) were not restored (listed above)`);
        } finally {
          await store.close();
          await database.close();
          if (!opts.workDir) fs.rmSync(scratch, { recursive: true, force: true });
        }
      },
    );
}
