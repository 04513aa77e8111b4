import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AiCallError, AiClient } from '../viewer-api/ai/ai-client.js';
import type { FhirJson } from '../viewer-api/ai/deidentify.js';
import { startStandIn, type StandIn } from '../viewer-api/ai/standin.js';
import { aiService, resetStandIn } from './ai.support.js';
import { createAnswerValidator } from '../viewer-api/ai/answer-validator.js';

const validator = createAnswerValidator();
validator.warm(['RiskAssessment']);
const validate = (r: unknown) => validator.validate(r);

/** A de-identified-looking bundle: what the client sends does not matter to it. */
const BUNDLE: FhirJson = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resource: { resourceType: 'Patient', id: 'hkb-aaaaaaaaaaaaaaaaaaaa', gender: 'male' } },
    {
      resource: {
        resourceType: 'Observation',
        id: 'hkb-bbbbbbbbbbbbbbbbbbbb',
        status: 'final',
        code: { text: 'HbA1c' },
        subject: { reference: 'Patient/hkb-aaaaaaaaaaaaaaaaaaaa' },
        effectiveDateTime: '2012-04-01',
        valueQuantity: { value: 7.2 },
      },
    },
  ],
};

const service = aiService;

/** A clock the test moves, and a sleep that only records (retries without waiting). */
function harness(over: { attempts?: number; threshold?: number; coolDownMs?: number } = {}) {
  const t = { now: 1_000_000 };
  const sleeps: number[] = [];
  const client = new AiClient({
    clock: () => t.now,
    retry: { attempts: over.attempts ?? 4, baseDelayMs: 100, maxDelayMs: 5000 },
    circuit: { failureThreshold: over.threshold ?? 5, coolDownMs: over.coolDownMs ?? 30_000 },
    random: () => 0.5,
    validate,
    sleep: async (ms) => {
      sleeps.push(ms);
      t.now += ms;
    },
  });
  return { client, sleeps, t };
}

async function failure(p: Promise<unknown>): Promise<AiCallError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AiCallError) return e;
    throw e;
  }
  throw new Error('expected the call to fail');
}

let s: StandIn;
beforeAll(async () => {
  s = await startStandIn();
});
afterAll(async () => {
  await s.close();
  await validator.close();
});
afterEach(() => resetStandIn(s));

describe('the AI service client against a real stand-in service', () => {
  it('calls the declared operation with the Bundle in Parameters and returns the validated answer', async () => {
    const { client } = harness();
    const r = await client.call(service(s.base), BUNDLE);
    expect(s.received).toHaveLength(1);
    const got = s.received[0]!;
    expect(got.method).toBe('POST');
    expect(got.url).toBe('/fhir/$analyze');
    expect(got.headers['content-type']).toBe('application/fhir+json');
    expect(JSON.parse(got.body)).toEqual({ resourceType: 'Parameters', parameter: [{ name: 'bundle', resource: BUNDLE }] });
    // The hash and size are those of the exact bytes the service received.
    expect(r.sent).toEqual({ sha256: createHash('sha256').update(got.body).digest('hex'), bytes: Buffer.byteLength(got.body) });
    expect(r.resource).toMatchObject({ resourceType: 'RiskAssessment', status: 'final', subject: { reference: 'Patient/hkb-aaaaaaaaaaaaaaaaaaaa' } });
    expect(r.attempts).toEqual([{ attempt: 1, outcome: 'ok', status: 200, ms: expect.any(Number) }]);
  });

  it('POSTs the Bundle as it is when the operation is a resource type', async () => {
    const { client } = harness();
    await client.call(service(s.base, { operation: 'Bundle' }), BUNDLE);
    expect(s.received[0]!.url).toBe('/fhir/Bundle');
    expect(JSON.parse(s.received[0]!.body)).toEqual(BUNDLE);
  });

  it('retries 5xx with exponential backoff and jitter, then succeeds', async () => {
    const { client, sleeps } = harness();
    s.queue.push({ kind: 'error', status: 500 }, { kind: 'error', status: 503 });
    const r = await client.call(service(s.base), BUNDLE);
    expect(s.received).toHaveLength(3);
    expect(r.attempts.map((a) => a.outcome)).toEqual(['unavailable', 'unavailable', 'ok']);
    // Full jitter with random() = 0.5: half of 100 * 2^n.
    expect(sleeps).toEqual([50, 100]);
  });

  it('honours Retry-After on 429', async () => {
    const { client, sleeps } = harness();
    s.queue.push({ kind: 'error', status: 429, retryAfter: '2' });
    const r = await client.call(service(s.base), BUNDLE);
    expect(r.attempts.map((a) => [a.outcome, a.status])).toEqual([['unavailable', 429], ['ok', 200]]);
    expect(s.received).toHaveLength(2);
    expect(sleeps).toEqual([2000]);
  });

  it('does not retry a 4xx: a permanent, clear error', async () => {
    const { client } = harness();
    s.queue.push({ kind: 'error', status: 400 });
    const e = await failure(client.call(service(s.base), BUNDLE));
    expect(e.kind).toBe('rejected');
    expect(e.transient).toBe(false);
    expect(e.publicMessage).toBe('the AI service rejected the request');
    expect(s.received).toHaveLength(1);
  });

  it('a malformed answer is a permanent error, whether not JSON, not FHIR, or an OperationOutcome', async () => {
    const { client } = harness();
    s.queue.push({ kind: 'not-json' });
    let e = await failure(client.call(service(s.base), BUNDLE));
    expect([e.kind, e.transient]).toEqual(['malformed', false]);
    s.queue.push({ kind: 'invalid-fhir' });
    e = await failure(client.call(service(s.base), BUNDLE));
    expect(e.kind).toBe('malformed');
    expect(e.detail).toMatch(/not valid FHIR R4 RiskAssessment/);
    expect(s.received).toHaveLength(2);
  });

  it('a late answer within the timeout is fine; past the timeout it is retried, then a timeout error', async () => {
    const { client } = harness({ attempts: 2 });
    s.queue.push({ kind: 'late', ms: 300 });
    const ok = await client.call(service(s.base, { timeoutMs: 2000 }), BUNDLE);
    expect(ok.resource['resourceType']).toBe('RiskAssessment');
    s.fallback = { kind: 'late', ms: 1500 };
    const started = Date.now();
    const e = await failure(client.call(service(s.base, { timeoutMs: 250 }), BUNDLE));
    expect(e.kind).toBe('timeout');
    expect(e.transient).toBe(true);
    expect(e.attempts).toBe(2);
    expect(Date.now() - started).toBeLessThan(1400);
  });

  it('a connection the service drops before answering is a network failure: retried on a new connection, and one failure leaves the circuit closed', async () => {
    // The service answers the first request of each connection and drops the connection on the
    // second, as a server does when its idle timeout strikes just as a request is reused.
    const served = new WeakMap<object, number>();
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      const n = (served.get(req.socket) ?? 0) + 1;
      served.set(req.socket, n);
      req.resume();
      req.on('end', () => {
        if (n > 1) return req.socket.destroy();
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify({ resourceType: 'RiskAssessment', status: 'final', subject: { reference: 'Patient/x' } }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { client } = harness();
      const svc = service(`http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`);
      expect((await client.call(svc, BUNDLE)).attempts).toEqual([{ attempt: 1, outcome: 'ok', status: 200, ms: expect.any(Number) }]);
      // The connection goes back to the client's pool once the answer is read: idle, as between calls.
      await new Promise((r) => setTimeout(r, 50));
      const second = await client.call(svc, BUNDLE);
      expect(second.attempts).toEqual([
        { attempt: 1, outcome: 'unavailable', ms: expect.any(Number) },
        { attempt: 2, outcome: 'ok', status: 200, ms: expect.any(Number) },
      ]);
      expect(requests).toBe(3);
      expect(client.circuitState(svc.id)).toBe('closed');
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('a redirect is never followed: nothing goes to the other address, a permanent, clear error', async () => {
    let elsewhere = 0;
    const other = http.createServer((req, res) => {
      elsewhere++;
      req.resume();
      res.end('{}');
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const server = http.createServer((req, res) => {
      req.resume();
      res.writeHead(307, { location: `http://127.0.0.1:${(other.address() as AddressInfo).port}/fhir/$analyze` });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { client } = harness();
      const e = await failure(client.call(service(`http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`), BUNDLE));
      expect(e.kind).toBe('rejected');
      expect(e.detail).toMatch(/redirect/);
      expect(e.attempts).toBe(1);
      expect(elsewhere).toBe(0);
    } finally {
      for (const s of [server, other]) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    }
  });

  it('a hanging service does not block calls to other services (or other calls at all)', async () => {
    const other = await startStandIn();
    try {
      const { client } = harness({ attempts: 1 });
      s.fallback = { kind: 'hang' };
      const hanging = failure(client.call(service(s.base, { id: 'hangs', timeoutMs: 1500 }), BUNDLE));
      const started = Date.now();
      const quick = await Promise.all(Array.from({ length: 20 }, () => client.call(service(other.base, { id: 'fine' }), BUNDLE)));
      const quickMs = Date.now() - started;
      expect(quick).toHaveLength(20);
      expect(quickMs).toBeLessThan(1000);
      expect((await hanging).kind).toBe('timeout');
      expect(other.received).toHaveLength(20);
    } finally {
      await other.close();
    }
  });

  it('the bench’s stand-in (bodies counted, answers scanned as Latin-1) answers what the parse gives, and fails every answer once they differ', async () => {
    const bundle = (patientId: string): FhirJson => ({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: { resourceType: 'Patient', id: patientId, gender: 'female' } },
        { resource: { resourceType: 'Condition', id: 'hkb-cccc', code: { text: '2型糖尿病（"date":"2099-01-01" と書かれた所見）' }, recordedDate: '2019-05-02' } },
        { resource: { resourceType: 'Observation', id: 'hkb-dddd', status: 'final', code: { text: 'ＨｂＡ１ｃ' }, subject: { reference: `Patient/${patientId}` }, effectiveDateTime: '2020-01-03T09:00:00+09:00' } },
      ],
    });
    const bench = await startStandIn({ countOnly: true, scanAnswers: { checkScans: 5 } });
    try {
      const { client } = harness({ attempts: 1 });
      const parsed = await client.call(service(s.base), bundle('hkb-aaaa'));
      const scanned = await client.call(service(bench.base), bundle('hkb-aaaa'));
      expect(scanned.resource).toEqual(parsed.resource);
      expect(scanned.resource).toMatchObject({ subject: { reference: 'Patient/hkb-aaaa' }, occurrenceDateTime: '2020-01-03T09:00:00+09:00' });
      expect(bench.received).toHaveLength(1);
      // A patient id the Latin-1 scan misreads: its answer differs from the parse, and so does every later one.
      expect((await failure(client.call(service(bench.base), bundle('hkb-患者')))).kind).toBe('unavailable');
      expect((await failure(client.call(service(bench.base), bundle('hkb-aaaa')))).kind).toBe('unavailable');
    } finally {
      await bench.close();
    }
  });

  it('opens the circuit after repeated failures, refuses without calling, half-opens after the cool-down', async () => {
    const { client, t } = harness({ attempts: 2, threshold: 3, coolDownMs: 10_000 });
    const svc = service(s.base, { id: 'flaky' });
    s.fallback = { kind: 'error', status: 502 };
    expect((await failure(client.call(svc, BUNDLE))).kind).toBe('unavailable'); // 2 failures
    expect(client.circuitState('flaky')).toBe('closed');
    const e = await failure(client.call(svc, BUNDLE)); // the 3rd failure opens it, no 4th call
    expect(e.kind).toBe('circuit-open');
    expect(s.received).toHaveLength(3);
    expect(client.circuitState('flaky')).toBe('open');
    const refused = await failure(client.call(svc, BUNDLE));
    expect(refused.kind).toBe('circuit-open');
    expect(refused.retryInMs).toBeGreaterThan(0);
    expect(s.received).toHaveLength(3); // nothing reached the service
    // Other services are not affected.
    expect(client.circuitState('risk')).toBe('closed');

    t.now += 10_000;
    expect(client.circuitState('flaky')).toBe('half-open');
    // The trial call fails: open again for a full cool-down.
    expect((await failure(client.call(svc, BUNDLE))).kind).toBe('circuit-open');
    expect(s.received).toHaveLength(4);
    expect(client.circuitState('flaky')).toBe('open');
    t.now += 10_000;
    s.fallback = { kind: 'ok' };
    const ok = await client.call(svc, BUNDLE);
    expect(ok.resource['resourceType']).toBe('RiskAssessment');
    expect(client.circuitState('flaky')).toBe('closed');
  });

  it('half-open lets exactly one trial call through while it is in flight', async () => {
    const { client, t } = harness({ attempts: 1, threshold: 1, coolDownMs: 1000 });
    const svc = service(s.base, { id: 'one-trial' });
    s.queue.push({ kind: 'error', status: 500 });
    await failure(client.call(svc, BUNDLE));
    t.now += 1000;
    s.queue.push({ kind: 'late', ms: 200 });
    const [a, b] = await Promise.allSettled([client.call(svc, BUNDLE), client.call(svc, BUNDLE)]);
    expect(a.status).toBe('fulfilled');
    expect(b.status === 'rejected' && (b.reason as AiCallError).kind).toBe('circuit-open');
    expect(s.received).toHaveLength(2);
  });

  it('refuses a service whose data centre is outside Japan unless explicitly allowed; nothing is sent', async () => {
    const { client } = harness();
    const e = await failure(client.call(service(s.base, { location: { country: 'US', region: 'Oregon' } }), BUNDLE));
    expect(e.kind).toBe('refused');
    expect(s.received).toHaveLength(0);
    await client.call(service(s.base, { location: { country: 'US', region: 'Oregon' }, allowOutsideJapan: true }), BUNDLE);
    expect(s.received).toHaveLength(1);
  });

  it('rate-limits per service with a token bucket: calls beyond the burst wait', async () => {
    const { client, sleeps } = harness();
    const svc = service(s.base, { id: 'limited', rateLimit: { perMinute: 60, burst: 2 } });
    for (let i = 0; i < 3; i++) await client.call(svc, BUNDLE);
    expect(sleeps).toEqual([1000]);
    expect(s.received).toHaveLength(3);
  });

  it('a cancelled call stops at once and does not count against the service', async () => {
    const { client } = harness({ threshold: 1 });
    s.fallback = { kind: 'hang' };
    const ac = new AbortController();
    const p = failure(client.call(service(s.base, { id: 'cancel', timeoutMs: 5000 }), BUNDLE, { signal: ac.signal }));
    setTimeout(() => ac.abort(new Error('stop')), 100);
    expect((await p).kind).toBe('cancelled');
    expect(client.circuitState('cancel')).toBe('closed');
  });
});

describe('authentication', () => {
  it('bearer: a missing or wrong token is a 401 and not retried; the right one passes', async () => {
    const secured = await startStandIn({ bearer: 'secret-token-123' });
    try {
      const { client } = harness();
      const e = await failure(client.call(service(secured.base, { auth: { kind: 'bearer', token: 'wrong-token-999' } }), BUNDLE));
      expect(e.kind).toBe('unauthorized');
      expect(secured.received).toHaveLength(1);
      await client.call(service(secured.base, { auth: { kind: 'bearer', token: 'secret-token-123' } }), BUNDLE);
      expect(secured.received[1]!.headers.authorization).toBe('Bearer secret-token-123');
    } finally {
      await secured.close();
    }
  });

  it('OAuth client credentials: one token for many calls, renewed when it expires or is revoked', async () => {
    const o = await startStandIn({ oauth: { clientId: 'hakobune', clientSecret: 'client-secret-xyz', expiresIn: 600 } });
    try {
      const { client, t } = harness();
      const svc = service(o.base, { id: 'oauth', auth: { kind: 'oauth2', tokenUrl: o.tokenUrl, clientId: 'hakobune', clientSecret: 'client-secret-xyz' } });
      await Promise.all([client.call(svc, BUNDLE), client.call(svc, BUNDLE), client.call(svc, BUNDLE)]);
      expect(o.tokenRequests).toBe(1);
      const first = o.received[0]!.headers.authorization;
      expect(first).toMatch(/^Bearer tok-/);
      t.now += 600_000; // past expiry
      await client.call(svc, BUNDLE);
      expect(o.tokenRequests).toBe(2);
      // Revoked at the service: one 401, a new token, the call succeeds.
      o.validTokens.clear();
      await client.call(svc, BUNDLE);
      expect(o.tokenRequests).toBe(3);
      const bad = service(o.base, { id: 'oauth-bad', auth: { kind: 'oauth2', tokenUrl: o.tokenUrl, clientId: 'hakobune', clientSecret: 'not-the-secret' } });
      const e = await failure(client.call(bad, BUNDLE));
      expect(e.kind).toBe('unauthorized');
      expect(e.detail).toMatch(/token endpoint/);
    } finally {
      await o.close();
    }
  });
});

describe('answer validation', () => {
  it('a warmed type is checked in the caller’s thread, with the same verdict and issues as the worker gives', async () => {
    const here = createAnswerValidator();
    const there = createAnswerValidator();
    try {
      here.warm(['RiskAssessment', 'NoSuchType']);
      await here.warmed();
      const good = { resourceType: 'RiskAssessment', status: 'final', subject: { reference: 'Patient/x' }, prediction: [{ outcome: { text: 'risk' }, probabilityDecimal: 0.2 }] };
      const bad = { resourceType: 'RiskAssessment', status: 5, prediction: [{ probabilityDecimal: 'high' }], unknownMember: true };
      // Synchronous: no round trip to the worker.
      expect(here.validate(good)).toEqual([]);
      const inline = here.validate(bad);
      expect(Array.isArray(inline)).toBe(true);
      const viaWorker = await there.validate(bad);
      expect(viaWorker.length).toBeGreaterThan(2);
      expect(inline).toEqual(viaWorker);
      // Other types still go to the worker, and a non-type is refused as before.
      expect(here.validate({ resourceType: 'Observation', status: 'final', code: { text: 'x' } })).toBeInstanceOf(Promise);
      expect(await here.validate({ resourceType: 'NoSuchType' })).toEqual([{ path: '/resourceType', message: '"NoSuchType" is not a FHIR R4 resource type' }]);
    } finally {
      await here.close();
      await there.close();
    }
  });
});
