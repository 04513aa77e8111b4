import fs from 'node:fs';
import type { Command } from 'commander';
import { readConfig } from '../viewer-api/config.js';
import { report, UsageError, positiveInt, type OutputOptions } from '../viewer-api/cli/output.js';
import { openDatabase } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { ExchangeError } from '../store/errors.js';
import { pino } from 'pino';
import type { Db } from '../store/db.js';
import { createAuditLog } from '../viewer-api/audit/audit.service.js';
import { createConsentModule, type ConsentModule } from './consent.module.js';
import { createMatchRuns } from './match-runs.js';
import { inlineSearch } from './match-search.js';
import { FACILITY_KINDS, type FacilityKind } from './model.js';

/**
 * `hakobune links ...`, `hakobune consent ...`, `hakobune participation ...`,
 * `hakobune disaster ...`: administration of identity links and consent from the command line,
 * on the configured database (in the embedded mode, with the server stopped).
 */

async function withModule<T>(fn: (m: ConsentModule, db: Db) => Promise<T>, match?: { autoLinkAt: number | null; reviewAt: number }): Promise<T> {
  const config = readConfig();
  const database = await openDatabase(config);
  try {
    await migrateToLatest(database.db);
    const module = createConsentModule({
      db: database.db,
      match,
      // Signed forms are uploaded through the viewer API, which owns the blob store.
      evidence: {
        put: async () => {
          throw new ExchangeError('not-implemented', 'signed consent forms are uploaded through the viewer API, not the command line');
        },
      },
    });
    return await fn(module, database.db);
  } finally {
    await database.close();
  }
}

function key(facility: string, localId: string) {
  return { facilityId: facility, localId };
}

const bool = (name: string) => (v: string): boolean => {
  if (v === 'true' || v === 'yes') return true;
  if (v === 'false' || v === 'no') return false;
  throw new UsageError(`${name} must be true or false, got "${v}"`);
};

const instant = (name: string) => (v: string): number => {
  const t = Date.parse(v);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(v) || Number.isNaN(t)) throw new UsageError(`${name} must be an ISO date-time such as 2026-03-11T14:46:00+09:00, got "${v}"`);
  return t;
};

interface ActorOpts extends OutputOptions {
  by: string;
  reason: string;
}

export function registerConsentCommands(program: Command): void {
  const links = program.command('links').description('patient identity links across facilities (名寄せ)');

  links
    .command('review')
    .description('list proposed pairs waiting for a decision, best score first')
    .option('--limit <n>', 'how many', positiveInt('--limit'), 50)
    .option('--json', 'print JSON')
    .action((opts: OutputOptions & { limit: number }) =>
      withModule(async (m) => {
        const rows = await m.identity.reviewQueue({ limit: opts.limit });
        report(opts, rows, () =>
          rows.length
            ? rows.map((r) => `#${r.id}  score ${r.score}  ${r.a.facilityId}/${r.a.localId} ~ ${r.b.facilityId}/${r.b.localId}  (${r.reasons.join(', ')})`).join('\n')
            : 'no pairs waiting for review',
        );
      }),
    );

  for (const verb of ['accept', 'reject'] as const) {
    links
      .command(`${verb} <matchId>`)
      .description(verb === 'accept' ? 'confirm a proposed pair: link both local IDs to one patient' : 'record that a proposed pair are different people')
      .requiredOption('--by <user>', 'who decides')
      .requiredOption('--reason <text>', 'why')
      .option('--json', 'print JSON')
      .action((id: string, opts: ActorOpts) =>
        withModule(async (m) => {
          const n = positiveInt('matchId')(id);
          if (verb === 'accept') {
            const r = await m.identity.acceptMatch(opts.by, n, opts.reason);
            report(opts, r, () => `linked to ${r.regionalId}`);
          } else {
            await m.identity.rejectMatch(opts.by, n, opts.reason);
            report(opts, { rejected: n }, () => `pair #${n} rejected; it will not be proposed again`);
          }
        }),
      );
  }

  links
    .command('enrol <facility> <localId>')
    .description('link a local patient ID at enrolment (to --patient, or to a new regional patient)')
    .option('--patient <regionalId>', 'an existing regional patient')
    .requiredOption('--by <user>', 'who enrols')
    .requiredOption('--evidence <text>', 'what was checked (insurance card, ID, signed form)')
    .option('--json', 'print JSON')
    .action((facility: string, localId: string, opts: OutputOptions & { by: string; evidence: string; patient?: string }) =>
      withModule(async (m) => {
        const l = await m.identity.enrol(opts.by, key(facility, localId), { regionalId: opts.patient, evidence: opts.evidence });
        report(opts, l, () => `${facility}/${localId} linked to ${l.regionalId}`);
      }),
    );

  links
    .command('unlink <facility> <localId>')
    .description('remove a link: the local ID is then shared with nobody')
    .requiredOption('--by <user>', 'who unlinks')
    .requiredOption('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action((facility: string, localId: string, opts: ActorOpts) =>
      withModule(async (m) => {
        await m.identity.unlink(opts.by, key(facility, localId), opts.reason);
        report(opts, { unlinked: `${facility}/${localId}` }, () => `${facility}/${localId} unlinked`);
      }),
    );

  links
    .command('merge <from> <into>')
    .description('merge two regional patients found to be one person')
    .requiredOption('--by <user>', 'who merges')
    .requiredOption('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action((from: string, into: string, opts: ActorOpts) =>
      withModule(async (m) => {
        await m.identity.merge(opts.by, from, into, opts.reason);
        report(opts, { from, into }, () => `${from} merged into ${into}`);
      }),
    );

  links
    .command('split <regionalId> <facilityLocal...>')
    .description('split local IDs (written FACILITY/LOCALID) off a regional patient into a new one')
    .requiredOption('--by <user>', 'who splits')
    .requiredOption('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action((regionalId: string, items: string[], opts: ActorOpts) => {
      const keys = items.map((s) => {
        const i = s.indexOf('/');
        if (i <= 0 || i === s.length - 1) throw new UsageError(`write local IDs as FACILITY/LOCALID, got "${s}"`);
        return key(s.slice(0, i), s.slice(i + 1));
      });
      return withModule(async (m) => {
        const p = await m.identity.split(opts.by, regionalId, keys, opts.reason);
        report(opts, p, () => `split into new regional patient ${p.id}`);
      });
    });

  links
    .command('history <regionalId>')
    .description("a regional patient's links and every change to them")
    .option('--json', 'print JSON')
    .action((regionalId: string, opts: OutputOptions) =>
      withModule(async (m) => {
        const h = await m.identity.history(regionalId);
        report(opts, h, () =>
          [
            `${h.patient.id}${h.patient.mergedInto ? ` (merged into ${h.patient.mergedInto})` : ''}`,
            ...h.links.map((l) => `  linked ${l.facilityId}/${l.localId} (${l.method} by ${l.linkedBy})`),
            ...h.events.map((e) => `  ${new Date(e.at).toISOString()} ${e.actor} ${e.action}/${e.operation} ${e.facilityId}/${e.localId} ${e.previousRegionalId ?? '-'} -> ${e.regionalId ?? '-'}: ${e.reason}`),
          ].join('\n'),
        );
      }),
    );

  links
    .command('match')
    .description('run the matcher over every known local patient: queue proposals (and auto-link with --auto-link-at)')
    .option('--auto-link-at <score>', 'auto-link pairs scoring at least this (off by default)', positiveInt('--auto-link-at'))
    .option('--review-at <score>', 'queue pairs scoring at least this', positiveInt('--review-at'), 10)
    .option('--by <name>', 'who runs it (recorded with the run)', 'command line')
    .option('--reason <text>', 'why (recorded with the run)')
    .option('--json', 'print JSON')
    .action((opts: OutputOptions & { autoLinkAt?: number; reviewAt: number; by: string; reason?: string }) =>
      withModule(
        async (m, db) => {
          // In this process (inline search), but as a run in the run table like one asked over
          // HTTP: one at a time across the network, shown by GET /api/admin/links/match, audited.
          const runs = createMatchRuns({ db, identity: m.identity, audit: createAuditLog(db, Date.now), log: pino({ level: 'silent' }), enqueue: async () => {}, search: inlineSearch });
          const asked = await runs.request({ userId: null, username: opts.by, facilityId: null, role: 'operator' }, opts.reason ?? null);
          await runs.execute(asked.id, { progress: async () => {} });
          const run = (await runs.get(asked.id))!;
          if (run.status === 'failed') throw new ExchangeError('unprocessable', `match run ${run.id} failed: ${run.error}`);
          if (!run.summary) throw new ExchangeError('conflict', `match run ${run.id} was taken by a job runner meanwhile; follow it with GET /api/admin/links/match/${run.id}`);
          const s = run.summary;
          report(opts, { runId: run.id, ...s }, () => `${run.id}: ${s.localPatients} local patients: ${s.candidates} candidate pairs, ${s.autoLinked} auto-linked, ${s.queued} queued for review, ${s.skipped} already decided`);
        },
        { autoLinkAt: opts.autoLinkAt ?? null, reviewAt: opts.reviewAt },
      ),
    );

  const consent = program.command('consent').description("patients' consent records");

  consent
    .command('show <regionalId>')
    .description('every version of the consent of a regional patient')
    .option('--json', 'print JSON')
    .action((regionalId: string, opts: OutputOptions) =>
      withModule(async (m) => {
        const vs = await m.consent.versions(regionalId);
        report(opts, vs, () =>
          vs.length
            ? vs.map((v) => `v${v.version} ${v.status} recorded ${new Date(v.recordedAt).toISOString()} by ${v.recordedBy}; valid ${new Date(v.validFrom).toISOString()} .. ${v.validTo === null ? 'open' : new Date(v.validTo).toISOString()}`).join('\n')
            : `no consent recorded for ${regionalId}`,
        );
      }),
    );

  consent
    .command('export <regionalId>')
    .description('the consent versions as FHIR R4 Consent resources (JSON)')
    .action((regionalId: string) =>
      withModule(async (m) => {
        process.stdout.write(JSON.stringify(await m.consent.exportFhir(regionalId), null, 2) + '\n');
      }),
    );

  consent
    .command('import <file>')
    .description('record a FHIR R4 Consent resource (JSON file) as a new version')
    .requiredOption('--by <user>', 'who imports')
    .option('--json', 'print JSON')
    .action((file: string, opts: OutputOptions & { by: string }) =>
      withModule(async (m) => {
        let resource: unknown;
        try {
          resource = JSON.parse(fs.readFileSync(file, 'utf8'));
        } catch (e) {
          throw new UsageError(`cannot read ${file} as JSON: ${(e as Error).message}`);
        }
        const v = await m.consent.importFhir(opts.by, resource);
        report(opts, v, () => `recorded ${v.id} (version ${v.version}, ${v.status})`);
      }),
    );

  consent
    .command('withdraw <regionalId>')
    .description('record a withdrawal, effective immediately')
    .requiredOption('--by <user>', 'who records it')
    .requiredOption('--reason <text>', 'how the patient withdrew')
    .option('--json', 'print JSON')
    .action((regionalId: string, opts: ActorOpts) =>
      withModule(async (m) => {
        const v = await m.consent.withdraw(opts.by, regionalId, opts.reason);
        report(opts, v, () => `consent of ${regionalId} withdrawn (version ${v.version})`);
      }),
    );

  const participation = program.command('participation').description('whether facilities disclose, view, or both');
  participation
    .command('set <facility>')
    .requiredOption('--kind <kind>', `one of ${FACILITY_KINDS.join(', ')}`)
    .requiredOption('--discloses <bool>', 'shares its records through the exchange', bool('--discloses'))
    .requiredOption('--views <bool>', "reads other facilities' records", bool('--views'))
    .requiredOption('--by <user>', 'who changes it')
    .requiredOption('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action((facility: string, opts: ActorOpts & { kind: string; discloses: boolean; views: boolean }) => {
      if (!(FACILITY_KINDS as readonly string[]).includes(opts.kind)) throw new UsageError(`--kind must be one of ${FACILITY_KINDS.join(', ')}`);
      return withModule(async (m) => {
        const p = await m.consent.setParticipation(opts.by, { facilityId: facility, kind: opts.kind as FacilityKind, discloses: opts.discloses, views: opts.views }, opts.reason);
        report(opts, p, () => `${facility} (${p.kind}): discloses ${p.discloses}, views ${p.views}`);
      });
    });
  participation
    .command('list')
    .option('--json', 'print JSON')
    .action((opts: OutputOptions) =>
      withModule(async (m) => {
        const all = await m.consent.allParticipation();
        report(opts, all, () => all.map((p) => `${p.facilityId}\t${p.kind}\tdiscloses ${p.discloses}\tviews ${p.views}`).join('\n') || 'no facility participates yet');
      }),
    );

  const disaster = program.command('disaster').description('disaster declarations that open the emergency rules');
  disaster
    .command('declare')
    .requiredOption('--facilities <list>', "'all' or comma-separated facility ids")
    .requiredOption('--from <instant>', 'start (ISO date-time)', instant('--from'))
    .requiredOption('--to <instant>', 'end, exclusive (ISO date-time)', instant('--to'))
    .requiredOption('--by <user>', 'the disaster-recovery operator')
    .requiredOption('--reason <text>', 'what happened')
    .option('--json', 'print JSON')
    .action((opts: ActorOpts & { facilities: string; from: number; to: number }) =>
      withModule(async (m) => {
        const facilities = opts.facilities === 'all' ? 'all' : opts.facilities.split(',').map((s) => s.trim()).filter(Boolean);
        const d = await m.consent.declareDisaster(opts.by, { facilities, from: opts.from, to: opts.to, reason: opts.reason });
        report(opts, d, () => `declared ${d.id}`);
      }),
    );
  disaster
    .command('end <id>')
    .requiredOption('--by <user>', 'the disaster-recovery operator')
    .requiredOption('--reason <text>', 'why it ends now')
    .option('--json', 'print JSON')
    .action((id: string, opts: ActorOpts) =>
      withModule(async (m) => {
        await m.consent.endDisaster(opts.by, id, opts.reason);
        report(opts, { ended: id }, () => `${id} ended`);
      }),
    );
  disaster
    .command('list')
    .option('--json', 'print JSON')
    .action((opts: OutputOptions) =>
      withModule(async (m) => {
        const all = await m.consent.disasters();
        report(opts, all, () =>
          all.map((d) => `${d.id}\t${new Date(d.from).toISOString()} .. ${new Date(d.to).toISOString()}\t${d.facilities === 'all' ? 'all' : d.facilities.join(',')}${d.endedAt ? `\tended ${new Date(d.endedAt).toISOString()}` : ''}\t${d.reason}`).join('\n') || 'no disaster declared',
        );
      }),
    );
}
