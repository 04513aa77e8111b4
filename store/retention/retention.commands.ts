import fs from 'node:fs';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { report, UsageError, type OutputOptions } from '../../viewer-api/cli/output.js';
import { cliContext, withExchange } from '../../viewer-api/cli/command-context.js';
import type { Exchange } from '../../viewer-api/exchange.js';
import { createDeleteGuard, generateDeleteKeyPair, readDeletePrivateKey, signDeleteRequest } from './delete-authorization.js';
import { forgetSnapshots, planForget, type ForgetPlan } from './forget.js';
import { authorizedPrune, prune, type PruneReport } from './prune.js';
import type { RetentionDecision } from './retention-policy.js';

/**
 * `hakobune forget`, `hakobune prune` and `hakobune delete-key generate`. Deletes are signed on
 * the operator's machine with the private delete key (--key-file or HAKOBUNE_DELETE_KEY_FILE)
 * and checked by the exchange against HAKOBUNE_DELETE_PUBLIC_KEY_FILE.
 */

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function percent(v: string): number {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0 && n <= 100)) throw new UsageError(`expected a percentage between 0% and 100%, like 50%, got "${v}"`);
  return n / 100;
}

function operatorKey(ex: Exchange, keyFile: string | undefined) {
  const file = keyFile ?? ex.config.retention.deleteKeyFile;
  if (!file) throw new UsageError('deleting needs the operator delete key: give --key-file or set HAKOBUNE_DELETE_KEY_FILE (see hakobune delete-key generate)');
  return readDeletePrivateKey(file);
}

function settingsOf(ex: Exchange) {
  return { policy: ex.config.retention.policy, lockDays: ex.config.retention.lockDays, now: new Date() };
}

function describePlan(plan: ForgetPlan, dryRun: boolean): string {
  const line = (verb: string, d: RetentionDecision) => `  ${verb} ${d.id}  night ${d.nightlyDate}  ${d.reasons.join('; ')}`;
  const lines = [`retention ${plan.policy || '(no rule)'}, delete lock ${plan.lockDays} days, as of ${plan.at}`];
  const facilities = [...new Set([...plan.keep, ...plan.forget].map((d) => d.facilityId))].sort();
  for (const f of facilities) {
    lines.push(`facility ${f}:`);
    const all = [...plan.keep, ...plan.forget].filter((d) => d.facilityId === f).sort((a, b) => (a.nightlyDate < b.nightlyDate ? -1 : a.nightlyDate > b.nightlyDate ? 1 : a.createdAt.getTime() - b.createdAt.getTime()));
    for (const d of all) lines.push(line(d.keep ? 'keep  ' : dryRun ? 'forget' : 'forgot', d));
  }
  lines.push(`${plan.forget.length} snapshot(s) ${dryRun ? 'would be forgotten' : 'forgotten'}, ${plan.keep.length} kept${dryRun ? ' (dry run: nothing changed)' : ''}`);
  return lines.join('\n');
}

function describePrune(r: PruneReport): string {
  const head = r.dryRun ? 'prune (dry run, nothing changed)' : 'prune';
  return [
    `${head}: ${r.snapshots} snapshots kept, ${r.neededBlobs} blobs needed`,
    `packs: ${r.packs.total} in all, ${r.packs.young} inside the delete lock, ${r.packs.untouched} left as they are, ${r.packs.repack} ${r.dryRun ? 'to repack' : 'repacked'}, ${r.packs.delete} ${r.dryRun ? 'to delete' : 'deleted'}`,
    r.finishedFromEarlierRun ? `finished ${r.finishedFromEarlierRun} object(s) an interrupted prune had left` : '',
    `${r.blobsRemoved} blob(s) ${r.dryRun ? 'would be removed' : 'removed'}; ${r.dryRun ? 'would reclaim' : 'reclaimed'} ${mib(r.bytesReclaimed)} (${r.bytesReclaimed} bytes${r.dryRun ? '' : `: ${r.bytesDeleted} deleted, ${r.bytesWritten} rewritten in ${r.packsWritten} new pack(s)`})`,
    ...r.skipped.map((s) => `left as it is: ${s.objectName}: ${s.reason}`),
  ]
    .filter(Boolean)
    .join('\n');
}

export function registerRetentionCommands(program: Command): void {
  program
    .command('forget')
    .description('forget the snapshots the retention policy (HAKOBUNE_RETENTION) no longer keeps; --dry-run shows each snapshot, kept or not, and why')
    .option('--facility <id>', 'only this facility')
    .option('--snapshot <id...>', 'forget only these snapshots (each must be one the policy lets go)')
    .option('--dry-run', 'show what would be forgotten, change nothing')
    .option('--key-file <file>', 'the operator delete key (PEM); default HAKOBUNE_DELETE_KEY_FILE')
    .option('--json', 'print the plan as JSON')
    .action(async (opts: OutputOptions & { facility?: string; snapshot?: string[]; dryRun?: boolean; keyFile?: string }) => {
      await withExchange(async (ex) => {
        const settings = settingsOf(ex);
        let plan = await planForget(ex.db, settings, opts.facility);
        if (opts.snapshot) {
          const known = new Map([...plan.keep, ...plan.forget].map((d) => [d.id, d]));
          for (const id of opts.snapshot) {
            const d = known.get(id);
            if (!d) throw new UsageError(opts.facility ? `no snapshot ${id} of facility ${opts.facility}` : `no snapshot ${id}`);
            if (d.keep) throw new UsageError(`snapshot ${id} is kept and cannot be forgotten: ${d.reasons.join('; ')}`);
          }
          const chosen = new Set(opts.snapshot);
          plan = { ...plan, keep: [...plan.keep, ...plan.forget.filter((d) => !chosen.has(d.id))], forget: plan.forget.filter((d) => chosen.has(d.id)) };
        }
        if (!opts.dryRun && plan.forget.length) {
          const key = operatorKey(ex, opts.keyFile);
          const req = signDeleteRequest(key, { action: 'forget', facility: opts.facility ?? null, snapshotIds: plan.forget.map((d) => d.id) });
          const guard = createDeleteGuard(ex.config.retention, ex.db, ex.viewer.audit);
          const ctx = cliContext('forget');
          await forgetSnapshots(ex.db, { guard, audit: ex.viewer.audit, settings }, req, { actor: ctx.actor, endpoint: ctx.endpoint });
        }
        report(opts, { dryRun: !!opts.dryRun, ...plan }, () => describePlan(plan, !!opts.dryRun));
      });
    });

  program
    .command('prune')
    .description('reclaim the space of blobs no kept snapshot needs: delete dead packs, repack mostly-dead ones; an interrupted prune is finished by the next')
    .option('--dry-run', 'show what would be reclaimed, change nothing')
    .option('--repack-below <percent>', 'repack a pack whose live bytes are below this share of it', percent)
    .option('--key-file <file>', 'the operator delete key (PEM); default HAKOBUNE_DELETE_KEY_FILE')
    .option('--json', 'print the report as JSON')
    .action(async (opts: OutputOptions & { dryRun?: boolean; repackBelow?: number; keyFile?: string }) => {
      const r = await withExchange(async (ex) => {
        const bar = !opts.json && process.stderr.isTTY ? new cliProgress.MultiBar({ stream: process.stderr, format: '{stage} [{bar}] {value}/{total}' }, cliProgress.Presets.shades_classic) : undefined;
        const bars = new Map<string, cliProgress.SingleBar>();
        const onProgress = (p: { stage: string; done: number; total: number }) => {
          if (!bar) return;
          let b = bars.get(p.stage);
          if (!b) bars.set(p.stage, (b = bar.create(p.total || 1, 0, { stage: p.stage.padEnd(14) })));
          b.setTotal(Math.max(p.total, p.done, 1));
          b.update(p.done);
        };
        const base = { lockDays: ex.config.retention.lockDays, repackBelow: opts.repackBelow, onProgress };
        try {
          if (opts.dryRun) return await prune({ db: ex.db, packs: ex.backup.packs }, { ...base, dryRun: true });
          const req = signDeleteRequest(operatorKey(ex, opts.keyFile), { action: 'prune', facility: null, snapshotIds: [] });
          const guard = createDeleteGuard(ex.config.retention, ex.db, ex.viewer.audit);
          const ctx = cliContext('prune');
          return await authorizedPrune({ db: ex.db, packs: ex.backup.packs, guard, audit: ex.viewer.audit }, req, { actor: ctx.actor, endpoint: ctx.endpoint }, base);
        } finally {
          bar?.stop();
        }
      });
      report(opts, r, () => describePrune(r));
    });

  program
    .command('delete-key')
    .description('the operator delete key pair (Ed25519)')
    .command('generate')
    .description('write a new private delete key (keep it off the exchange) and print its public key for HAKOBUNE_DELETE_PUBLIC_KEY_FILE')
    .requiredOption('--out <file>', 'where to write the private key (must not exist)')
    .option('--public-out <file>', 'also write the public key to this file')
    .action((opts: { out: string; publicOut?: string }) => {
      const pair = generateDeleteKeyPair();
      try {
        fs.writeFileSync(opts.out, pair.privateKeyPem, { mode: 0o600, flag: 'wx' });
      } catch (e) {
        throw new UsageError(`cannot write ${opts.out}: ${(e as NodeJS.ErrnoException).code === 'EEXIST' ? 'it exists already' : (e as Error).message}`);
      }
      if (opts.publicOut) fs.writeFileSync(opts.publicOut, pair.publicKeyPem, { mode: 0o644 });
      process.stdout.write(pair.publicKeyPem);
    });
}
