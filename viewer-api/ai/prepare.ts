import type { Category } from '../../consent/categories.js';
import type { ClinicalRecord } from '../../ingest/records/types.js';
import { bundleOf, identityOfRecords } from './bundle.js';
import { deidentificationCache, deidentify, type BirthDateNeed, type DeidentificationCache, type DeidentifyReport, type FhirJson, type ReidentificationKey } from './deidentify.js';

/**
 * Preparing what one AI request sends: the patient's records of the permitted categories as a
 * FHIR Bundle, then de-identified for this request. Mapping the records to FHIR and compiling
 * the patient's scrubber are the expensive part and do not change while the index does not, so
 * they are kept per (service, patient, permitted sources, index version) in a small LRU cache;
 * a request then only walks the mapped Bundle once with its own date shift. Pure apart from that
 * cache; runs in a worker thread (deid-pool.ts) or, without one, in the caller's thread.
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
}

export interface Prepared {
  /** The de-identified Bundle as the JSON text that will be sent. */
  bundleJson: string;
  key: ReidentificationKey;
  report: DeidentifyReport & { truncated: boolean };
  /** Records included in the Bundle. */
  records: number;
}

interface PatientEntry {
  bundle: FhirJson;
  included: number;
  truncated: boolean;
  cache: DeidentificationCache;
}

export class PatientBundleCache {
  private readonly entries = new Map<string, PatientEntry>();

  constructor(
    private readonly secret: Uint8Array,
    private readonly capacity = 256,
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
    this.entries.set(req.cacheKey, { bundle, included, truncated: records.truncated, cache });
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  /** undefined: not cached (load first). */
  prepare(req: PrepareRequest): Prepared | undefined {
    const e = this.entries.get(req.cacheKey);
    if (!e) return undefined;
    // Most recently used last.
    this.entries.delete(req.cacheKey);
    this.entries.set(req.cacheKey, e);
    const deid = deidentify(e.bundle, {
      // The request's own scope: a cache made for another service or patient is refused.
      scope: { secret: this.secret, serviceId: req.serviceId, subject: req.subject },
      birthDate: req.birthDate,
      shiftDays: req.shiftDays,
      now: req.now,
      cache: e.cache,
    });
    return { bundleJson: JSON.stringify(deid.bundle), key: deid.key, report: { ...deid.report, truncated: e.truncated }, records: e.included };
  }
}
