import { createHash } from 'node:crypto';
import { loadFhirValidator, type SchemaIssue } from '../../ingest/fhir/schema.js';
import type { FhirJson } from './deidentify.js';
import { FhirPoster, type PostAnswer } from './fhir-post.js';
import type { HeldBody, PreparedBody } from './prepare.js';
import { operationBody } from './request-body.js';
import { assertLocation, type AiService } from './registry.js';
import {
  backoffDelay,
  CircuitBreaker,
  DEFAULT_CIRCUIT,
  DEFAULT_RETRY,
  TokenBucket,
  type CircuitSettings,
  type CircuitState,
  type RetrySettings,
} from './resilience.js';

/**
 * Calls to AI services over FHIR (fhir-kit-client, one client per service kept between calls):
 * the declared operation, a timeout per call (AbortSignal), retries with exponential backoff and
 * jitter on 5xx, 429, timeouts and network failures (never on other 4xx), a circuit breaker and a
 * token-bucket rate limit per service, bearer or OAuth 2.0 client-credentials authentication
 * (RFC 6749 §4.4) with the token cached until it expires. The answer must be a FHIR R4 resource
 * (validated against the official JSON schema); anything else is a permanent, clearly named error.
 * Each POST is made in this thread (fhir-post.ts), or by the worker thread that holds the body
 * (HeldBody, deid-pool.ts); everything around it stays here.
 */

export type AiCallErrorKind =
  /** No answer within the service's timeout. */
  | 'timeout'
  /** 5xx, 429, or the connection failed. */
  | 'unavailable'
  /** The service refused the request (a 4xx other than 401/403/429, or an OperationOutcome). */
  | 'rejected'
  /** 401/403, or the token endpoint refused the client. */
  | 'unauthorized'
  /** The answer is not a FHIR resource. */
  | 'malformed'
  /** Too many recent failures: the exchange is not calling the service for now. */
  | 'circuit-open'
  /** The registry forbids the call (data centre outside Japan, not allowed). */
  | 'refused'
  /** The caller cancelled. */
  | 'cancelled';

const MESSAGES: Record<AiCallErrorKind, string> = {
  timeout: 'the AI service did not answer in time',
  unavailable: 'the AI service is unavailable',
  rejected: 'the AI service rejected the request',
  unauthorized: 'the exchange could not authenticate to the AI service',
  malformed: 'the AI service answered with something that is not FHIR',
  'circuit-open': 'the AI service is failing; the exchange has paused calls to it',
  refused: 'the exchange may not send data to this AI service',
  cancelled: 'the request was cancelled',
};

export class AiCallError extends Error {
  override name = 'AiCallError';
  constructor(
    readonly kind: AiCallErrorKind,
    /** Internal detail for logs and the audit trail (HTTP status, schema issues). */
    readonly detail: string,
    readonly attempts: number,
    /** When the circuit is open: milliseconds until it lets a trial call through. */
    readonly retryInMs?: number,
  ) {
    super(`${MESSAGES[kind]} (${detail})`);
  }

  /** What left the exchange before the failure (hash and size of the body), if anything did. */
  sent: { sha256: string; bytes: number } | undefined;

  /** A retry later may succeed (the service was down or slow); the others will not by waiting. */
  get transient(): boolean {
    return this.kind === 'timeout' || this.kind === 'unavailable' || this.kind === 'circuit-open';
  }

  /** What the clinician is told. */
  get publicMessage(): string {
    return MESSAGES[this.kind];
  }
}

/** What a call may send: a Bundle, its body made ahead (PreparedBody), or a body a worker holds and sends (HeldBody). */
export type CallBody = FhirJson | PreparedBody | HeldBody;

const isPrepared = (b: CallBody): b is PreparedBody => (b as PreparedBody).bytes instanceof Uint8Array && !('resourceType' in b);
const isHeld = (b: CallBody): b is HeldBody => (b as HeldBody).held === true && !('resourceType' in b);

/** What goes out: the exact bytes (or a worker's body) and their SHA-256 (hex) and size. */
type Outgoing = { sha256: string; byteLength: number } & ({ bytes: Uint8Array } | { held: HeldBody });

/**
 * The exchange itself could not make the call (the worker thread holding the body stopped): not
 * the service's failure, so it never counts towards the service's circuit.
 */
export class LocalSendError extends Error {
  override name = 'LocalSendError';
  /** The body's hash and size: it may have left before the worker stopped (AiClient.call sets it). */
  sent: { sha256: string; bytes: number } | undefined;
}

export interface AttemptLog {
  attempt: number;
  outcome: 'ok' | AiCallErrorKind;
  status?: number;
  ms: number;
}

export interface AiCallResult {
  resource: FhirJson;
  /** SHA-256 (hex) and size of the exact request body that left the exchange. */
  sent: { sha256: string; bytes: number };
  receivedBytes: number;
  attempts: AttemptLog[];
  /** Time spent waiting for the service (HTTP round trips), for overhead accounting. */
  serviceMs: number;
}

export interface AiClientOptions {
  clock?: () => number;
  retry?: RetrySettings;
  circuit?: CircuitSettings;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** FHIR R4 schema validation of answers (default: the schema in this thread, slow to compile). */
  validate?: (resource: unknown) => SchemaIssue[] | Promise<SchemaIssue[]>;
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface HttpFailure {
  response?: { status?: number; data?: unknown };
  config?: { headers?: Headers };
}

const isAbort = (e: unknown) => e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError');

/** Parses Retry-After (RFC 9110 §10.2.3): seconds, or an HTTP date. */
function retryAfterMs(h: Headers | undefined, now: number): number | undefined {
  const v = h?.get?.('retry-after');
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

export class AiClient {
  private readonly circuits = new Map<string, CircuitBreaker>();
  private readonly buckets = new Map<string, { bucket: TokenBucket; key: string }>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pendingTokens = new Map<string, Promise<string>>();
  private validate: ((r: unknown) => SchemaIssue[] | Promise<SchemaIssue[]>) | undefined;
  private readonly clock: () => number;
  private readonly retry: RetrySettings;
  private readonly circuitSettings: CircuitSettings;
  private readonly random: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private readonly poster = new FhirPoster();

  constructor(opts: AiClientOptions = {}) {
    this.clock = opts.clock ?? Date.now;
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.circuitSettings = opts.circuit ?? DEFAULT_CIRCUIT;
    this.random = opts.random ?? Math.random;
    this.sleep = opts.sleep ?? defaultSleep;
    this.validate = opts.validate;
  }

  circuitState(serviceId: string): CircuitState {
    return this.circuit(serviceId).state;
  }

  private circuit(id: string): CircuitBreaker {
    let c = this.circuits.get(id);
    if (!c) this.circuits.set(id, (c = new CircuitBreaker(this.circuitSettings, this.clock)));
    return c;
  }

  private bucket(s: AiService): TokenBucket {
    // A changed limit in the registry takes effect with a fresh bucket.
    const key = `${s.rateLimit.perMinute}/${s.rateLimit.burst}`;
    const b = this.buckets.get(s.id);
    if (b && b.key === key) return b.bucket;
    const bucket = new TokenBucket(s.rateLimit.perMinute, s.rateLimit.burst, this.clock);
    this.buckets.set(s.id, { bucket, key });
    return bucket;
  }

  /**
   * Sends the de-identified Bundle to the service's declared operation and returns its answer.
   * The Bundle may also come as the request body already encoded and hashed for this service's
   * operation (PreparedBody, as the de-identification workers make it): those bytes are then
   * sent as they are; or as a body a worker thread made and keeps (HeldBody), which that thread
   * sends. Retries, the circuit, the rate limit and authentication stay here either way.
   */
  async call(service: AiService, bundle: CallBody, opts: { signal?: AbortSignal; onAttempt?: (a: AttemptLog) => void } = {}): Promise<AiCallResult> {
    try {
      return await this.attempt(service, bundle, opts);
    } catch (e) {
      if ((e instanceof AiCallError && e.attempts > 0) || e instanceof LocalSendError) e.sent = this.sentOf(service, bundle);
      throw e;
    }
  }

  private sentOf(service: AiService, bundle: CallBody): { sha256: string; bytes: number } {
    const body = this.body(service, bundle);
    return { sha256: body.sha256, bytes: body.byteLength };
  }

  private async attempt(service: AiService, bundle: CallBody, opts: { signal?: AbortSignal; onAttempt?: (a: AttemptLog) => void }): Promise<AiCallResult> {
    try {
      assertLocation(service);
    } catch (e) {
      throw new AiCallError('refused', (e as Error).message, 0);
    }
    const body = this.body(service, bundle);
    const sent = { sha256: body.sha256, bytes: body.byteLength };
    const attempts: AttemptLog[] = [];
    let serviceMs = 0;
    const circuit = this.circuit(service.id);
    let refreshedToken = false;

    for (let attempt = 1; ; attempt++) {
      if (opts.signal?.aborted) throw new AiCallError('cancelled', 'cancelled before sending', attempts.length);
      if (!circuit.tryAcquire()) {
        throw new AiCallError('circuit-open', `circuit ${circuit.state} after repeated failures`, attempts.length, circuit.retryInMs());
      }
      let failure: AiCallError;
      const started = this.clock();
      let posted: number | undefined;
      // The service's time: waiting for the rate limit and a token, then the POST's round trip,
      // as timed where it ran (a worker thread's own timing leaves out the hand-offs between threads).
      const waited = (postMs: number | undefined) => (posted === undefined ? this.clock() - started : posted - started + (postMs ?? this.clock() - posted));
      try {
        await this.waitForToken(service, opts.signal);
        const headers = await this.authHeaders(service, opts.signal);
        const target = { baseUrl: service.baseUrl, operation: service.operation, timeoutMs: service.timeoutMs };
        posted = this.clock();
        const result: PostAnswer = 'held' in body ? await body.held.post(target, headers, opts.signal) : await this.poster.post(target, body.bytes, headers, opts.signal);
        const ms = waited(result.ms);
        serviceMs += ms;
        const resource = await this.answer(result.data, attempts.length + 1);
        circuit.onSuccess();
        attempts.push({ attempt, outcome: 'ok', status: result.status, ms });
        opts.onAttempt?.(attempts[attempts.length - 1]!);
        return { resource, sent, receivedBytes: result.bytes, attempts, serviceMs };
      } catch (e) {
        const ms = waited((e as { postMs?: number }).postMs);
        serviceMs += ms;
        if (e instanceof LocalSendError) {
          circuit.onNeutral();
          throw e;
        }
        failure = this.classify(e, attempt, opts.signal);
        attempts.push({ attempt, outcome: failure.kind, ...(statusOf(e) ? { status: statusOf(e) } : {}), ms });
        opts.onAttempt?.(attempts[attempts.length - 1]!);
        if (failure.kind === 'cancelled') {
          circuit.onNeutral();
          throw failure;
        }
        if (failure.kind === 'unauthorized' && service.auth.kind === 'oauth2' && !refreshedToken && statusOf(e) === 401) {
          // An expired or revoked token: fetch a new one once, without counting against the service.
          this.tokens.delete(service.id);
          refreshedToken = true;
          circuit.onNeutral();
          continue;
        }
        // Only the service's own trouble counts towards opening the circuit.
        if (failure.transient || failure.kind === 'malformed') circuit.onFailure();
        else circuit.onNeutral();
        if (!failure.transient || attempt >= this.retry.attempts) throw failure;
      }
      const wait = backoffDelay(attempt - 1, this.retry, this.random, failure.kind === 'unavailable' ? (e429(failure) ?? undefined) : undefined);
      try {
        await this.sleep(wait, opts.signal);
      } catch {
        throw new AiCallError('cancelled', 'cancelled while waiting to retry', attempts.length);
      }
    }
  }

  private body(service: AiService, bundle: CallBody): Outgoing {
    if (isPrepared(bundle) || isHeld(bundle)) {
      if (bundle.operation !== service.operation) throw new Error(`the body was made for operation ${bundle.operation}, not ${service.operation}`);
      return isHeld(bundle) ? { held: bundle, sha256: bundle.sha256, byteLength: bundle.byteLength } : { bytes: bundle.bytes, sha256: bundle.sha256, byteLength: bundle.bytes.byteLength };
    }
    const bytes = Buffer.from(operationBody(service.operation, JSON.stringify(bundle)), 'utf8');
    return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), byteLength: bytes.byteLength };
  }

  private async waitForToken(service: AiService, signal?: AbortSignal): Promise<void> {
    const bucket = this.bucket(service);
    for (;;) {
      const t = bucket.take();
      if (t.ok) return;
      await this.sleep(t.waitMs, signal);
    }
  }

  private async authHeaders(service: AiService, signal?: AbortSignal): Promise<Record<string, string>> {
    if (service.auth.kind === 'bearer') return { authorization: `Bearer ${service.auth.token}` };
    if (service.auth.kind === 'oauth2') return { authorization: `Bearer ${await this.oauthToken(service, signal)}` };
    return {};
  }

  private oauthToken(service: AiService, signal?: AbortSignal): Promise<string> {
    const cached = this.tokens.get(service.id);
    if (cached && cached.expiresAt > this.clock()) return Promise.resolve(cached.token);
    // Concurrent calls share one token request.
    let pending = this.pendingTokens.get(service.id);
    if (!pending) {
      pending = this.fetchToken(service, signal).finally(() => this.pendingTokens.delete(service.id));
      this.pendingTokens.set(service.id, pending);
    }
    return pending;
  }

  private async fetchToken(service: AiService, signal?: AbortSignal): Promise<string> {
    if (service.auth.kind !== 'oauth2') throw new Error('not an OAuth service');
    const a = service.auth;
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (a.scope) form.set('scope', a.scope);
    // RFC 6749 §2.3.1: client_id and secret form-urlencoded, then in HTTP Basic.
    const basic = Buffer.from(`${encodeURIComponent(a.clientId)}:${encodeURIComponent(a.clientSecret)}`).toString('base64');
    const timeout = AbortSignal.timeout(service.timeoutMs);
    const res = await fetch(a.tokenUrl, {
      method: 'POST',
      headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    const text = await res.text();
    if (!res.ok) {
      throw Object.assign(new Error(`token endpoint answered ${res.status}`), { response: { status: res.status >= 500 || res.status === 429 ? res.status : 401 }, tokenEndpoint: true });
    }
    let json: { access_token?: unknown; token_type?: unknown; expires_in?: unknown };
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      throw Object.assign(new Error('token endpoint answered something that is not JSON'), { response: { status: 401 }, tokenEndpoint: true });
    }
    if (typeof json.access_token !== 'string' || !json.access_token || String(json.token_type).toLowerCase() !== 'bearer') {
      throw Object.assign(new Error('token endpoint answered without a bearer access_token'), { response: { status: 401 }, tokenEndpoint: true });
    }
    const lifetime = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in * 1000 : 300_000;
    // Renew a little early: a token that expires in flight is a failed call.
    this.tokens.set(service.id, { token: json.access_token, expiresAt: this.clock() + Math.max(0, lifetime - Math.min(30_000, lifetime / 10)) });
    return json.access_token;
  }

  private async answer(data: unknown, attempts: number): Promise<FhirJson> {
    if (!data || typeof data !== 'object' || Array.isArray(data) || typeof (data as FhirJson)['resourceType'] !== 'string') {
      throw new AiCallError('malformed', 'the answer has no resourceType', attempts);
    }
    let r = data as FhirJson;
    if (r['resourceType'] === 'Parameters') {
      // A single resource output comes back as parameter `return` (FHIR R4 operations).
      const params = Array.isArray(r['parameter']) ? (r['parameter'] as FhirJson[]) : [];
      const ret = params.find((p) => p['name'] === 'return' && p['resource']);
      if (ret) r = ret['resource'] as FhirJson;
    }
    if (r['resourceType'] === 'OperationOutcome') throw new AiCallError('rejected', 'the service answered with an OperationOutcome', attempts);
    this.validate ??= loadFhirValidator();
    // A Bundle or Parameters answer: every resource it carries is validated as well.
    const carried = (x: FhirJson): FhirJson[] => {
      const inner = [
        ...(Array.isArray(x['entry']) ? (x['entry'] as FhirJson[]).map((e) => e?.['resource']) : []),
        ...(Array.isArray(x['parameter']) ? (x['parameter'] as FhirJson[]).map((p) => p?.['resource']) : []),
        ...(Array.isArray(x['contained']) ? (x['contained'] as unknown[]) : []),
      ].filter((v): v is FhirJson => !!v && typeof v === 'object');
      return [x, ...inner.flatMap(carried)];
    };
    for (const res of carried(r)) {
      const issues = await this.validate(res);
      if (issues.length) {
        throw new AiCallError('malformed', `not valid FHIR R4 ${String(res['resourceType'])}: ${issues.slice(0, 3).map((i) => `${i.path} ${i.message}`).join('; ')}`, attempts);
      }
    }
    // Only the JSON itself: fhir-kit-client hangs the Response on the answer (non-enumerable).
    return { ...r };
  }

  private classify(e: unknown, attempt: number, signal?: AbortSignal): AiCallError {
    if (e instanceof AiCallError) return e;
    if (signal?.aborted) return new AiCallError('cancelled', 'cancelled by the caller', attempt);
    if (isAbort(e)) return new AiCallError('timeout', 'no answer within the timeout', attempt);
    const status = statusOf(e);
    if (status !== undefined) {
      const tokenEndpoint = !!(e as { tokenEndpoint?: boolean }).tokenEndpoint;
      const where = tokenEndpoint ? 'token endpoint' : 'service';
      if (status >= 200 && status < 300) return new AiCallError('malformed', `HTTP ${status} with a body that is not JSON`, attempt);
      if (status === 429 || status >= 500) {
        const err = new AiCallError('unavailable', `${where} answered HTTP ${status}`, attempt);
        const ra = retryAfterMs((e as HttpFailure).config?.headers, this.clock());
        if (ra !== undefined) Object.assign(err, { retryAfter: ra });
        return err;
      }
      if (status === 401 || status === 403) return new AiCallError('unauthorized', `${where} answered HTTP ${status}`, attempt);
      return new AiCallError('rejected', `${where} answered HTTP ${status}`, attempt);
    }
    // fetch failed: a redirect (refused, see send), or connection refused or reset, DNS, TLS.
    if ((e as { cause?: { message?: string } }).cause?.message === 'unexpected redirect') {
      return new AiCallError('rejected', 'the service answered with a redirect, which the exchange does not follow', attempt);
    }
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    return new AiCallError('unavailable', `connection failed${cause ? ` (${cause})` : ''}`, attempt);
  }
}

function statusOf(e: unknown): number | undefined {
  const s = (e as HttpFailure | undefined)?.response?.status;
  return typeof s === 'number' ? s : undefined;
}

function e429(e: AiCallError): number | undefined {
  return (e as AiCallError & { retryAfter?: number }).retryAfter;
}
