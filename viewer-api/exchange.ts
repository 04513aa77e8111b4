import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type Router from '@koa/router';
import { pino, type Logger } from 'pino';
import { sql } from 'kysely';
import type { Config } from './config.js';
import { createHttpApp } from './app.js';
import { advertiseServerUrl, openDatabase, type DatabaseHandle, type Db } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { openPackStore } from '../store/dr/open-pack-store.js';
import { BackupService } from '../store/backup/backup.service.js';
import { uploadRouter } from '../store/backup/upload.routes.js';
import { createViewer, type Viewer } from './routes/viewer.js';
import { createHash } from 'node:crypto';
import { createConsentModule, type ConsentModule } from '../consent/consent.module.js';
import { indexRecordReader } from './gate/records.reader.js';
import { indexRecordLookup } from './gate/record-lookup.js';
import { cachedFacilityKinds } from './gate/facility-kinds.js';
import { createSessionContextLoader } from './gate/session-context.js';
import { findFacility } from '../store/backup/backup.repository.js';
import { backupSource, createJobs, type Jobs, type JobsOptions } from '../jobs/jobs.js';
import { findRun } from '../store/records/records.repository.js';
import { feedDemographics } from '../consent/identity-feed.js';
import { createMatchRuns, type MatchRuns } from '../consent/match-runs.js';
import { workerSearch } from '../consent/match-search.js';
import { createAiModule, type AiModule } from './ai/ai.module.js';
import { restoreRouter } from './routes/restore.routes.js';
import { retentionRouter } from './routes/retention.routes.js';
import { createDeleteGuard } from '../store/retention/delete-authorization.js';
import { securityHeaders } from './routes/hygiene.js';
import { facilitiesRouter } from './routes/facilities.routes.js';
import { consentAdminRouter } from './routes/consent-admin.routes.js';
import { Redis } from 'ioredis';
import { SharedRateLimiter } from './auth/rate-limit.js';

/**
 * The composition root: the one place that builds the exchange's parts from the configuration
 * and wires them together. Nothing else constructs a database, a store or a queue.
 */
export interface Exchange {
  readonly config: Config;
  readonly log: Logger;
  readonly db: Db;
  readonly databaseKind: DatabaseHandle['kind'];
  /** The deduplicated backup store: facilities, uploads, snapshots, restore and verify. */
  readonly backup: BackupService;
  /** Viewer API: authentication, administration of users and devices, audit. */
  readonly viewer: Viewer;
  /** Patient identity across facilities, consent and the consent decision's context. */
  readonly consent: ConsentModule;
  /** Background jobs (BullMQ with REDIS_URL, in-process otherwise): snapshot indexing. */
  readonly jobs: Jobs;
  /** Runs of the identity matcher over the region (background jobs with progress). */
  readonly matchRuns: MatchRuns;
  /** AI services: registry, analysis requests (de-identified, queued) and their endpoints. */
  readonly ai: AiModule;
  /** Starts the HTTP server; resolves with the URL it answers on. */
  listen(): Promise<string>;
  /** Stops HTTP, then workers, then the database. Safe to call twice. */
  stop(): Promise<void>;
}

export interface ExchangeOptions {
  /** Run migrations when opening (default true). */
  migrate?: boolean;
  /** Milliseconds since the epoch (default Date.now): sessions, lockouts, TOTP and audit times. */
  clock?: () => number;
  /** Job queue options (tests give a unique BullMQ prefix). */
  jobs?: JobsOptions;
  /**
   * Whether listen() also starts this process's background work: the in-process job runner
   * (embedded mode) and the AI queue's worker (default true). With several HTTP processes
   * (`hakobune serve --workers N`) exactly one of them does; the others only serve requests and
   * queue work through Redis.
   */
  background?: boolean;
}

export async function createExchange(config: Config, opts: ExchangeOptions = {}): Promise<Exchange> {
  const log = pino({ level: config.logLevel, base: { service: 'hakobune' } });
  const database = await openDatabase({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, poolSize: config.databasePoolSize });
  const { db } = database;
  try {
    if (opts.migrate !== false) await migrateToLatest(db);
  } catch (e) {
    await database.close();
    throw e;
  }

  const routers: Router[] = [];
  // The local folder or an S3-compatible bucket, encrypted when master keys are configured.
  const packStore = openPackStore(config, db);
  // Committing a snapshot queues its indexing (jobs is assigned just below, before any request).
  // A queue that is down must not fail a commit that succeeded: the catch-up sweep of the next
  // worker start queues what was missed.
  const onCommitted = async (snapshotId: string) => {
    try {
      await jobs.enqueueIndexing(snapshotId);
    } catch (err) {
      log.warn({ err, snapshotId }, 'could not queue the indexing of a committed snapshot');
    }
  };
  const backup = new BackupService(db, packStore, { onCommitted });
  const jobs: Jobs = createJobs(
    {
      config,
      db,
      log,
      source: backupSource(backup),
      restore: { backup, clock: opts.clock ?? Date.now },
      drill: { backup, clock: opts.clock ?? Date.now },
      // What a night's ADT-00 messages say about patients goes to the matcher (consent is built
      // just below, before any job runs).
      afterIndexed: async (r) => {
        const run = await findRun(db, r.snapshotId);
        if (run) await feedDemographics(db, consent.identity, r.facilityId, run.seq);
      },
      // Runs of the matcher over the region (matchRuns is built below, before any job runs).
      matchRuns: { execute: (id, ctx) => matchRuns.execute(id, ctx), pending: () => matchRuns.pending() },
    },
    opts.jobs,
  );
  routers.push(uploadRouter(backup));
  const clock = opts.clock ?? Date.now;
  // Identity, consent and the decision-context loader; signed consent forms go to the blob store.
  const consent = createConsentModule({
    db,
    now: clock,
    evidence: {
      async put(bytes) {
        const data = Buffer.from(bytes);
        const sha256 = createHash('sha256').update(data).digest();
        await backup.blobs.store([{ sha256, data }]);
        return sha256.toString('hex');
      },
    },
  });
  // With Redis the per-address rate limits of logins and bad tokens are counted there, shared by
  // every process of the exchange (several `serve` workers, several machines).
  const limitStore = config.redisUrl ? new Redis(config.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true }) : undefined;
  limitStore?.on('error', (err) => log.warn({ err }, 'rate limit store: redis connection error'));
  const ratePrefix = `${opts.jobs?.queuePrefix ?? 'hakobune'}:rate`;
  let viewer: Viewer;
  try {
    viewer = createViewer({
      db,
      config,
      log,
      clock,
      rateLimit: limitStore
        ? (name, limit, windowMs) => new SharedRateLimiter(limitStore, `${ratePrefix}:${name}`, limit, windowMs, clock, log)
        : undefined,
      clinical: {
        contexts: consent.contexts,
        breakGlass: consent.consent,
        finder: consent.identity,
        records: indexRecordReader(db),
        recordById: indexRecordLookup(db),
        blobs: backup.blobs,
        facilityKind: cachedFacilityKinds(async (id) => (await findFacility(db, id))?.kind, { ttlMs: 60_000, now: Date.now }),
        sessionContexts: createSessionContextLoader(db, { policy: consent.policy, participation: consent.participation }),
      },
    });
  } catch (e) {
    await jobs.close();
    limitStore?.disconnect();
    await database.close();
    throw e;
  }
  routers.push(...viewer.routers);
  // The matcher over the region: a job, its candidate search in a worker thread of its own.
  const matchRuns = createMatchRuns({
    db,
    identity: consent.identity,
    audit: viewer.audit,
    log,
    enqueue: (id) => jobs.enqueueMatchRun(id),
    search: workerSearch(config.matchHeapMb ? { resourceLimits: { maxOldGenerationSizeMb: config.matchHeapMb } } : {}),
    now: clock,
  });
  routers.push(
    restoreRouter({
      auth: viewer.auth,
      audit: viewer.audit,
      roles: viewer.roles,
      hygiene: securityHeaders({ tls: !!config.tls }),
      db,
      backup,
      enqueue: (id, priority) => jobs.enqueueRestore(id, priority),
      restoreRoot: config.restoreRoot,
      clock,
    }),
  );
  routers.push(
    retentionRouter({
      auth: viewer.auth,
      audit: viewer.audit,
      roles: viewer.roles,
      hygiene: securityHeaders({ tls: !!config.tls }),
      db,
      guard: createDeleteGuard(config.retention, db, viewer.audit, clock),
      retention: config.retention,
      clock,
    }),
  );
  // Facilities (quality report, participation) and identity links and consents over HTTP.
  const adminHygiene = securityHeaders({ tls: !!config.tls });
  routers.push(
    facilitiesRouter({ auth: viewer.auth, audit: viewer.audit, roles: viewer.roles, db, participation: consent.consent, hygiene: adminHygiene }),
    consentAdminRouter({
      auth: viewer.auth,
      audit: viewer.audit,
      roles: viewer.roles,
      identity: consent.identity,
      matchRuns,
      consent: consent.consent,
      hygiene: adminHygiene,
      facilityExists: async (id) => !!(await findFacility(db, id)),
    }),
  );
  const ai = createAiModule({ db, config, log, clock: opts.clock ?? Date.now, audit: viewer.audit, auth: viewer.auth, roles: viewer.roles, contexts: consent.contexts, consent, queuePrefix: opts.jobs?.queuePrefix });
  routers.push(...ai.routers);
  const app = createHttpApp({
    log,
    routers,
    health: async () => {
      try {
        await sql`select 1`.execute(db);
        return { database: 'ok' };
      } catch {
        return { database: 'unreachable' };
      }
    },
  });

  let server: http.Server | https.Server | undefined;
  let stopping: Promise<void> | undefined;

  return {
    config,
    log,
    db,
    databaseKind: database.kind,
    backup,
    consent,
    viewer,
    jobs,
    matchRuns,
    ai,
    async listen() {
      if (server) throw new Error('the exchange is already listening');
      // With a certificate the exchange speaks HTTPS only, TLS 1.2 or later (the guideline's
      // encrypted channel for remote access); without one it is plain HTTP for loopback and tests.
      const s = config.tls
        ? https.createServer(
            { cert: fs.readFileSync(config.tls.certFile), key: fs.readFileSync(config.tls.keyFile), minVersion: 'TLSv1.2' },
            app.callback(),
          )
        : http.createServer(app.callback());
      // Slow clients must not hold sockets for ever; uploads of big batches still fit.
      s.requestTimeout = 5 * 60_000;
      s.headersTimeout = 30_000;
      s.keepAliveTimeout = 10_000;
      server = s;
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(config.port, config.host, () => resolve());
      });
      const { port } = s.address() as AddressInfo;
      const url = `${config.tls ? 'https' : 'http'}://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
      if (database.kind === 'embedded') advertiseServerUrl(config.dataDir, url);
      if (opts.background !== false) {
        // Embedded mode: this process is the worker (with Redis, `hakobune worker` processes are).
        if (jobs.runner.kind === 'in-process') await jobs.start();
        await ai.start();
      }
      log.info({ url }, 'exchange listening');
      return url;
    },
    stop() {
      return (stopping ??= (async () => {
        if (server) {
          const s = server;
          await new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeIdleConnections();
          });
        }
        await jobs.close();
        await ai.close();
        limitStore?.disconnect();
        await packStore.close();
        await database.close();
      })());
    },
  };
}
