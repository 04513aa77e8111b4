import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { verifyAuditChain } from '../audit/audit.service.js';
import { readAuditHead, searchAudit } from '../audit/audit.repository.js';
import { toAuditEvent } from '../audit/audit.fhir.js';
import { ROLES } from '../roles/roles.js';
import { report, UsageError, type OutputOptions } from './output.js';
import { cliContext, withExchange } from './command-context.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

function instant(name: string) {
  return (v: string): Date => {
    const t = Date.parse(v);
    if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(t)) throw new UsageError(`${name} must be a date or ISO 8601 instant, got "${v}"`);
    return new Date(t);
  };
}

interface UserOpts extends OutputOptions {
  facility: string;
  username: string;
}

/** `hakobune user ...`, `hakobune device ...`, `hakobune audit ...`. */
export function registerViewerCommands(program: Command): void {
  const user = program.command('user').description('viewer users (enrolment with password and TOTP)');
  user
    .command('add')
    .description('enrol a user: prints the TOTP secret once (and a generated password unless --password-stdin)')
    .requiredOption('--facility <id>', 'facility id, e.g. F001')
    .requiredOption('--username <name>', 'login name (lower case)')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--name <display>', 'display name (default: the user name)')
    .option('--password-stdin', 'read the password from standard input instead of generating one')
    .option('--json', 'print the result as JSON')
    .action(async (opts: UserOpts & { role: string; name?: string; passwordStdin?: boolean }) => {
      const password = opts.passwordStdin ? await readStdin() : randomBytes(15).toString('base64url');
      const e = await withExchange((x) =>
        x.viewer.admin.addUser(cliContext('user add'), {
          facilityId: opts.facility,
          username: opts.username,
          displayName: opts.name ?? opts.username,
          role: opts.role,
          password,
        }),
      );
      const shown = { ...e, ...(opts.passwordStdin ? {} : { password }) };
      report(opts, shown, () =>
        [
          `enrolled ${e.username} (${e.role}) at ${e.facilityId}, user id ${e.userId}`,
          ...(opts.passwordStdin ? [] : [`  password:    ${password}`]),
          `  TOTP secret: ${e.totpSecret}`,
          `  TOTP URI:    ${e.totpUri}`,
          'Give these to the user now: the exchange never shows them again.',
        ].join('\n'),
      );
    });

  for (const [name, disabled] of [
    ['disable', true],
    ['enable', false],
  ] as const) {
    user
      .command(name)
      .description(disabled ? 'disable a user and end their sessions' : 'enable a disabled user')
      .requiredOption('--facility <id>', 'facility id')
      .requiredOption('--username <name>', 'login name')
      .option('--json', 'print the result as JSON')
      .action(async (opts: UserOpts) => {
        await withExchange((x) => x.viewer.admin.setUserDisabled(cliContext(`user ${name}`), opts.facility, opts.username, disabled));
        report(opts, { facilityId: opts.facility, username: opts.username, disabled }, () => `${opts.username} at ${opts.facility} ${name}d`);
      });
  }

  user
    .command('revoke-sessions')
    .description("end every open session of a user")
    .requiredOption('--facility <id>', 'facility id')
    .requiredOption('--username <name>', 'login name')
    .option('--json', 'print the result as JSON')
    .action(async (opts: UserOpts) => {
      const n = await withExchange((x) => x.viewer.admin.revokeUserSessions(cliContext('user revoke-sessions'), opts.facility, opts.username));
      report(opts, { revoked: n }, () => `${n} session(s) revoked`);
    });

  const device = program.command('device').description('registered devices (terminals allowed to log in)');
  device
    .command('register')
    .description('register a device of a facility: prints its credential once')
    .requiredOption('--facility <id>', 'facility id')
    .requiredOption('--label <text>', 'what the device is, e.g. "ward 3 terminal"')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { facility: string; label: string }) => {
      const d = await withExchange((x) => x.viewer.admin.registerDevice(cliContext('device register'), opts.facility, opts.label));
      report(opts, d, () =>
        [
          `registered device ${d.deviceId} (${d.label}) at ${d.facilityId}`,
          `  credential: ${d.credential}`,
          'Install it on the device (sent as the X-Device-Credential header); it is never shown again.',
        ].join('\n'),
      );
    });
  device
    .command('revoke <deviceId>')
    .description('revoke a device: it can no longer log in and its sessions end')
    .option('--json', 'print the result as JSON')
    .action(async (deviceId: string, opts: OutputOptions) => {
      await withExchange((x) => x.viewer.admin.revokeDevice(cliContext('device revoke'), deviceId));
      report(opts, { deviceId, revoked: true }, () => `device ${deviceId} revoked`);
    });
  device
    .command('list')
    .description("list a facility's devices")
    .requiredOption('--facility <id>', 'facility id')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions & { facility: string }) => {
      const list = await withExchange((x) => x.viewer.admin.listDevices(opts.facility));
      report(opts, list, () =>
        list.length
          ? list.map((d) => `${d.id}  ${d.revokedAt ? 'revoked' : 'active '}  ${d.label}`).join('\n')
          : `no devices at ${opts.facility}`,
      );
    });

  const audit = program.command('audit').description('the tamper-evident audit trail');
  audit
    .command('verify')
    .description('recompute the hash chain; exit 1 and name the first bad entry when it is broken')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const r = await withExchange((x) => verifyAuditChain(x.db));
      report(opts, r, () =>
        r.ok
          ? `audit chain intact: ${r.entries} entries, head ${r.head.lastHash}`
          : `audit chain BROKEN at entry ${r.problem!.seq} (${r.problem!.kind}): ${r.problem!.message}`,
      );
      if (!r.ok) throw new Error(`the audit chain is broken at entry ${r.problem!.seq}`);
    });
  audit
    .command('anchor')
    .description('print the chain head (count and last hash) for an operator to record outside the exchange')
    .option('--json', 'print the result as JSON')
    .action(async (opts: OutputOptions) => {
      const head = await withExchange((x) => readAuditHead(x.db));
      const value = { count: head.count, lastHash: head.lastHash, readAt: new Date().toISOString() };
      report(opts, value, () => `audit head: ${head.count} entries, last hash ${head.lastHash} (read ${value.readAt})`);
    });
  audit
    .command('export')
    .description('export entries as a FHIR R4 Bundle of AuditEvent resources')
    .requiredOption('--from <instant>', 'first instant (inclusive), e.g. 2026-11-01', instant('--from'))
    .requiredOption('--to <instant>', 'last instant (exclusive)', instant('--to'))
    .option('--out <file>', 'write to a file instead of standard output')
    .action(async (opts: { from: Date; to: Date; out?: string }) => {
      if (opts.from.getTime() >= opts.to.getTime()) throw new UsageError('--from must be before --to');
      const out = opts.out ? fs.createWriteStream(opts.out, { flags: 'wx' }) : process.stdout;
      const count = await withExchange(async (x) => {
        // Streamed page by page: an export of a year must not be held in memory.
        out.write('{"resourceType":"Bundle","type":"collection","entry":[');
        let n = 0;
        let after = 0;
        for (;;) {
          const page = await searchAudit(x.db, { from: opts.from, to: opts.to, afterSeq: after, limit: 1000 });
          for (const e of page) out.write((n++ ? ',' : '') + JSON.stringify({ resource: toAuditEvent(e) }));
          if (page.length < 1000) break;
          after = page[page.length - 1]!.seq;
        }
        out.write(']}\n');
        await x.viewer.audit.record({
          action: 'audit.export',
          outcome: 'success',
          actor: cliContext('audit export').actor,
          endpoint: 'cli: hakobune audit export',
          detail: { from: opts.from.toISOString(), to: opts.to.toISOString(), entries: n, file: opts.out ?? null },
        });
        return n;
      });
      if (opts.out) {
        await new Promise<void>((resolve, reject) => (out as fs.WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
        process.stderr.write(`exported ${count} audit event(s) to ${opts.out}\n`);
      }
    });
}
