import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readStoredFile } from '../ingest/records/read.js';
import type { ClinicalRecord } from '../ingest/records/types.js';
import { bundleOf, identityOfRecords } from '../viewer-api/ai/bundle.js';
import { createInlinePreparer, createWorkerPreparer, PreparationError } from '../viewer-api/ai/deid-pool.js';
import { deidentify } from '../viewer-api/ai/deidentify.js';
import { operationBody } from '../viewer-api/ai/request-body.js';
import { PatientBundleCache, type PatientRecords, type Prepared, type PrepareRequest } from '../viewer-api/ai/prepare.js';
import { SecretBox } from '../viewer-api/auth/secret-box.js';
import { AiCallError, AiClient, LocalSendError } from '../viewer-api/ai/ai-client.js';
import { createAnswerValidator } from '../viewer-api/ai/answer-validator.js';
import type { AiService } from '../viewer-api/ai/registry.js';
import { startStandIn, type Behaviour, type StandIn } from '../viewer-api/ai/standin.js';
import { SAMPLES_ROOT } from './support/tmp.js';
import { aiService, identifierForms, resetStandIn, scanForIdentifiers, type KnownPatient } from './ai.support.js';

/**
 * Preparing what an AI request sends, as the exchange does it under load: the patient's mapped
 * Bundle and compiled scrubber cached per index version, de-identification on worker threads
 * (with a worker that dies or hangs failing its requests clearly).
 */

const SECRET = Buffer.alloc(32, 7);
const KNOWN: KnownPatient = {
  names: [
    { family: '患者', given: '太郎' },
    { family: 'カンジャ', given: 'タロウ' },
  ],
  birthDates: ['1948-04-05'],
  addresses: ['静岡県静岡市登呂１－３－５'],
  postalCodes: ['422-8033'],
  phones: ['054-000-0000', '03-5999-9999', '03-3599-9993'],
  localIds: ['9999013'],
  insuranceNumbers: ['67999991'],
};

function sampleRecords(facilityId: string): ClinicalRecord[] {
  const root = path.join(SAMPLES_ROOT, '999/901/9999013');
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  const out: ClinicalRecord[] = [];
  for (const abs of walk(root)) {
    const bytes = fs.readFileSync(abs);
    const r = readStoredFile({ facilityId, path: path.relative(SAMPLES_ROOT, abs), sha256: createHash('sha256').update(bytes).digest('hex'), bytes });
    if (r.status === 'ok' && r.record) out.push(r.record);
  }
  return out;
}

const records = [...sampleRecords('FA'), ...sampleRecords('FB')];
const patient: PatientRecords = { sent: records, demographics: records.filter((r) => r.category === 'patient'), truncated: false };
const request = (over: Partial<PrepareRequest> = {}): PrepareRequest => ({
  cacheKey: 'svc|R-1|v1',
  serviceId: 'svc',
  subject: 'R-1',
  categories: ['demographics', 'prescriptions', 'injections', 'labs'],
  birthDate: 'age',
  shiftDays: 77,
  now: Date.UTC(2026, 10, 21),
  operation: '$analyze',
  ...over,
});

/** De-identified from scratch, without any cache: what a cached preparation must equal. */
function fresh(req: PrepareRequest) {
  const { bundle } = bundleOf(patient.sent, new Set(req.categories));
  return deidentify(bundle, {
    scope: { secret: SECRET, serviceId: req.serviceId, subject: req.subject },
    birthDate: req.birthDate,
    shiftDays: req.shiftDays,
    now: req.now,
    identity: identityOfRecords([...patient.demographics, ...patient.sent]),
  });
}

describe('the per-patient cache of mapped Bundles', () => {
  it('gives, request after request, exactly what de-identifying from scratch gives, with each request’s own shift', () => {
    const cache = new PatientBundleCache(SECRET);
    expect(cache.prepare(request())).toBeUndefined();
    cache.load(request(), patient);
    for (const shiftDays of [77, -200, 77, 365, 0, -31]) {
      const got = cache.prepare(request({ shiftDays }))!;
      const want = fresh(request({ shiftDays }));
      // The very text (and bytes, and hash) of the body de-identifying from scratch gives.
      const text = new TextDecoder().decode(got.body.bytes);
      expect(text).toBe(operationBody('$analyze', JSON.stringify(want.bundle)));
      expect(got.body.sha256).toBe(createHash('sha256').update(text, 'utf8').digest('hex'));
      expect(got.key).toEqual(want.key);
      expect(got.report.counts).toEqual(want.report.counts);
      expect(scanForIdentifiers(JSON.parse(text), identifierForms(KNOWN))).toEqual([]);
    }
    // A plain endpoint gets the Bundle itself; another instant may change the age.
    const later = request({ operation: 'RiskAssessment', now: Date.UTC(2027, 5, 1), shiftDays: 40 });
    expect(new TextDecoder().decode(cache.prepare(later)!.body.bytes)).toBe(JSON.stringify(fresh(later).bundle));
  });

  it('keeps the most recently used patients only', () => {
    const cache = new PatientBundleCache(SECRET, 2);
    for (const k of ['a', 'b', 'c']) cache.load(request({ cacheKey: k }), patient);
    expect(cache.size).toBe(2);
    expect(cache.has('a')).toBe(false);
    expect(cache.prepare(request({ cacheKey: 'b' }))).toBeDefined();
    cache.load(request({ cacheKey: 'd' }), patient);
    expect([cache.has('b'), cache.has('c'), cache.has('d')]).toEqual([true, false, true]);
  });

  it('a cache made for one service or patient is refused for another', () => {
    const cache = new PatientBundleCache(SECRET);
    cache.load(request(), patient);
    // The cache key is the caller's promise; the pseudonym scope is checked all the same.
    expect(() => cache.prepare(request({ serviceId: 'other' }))).toThrow(/only valid for the service, patient and key/);
  });
});

describe('de-identification on worker threads', () => {
  it('gives what the same work in this thread gives, and reads a patient’s records once for a burst of requests', async () => {
    const keyFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hk-deid-')), 'secret.key');
    const box = SecretBox.fromKeyFile(keyFile);
    const pool = createWorkerPreparer({ secret: SECRET, threads: 2, keyFile });
    const inline = createInlinePreparer(SECRET, undefined, box);
    const sources = [{ facilityId: 'FA', localId: '9999013', categories: ['labs'] }];
    const sealed = (i: number) => request({ shiftDays: 10 + i, seal: { aad: `ai-request:r${i}:key`, sources } });
    const same = (got: Prepared, want: Prepared, i: number) => {
      // Everything but the id of the pseudonyms (each thread's own template).
      expect(Buffer.from(got.body.bytes).equals(Buffer.from(want.body.bytes))).toBe(true);
      expect([got.body.sha256, got.body.operation, got.key, got.report, got.records]).toEqual([want.body.sha256, want.body.operation, want.key, want.report, want.records]);
      // The worker sealed the whole key (pseudonyms included) with the sources, under the request's own associated data.
      expect(JSON.parse(box.open(got.sealedKey!, `ai-request:r${i}:key`).toString('utf8'))).toEqual({ key: want.key, sources });
      expect(() => box.open(got.sealedKey!, 'ai-request:other:key')).toThrow();
    };
    try {
      let loads = 0;
      const load = async () => {
        loads++;
        return patient;
      };
      const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => pool.prepare(sealed(i), load)));
      expect(loads).toBe(1);
      for (const [i, got] of burst.entries()) same(got, (await inline.prepare(sealed(i), async () => patient))!, i);
      // Later requests for the patient: the worker no longer sends the pseudonyms, the key is whole all the same.
      for (const i of [20, 21]) same(await pool.prepare(sealed(i), load), (await inline.prepare(sealed(i), async () => patient))!, i);
      expect(loads).toBe(1);
      // A new index version is another key: read again.
      await pool.prepare(request({ cacheKey: 'svc|R-1|v2' }), load);
      expect(loads).toBe(2);
    } finally {
      await pool.close();
    }
  }, 60_000);

  it('a worker that runs out of memory fails its request with a clear error, not a hang', async () => {
    const pool = createWorkerPreparer({ secret: SECRET, threads: 1, resourceLimits: { maxOldGenerationSizeMb: 4, maxYoungGenerationSizeMb: 1 } });
    try {
      const e = await pool.prepare(request(), async () => patient).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(PreparationError);
      expect((e as Error).message).toMatch(/de-identification worker (failed|stopped)/);
    } finally {
      await pool.close();
    }
  }, 60_000);

  it('a worker that does not answer in time is stopped and its requests fail; the next request gets a new worker', async () => {
    const slow = createWorkerPreparer({ secret: SECRET, threads: 1, timeoutMs: 1 });
    try {
      await expect(slow.prepare(request(), async () => patient)).rejects.toThrow(/did not answer within 1 ms/);
      await expect(slow.prepare(request(), async () => patient)).rejects.toBeInstanceOf(PreparationError);
    } finally {
      await slow.close();
    }
    const pool = createWorkerPreparer({ secret: SECRET, threads: 1 });
    try {
      await pool.close();
      await expect(pool.prepare(request(), async () => patient)).rejects.toThrow(/were stopped/);
    } finally {
      await pool.close();
    }
  }, 60_000);

  it('bad input is a clear error from the worker, and the worker goes on serving', async () => {
    const pool = createWorkerPreparer({ secret: SECRET, threads: 1 });
    try {
      const broken = { ...patient, sent: [{ ...records[0]!, content: null } as unknown as ClinicalRecord] };
      await expect(pool.prepare(request({ cacheKey: 'broken' }), async () => broken)).rejects.toThrow(/de-identification failed/);
      const ok = await pool.prepare(request(), async () => patient);
      expect(ok.records).toBeGreaterThan(5);
    } finally {
      await pool.close();
    }
  }, 60_000);
});

describe('request bodies kept and sent by the worker thread that made them', () => {
  const service = (base: string, over: Partial<AiService> = {}) => aiService(base, { id: 'svc', ...over });

  /** A client whose retries do not wait (the sleeps are recorded), as in ai.client.test.ts. */
  const clientWith = (attempts = 4) => {
    const sleeps: number[] = [];
    const client = new AiClient({ retry: { attempts, baseDelayMs: 100, maxDelayMs: 5000 }, random: () => 0.5, validate: (r) => validator.validate(r), sleep: async (ms) => void sleeps.push(ms) });
    return { client, sleeps };
  };
  const validator = createAnswerValidator();
  let s: StandIn;
  let pool: ReturnType<typeof createWorkerPreparer>;
  beforeAll(async () => {
    validator.warm(['RiskAssessment']);
    s = await startStandIn();
    pool = createWorkerPreparer({ secret: SECRET, threads: 1 });
  });
  afterAll(async () => {
    await pool.close();
    await s.close();
    await validator.close();
  });
  afterEach(() => resetStandIn(s));
  const held = (shiftDays = 77) => pool.prepareHeld!(request({ shiftDays }), async () => patient);
  const failureOf = (p: Promise<unknown>) =>
    p.then(
      () => {
        throw new Error('expected the call to fail');
      },
      (e: unknown) => e as Error,
    );

  it('the service receives exactly the bytes the same work in this thread makes, with their hash; the answer lets the body go', async () => {
    const got = await held();
    expect(got.body).not.toHaveProperty('bytes');
    const want = await createInlinePreparer(SECRET).prepare(request(), async () => patient);
    expect([got.body.sha256, got.body.byteLength, got.body.operation, got.key, got.records]).toEqual([want.body.sha256, want.body.bytes.byteLength, want.body.operation, want.key, want.records]);
    const { client } = clientWith();
    const r = await client.call(service(s.base), got.body);
    expect(s.received).toHaveLength(1);
    expect(Buffer.from(s.received[0]!.body, 'utf8').equals(Buffer.from(want.body.bytes))).toBe(true);
    expect(r.sent).toEqual({ sha256: want.body.sha256, bytes: want.body.bytes.byteLength });
    expect(r.resource['resourceType']).toBe('RiskAssessment');
    // Timed in the worker, around the HTTP exchange alone.
    expect(r.serviceMs).toBeGreaterThan(0);
    // Answered once, sent never again.
    const again = await failureOf(client.call(service(s.base), got.body));
    expect(again).toBeInstanceOf(LocalSendError);
    expect(s.received).toHaveLength(1);
  });

  it('retries, Retry-After, malformed answers, refused connections and timeouts come back as the service gave them, as in this thread', async () => {
    const cases: { name: string; queue: Behaviour[]; svc?: Partial<AiService> }[] = [
      { name: '503 with Retry-After, 500, then an answer', queue: [{ kind: 'error', status: 503, retryAfter: '2' }, { kind: 'error', status: 500 }] },
      { name: 'not JSON', queue: [{ kind: 'not-json' }] },
      { name: 'not FHIR', queue: [{ kind: 'invalid-fhir' }] },
      { name: '400', queue: [{ kind: 'error', status: 400 }] },
      { name: 'no answer in time', queue: [{ kind: 'hang' }], svc: { timeoutMs: 150 } },
      { name: 'nothing listening', queue: [], svc: { baseUrl: 'http://127.0.0.1:9/fhir' } },
    ];
    const outcome = async (body: Parameters<AiClient['call']>[1], c: (typeof cases)[number]) => {
      s.queue.length = 0;
      s.queue.push(...c.queue);
      const { client, sleeps } = clientWith(c.name === 'no answer in time' ? 1 : 4);
      const r = await client.call(service(c.svc?.baseUrl ?? s.base, c.svc), body).then(
        (ok) => ({ attempts: ok.attempts.map((a) => [a.outcome, a.status]) }),
        (e: unknown) => (e instanceof AiCallError ? { kind: e.kind, detail: e.detail, attempts: e.attempts, sent: e.sent } : { other: String(e) }),
      );
      return { r, sleeps };
    };
    for (const c of cases) {
      const inThread = await outcome((await createInlinePreparer(SECRET).prepare(request(), async () => patient)).body, c);
      const fromWorker = await outcome((await held()).body, c);
      expect(fromWorker, c.name).toEqual(inThread);
      if (c.name === 'no answer in time') expect(fromWorker.r).toMatchObject({ kind: 'timeout' });
      if (c.name === 'nothing listening') expect(fromWorker.r).toMatchObject({ kind: 'unavailable', detail: expect.stringMatching(/^connection failed/) });
    }
  }, 30_000);

  it('the caller’s signal stops the worker’s call; a worker that stops during a call fails it as the exchange’s trouble, not the service’s', async () => {
    const { client } = clientWith();
    s.fallback = { kind: 'hang' };
    const stop = new AbortController();
    const cancelled = failureOf(client.call(service(s.base), (await held()).body, { signal: stop.signal }));
    await until(() => s.received.length === 1);
    stop.abort();
    expect(await cancelled).toMatchObject({ kind: 'cancelled' });

    const other = createWorkerPreparer({ secret: SECRET, threads: 1 });
    const body = (await other.prepareHeld!(request(), async () => patient)).body;
    const lost = failureOf(client.call(service(s.base), body));
    await until(() => s.received.length === 2);
    await other.close();
    const e = await lost;
    expect(e).toBeInstanceOf(LocalSendError);
    expect(e.message).toMatch(/de-identification workers were stopped/);
    // What may have left is known all the same.
    expect((e as LocalSendError).sent).toEqual({ sha256: body.sha256, bytes: body.byteLength });
    expect(client.circuitState('svc')).toBe('closed');
  });

  it('a signal that aborted before the post stops the worker’s call at once, not at the timeout', async () => {
    // A service of its own: whether the cancelled POST reaches it before the abort does is a race,
    // and must not show in the other tests' stand-in.
    const hanging = await startStandIn();
    hanging.fallback = { kind: 'hang' };
    try {
      const body = (await held()).body;
      const started = Date.now();
      const e = await failureOf(body.post({ baseUrl: hanging.base, operation: '$analyze', timeoutMs: 5000 }, {}, AbortSignal.abort()));
      expect(e.name).toBe('AbortError');
      expect(Date.now() - started).toBeLessThan(4000);
      body.release();
    } finally {
      await hanging.close();
    }
  });

  it('a body let go unsent is not sent', async () => {
    const { client } = clientWith();
    const got = await held();
    got.body.release();
    expect(await failureOf(client.call(service(s.base), got.body))).toBeInstanceOf(LocalSendError);
    expect(s.received).toHaveLength(0);
  });
});

async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!ok()) throw new Error('timed out waiting');
}
