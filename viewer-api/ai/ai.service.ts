import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../../store/db.js';
import { CATEGORIES } from '../../consent/categories.js';
import { conflict, ExchangeError, forbidden, notFound } from '../../store/errors.js';
import { contextOf, type DecisionContextLoader, type LoadedContext, type ParticipationCache } from '../../consent/decision-context.js';
import type { SessionRecord } from '../auth/auth.repository.js';
import type { DecisionRows } from '../../consent/consent.repository.js';
import type { ConsentPolicy } from '../../consent/policy.js';
import type { Category as IndexCategory, ClinicalRecord } from '../../ingest/records/types.js';
import { queryPatientRecords, type RecordCursor } from '../../store/records/records.repository.js';
import { INDEX_CATEGORIES } from '../gate/records.reader.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { Principal } from '../auth/auth.service.js';
import type { SecretBox } from '../auth/secret-box.js';
import type { Role, RolePolicy } from '../roles/roles.js';
import { AiCallError, LocalSendError, type AiClient } from './ai-client.js';
import { decideAiRequest, type AiRequester, type PermittedSource } from './ai-gate.js';
import type { AiQueue } from './ai.queue.js';
import { consentCategoryOf } from './bundle.js';
import { randomShiftDays } from './dates.js';
import { createInlinePreparer, PreparationError, type Preparer } from './deid-pool.js';
import { reidentify, type FhirJson, type ReidentificationKey } from './deidentify.js';
import type { HeldBody, PatientRecords, Prepared, PreparedBody } from './prepare.js';
import type { AiService } from './registry.js';
import type { AiRegistry } from './registry.service.js';
import * as repo from './requests.repository.js';
import { freshReads, grouped } from '../../store/group.js';

/**
 * The AI request flow: a clinician asks for an analysis of a patient by a registered service.
 * submit (in the HTTP request, kept small): gate -> the request stored (what was permitted
 * sealed) -> audit -> a queued job with the request id -> 202. process (the job): claim ->
 * decide again (a withdrawal since submit stops it) -> the records of the permitted categories
 * as a FHIR Bundle, de-identified (prepare.ts, on worker threads: deid-pool.ts) -> call the
 * service -> re-identify the answer inside the exchange -> store it with the patient. Every
 * step is audited, with the SHA-256 and size of what left the exchange.
 */

export interface AiRequestView {
  id: string;
  serviceId: string;
  patientId: string;
  status: repo.AiRequestStatus;
  detail: string | null;
  attempts: number;
  categories: string[];
  records: number;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
}

/** What a submit read with its session check (AiFlow.preloadSubmit): opaque to the caller. */
export interface SubmitReads {
  regionalId: string;
  userId: number;
  /** The time the consent context was read for; the gate decides at it. */
  at: number;
  context: LoadedContext | undefined;
  versions: repo.IndexVersions;
  service: Promise<AiService | undefined>;
}

export interface AiFlow {
  /**
   * The session check of a submit, with what the submit will need read on the same round trip:
   * the session and the patient's consent context in one statement, the service beside it.
   * Absent when the flow reads consent through a loader of its own (no policy given): the caller
   * then checks the session alone.
   */
  preloadSubmit?(tokenHash: string, req: { serviceId: string; patientId: string }): Promise<{ session: SessionRecord | undefined; reads: SubmitReads | undefined }>;
  /** `reads`: from preloadSubmit for this request (used only if they are for this patient and user). */
  submit(p: Principal, req: { serviceId: string; patientId: string }, endpoint: string, reads?: SubmitReads): Promise<AiRequestView>;
  status(p: Principal, id: string): Promise<AiRequestView>;
  result(p: Principal, id: string, endpoint: string): Promise<{ request: AiRequestView; result: FhirJson }>;
  /** The job processor: idempotent, safe to run twice for one id. */
  process(requestId: string): Promise<void>;
}

export interface AiFlowDeps {
  db: Db;
  box: SecretBox;
  audit: AuditLog;
  clock: () => number;
  log: Logger;
  registry: AiRegistry;
  client: AiClient;
  contexts: DecisionContextLoader;
  /** With the consent policy and participation cache, the job reads its decision context with its claim (one statement). */
  consent?: { policy: ConsentPolicy; participation: ParticipationCache };
  roles: RolePolicy;
  /** HMAC key of pseudonyms (32 bytes or more), the exchange's secret. */
  pseudonymKey: Buffer;
  queue: () => AiQueue;
  /** Where Bundles are built and de-identified (default: in this thread, with its own cache). */
  preparer?: Preparer;
  /** At most this many records go into one request (the newest). */
  maxRecords?: number;
  /** Shift for one request (default random, 30..365 days either way). */
  shiftDays?: () => number;
}

interface SealedKey {
  /** Present once the request was prepared. */
  key?: ReidentificationKey;
  /** What was permitted at submit: checked again before sending. */
  sources: PermittedSource[];
}

/** Statements of one kind (insert, claim, finish, consent reads) in flight at once for the requests in flight. */
const GROUPS_IN_FLIGHT = 2;

/**
 * A decision older than this when the Bundle is ready (the de-identification threads were busy)
 * is taken again before anything is sent.
 */
export const REDECIDE_AFTER_MS = 2000;

/** A request whose decision is taken, ready to be prepared and sent. */
interface Decided {
  requestId: string;
  row: Pick<repo.AiRequestRow, 'userId' | 'facilityId' | 'role' | 'regionalId' | 'createdAt'>;
  service: AiService;
  /** What is sent: the permitted (local ID, categories) pairs. */
  sources: PermittedSource[];
  /** Every current link of the patient: their demographics are scrubbed from what is sent. */
  links: { facilityId: string; localId: string }[];
  /** Published index versions known so far (the rest are read when the Bundle's cache key is made). */
  versions: repo.IndexVersions;
  /** When the decision was taken (the clock of its consent read). */
  decidedAt: number;
}

/** What was prepared for sending, written with the request's outcome. */
interface PreparedFields {
  records: number;
  report: Record<string, unknown>;
  reidKeyEnc: Buffer;
}

/** The audit trail's who and what of a request's job. */
const trailOf = (row: Pick<repo.AiRequestRow, 'userId' | 'facilityId' | 'role' | 'regionalId'>) => ({
  actor: { userId: row.userId, facilityId: row.facilityId, role: row.role },
  address: null,
  endpoint: 'job: ai-request',
  patient: row.regionalId,
  purpose: 'ai-analysis',
});

const aadKey = (id: string) => `ai-request:${id}:key`;

function viewOf(r: repo.AiRequestRow): AiRequestView {
  return {
    id: r.id,
    serviceId: r.serviceId,
    patientId: r.regionalId,
    status: r.status,
    detail: r.statusDetail,
    attempts: r.attempts,
    categories: r.categories,
    records: r.records,
    createdAt: new Date(r.createdAt).toISOString(),
    updatedAt: new Date(r.updatedAt).toISOString(),
    completedAt: r.completedAt ? new Date(r.completedAt).toISOString() : null,
  };
}

/**
 * Names everything a patient's prepared Bundle depends on: the service and patient (pseudonym
 * scope), the permitted (local ID, categories) pairs, the linked local IDs (their demographics
 * are scrubbed), the record limit, and the published index version of every linked facility, so
 * that a newly published night or a new link never reuses an old Bundle.
 */
async function cacheKeyOf(db: Db, claimed: repo.IndexVersions, serviceId: string, regionalId: string, sources: PermittedSource[], links: { facilityId: string; localId: string }[], maxRecords: number): Promise<string> {
  const facilities = [...new Set(links.map((l) => l.facilityId))].sort();
  // Read with the claim for the patient's links then; a facility linked since (or a merged
  // patient's survivor's) is read now.
  const known = facilities.every((f) => claimed.has(f)) ? claimed : await repo.indexVersions(db, facilities);
  const versions = facilities.filter((f) => known.get(f)).map((f) => `${f}@${known.get(f)!}`);
  const src = sources.map((s) => `${s.facilityId}/${s.localId}:${[...s.categories].sort().join(',')}`).sort();
  const lk = links.map((l) => `${l.facilityId}/${l.localId}`).sort();
  return JSON.stringify([serviceId, regionalId, src, lk, maxRecords, versions]);
}

export function createAiFlow(deps: AiFlowDeps): AiFlow {
  const { db, box, audit, clock, client } = deps;
  const services = freshReads<AiService | undefined>();
  const contextReads = freshReads<Awaited<ReturnType<DecisionContextLoader['load']>>>();
  // With the consent policy and participation cache, the consent contexts of the requests in
  // flight are read together, one statement for many patients (store/group.ts): each read starts after
  // its request asked.
  const consent = deps.consent;
  const decisionRows = grouped<{ regionalId: string; userId: string; at: number }, DecisionRows | undefined>((asks) => repo.decisionRowsMany(db, asks), { concurrency: GROUPS_IN_FLIGHT, atTurnEnd: true });
  const loadContext: DecisionContextLoader['load'] = consent
    ? async (regionalId, requester, at) => {
        const [rows, participation] = await Promise.all([decisionRows({ regionalId, userId: requester.userId, at }), consent.participation.get()]);
        return contextOf(rows, participation, consent.policy);
      }
    : (regionalId, requester, at) => deps.contexts.load(regionalId, requester, at);
  /** The registry and the consent context as of `since` (performance.now()) or later. */
  const readsSince = (since: number) => ({
    service: (id: string) => services(id, since, () => deps.registry.load(id)),
    gate: {
      roles: deps.roles,
      contexts: { load: (regionalId, requester, at) => (consent ? loadContext(regionalId, requester, at) : contextReads(`${regionalId}\u0000${requester.userId}`, since, () => loadContext(regionalId, requester, at))) } satisfies DecisionContextLoader,
    },
  });
  const maxRecords = deps.maxRecords ?? 5000;
  const shift = deps.shiftDays ?? randomShiftDays;
  const preparer = deps.preparer ?? createInlinePreparer(deps.pseudonymKey, undefined, box);
  // The statements every request makes, grouped across the requests in flight (store/group.ts).
  // Each request's rows are its own, so a group need not wait for the one in flight: a few go at
  // once (of the flow's pool of connections), and a request waits for one statement, not two.
  // A group starts at the end of the event loop's turn, with every call of that turn. The insert
  // and the finish go in the audit append of the entry that explains them (audit.recordWith).
  const inFlight = { concurrency: GROUPS_IN_FLIGHT, atTurnEnd: true };
  const claim = grouped<string, (repo.ClaimedRequest & { at: number }) | undefined>(async (ids) => {
    // One clock for the group: the decision is taken as of the claim.
    const at = clock();
    return (await repo.claimRequests(db, ids, at)).map((c) => c && { ...c, at });
  }, inFlight);

  async function fetchRecords(patients: { facilityId: string; patientId: string }[], categories: IndexCategory[], limit: number): Promise<ClinicalRecord[]> {
    const out: ClinicalRecord[] = [];
    let after: RecordCursor | undefined;
    while (out.length < limit && patients.length) {
      const page = await queryPatientRecords(db, { patients, categories, currentOnly: true, limit: Math.min(500, limit - out.length), after });
      out.push(...page.records.map((r) => r.record));
      if (!page.next) break;
      after = page.next;
    }
    return out;
  }

  /** Only the permitted (local ID, category) pairs, the newest first; all linked demographics. */
  async function patientRecords(sources: PermittedSource[], links: { facilityId: string; localId: string }[]): Promise<PatientRecords> {
    const records: ClinicalRecord[] = [];
    for (const s of sources) {
      const cats = s.categories.flatMap((c) => INDEX_CATEGORIES[c]);
      const got = await fetchRecords([{ facilityId: s.facilityId, patientId: s.localId }], cats, maxRecords);
      for (const r of got) {
        const c = consentCategoryOf(r);
        if (c && s.categories.includes(c) && r.source.facilityId === s.facilityId && r.source.patientId === s.localId) records.push(r);
      }
    }
    records.sort((a, b) => (b.source.careDate ?? '').localeCompare(a.source.careDate ?? ''));
    // Everything that identifies the patient anywhere in the region is scrubbed, sent or not.
    const demographics = await fetchRecords(links.map((l) => ({ facilityId: l.facilityId, patientId: l.localId })), ['patient'], 1000);
    return { sent: records.slice(0, maxRecords), demographics, truncated: records.length > maxRecords };
  }

  /**
   * The gate's reads with one consent context already read (with the session, or with the claim):
   * used for that patient, user and time only; anything else is read as `fresh` reads it.
   */
  function gateWith(known: { regionalId: string; userId: number; at: number; context: () => Promise<LoadedContext | undefined> }, fresh: DecisionContextLoader): Parameters<typeof decideAiRequest>[0] {
    return {
      roles: deps.roles,
      contexts: {
        load: (regionalId, requester, when) =>
          regionalId === known.regionalId && requester.userId === String(known.userId) && when === known.at ? known.context() : fresh.load(regionalId, requester, when),
      },
    };
  }

  async function owned(p: Principal, id: string): Promise<repo.AiRequestRow> {
    const row = /^[A-Za-z0-9_-]{1,64}$/.test(id) ? await repo.findRequest(db, id) : undefined;
    // Another user's request is as absent as one that does not exist.
    if (!row || row.userId !== p.userId) throw notFound('no such AI request');
    return row;
  }

  /**
   * The decision taken again for a request decided earlier: a withdrawal, an unlink or a disabled
   * service since then stops it, and so does consent that no longer covers everything it would send.
   */
  async function stillPermitted(
    gateDeps: Parameters<typeof decideAiRequest>[0],
    row: Pick<repo.AiRequestRow, 'userId' | 'facilityId' | 'role' | 'regionalId'>,
    service: AiService,
    sources: PermittedSource[],
    at: number,
  ): Promise<{ permitted: true; links: { facilityId: string; localId: string }[] } | { permitted: false; reason: string; publicReason: string }> {
    const gate = await decideAiRequest(gateDeps, { userId: row.userId, facilityId: row.facilityId, role: row.role as Role }, service, row.regionalId, at);
    if (!gate.permitted) return gate;
    const covered = sources.every((s) => gate.sources.some((g) => g.facilityId === s.facilityId && g.localId === s.localId && s.categories.every((c) => g.categories.includes(c))));
    if (!covered) return { permitted: false, reason: 'consent narrowed since submit', publicReason: 'consent no longer covers everything this request would send' };
    return { permitted: true, links: gate.links };
  }

  /**
   * Ends a request that will not be (or was not) answered, with the audit entry that explains it
   * (one statement): whoever sees the outcome finds its trace.
   */
  async function end(
    row: Pick<repo.AiRequestRow, 'userId' | 'facilityId' | 'role' | 'regionalId'>,
    requestId: string,
    serviceId: string,
    o: { status: 'failed' | 'denied'; detail: string; reason: string; extra?: Record<string, unknown>; attempts?: number; sent?: { sha256: string; bytes: number }; prepared?: PreparedFields },
  ): Promise<void> {
    await audit.recordWith(
      {
        ...trailOf(row),
        action: 'ai.request.send',
        outcome: o.status === 'denied' ? 'denied' : 'failure',
        reason: o.reason,
        detail: { request: requestId, service: serviceId, ...(o.sent ? { sentSha256: o.sent.sha256, sentBytes: o.sent.bytes } : { sent: false }), ...o.extra },
      },
      repo.finishWithAudit,
      { id: requestId, status: o.status, detail: o.detail, attempts: o.attempts ?? 0, sentSha256: o.sent?.sha256, sentBytes: o.sent?.bytes, prepared: o.prepared, at: clock() },
    );
  }

  /** A prepared request; from worker threads its body stays in the thread that made it, which sends it (HeldBody). */
  type Ready = Prepared<PreparedBody | HeldBody>;
  const prepare: (...a: Parameters<Preparer['prepare']>) => Promise<Ready> = preparer.prepareHeld ? preparer.prepareHeld.bind(preparer) : preparer.prepare.bind(preparer);
  /** A body a worker holds is let go once its request is sent, or will not be. */
  const letGo = (p: Ready) => 'held' in p.body && p.body.release();

  /** Builds and de-identifies the Bundle of a decided request (on the preparer's threads); never rejects. */
  function prepareFor(d: Decided): Promise<{ prepared: Ready } | { error: unknown }> {
    return (async () => {
      const cacheKey = await cacheKeyOf(db, d.versions, d.service.id, d.row.regionalId, d.sources, d.links, maxRecords);
      const categories = CATEGORIES.filter((c) => d.sources.some((s) => s.categories.includes(c)));
      return prepare(
        {
          cacheKey,
          serviceId: d.service.id,
          subject: d.row.regionalId,
          categories,
          birthDate: d.service.birthDate,
          shiftDays: shift(),
          now: d.row.createdAt,
          operation: d.service.operation,
          // Sealed where it is made (a worker thread): SealedKey.
          seal: { aad: aadKey(d.requestId), sources: d.sources },
        },
        () => patientRecords(d.sources, d.links),
      );
    })().then(
      (prepared) => ({ prepared }),
      (error: unknown) => ({ error }),
    );
  }

  /**
   * The rest of a decided request: its Bundle (being prepared) -> the call to the service -> the
   * answer re-identified and stored with the patient, or a clear failure. Nothing leaves the
   * exchange before the request's row and audit entry are committed (the caller's part).
   */
  async function deliver(d: Decided, preparing: Promise<{ prepared: Ready } | { error: unknown }>): Promise<void> {
    const { requestId, row, service } = d;
    const outcome = await preparing;
    if ('error' in outcome) {
      if (!(outcome.error instanceof PreparationError)) throw outcome.error;
      deps.log.error({ requestId, err: outcome.error }, 'AI request could not be prepared');
      return end(row, requestId, service.id, { status: 'failed', detail: 'the exchange could not prepare the data for the AI service', reason: outcome.error.message });
    }
    const { prepared } = outcome;
    try {
      await send(d, prepared);
    } finally {
      letGo(prepared);
    }
  }

  async function send(d: Decided, prepared: Ready): Promise<void> {
    const { requestId, row, service } = d;
    if (prepared.records === 0) return end(row, requestId, service.id, { status: 'failed', detail: 'there are no records of the categories this service analyses', reason: 'no records of the consented categories' });
    const key = prepared.key;
    // Written with the outcome (one statement less per request than a separate note).
    const preparedFields: PreparedFields = {
      records: prepared.records,
      report: prepared.report as unknown as Record<string, unknown>,
      reidKeyEnc: prepared.sealedKey ?? box.seal(Buffer.from(JSON.stringify({ key, sources: d.sources } satisfies SealedKey), 'utf8'), aadKey(requestId)),
    };
    const deidentification = { records: prepared.records, truncated: prepared.report.truncated, changes: prepared.report.counts };
    // A decision that has aged while the Bundle was prepared (the workers busy) is taken again.
    if (clock() - d.decidedAt > REDECIDE_AFTER_MS) {
      const verdict = await stillPermitted(readsSince(performance.now()).gate, row, service, d.sources, clock());
      if (!verdict.permitted) return end(row, requestId, service.id, { status: 'denied', detail: verdict.publicReason, reason: verdict.reason, prepared: preparedFields });
    }
    try {
      const r = await client.call(service, prepared.body, {
        onAttempt: (a) => {
          if (a.outcome !== 'ok') {
            void repo.noteProgress(db, requestId, a.attempt, `attempt ${a.attempt} failed (${a.outcome}); retrying`, clock()).catch(() => undefined);
          }
        },
      });
      const back = reidentify(r.resource, key);
      await audit.recordWith(
        {
          ...trailOf(row),
          action: 'ai.request.send',
          outcome: 'success',
          detail: {
            request: requestId,
            service: service.id,
            baseUrl: service.baseUrl,
            operation: service.operation,
            sentSha256: r.sent.sha256,
            sentBytes: r.sent.bytes,
            receivedBytes: r.receivedBytes,
            resultType: back.resource['resourceType'],
            attempts: r.attempts,
            serviceMs: r.serviceMs,
            unknownPseudonyms: back.unknownPseudonyms,
            deidentification,
          },
        },
        repo.finishWithAudit,
        {
          id: requestId,
          status: 'done',
          detail: `${String(back.resource['resourceType'])} received`,
          attempts: r.attempts.length,
          sentSha256: r.sent.sha256,
          sentBytes: r.sent.bytes,
          receivedBytes: r.receivedBytes,
          result: back.resource,
          prepared: preparedFields,
          at: clock(),
        },
      );
    } catch (e) {
      if (e instanceof LocalSendError) {
        deps.log.error({ requestId, err: e }, 'AI request could not be sent');
        return end(row, requestId, service.id, { status: 'failed', detail: 'the exchange could not send the data to the AI service', reason: e.message, extra: { deidentification }, sent: e.sent, prepared: preparedFields });
      }
      if (!(e instanceof AiCallError)) {
        if (e instanceof ExchangeError) return end(row, requestId, service.id, { status: 'failed', detail: 'the AI service answered something the exchange cannot use', reason: e.message, extra: { deidentification }, attempts: 1, prepared: preparedFields });
        throw e;
      }
      deps.log.warn({ requestId, service: service.id, kind: e.kind, detail: e.detail }, 'AI request failed');
      await end(row, requestId, service.id, {
        status: 'failed',
        detail: e.publicMessage,
        reason: e.detail,
        extra: { kind: e.kind, ...(e.retryInMs !== undefined ? { retryInMs: e.retryInMs } : {}), deidentification },
        attempts: e.attempts,
        sent: e.sent,
        prepared: preparedFields,
      });
    }
  }

  return {
    // Only the decision and a request row before the 202: the records are read, mapped and
    // de-identified after it (on the workers' threads), by the job or by the request sent at once.
    ...(consent && {
      async preloadSubmit(tokenHash: string, req: { serviceId: string; patientId: string }) {
        const at = clock();
        // The service is read beside the session and consent (a fresh read: see freshReads).
        const service = services(req.serviceId, performance.now(), () => deps.registry.load(req.serviceId));
        service.catch(() => undefined); // awaited by the submit, or not at all when the session is refused
        const [got, participation] = await Promise.all([repo.sessionAndDecision(db, tokenHash, req.patientId, at), consent.participation.get()]);
        if (!got.session) return { session: undefined, reads: undefined };
        return {
          session: got.session,
          reads: { regionalId: req.patientId, userId: got.session.userId, at, context: contextOf(got.decision, participation, consent.policy), versions: got.versions, service },
        };
      },
    }),

    async submit(p, req, endpoint, pre) {
      const fresh = readsSince(performance.now());
      const preloaded = pre && pre.regionalId === req.patientId && pre.userId === p.userId ? pre : undefined;
      // Read with the session; otherwise read when the Bundle's cache key is made (cacheKeyOf).
      const versions: repo.IndexVersions = preloaded?.versions ?? new Map();
      const reads = preloaded ? { service: () => preloaded.service, gate: gateWith({ ...preloaded, context: async () => preloaded.context }, fresh.gate.contexts) } : fresh;
      const at = preloaded?.at ?? clock();
      const trail = {
        actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
        address: p.address,
        deviceId: p.deviceId,
        endpoint,
        patient: req.patientId,
        purpose: 'ai-analysis',
      };
      const service = await reads.service(req.serviceId);
      if (!service) {
        await audit.record({ ...trail, action: 'ai.request.submit', outcome: 'denied', reason: 'unknown AI service', detail: { service: req.serviceId } });
        throw notFound('no such AI service');
      }
      const who: AiRequester = { userId: p.userId, facilityId: p.facilityId, role: p.role };
      const gate = await decideAiRequest(reads.gate, who, service, req.patientId, at);
      if (!gate.permitted) {
        await audit.record({ ...trail, action: 'ai.request.submit', outcome: 'denied', reason: gate.reason, detail: { service: service.id } });
        throw forbidden(gate.publicReason);
      }
      const id = randomBytes(16).toString('base64url');
      const sealed: SealedKey = { sources: gate.sources };
      const row: repo.AiRequestRow = {
        id,
        serviceId: service.id,
        regionalId: gate.regionalId,
        userId: p.userId,
        facilityId: p.facilityId,
        role: p.role,
        status: 'queued',
        statusDetail: null,
        attempts: 0,
        categories: gate.categories,
        records: 0,
        report: null,
        outgoingEnc: null,
        reidKeyEnc: box.seal(Buffer.from(JSON.stringify(sealed), 'utf8'), aadKey(id)),
        sentSha256: null,
        sentBytes: null,
        receivedBytes: null,
        result: null,
        createdAt: at,
        updatedAt: at,
        completedAt: null,
      };
      // With a free place among the requests this process runs (the in-process queue), the
      // request is claimed at once and sent on this decision: its Bundle is prepared while the row
      // and audit entry commit, and nothing leaves before they have. Otherwise it is queued, and
      // its job decides again when it starts.
      const slot = deps.queue().reserve?.();
      const job: Decided | undefined = slot && { requestId: id, row, service, sources: gate.sources, links: gate.links, versions, decidedAt: at };
      const preparing = job && prepareFor(job);
      // The row and its audit entry in one statement and one commit: the request exists only with
      // its trace (a queued request is sent by a restarted exchange, a sending one queued again
      // after 10 minutes), and the clinician waits for one commit, not two.
      try {
        await audit.recordWith(
          {
            ...trail,
            patient: gate.regionalId,
            action: 'ai.request.submit',
            outcome: 'success',
            detail: {
              request: id,
              service: service.id,
              categories: gate.categories,
              facilities: [...new Set(gate.sources.map((s) => s.facilityId))].sort(),
              consentVersions: gate.consentVersionIds,
            },
          },
          repo.insertWithAudit,
          { ...row, reidKeyEnc: row.reidKeyEnc!, at, status: job ? 'sending' : 'queued' },
        );
      } catch (e) {
        slot?.release();
        // Not sent: a body a worker made for it is let go.
        void preparing?.then((o) => 'prepared' in o && letGo(o.prepared));
        throw e;
      }
      if (slot && job && preparing) {
        slot.run(() => deliver(job, preparing));
        return viewOf({ ...row, status: 'sending', statusDetail: repo.SENDING_DETAIL });
      }
      await deps.queue().enqueue(id);
      return viewOf(row);
    },

    async status(p, id) {
      return viewOf(await owned(p, id));
    },

    async result(p, id, endpoint) {
      const row = await owned(p, id);
      if (row.status !== 'done' || !row.result) throw conflict(`the analysis has no result: it is ${row.status}`, { status: row.status });
      await audit.record({
        action: 'ai.result.read',
        outcome: 'success',
        actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
        address: p.address,
        deviceId: p.deviceId,
        endpoint,
        patient: row.regionalId,
        purpose: 'ai-analysis',
        detail: { request: row.id, service: row.serviceId },
      });
      return { request: viewOf(row), result: row.result };
    },

    async process(requestId) {
      const reads = readsSince(performance.now());
      const claimed = await claim(requestId);
      if (!claimed) return;
      const { row, at } = claimed;
      // The decision is taken on the consent context read with the claim, i.e. after the job
      // started (without the consent module's cache and policy: read again here).
      const gateDeps = consent
        ? gateWith({ regionalId: row.regionalId, userId: row.userId, at, context: async () => contextOf(claimed.decision, await consent.participation.get(), consent.policy) }, reads.gate.contexts)
        : reads.gate;
      const fail = (status: 'failed' | 'denied', detail: string, reason: string) => end(row, requestId, row.serviceId, { status, detail, reason });
      const service = await reads.service(row.serviceId);
      if (!service) return fail('failed', 'the AI service is no longer registered', 'service removed');
      let sealed: SealedKey;
      try {
        sealed = JSON.parse(box.open(row.reidKeyEnc!, aadKey(requestId)).toString('utf8')) as SealedKey;
      } catch {
        return fail('failed', 'the request could not be read back', 'sealed request data unreadable (key changed or data altered)');
      }
      const verdict = await stillPermitted(gateDeps, row, service, sealed.sources, at);
      if (!verdict.permitted) return fail('denied', verdict.publicReason, verdict.reason);
      // Exactly what was permitted at submit (and still is) is sent; the demographics of every
      // current link are scrubbed from it.
      const job: Decided = { requestId, row, service, sources: sealed.sources, links: verdict.links, versions: claimed.versions, decidedAt: at };
      await deliver(job, prepareFor(job));
    },
  };
}
