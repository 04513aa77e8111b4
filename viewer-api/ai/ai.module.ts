import fs from 'node:fs';
import { hkdfSync } from 'node:crypto';
import type Router from '@koa/router';
import type { Logger } from 'pino';
import { postgresDb, type Db } from '../../store/db.js';
import type { Config } from '../config.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { AuthService } from '../auth/auth.service.js';
import { SecretBox } from '../auth/secret-box.js';
import type { RolePolicy } from '../roles/roles.js';
import { securityHeaders } from '../routes/hygiene.js';
import { createDecisionContextLoader, createParticipationCache, type DecisionContextLoader, type ParticipationCache } from '../../consent/decision-context.js';
import { defaultPolicy, type ConsentPolicy } from '../../consent/policy.js';
import { createAnswerValidator } from './answer-validator.js';
import { AiClient } from './ai-client.js';
import { createAiQueue, type AiQueue } from './ai.queue.js';
import { createInlinePreparer, createWorkerPreparer, defaultPreparerThreads } from './deid-pool.js';
import { aiRouter } from './ai.routes.js';
import { createAiFlow, type AiFlow } from './ai.service.js';
import { createAiRegistry, type AiRegistry } from './registry.service.js';
import { requeueStale, queuedRequestIds } from './requests.repository.js';

/** The AI feature wired for the composition root: registry, client, flow, queue and routes. */
export interface AiModule {
  readonly routers: Router[];
  readonly registry: AiRegistry;
  readonly flow: AiFlow;
  readonly client: AiClient;
  readonly queue: AiQueue;
  /** Starts the workers and queues requests left waiting by a previous run. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface AiModuleDeps {
  db: Db;
  config: Config;
  log: Logger;
  clock: () => number;
  audit: AuditLog;
  auth: AuthService;
  roles: RolePolicy;
  /** The consent decision context (default: a loader of its own over the same database). */
  contexts?: DecisionContextLoader;
  /** The consent policy and participation cache: with them the AI flow reads consent over its own connections. */
  consent?: { policy: ConsentPolicy; participation: ParticipationCache };
  /**
   * PostgreSQL connections of the AI flow's own (default 8; 0: the exchange's pool). Many
   * analyses in flight then never take the connections the viewer's requests need.
   */
  poolSize?: number;
  /** BullMQ key prefix (tests give a unique one). */
  queuePrefix?: string;
  concurrency?: number;
  /** Threads that build and de-identify Bundles (default: cores less one, at least one); 0: in the event loop's thread. */
  preparerThreads?: number;
}

/**
 * The key of pseudonyms, derived (HKDF-SHA-256, RFC 5869) from the exchange's secret key file:
 * one secret to protect, and a pseudonym key that is useless for anything else.
 */
export function pseudonymKeyFrom(secretKeyFile: string): Buffer {
  SecretBox.fromKeyFile(secretKeyFile); // creates the file on first use
  const ikm = Buffer.from(fs.readFileSync(secretKeyFile, 'utf8').trim(), 'base64');
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.from('hakobune'), Buffer.from('ai-pseudonyms-v1'), 32));
}

export function createAiModule(deps: AiModuleDeps): AiModule {
  const log = deps.log.child({ component: 'ai' });
  const box = SecretBox.fromKeyFile(deps.config.auth.secretKeyFile);
  const pseudonymKey = pseudonymKeyFrom(deps.config.auth.secretKeyFile);
  const contexts =
    deps.contexts ?? createDecisionContextLoader(deps.db, { policy: defaultPolicy(), participation: createParticipationCache(deps.db, { ttlMs: 2000, now: deps.clock }) });
  const registry = createAiRegistry({ db: deps.db, box, audit: deps.audit, clock: deps.clock });
  // The flow's reads and writes go over connections of its own (PostgreSQL): a burst of
  // analyses queues there, not in front of the viewer's timeline. (The embedded database is one
  // connection: shared.)
  const poolSize = deps.poolSize ?? 8;
  const own = deps.config.databaseUrl && poolSize > 0 ? postgresDb(deps.config.databaseUrl, poolSize) : undefined;
  const flowDb: Db = own ?? deps.db;
  const flowContexts = own && deps.consent ? createDecisionContextLoader(flowDb, deps.consent) : contexts;
  const flowRegistry = own ? createAiRegistry({ db: flowDb, box, audit: deps.audit, clock: deps.clock }) : registry;
  // Answers are validated in a worker thread: compiling FHIR schemas must not block requests.
  const validator = createAnswerValidator();
  const client = new AiClient({ validate: (r) => validator.validate(r) });
  // Building and de-identifying Bundles is the CPU-heavy part: on worker threads, so that the
  // event loop keeps serving the viewer while analyses are prepared.
  const preparer =
    deps.preparerThreads === 0
      ? createInlinePreparer(pseudonymKey, undefined, box)
      : createWorkerPreparer({ secret: pseudonymKey, keyFile: deps.config.auth.secretKeyFile, threads: deps.preparerThreads ?? defaultPreparerThreads() });
  let queue: AiQueue | undefined;
  const flow = createAiFlow({ db: flowDb, box, audit: deps.audit, clock: deps.clock, log, registry: flowRegistry, client, contexts: flowContexts, consent: deps.consent, roles: deps.roles, pseudonymKey, preparer, queue: () => queue! });
  queue = createAiQueue({ redisUrl: deps.config.redisUrl, prefix: deps.queuePrefix, concurrency: deps.concurrency, log, process: (id) => flow.process(id) });
  const hygiene = securityHeaders({ tls: !!deps.config.tls });
  let started = false;
  return {
    routers: [aiRouter({ auth: deps.auth, flow, registry, hygiene })],
    registry,
    flow,
    client,
    queue,
    async start() {
      if (started) return;
      started = true;
      await queue!.start();
      validator.warm(['RiskAssessment', 'Observation', 'DiagnosticReport', 'Bundle', 'Parameters']);
      // A send interrupted by a crash goes back to the queue after 10 minutes (the longest
      // timeout a service may declare): the claim keeps it from being sent twice meanwhile.
      await requeueStale(deps.db, deps.clock() - 10 * 60_000);
      for (const id of await queuedRequestIds(deps.db)) await queue!.enqueue(id);
    },
    async close() {
      await queue!.close();
      await validator.close();
      await preparer.close();
      await own?.destroy();
    },
  };
}
