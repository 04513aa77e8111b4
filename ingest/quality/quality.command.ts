import type { Command } from 'commander';
import { readConfig } from '../../viewer-api/config.js';
import { createExchange } from '../../viewer-api/exchange.js';
import { positiveInt, report, type OutputOptions } from '../../viewer-api/cli/output.js';
import type { QualityReport } from '../../store/records/records.repository.js';
import { facilityQualityReport } from './quality.report.js';

/**
 * `hakobune quality --facility ID [--snapshot ID] [--json]`: the data-quality report of a
 * facility: counts by finding, then each finding with its file path and reason. Without
 * --snapshot it covers every file of the facility's latest indexed state; with it, the files
 * that snapshot brought.
 */
export function registerQualityCommand(program: Command): void {
  program
    .command('quality')
    .description("a facility's SS-MIX2 data-quality report (from the record index)")
    .requiredOption('--facility <id>', 'facility id')
    .option('--snapshot <id>', 'only the files new in this snapshot')
    .option('--limit <n>', 'at most this many findings listed', positiveInt('--limit'), 10_000)
    .option('--json', 'print the report as JSON')
    .action(async (opts: OutputOptions & { facility: string; snapshot?: string; limit: number }) => {
      const exchange = await createExchange(readConfig());
      try {
        const q = await facilityQualityReport(exchange.db, opts.facility, opts.snapshot, opts.limit);
        report(opts, q, () => renderQuality(q));
      } finally {
        await exchange.stop();
      }
    });
}

export function renderQuality(q: QualityReport): string {
  const scope = q.scope === 'snapshot' ? `files new in snapshot ${q.snapshotId}` : `files of the indexed state (snapshot ${q.snapshotId})`;
  const lines = [
    `Data quality of facility ${q.facilityId}: ${scope}`,
    `  ${q.files} files, ${q.flagged} flagged (kept in the backup, not served as records)`,
    '',
  ];
  if (q.counts.length === 0) {
    lines.push('No findings.');
    return lines.join('\n');
  }
  lines.push('Findings by kind:');
  const w = Math.max(...q.counts.map((c) => c.code.length));
  for (const c of q.counts) lines.push(`  ${c.severity.padEnd(7)} ${c.code.padEnd(w)}  ${c.count}`);
  lines.push('', 'Findings:');
  let last = '';
  for (const f of q.findings) {
    if (f.path !== last) lines.push(`  ${f.path}`);
    last = f.path;
    const where = [f.field, f.byteOffset !== null ? `byte ${f.byteOffset}` : null].filter(Boolean).join(', ');
    lines.push(`    ${f.severity} ${f.code}${where ? ` (${where})` : ''}: ${f.reason}`);
  }
  const total = q.counts.reduce((n, c) => n + c.count, 0);
  if (total > q.findings.length) lines.push(`  ... ${total - q.findings.length} more (raise --limit or use --json)`);
  return lines.join('\n');
}
