import { ExchangeError } from '../../store/errors.js';
import { ageAt, isFhirDateLike, shiftDatesInText, shiftFhirDate } from './dates.js';
import { pseudonym, PSEUDONYM_PATTERN, type PseudonymScope } from './pseudonym.js';
import { compileScrubber, emptyIdentity, mergeIdentity, type PatientIdentity, type ScrubKind, type Scrubber } from './scrub.js';

/**
 * De-identification of a FHIR R4 Bundle before it leaves the exchange for an AI service, and
 * re-identification of the service's answer inside the exchange. Pure functions over JSON.
 *
 * What changes (the report counts each kind, never a value):
 *  - the patient's names, addresses, telecom, photo and contacts are removed;
 *  - the birth date becomes the year or the age, or goes, as the service declared it needs;
 *  - every identifier value (facility-local patient IDs, order numbers, insurance numbers,
 *    Coverage subscriber and class values) and every resource id becomes a keyed pseudonym
 *    (see pseudonym.ts), identifier systems that name a facility become one pseudonym system,
 *    and references are rewritten to match;
 *  - names of staff and organisations in reference displays are removed;
 *  - every date, dateTime, instant and period moves by the same whole number of days;
 *  - every other string (narrative XHTML, notes, valueString, Condition code.text, titles,
 *    and text / XML attachments such as CDA documents, decoded from base64) is scrubbed of the
 *    patient's own identifiers in every written form (scrub.ts), and dates in it are shifted;
 *  - binary attachments (PDF, images) cannot be scrubbed and are dropped, as are internal blob
 *    addresses.
 * Codes, code systems, units, quantities, statuses and profiles are left as they are: they are
 * what the service needs to read.
 */

export type FhirJson = Record<string, unknown>;

export type BirthDateNeed = 'omit' | 'year' | 'age';
export const BIRTH_DATE_NEEDS = ['omit', 'year', 'age'] as const;

/** Pseudonymous identifiers carry this one system: the original system named the facility. */
export const PSEUDONYM_SYSTEM = 'urn:hakobune:ai:pseudonym';
/** Patient extension that carries the age (in whole years) when the service asks for age. */
export const AGE_EXTENSION = 'urn:hakobune:ai:age-at-request';

export interface DeidentifyOptions {
  scope: PseudonymScope;
  birthDate: BirthDateNeed;
  /** Whole days every date moves by; one random value per request (dates.randomShiftDays). */
  shiftDays: number;
  /** The instant of the request, epoch ms: the age is computed at this instant. */
  now: number;
  /** Identifiers of the patient known to the exchange beyond the bundle (other facilities). */
  identity?: Partial<PatientIdentity>;
  /**
   * What earlier requests for the same patient, service and index version already computed
   * (deidentificationCache): `identity` is then ignored, the cache's scrubber knows it.
   */
  cache?: DeidentificationCache;
}

/**
 * Work that does not change between requests for one patient and one service while the index
 * does not change: the patient's compiled scrubber (which remembers what each string it has seen
 * became) and the keyed pseudonyms already computed. The date shift is not in it: it is drawn
 * per request and applied after scrubbing.
 */
export interface DeidentificationCache {
  readonly scope: PseudonymScope;
  readonly scrubber: Scrubber;
  readonly pseudonyms: Map<string, string>;
}

/** The cache of one patient's Bundle for one service (`scope`), its identity compiled once. */
export function deidentificationCache(bundle: unknown, scope: PseudonymScope, identity?: Partial<PatientIdentity>): DeidentificationCache {
  if (!isObject(bundle) || bundle['resourceType'] !== 'Bundle') throw invalid('only a FHIR Bundle can be de-identified');
  return { scope, scrubber: compileScrubber(mergeIdentity(identityOf(bundle), identity), { memo: true }), pseudonyms: new Map() };
}

export type ChangeKind =
  | 'name'
  | 'address'
  | 'telecom'
  | 'photo'
  | 'contact'
  | 'birth-date'
  | 'identifier'
  | 'insurance'
  | 'resource-id'
  | 'reference'
  | 'staff-name'
  | 'date'
  | 'attachment-scrubbed'
  | 'attachment-dropped'
  | 'attachment-url'
  | 'text-date'
  | `text-${ScrubKind}`;

export interface DeidentifyReport {
  resources: number;
  counts: Partial<Record<ChangeKind, number>>;
}

export interface PseudonymEntry {
  kind: 'identifier' | 'resource-id';
  /** The original value (an identifier value, or a resource id). */
  value: string;
  /** For identifiers: the original system ('' when there was none). */
  system?: string;
  /** For resource ids: the resource type. */
  resourceType?: string;
}

/**
 * What the exchange keeps to reverse one request: stays inside the exchange, never leaves it.
 */
export interface ReidentificationKey {
  serviceId: string;
  subject: string;
  shiftDays: number;
  pseudonyms: Record<string, PseudonymEntry>;
}

export interface DeidentifyResult {
  bundle: FhirJson;
  report: DeidentifyReport;
  key: ReidentificationKey;
}

const STRUCTURAL = new Set([
  'resourceType',
  'id',
  'system',
  'code',
  'valueCode',
  'status',
  'gender',
  'url',
  'profile',
  'contentType',
  'language',
  'use',
  'versionId',
  'intent',
  'priority',
  'mode',
  'comparator',
  'valueBoolean',
]);

/** Reference elements whose display names a person or an organisation. */
const PARTY_KEYS = new Set([
  'subject',
  'patient',
  'requester',
  'recorder',
  'performer',
  'actor',
  'individual',
  'author',
  'asserter',
  'orderer',
  'enterer',
  'beneficiary',
  'subscriber',
  'policyHolder',
  'payor',
  'custodian',
  'authenticator',
  'generalPractitioner',
  'managingOrganization',
  'party',
  'who',
  'informationSource',
  'collector',
  'resultsInterpreter',
  'agent',
  'sender',
  'recipient',
  'organization',
  'assigner',
  'serviceProvider',
  'attester',
]);

const DATE_KEY = /^(?:date|issued|authoredOn|recorded|created|creation|timestamp|start|end|lastUpdated|lastOccurrence|instant|dateTime)$|(?:Date|DateTime|Instant)$|^when[A-Z]/;

const isObject = (v: unknown): v is FhirJson => !!v && typeof v === 'object' && !Array.isArray(v);

/** Identifiers of the patient that the bundle itself carries (Patient and Coverage). */
export function identityOf(bundle: FhirJson): PatientIdentity {
  const id = emptyIdentity();
  for (const r of resourcesOf(bundle)) {
    if (r['resourceType'] === 'Patient') {
      for (const n of arr(r['name'])) {
        if (!isObject(n)) continue;
        const family = str(n['family']);
        const given = arr(n['given']).filter((g): g is string => typeof g === 'string').join('');
        if (family || given) id.names.push({ family, given: given || undefined });
        const text = str(n['text']);
        if (text) {
          const [f, ...g] = text.trim().split(/[\s\u3000]+/);
          id.names.push({ family: f, given: g.join('') || undefined });
        }
      }
      const bd = str(r['birthDate']);
      if (bd) id.birthDates.push(bd);
      for (const a of arr(r['address'])) {
        if (!isObject(a)) continue;
        const text = str(a['text']);
        if (text) id.addresses.push(text);
        const parts = [str(a['state']), str(a['city']), str(a['district']), ...arr(a['line']).map(str)].filter(Boolean).join('');
        if (parts) id.addresses.push(parts);
        const pc = str(a['postalCode']);
        if (pc) id.postalCodes.push(pc);
      }
      for (const t of arr(r['telecom'])) if (isObject(t) && str(t['value'])) id.phones.push(str(t['value'])!);
      for (const i of arr(r['identifier'])) if (isObject(i) && str(i['value'])) id.localIds.push(str(i['value'])!);
    }
    if (r['resourceType'] === 'Coverage') {
      for (const i of arr(r['identifier'])) if (isObject(i) && str(i['value'])) id.insuranceNumbers.push(str(i['value'])!);
      const sub = str(r['subscriberId']);
      if (sub) id.insuranceNumbers.push(sub);
      for (const c of arr(r['class'])) if (isObject(c) && str(c['value'])) id.insuranceNumbers.push(str(c['value'])!);
      for (const p of arr(r['payor'])) {
        if (isObject(p) && isObject(p['identifier']) && str(p['identifier']['value'])) id.insuranceNumbers.push(str(p['identifier']['value'])!);
      }
    }
  }
  return id;
}

const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

function resourcesOf(bundle: FhirJson): FhirJson[] {
  return arr(bundle['entry']).flatMap((e) => (isObject(e) && isObject(e['resource']) ? [e['resource']] : []));
}

function invalid(message: string): ExchangeError {
  return new ExchangeError('unprocessable', message);
}

class Context {
  readonly counts: Partial<Record<ChangeKind, number>> = {};
  readonly pseudonyms: Record<string, PseudonymEntry> = {};
  readonly ids = new Map<string, string>();
  constructor(
    readonly scope: PseudonymScope,
    readonly shiftDays: number,
    readonly scrubber: Scrubber,
    private readonly memo: Map<string, string>,
  ) {}

  private pseudonym(kind: string, value: string): string {
    const k = `${kind}\u0000${value}`;
    let p = this.memo.get(k);
    if (p === undefined) {
      p = pseudonym(this.scope, kind, value);
      this.memo.set(k, p);
    }
    return p;
  }

  count(kind: ChangeKind, n = 1) {
    if (n > 0) this.counts[kind] = (this.counts[kind] ?? 0) + n;
  }

  identifier(system: string, value: string): string {
    const p = this.pseudonym('identifier', `${system}|${value}`);
    this.pseudonyms[p] = { kind: 'identifier', system, value };
    return p;
  }

  resourceId(resourceType: string, id: string): string {
    const key = `${resourceType}/${id}`;
    const known = this.ids.get(key);
    if (known) return known;
    const p = this.pseudonym('resource-id', key);
    this.pseudonyms[p] = { kind: 'resource-id', resourceType, value: id };
    this.ids.set(key, p);
    return p;
  }

  text(s: string): string {
    const { text, counts } = this.scrubber.scrub(s);
    for (const [k, n] of Object.entries(counts)) this.count(`text-${k as ScrubKind}`, n);
    const shifted = shiftDatesInText(text, this.shiftDays);
    this.count('text-date', shifted.count);
    return shifted.text;
  }
}

/** De-identifies one Bundle. Throws `unprocessable` for something that is not a Bundle. */
export function deidentify(bundle: unknown, opts: DeidentifyOptions): DeidentifyResult {
  if (!isObject(bundle) || bundle['resourceType'] !== 'Bundle') throw invalid('only a FHIR Bundle can be de-identified');
  if (bundle['entry'] !== undefined && !Array.isArray(bundle['entry'])) throw invalid('Bundle.entry must be an array');
  if (!Number.isInteger(opts.shiftDays)) throw invalid('the date shift must be a whole number of days');
  const cache = opts.cache;
  if (cache && (cache.scope.serviceId !== opts.scope.serviceId || cache.scope.subject !== opts.scope.subject || !Buffer.from(cache.scope.secret).equals(Buffer.from(opts.scope.secret)))) {
    throw new Error('a de-identification cache is only valid for the service, patient and key it was made for');
  }
  const ctx = cache
    ? new Context(opts.scope, opts.shiftDays, cache.scrubber, cache.pseudonyms)
    : new Context(opts.scope, opts.shiftDays, compileScrubber(mergeIdentity(identityOf(bundle), opts.identity)), new Map());
  const resources = resourcesOf(bundle);
  // Ids first, so that a reference to a resource later in the bundle gets the same pseudonym.
  for (const r of resources) {
    if (typeof r['resourceType'] !== 'string') throw invalid('every Bundle entry must hold a resource with a resourceType');
    if (typeof r['id'] === 'string') ctx.resourceId(r['resourceType'], r['id']);
  }
  const out: FhirJson[] = [];
  for (const r of resources) out.push(resource(r, ctx, opts));
  const result: FhirJson = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: out.map((r) => ({ resource: r })),
  };
  return {
    bundle: result,
    report: { resources: out.length, counts: ctx.counts },
    key: { serviceId: opts.scope.serviceId, subject: opts.scope.subject, shiftDays: opts.shiftDays, pseudonyms: ctx.pseudonyms },
  };
}

function resource(r: FhirJson, ctx: Context, opts: DeidentifyOptions): FhirJson {
  const type = r['resourceType'] as string;
  const copy: FhirJson = { ...r };
  if (typeof copy['id'] === 'string') {
    copy['id'] = ctx.resourceId(type, copy['id']);
    ctx.count('resource-id');
  }
  if (isObject(copy['meta'])) {
    // The source and version are the exchange's internals; profiles and tags stay.
    const { source: _s, versionId: _v, ...meta } = copy['meta'];
    copy['meta'] = meta;
  }
  if (type === 'Patient') patient(copy, ctx, opts);
  if (type === 'Coverage') coverage(copy, ctx);
  return prune(walk(copy, 'resource', ctx) as FhirJson);
}

function patient(p: FhirJson, ctx: Context, opts: DeidentifyOptions) {
  const drop = (key: string, kind: ChangeKind) => {
    if (p[key] === undefined) return;
    ctx.count(kind, arr(p[key]).length);
    delete p[key];
  };
  drop('name', 'name');
  drop('address', 'address');
  drop('telecom', 'telecom');
  drop('photo', 'photo');
  drop('contact', 'contact');
  const birth = str(p['birthDate']);
  if (birth) {
    delete p['birthDate'];
    ctx.count('birth-date');
    if (opts.birthDate === 'year' && /^\d{4}/.test(birth)) p['birthDate'] = birth.slice(0, 4);
    if (opts.birthDate === 'age') {
      const age = ageAt(birth, opts.now);
      if (age !== undefined) {
        p['extension'] = [
          ...arr(p['extension']),
          { url: AGE_EXTENSION, valueAge: { value: age, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } },
        ];
      }
    }
  }
}

function coverage(c: FhirJson, ctx: Context) {
  const sub = str(c['subscriberId']);
  if (sub) {
    c['subscriberId'] = ctx.identifier('coverage-subscriber', sub);
    ctx.count('insurance');
  }
  c['class'] = arr(c['class']).map((k) => {
    if (!isObject(k)) return k;
    const { name: _name, ...rest } = k;
    if (typeof rest['value'] === 'string') {
      rest['value'] = ctx.identifier('coverage-class', rest['value']);
      ctx.count('insurance');
    }
    return rest;
  });
  if ((c['class'] as unknown[]).length === 0) delete c['class'];
}

function walk(v: unknown, key: string, ctx: Context): unknown {
  if (typeof v === 'string') return stringValue(v, key, ctx);
  if (Array.isArray(v)) return v.map((x) => walk(x, key, ctx));
  if (!isObject(v)) return v;
  if (key === 'identifier') return identifier(v, ctx);
  if (typeof v['contentType'] === 'string' && ('data' in v || 'url' in v)) return attachment(v, ctx);
  const out: FhirJson = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'display' && PARTY_KEYS.has(key)) {
      ctx.count('staff-name');
      continue;
    }
    if (k === 'reference' && typeof x === 'string') {
      out[k] = reference(x, ctx);
      continue;
    }
    if (k === 'id' && typeof x === 'string') {
      // Element and contained ids are local names ('#mix'), never identifiers of the patient.
      out[k] = x;
      continue;
    }
    out[k] = walk(x, k, ctx);
  }
  return out;
}

function stringValue(v: string, key: string, ctx: Context): string {
  // Patient.birthDate was already reduced to what the service declared it needs (a year is not
  // shifted: an age computed by the service stays right within the shift).
  if (STRUCTURAL.has(key) || key === 'birthDate') return v;
  if (DATE_KEY.test(key) || v.includes('T')) {
    if (isFhirDateLike(v)) {
      ctx.count('date');
      return shiftFhirDate(v, ctx.shiftDays)!;
    }
  }
  // An HL7 TS value kept as text (OBX value type TS): YYYYMMDD[HHMM[SS]].
  if (key === 'valueString') {
    const m = /^(\d{4})(\d{2})(\d{2})(\d{0,6})$/.exec(v);
    if (m && isFhirDateLike(`${m[1]}-${m[2]}-${m[3]}`)) {
      const scrubbed = ctx.text(v);
      if (scrubbed !== v) return scrubbed;
      ctx.count('date');
      return shiftFhirDate(`${m[1]}-${m[2]}-${m[3]}`, ctx.shiftDays)!.replace(/-/g, '') + m[4];
    }
  }
  return ctx.text(v);
}

function identifier(v: FhirJson, ctx: Context): FhirJson {
  const out: FhirJson = {};
  const system = str(v['system']) ?? '';
  for (const [k, x] of Object.entries(v)) {
    if (k === 'value' && typeof x === 'string') {
      out['value'] = ctx.identifier(system, x);
      ctx.count('identifier');
    } else if (k === 'system') {
      out['system'] = PSEUDONYM_SYSTEM;
    } else if (k === 'assigner') {
      out[k] = walk(x, 'assigner', ctx);
    } else {
      out[k] = walk(x, k, ctx);
    }
  }
  if (out['value'] !== undefined) out['system'] = PSEUDONYM_SYSTEM;
  return out;
}

function reference(ref: string, ctx: Context): string {
  if (ref.startsWith('#')) return ref;
  ctx.count('reference');
  // Type/id, Type/id/_history/n, or an absolute URL ending so (its base names the source).
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]+)?$/.exec(ref);
  if (m) return `${m[1]}/${ctx.resourceId(m[1]!, m[2]!)}`;
  // urn:uuid:..., urn:oid:... or anything else: an opaque pseudonym.
  return `urn:hakobune:ai:ref:${ctx.resourceId('Reference', ref)}`;
}

const TEXTUAL = /^text\/|[/+]xml\b|[/+]json\b|^application\/xml/i;

function attachment(a: FhirJson, ctx: Context): FhirJson {
  const out: FhirJson = {};
  for (const [k, x] of Object.entries(a)) {
    if (k === 'data' || k === 'url' || k === 'hash' || k === 'size') continue;
    out[k] = walk(x, k, ctx);
  }
  if (typeof a['url'] === 'string') ctx.count('attachment-url');
  const data = a['data'];
  if (typeof data === 'string') {
    const contentType = String(a['contentType']);
    if (TEXTUAL.test(contentType) && /^[A-Za-z0-9+/]*={0,2}$/.test(data.replace(/\s/g, ''))) {
      const bytes = Buffer.from(data, 'base64');
      const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
      const scrubbed = Buffer.from(ctx.text(text), 'utf8');
      out['data'] = scrubbed.toString('base64');
      out['size'] = scrubbed.byteLength;
      ctx.count('attachment-scrubbed');
    } else {
      // A PDF or an image cannot be scrubbed reliably: it does not leave the exchange.
      ctx.count('attachment-dropped');
    }
  }
  return out;
}

/** Drops what de-identification emptied: FHIR forbids empty objects, arrays and strings. */
function prune<T>(v: T): T {
  if (Array.isArray(v)) return v.map(prune).filter((x) => x !== undefined && x !== '' && !(Array.isArray(x) && x.length === 0) && !(isObject(x) && Object.keys(x).length === 0)) as T;
  if (isObject(v)) {
    const o: FhirJson = {};
    for (const [k, x] of Object.entries(v)) {
      const p = prune(x);
      if (p === undefined || p === '' || (Array.isArray(p) && p.length === 0) || (isObject(p) && Object.keys(p).length === 0)) continue;
      o[k] = p;
    }
    return o as T;
  }
  return v;
}

export interface ReidentifyResult {
  resource: FhirJson;
  /** Pseudonyms in the answer that this request never issued (left as they were). */
  unknownPseudonyms: number;
}

/**
 * Maps an AI service's answer back to the real patient: pseudonymous references, identifiers and
 * any pseudonym quoted in text become the originals again, and dates move back by the request's
 * shift. Runs inside the exchange only; the key never leaves it.
 */
export function reidentify(answer: unknown, key: ReidentificationKey): ReidentifyResult {
  if (!isObject(answer) || typeof answer['resourceType'] !== 'string') throw invalid('only a FHIR resource can be re-identified');
  let unknown = 0;
  const back = (p: string): string | undefined => {
    const e = key.pseudonyms[p];
    if (!e) {
      unknown++;
      return undefined;
    }
    return e.value;
  };
  const walkBack = (v: unknown, k: string): unknown => {
    if (typeof v === 'string') {
      if (k === 'reference') {
        const m = /^([A-Z][A-Za-z]+)\/(hkb-[a-z2-7]{20})$/.exec(v);
        if (m) {
          const e = key.pseudonyms[m[2]!];
          if (e?.kind === 'resource-id') return `${e.resourceType}/${e.value}`;
          if (!e) unknown++;
          return v;
        }
      }
      if ((DATE_KEY.test(k) || v.includes('T')) && !STRUCTURAL.has(k) && isFhirDateLike(v)) return shiftFhirDate(v, -key.shiftDays);
      return v.replace(PSEUDONYM_PATTERN, (p) => back(p) ?? p);
    }
    if (Array.isArray(v)) return v.map((x) => walkBack(x, k));
    if (!isObject(v)) return v;
    if (k === 'identifier' && v['system'] === PSEUDONYM_SYSTEM && typeof v['value'] === 'string') {
      const e = key.pseudonyms[v['value']];
      if (e?.kind === 'identifier') {
        const { system: _s, value: _v, ...rest } = v;
        return { ...(e.system ? { system: e.system } : {}), value: e.value, ...(walkBack(rest, 'identifier-rest') as FhirJson) };
      }
    }
    const out: FhirJson = {};
    for (const [kk, x] of Object.entries(v)) out[kk] = walkBack(x, kk);
    return out;
  };
  const resource = walkBack(answer, 'resource') as FhirJson;
  return { resource, unknownPseudonyms: unknown };
}
