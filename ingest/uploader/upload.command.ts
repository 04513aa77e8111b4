import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { report, UsageError, type OutputOptions } from '../../viewer-api/cli/usage.js';
import { formatBytes, progressView } from './progress.js';
import { httpTransport } from './transport.js';
import { uploadTree, UploadFailedError, UploadInputError, type UploadSummary } from './upload.js';

interface UploadCliOptions extends OutputOptions {
  server: string;
  facility: string;
  token?: string;
  root: string;
  extended?: string;
  cache?: string;
  changes?: string;
  overlap?: boolean;
  progress?: boolean;
}

/** How many problem lines are printed before they are only counted. */
const MAX_PROBLEM_LINES = 100;

/** The default cache lives in the user's cache folder, never beside the hospital's tree. */
export function defaultCacheFile(facilityId: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(os.homedir(), '.cache');
  return path.join(base, 'hakobune', `${facilityId}.cache`);
}

function checkServerUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new UsageError(`--server "${v}" is not a URL (e.g. https://exchange.example.jp)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--server must be an http:// or https:// URL, got "${v}"`);
  if (u.username || u.password) throw new UsageError('--server must not carry credentials; pass the token with HAKOBUNE_UPLOAD_TOKEN');
  return u.toString().replace(/\/+$/, '');
}

function human(s: UploadSummary): string {
  const lines = [
    `snapshot ${s.snapshotId} of facility ${s.facilityId}: ${s.files} files, ${formatBytes(s.bytes)}`,
    `  scan: ${s.scan === 'none' ? 'resumed from the interrupted run' : s.scan === 'feed' ? 'folders named by the change feed' : 'whole tree'}; ` +
      `${s.hashedFiles} files read (${formatBytes(s.hashedBytes)}), ${s.unchangedFiles} unchanged, ${s.renamedFiles} renamed`,
    `  sent: ${s.manifestEntries} manifest entries (${s.manifest}${s.baseSnapshotId ? ` against ${s.baseSnapshotId}` : ''}, ${s.deletedEntries} deleted), ` +
      `${s.blobsSent} blobs, ${formatBytes(s.bytesSent)}; new on the exchange: ${s.newBlobs} blobs, ${formatBytes(s.newBytes)}`,
    `  ${s.seconds} s (scan ${s.scanSeconds} s)${s.resumed ? ', resumed an interrupted upload' : ''}`,
  ];
  const problems = Object.entries(s.problems);
  if (problems.length > 0) lines.push(`  NOT backed up (see the warnings above): ${problems.map(([k, n]) => `${n} ${k}`).join(', ')}`);
  return lines.join('\n');
}

export function registerUploadCommand(program: Command): void {
  configureUploadCommand(program.command('upload'));
}

/** Gives a command the uploader's options and action (`hakobune upload`, run by ingest/uploader/cli.ts). */
export function configureUploadCommand(command: Command): Command {
  return command
    .description("back up a facility's SS-MIX2 storage to the exchange (sends only what the exchange lacks; resumes when run again)")
    .requiredOption('--server <url>', 'the exchange, e.g. https://exchange.example.jp')
    .requiredOption('--facility <id>', 'the facility ID the exchange registered')
    .option('--token <token>', 'the uploader token (better: set HAKOBUNE_UPLOAD_TOKEN, which ps does not show)')
    .requiredOption('--root <dir>', 'the standardized-storage root')
    .option('--extended <dir>', 'the extended-storage root')
    .option('--cache <file>', 'the local cache file (default ~/.cache/hakobune/<facility>.cache)')
    .option('--changes <dir>', 'a transaction-storage folder (TR_*.DAT): rescan only the folders it names since the last run')
    .option('--overlap', 'send the manifest and blobs while the scan runs, small files read once (the default)')
    .option('--no-overlap', 'scan the whole tree first, then send (the exchange holds no upload open during the scan)')
    .option('--progress', 'show a progress bar even when stderr is not a terminal')
    .option('--json', 'print the summary as JSON')
    .action(async (opts: UploadCliOptions) => {
      const server = checkServerUrl(opts.server);
      const token = opts.token ?? process.env.HAKOBUNE_UPLOAD_TOKEN;
      if (!token) throw new UsageError('no uploader token: pass --token or set HAKOBUNE_UPLOAD_TOKEN');
      const cacheFile = path.resolve(opts.cache ?? defaultCacheFile(opts.facility));
      const view = progressView({ bar: Boolean(opts.progress || process.stderr.isTTY), stream: process.stderr });
      const say = (s: string) => {
        view.stop();
        process.stderr.write(`hakobune upload: ${s}\n`);
      };
      let shown = 0;
      let summary: UploadSummary;
      try {
        summary = await uploadTree(
          { server, facilityId: opts.facility, root: opts.root, extended: opts.extended, cacheFile, changesDir: opts.changes, overlap: opts.overlap !== false },
          {
            transport: httpTransport({ server, token }),
            onProblem: (p) => {
              if (shown++ < MAX_PROBLEM_LINES) say(`warning: ${p.kind}: ${p.path}: ${p.detail}`);
              else if (shown === MAX_PROBLEM_LINES + 1) say('warning: more problems: only counted from here on');
            },
            onNote: (n) => say(n),
            onProgress: (p) => view.update(p),
          },
        );
      } catch (e) {
        view.stop();
        if (e instanceof UploadInputError) throw new UsageError(e.message);
        if (e instanceof UploadFailedError) throw new Error(`upload failed: ${e.message}`);
        throw new Error(`upload failed: ${(e as Error).message}; running the same command again resumes the upload`, { cause: e });
      }
      view.stop();
      report(opts, summary, () => human(summary));
    });
}
