import type { Category } from '../../consent/categories.js';
import type { ClinicalRecord } from '../../ingest/records/types.js';
import { bundleOf, identityOfRecords } from './bundle.js';
import { createHash } from 'node:crypto';
import { checkCacheScope, deidentificationCache, deidentify, deidentifyTemplate, type BirthDateNeed, type DeidentificationCache, type DeidentifiedTemplate, type DeidentifyReport, type FhirJson, type PseudonymEntry, type ReidentificationKey } from './deidentify.js';
import type { PostAnswer, PostTarget } from './fhir-post.js';
import { operationWrap } from './request-body.js';

/**
 * Preparing what one AI request sends: the patient's records of the permitted categories as a
 * FHIR Bundle, then de-identified for this request. Mapping the records to FHIR and compiling
 * the patient's scrubber are the expensive part and do not change while the index does not, so
 * they are kept per (service, patient, permitted sources, index version) in a small LRU cache,
 * with the de-identified Bundle's JSON as a template (deidentifyTemplate): a request then only
 * fills in its own shifted dates and age, and the body it sends is encoded and hashed here.
 * Pure apart from that cache; runs in a worker thread (deid-pool.ts) or, without one, in the
 * caller's thread.
 */

export interface PatientRecords {
  /** The records that go (already only the permitted ones, newest first, at most the limit). */
  sent: ClinicalRecord[];
  /** The patient's demographics at every linked facility: scrubbed from text whether sent or not. */
  demographics: ClinicalRecord[];
  /** More records were permitted than the limit: the oldest were left out. */
  truncated: boolean;
}

export interface PrepareRequest {
  /** Names the patient's permitted sources and the index version (see cacheKeyOf in ai.service). */
  cacheKey: string;
  serviceId: string;
  /** The regional patient id. */
  subject: string;
  categories: Category[];
  birthDate: BirthDateNeed;
  shiftDays: number;
  now: number;
  /** The service's operation: the body is the Bundle, or Parameters around it (request-body.ts). */
  operation: string;
  /**
   * Seal the request's re-identification key here (with the cache's sealer), together with
   * `sources`, under associated data `aad`: Prepared.sealedKey holds `{ key, sources }`.
   */
  seal?: { aad: string; sources: unknown };
  /** The pseudonyms of this cache key the caller already holds (their id, Prepared.pseudonymsId): not sent again. */
  pseudonymsHeld?: string;
}

/** Seals a secret for storage (SecretBox). */
export interface Sealer {
  seal(plain: Buffer, aad: string): Buffer;
}

export interface Prepared<B = PreparedBody> {
  /** The exact request body that will be sent (UTF-8 JSON), for `operation`. */
  body: B;
  /** Its pseudonyms are left out (`{}`) when the caller said it holds them (pseudonymsHeld = pseudonymsId). */
  key: ReidentificationKey;
  /** Names the key's pseudonyms: the same id, the same pseudonyms. */
  pseudonymsId: string;
  /** With `seal` asked for: `{ key, sources }`, sealed (always with the pseudonyms). */
  sealedKey?: Buffer;
  report: DeidentifyReport & { truncated: boolean };
  /** Records included in the Bundle. */
  records: number;
}

/** A request body made ahead of the call: its bytes, their SHA-256 (hex), and the operation it is for. */
export interface PreparedBody {
  bytes: Uint8Array;
  sha256: string;
  operation: string;
}

/**
 * A request body that stays in the worker thread that made it (deid-pool.ts): that thread sends
 * it, so neither the bytes nor the call's HTTP work go through the viewer's event loop. Released
 * once the request no longer needs it (after its last attempt, or when it is not sent).
 */
export interface HeldBody {
  held: true;
  sha256: string;
  byteLength: number;
  operation: string;
  /** One POST of the body to `target` (fhir-post.ts) from the worker; a failure as fhir-kit-client throws it. */
  post(target: PostTarget, headers: Record<string, string>, signal?: AbortSignal): Promise<PostAnswer>;
  release(): void;
}

interface PatientEntry {
  bundle: FhirJson;
  included: number;
  truncated: boolean;
  cache: DeidentificationCache;
  /** By the birth date the service needs. */
  templates: Map<BirthDateNeed, DeidentifiedTemplate>;
}

export class PatientBundleCache {
  private readonly entries = new Map<string, PatientEntry>();

  constructor(
    private readonly secret: Uint8Array,
    private readonly capacity = 256,
    private readonly sealer?: Sealer,
  ) {}

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Maps the records and compiles the patient's scrubber, once per cache key. */
  load(req: PrepareRequest, records: PatientRecords): void {
    const { bundle, included } = bundleOf(records.sent, new Set(req.categories));
    const cache = deidentificationCache(bundle, { secret: this.secret, serviceId: req.serviceId, subject: req.subject }, identityOfRecords([...records.demographics, ...records.sent]));
    this.entries.delete(req.cacheKey);
    this.entries.set(req.cacheKey, { bundle, included, truncated: records.truncated, cache, templates: new Map() });
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  /** undefined: not cached (load first). */
  prepare(req: PrepareRequest): Prepared | undefined {
    const e = this.entries.get(req.cacheKey);
    if (!e) return undefined;
    // Most recently used last.
    this.entries.delete(req.cacheKey);
    this.entries.set(req.cacheKey, e);
    const scope = { secret: this.secret, serviceId: req.serviceId, subject: req.subject };
    // The request's own scope: a cache made for another service or patient is refused.
    checkCacheScope(e.cache, scope);
    let template = e.templates.get(req.birthDate);
    if (!template) e.templates.set(req.birthDate, (template = deidentifyTemplate(e.bundle, { scope, birthDate: req.birthDate, now: req.now, cache: e.cache })));
    const [before, after] = operationWrap(req.operation);
    let bytes: Uint8Array | undefined = template.renderBytes(req.shiftDays, req.now, before, after);
    let key: ReidentificationKey = { serviceId: req.serviceId, subject: req.subject, shiftDays: req.shiftDays, pseudonyms: template.pseudonyms };
    let report: DeidentifyReport = template.report;
    let pseudonymsId = template.id;
    if (bytes === undefined) {
      const deid = deidentify(e.bundle, { scope, birthDate: req.birthDate, shiftDays: req.shiftDays, now: req.now, cache: e.cache });
      // Its own buffer (never a pooled slice): a worker hands it over without a copy.
      bytes = new TextEncoder().encode(before + JSON.stringify(deid.bundle) + after);
      [key, report, pseudonymsId] = [deid.key, deid.report, `${template.id}:full`];
    }
    let sealedKey: Buffer | undefined;
    if (req.seal) {
      if (!this.sealer) throw new Error('this cache has no key to seal with');
      const sealed = this.sealer.seal(Buffer.from(JSON.stringify({ key, sources: req.seal.sources }), 'utf8'), req.seal.aad);
      // Its own buffer (a small one may be a slice of Node's pool), like the body's.
      sealedKey = sealed.byteOffset === 0 && sealed.buffer.byteLength === sealed.byteLength ? sealed : Buffer.from(new Uint8Array(sealed).buffer);
    }
    const held = req.pseudonymsHeld === pseudonymsId;
    return {
      body: { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), operation: req.operation },
      key: held ? { ...key, pseudonyms: {} as Record<string, PseudonymEntry> } : key,
      pseudonymsId,
      ...(sealedKey ? { sealedKey } : {}),
      report: { resources: report.resources, counts: { ...report.counts }, truncated: e.truncated },
      records: e.included,
    };
  }
}
