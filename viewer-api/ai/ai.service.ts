import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../../store/db.js';
import { conflict, ExchangeError, forbidden, notFound } from '../../store/errors.js';
import type { DecisionContextLoader } from '../../consent/decision-context.js';
import type { Category as IndexCategory, ClinicalRecord } from '../../ingest/records/types.js';
import { queryPatientRecords, type RecordCursor } from '../../store/records/records.repository.js';
import { INDEX_CATEGORIES } from '../gate/records.reader.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { Principal } from '../auth/auth.service.js';
import type { SecretBox } from '../auth/secret-box.js';
import type { Role, RolePolicy } from '../roles/roles.js';
import { AiCallError, type AiClient } from './ai-client.js';
import { decideAiRequest, type AiRequester, type PermittedSource } from './ai-gate.js';
import type { AiQueue } from './ai.queue.js';
import { bundleOf, consentCategoryOf, identityOfRecords } from './bundle.js';
import { randomShiftDays } from './dates.js';
import { deidentify, reidentify, type FhirJson, type ReidentificationKey } from './deidentify.js';
import type { AiRegistry } from './registry.service.js';
import * as repo from './requests.repository.js';

/**
 * The AI request flow: a clinician asks for an analysis of a patient by a registered service.
 * submit (in the request): gate -> the records of the declared and consented categories ->
 * a FHIR Bundle -> de-identification -> the request stored (the outgoing Bundle and the
 * re-identification key sealed) -> a queued job with the request id. process (in a worker):
 * claim -> decide again (a withdrawal since submit stops it) -> call the service -> re-identify
 * the answer inside the exchange -> store it with the patient. Every step is audited, with the
 * SHA-256 and size of what left the exchange.
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

export interface AiFlow {
  submit(p: Principal, req: { serviceId: string; patientId: string }, endpoint: string): Promise<AiRequestView>;
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
  roles: RolePolicy;
  /** HMAC key of pseudonyms (32 bytes or more), the exchange's secret. */
  pseudonymKey: Buffer;
  queue: () => AiQueue;
  /** At most this many records go into one request (the newest). */
  maxRecords?: number;
  /** Shift for one request (default random, 30..365 days either way). */
  shiftDays?: () => number;
}


interface SealedKey {
  key: ReidentificationKey;
  /** What was permitted at submit: checked again before sending. */
  sources: PermittedSource[];
}

const aadOutgoing = (id: string) => `ai-request:${id}:outgoing`;
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

export function createAiFlow(deps: AiFlowDeps): AiFlow {
  const { db, box, audit, clock, registry, client } = deps;
  const maxRecords = deps.maxRecords ?? 5000;
  const shift = deps.shiftDays ?? randomShiftDays;

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

  async function owned(p: Principal, id: string): Promise<repo.AiRequestRow> {
    const row = /^[A-Za-z0-9_-]{1,64}$/.test(id) ? await repo.findRequest(db, id) : undefined;
    // Another user's request is as absent as one that does not exist.
    if (!row || row.userId !== p.userId) throw notFound('no such AI request');
    return row;
  }

  return {
    async submit(p, req, endpoint) {
      const at = clock();
      const trail = {
        actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
        address: p.address,
        deviceId: p.deviceId,
        endpoint,
        patient: req.patientId,
        purpose: 'ai-analysis',
      };
      const service = await registry.load(req.serviceId);
      if (!service) {
        await audit.record({ ...trail, action: 'ai.request.submit', outcome: 'denied', reason: 'unknown AI service', detail: { service: req.serviceId } });
        throw notFound('no such AI service');
      }
      const who: AiRequester = { userId: p.userId, facilityId: p.facilityId, role: p.role };
      const gate = await decideAiRequest(deps, who, service, req.patientId, at);
      if (!gate.permitted) {
        await audit.record({ ...trail, action: 'ai.request.submit', outcome: 'denied', reason: gate.reason, detail: { service: service.id } });
        throw forbidden(gate.publicReason);
      }
      // Only the permitted (local ID, category) pairs; the newest records first.
      const records: ClinicalRecord[] = [];
      for (const s of gate.sources) {
        const cats = s.categories.flatMap((c) => INDEX_CATEGORIES[c]);
        const got = await fetchRecords([{ facilityId: s.facilityId, patientId: s.localId }], cats, maxRecords);
        for (const r of got) {
          const c = consentCategoryOf(r);
          if (c && s.categories.includes(c) && r.source.facilityId === s.facilityId && r.source.patientId === s.localId) records.push(r);
        }
      }
      records.sort((a, b) => (b.source.careDate ?? '').localeCompare(a.source.careDate ?? ''));
      const sent = records.slice(0, maxRecords);
      if (sent.length === 0) {
        await audit.record({ ...trail, action: 'ai.request.submit', outcome: 'failure', reason: 'no records of the consented categories', detail: { service: service.id, categories: gate.categories } });
        throw new ExchangeError('unprocessable', 'there are no records of the categories this service analyses');
      }
      // Everything that identifies the patient anywhere in the region is scrubbed, sent or not.
      const demographics = await fetchRecords(gate.links.map((l) => ({ facilityId: l.facilityId, patientId: l.localId })), ['patient'], 1000);
      const { bundle } = bundleOf(sent, new Set(gate.categories));
      const id = randomBytes(16).toString('base64url');
      const deid = deidentify(bundle, {
        scope: { secret: deps.pseudonymKey, serviceId: service.id, subject: gate.regionalId },
        birthDate: service.birthDate,
        shiftDays: shift(),
        now: at,
        identity: identityOfRecords([...demographics, ...sent]),
      });
      const sealedKey: SealedKey = { key: deid.key, sources: gate.sources };
      await repo.insertRequest(db, {
        id,
        serviceId: service.id,
        regionalId: gate.regionalId,
        userId: p.userId,
        facilityId: p.facilityId,
        role: p.role,
        categories: gate.categories,
        records: sent.length,
        report: { ...deid.report, truncated: records.length > sent.length },
        outgoingEnc: box.seal(Buffer.from(JSON.stringify(deid.bundle), 'utf8'), aadOutgoing(id)),
        reidKeyEnc: box.seal(Buffer.from(JSON.stringify(sealedKey), 'utf8'), aadKey(id)),
        at,
      });
      await audit.record({
        ...trail,
        patient: gate.regionalId,
        action: 'ai.request.submit',
        outcome: 'success',
        detail: {
          request: id,
          service: service.id,
          categories: gate.categories,
          facilities: [...new Set(gate.sources.map((s) => s.facilityId))].sort(),
          records: sent.length,
          consentVersions: gate.consentVersionIds,
          deidentification: deid.report.counts,
        },
      });
      await deps.queue().enqueue(id);
      return viewOf((await repo.findRequest(db, id))!);
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
      const row = await repo.findRequest(db, requestId);
      if (!row || row.status !== 'queued') return;
      if (!(await repo.claimRequest(db, requestId, clock()))) return;
      const trail = {
        actor: { userId: row.userId, facilityId: row.facilityId, role: row.role },
        address: null,
        endpoint: 'job: ai-request',
        patient: row.regionalId,
        purpose: 'ai-analysis',
      };
      // The audit entry is written before the status changes: whoever sees the outcome finds its trace.
      const end = async (status: 'failed' | 'denied', detail: string, reason: string, extra: Record<string, unknown> = {}, attempts = 0, sent?: { sha256: string; bytes: number }) => {
        await audit.record({
          ...trail,
          action: 'ai.request.send',
          outcome: status === 'denied' ? 'denied' : 'failure',
          reason,
          detail: { request: requestId, service: row.serviceId, ...(sent ? { sentSha256: sent.sha256, sentBytes: sent.bytes } : { sent: false }), ...extra },
        });
        await repo.finishRequest(db, requestId, { status, detail, attempts, sentSha256: sent?.sha256, sentBytes: sent?.bytes, at: clock() });
      };
      const service = await registry.load(row.serviceId);
      if (!service) return end('failed', 'the AI service is no longer registered', 'service removed');
      let sealed: SealedKey;
      let outgoing: FhirJson;
      try {
        sealed = JSON.parse(box.open(row.reidKeyEnc!, aadKey(requestId)).toString('utf8')) as SealedKey;
        outgoing = JSON.parse(box.open(row.outgoingEnc!, aadOutgoing(requestId)).toString('utf8')) as FhirJson;
      } catch {
        return end('failed', 'the request could not be read back', 'sealed request data unreadable (key changed or data altered)');
      }
      // A withdrawal, an unlink or a disabled service since submit stops the request here.
      const gate = await decideAiRequest(deps, { userId: row.userId, facilityId: row.facilityId, role: row.role as Role }, service, row.regionalId, clock());
      const stillPermitted =
        gate.permitted &&
        sealed.sources.every((s) => gate.sources.some((g) => g.facilityId === s.facilityId && g.localId === s.localId && s.categories.every((c) => g.categories.includes(c))));
      if (!stillPermitted) {
        return end('denied', gate.permitted ? 'consent no longer covers everything this request would send' : gate.publicReason, gate.permitted ? 'consent narrowed since submit' : gate.reason);
      }
      try {
        const r = await client.call(service, outgoing, {
          onAttempt: (a) => {
            if (a.outcome !== 'ok') {
              void repo.noteProgress(db, requestId, a.attempt, `attempt ${a.attempt} failed (${a.outcome}); retrying`, clock()).catch(() => undefined);
            }
          },
        });
        const back = reidentify(r.resource, sealed.key);
        await audit.record({
          ...trail,
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
          },
        });
        await repo.finishRequest(db, requestId, {
          status: 'done',
          detail: `${String(back.resource['resourceType'])} received`,
          attempts: r.attempts.length,
          sentSha256: r.sent.sha256,
          sentBytes: r.sent.bytes,
          receivedBytes: r.receivedBytes,
          result: back.resource,
          at: clock(),
        });
      } catch (e) {
        if (!(e instanceof AiCallError)) {
          if (e instanceof ExchangeError) return end('failed', 'the AI service answered something the exchange cannot use', e.message, {}, 1);
          throw e;
        }
        deps.log.warn({ requestId, service: service.id, kind: e.kind, detail: e.detail }, 'AI request failed');
        await end('failed', e.publicMessage, e.detail, { kind: e.kind, ...(e.retryInMs !== undefined ? { retryInMs: e.retryInMs } : {}) }, e.attempts, e.sent);
      }
    },
  };
}
