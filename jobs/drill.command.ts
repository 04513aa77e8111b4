import type { Command } from 'commander';
import { report, positiveInt, UsageError, type OutputOptions } from '../viewer-api/cli/output.js';
import { withExchange } from '../viewer-api/cli/command-context.js';
import { listDrills, type DrillRecord } from '../store/dr/drill.repository.js';
import { runRestoreDrill, runVerifyDrill } from './drill.js';

function percent(v: string): number {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0 && n <= 100)) throw new UsageError(`expected a percentage between 0% and 100%, like 5%, got "${v}"`);
  return n / 100;
}

function describe(d: DrillRecord): string[] {
  const when = d.startedAt.toISOString().replace('T', ' ').slice(0, 19);
  const what = d.kind === 'restore' ? `restore ${d.facilityId} night ${d.nightlyDate} (${d.snapshotId})` : 'sampled verify';
  const size = d.kind === 'restore' ? `${d.files} files, ${(d.bytes / 1024 / 1024).toFixed(1)} MiB` : `${d.files} blobs read`;
  const lines = [`#${d.id} ${when}  ${what}  ${d.outcome.toUpperCase()}  ${size} in ${(d.durationMs / 1000).toFixed(1)} s`];
  if (d.detail) lines.push(`    ${d.detail}`);
  for (const f of d.damage?.files.slice(0, 20) ?? []) lines.push(`    damaged file ${f.path}: ${f.reason}`);
  if ((d.damage?.files.length ?? 0) > 20) lines.push(`    … ${d.damage!.files.length - 20} more`);
  for (const s of d.damage?.snapshots ?? []) lines.push(`    affects snapshot ${s.snapshotId} of ${s.facilityId}: ${s.paths.length} file(s)`);
  for (const p of d.damage?.missingPacks ?? []) lines.push(`    missing pack ${p}`);
  return lines;
}

/** `hakobune drills`: the drill history; --run / --verify-sample run one now. */
export function registerDrillCommand(program: Command): void {
  program
    .command('drills')
    .description('the history of restore drills and sampled verifications; --run restores a random facility and night now and checks every byte')
    .option('--run', 'run a restore drill now (a random facility and night unless given)')
    .option('--facility <id>', 'with --run: this facility')
    .option('--night <YYYY-MM-DD>', 'with --run: this night (Asia/Tokyo date)')
    .option('--verify-sample <percent>', 'run a sampled verification now, reading back this share of the packs', percent)
    .option('--limit <n>', 'how many past drills to show (default 20)', positiveInt('--limit'))
    .option('--json', 'print as JSON')
    .action(async (opts: OutputOptions & { run?: boolean; facility?: string; night?: string; verifySample?: number; limit?: number }) => {
      if ((opts.facility || opts.night) && !opts.run) throw new UsageError('--facility and --night choose what --run drills');
      if (opts.night && !/^\d{4}-\d{2}-\d{2}$/.test(opts.night)) throw new UsageError(`--night is a date like 2026-11-20, got "${opts.night}"`);
      const out = await withExchange(async (ex) => {
        const ran: DrillRecord[] = [];
        if (opts.run) ran.push(await runRestoreDrill({ backup: ex.backup, scratchDir: ex.config.drills.scratchDir }, { facilityId: opts.facility, night: opts.night }));
        if (opts.verifySample !== undefined) ran.push(await runVerifyDrill({ backup: ex.backup }, opts.verifySample));
        return { ran, history: await listDrills(ex.db, opts.limit ?? 20) };
      });
      report(opts, out, () => {
        const lines: string[] = [];
        if (out.ran.length) lines.push('ran now:', ...out.ran.flatMap(describe), '');
        lines.push(out.history.length ? 'history (newest first):' : 'no drill has run yet (hakobune drills --run)');
        lines.push(...out.history.flatMap(describe));
        return lines.join('\n');
      });
      const bad = out.ran.filter((d) => d.outcome !== 'passed');
      if (bad.length) throw new Error(`${bad.length} drill(s) did not pass (see above)`);
    });
}
