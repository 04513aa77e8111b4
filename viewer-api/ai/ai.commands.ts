import fs from 'node:fs';
import type { Command } from 'commander';
import { report, UsageError, positiveInt, type OutputOptions } from '../cli/output.js';
import { startStandIn } from './standin.js';
import { cliContext, withExchange } from '../cli/command-context.js';

/**
 * `hakobune ai service add|list|update|enable|disable` (the network administrator at the
 * machine's shell; audited as `cli:<user>`), and `hakobune ai stand-in`: a local stand-in AI
 * service for the demo.
 */

function readDefinition(file: string): unknown {
  let text: string;
  try {
    text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError(`${file} is not valid JSON`);
  }
}

export function registerAiCommands(program: Command): void {
  const ai = program.command('ai').description('AI services reached through the exchange');
  const service = ai.command('service').description('the registry of AI services (network administrators)');

  service
    .command('add')
    .description('register a service from a JSON definition (see README "AI services")')
    .requiredOption('--file <path>', 'JSON definition, or - for standard input')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { file: string }) => {
      const def = readDefinition(opts.file);
      const v = await withExchange((x) => x.ai.registry.register(cliContext('ai service add'), def));
      report(opts, v, () => `registered AI service ${v.id} (${v.name}) at ${v.baseUrl}, categories ${v.categories.join(', ')}, data centre ${v.location.country}`);
    });

  service
    .command('update <id>')
    .description('change fields of a service from a JSON object (secrets kept unless given)')
    .requiredOption('--file <path>', 'JSON object of the fields to change, or - for standard input')
    .option('--json', 'print the result as JSON')
    .action(async (id: string, opts: OutputOptions & { file: string }) => {
      const patch = readDefinition(opts.file);
      if (!patch || typeof patch !== 'object' || Array.isArray(patch)) throw new UsageError('the update must be a JSON object');
      const v = await withExchange((x) => x.ai.registry.update(cliContext('ai service update'), id, patch as Record<string, unknown>));
      report(opts, v, () => `updated AI service ${v.id}`);
    });

  for (const [name, enabled] of [['enable', true], ['disable', false]] as const) {
    service
      .command(`${name} <id>`)
      .description(`${name} a service`)
      .option('--json', 'print the result as JSON')
      .action(async (id: string, opts: OutputOptions) => {
        const v = await withExchange((x) => x.ai.registry.setEnabled(cliContext(`ai service ${name}`), id, enabled));
        report(opts, v, () => `AI service ${v.id} ${enabled ? 'enabled' : 'disabled'}`);
      });
  }

  service
    .command('list')
    .description('list the registered services (never their secrets)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const all = await withExchange((x) => x.ai.registry.list());
      report(opts, all, () =>
        all.length === 0
          ? 'no AI service registered'
          : all.map((s) => `${s.id}\t${s.enabled ? 'enabled' : 'disabled'}\t${s.location.country}\t${s.baseUrl} ${s.operation}\t${s.categories.join(',')}`).join('\n'),
      );
    });

  ai.command('stand-in')
    .description('run a local stand-in AI service (a FHIR server answering RiskAssessments) for the demo, until Ctrl+C')
    .option('--delay <ms>', 'answer after this many milliseconds', positiveInt('--delay', 0), 0)
    .option('--json', 'print where it listens as JSON')
    .action(async (opts: OutputOptions & { delay: number }) => {
      const s = await startStandIn({ delayMs: opts.delay });
      report(opts, { base: s.base, operation: '$analyze' }, () => `stand-in AI service: FHIR base ${s.base}, operation $analyze (Ctrl+C to stop)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      process.stderr.write(`stand-in received ${s.received.length} request(s)\n`);
      await s.close();
    });
}
