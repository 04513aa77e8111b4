import { ExchangeError } from '../../store/errors.js';
import { randomBytes } from 'node:crypto';
import { ageAt, isFhirDateLike, mapDatesInText, shiftFhirDate, shiftTextDate, type TextDateFormat } from './dates.js';
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

/**
 * What one request's de-identification writes that depends on the request itself: the dates
 * (moved by its shift), the age (at its instant), and text attachments holding shifted dates
 * (their base64 and size). Everything else depends only on the patient, service and key.
 */
interface RequestValues {
  /** A FHIR date, dateTime or instant (already known to be one), shifted; `compact`: written without dashes (HL7 TS). */
  fhirDate(v: string, compact?: boolean): string;
  /** A date of free text (valid), shifted and written in its own form. */
  textDate(y: number, m: number, d: number, format: TextDateFormat): string;
  /** The age at the request, or undefined when the birth date gives none. */
  age(birthDate: string): number | string | undefined;
  /** A scrubbed text attachment's `data` (base64) and `size`. */
  attachment(text: string): { data: string; size: number | string };
}

/** The values of one request with its shift and instant. */
function requestValues(shiftDays: number, now: number): RequestValues {
  return {
    fhirDate: (v, compact) => (compact ? shiftFhirDate(v, shiftDays)!.replace(/-/g, '') : shiftFhirDate(v, shiftDays)!),
    textDate: (y, m, d, format) => shiftTextDate(y, m, d, format, shiftDays),
    age: (birthDate) => ageAt(birthDate, now),
    attachment: (text) => {
      const bytes = Buffer.from(text, 'utf8');
      return { data: bytes.toString('base64'), size: bytes.byteLength };
    },
  };
}

class Context {
  readonly counts: Partial<Record<ChangeKind, number>> = {};
  readonly pseudonyms: Record<string, PseudonymEntry> = {};
  readonly ids = new Map<string, string>();
  constructor(
    readonly scope: PseudonymScope,
    readonly values: RequestValues,
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
    const shifted = mapDatesInText(text, this.values.textDate);
    this.count('text-date', shifted.count);
    return shifted.text;
  }
}

function checkInput(bundle: unknown, opts: Pick<DeidentifyOptions, 'scope' | 'cache'>): asserts bundle is FhirJson {
  if (!isObject(bundle) || bundle['resourceType'] !== 'Bundle') throw invalid('only a FHIR Bundle can be de-identified');
  if (bundle['entry'] !== undefined && !Array.isArray(bundle['entry'])) throw invalid('Bundle.entry must be an array');
  if (opts.cache) checkCacheScope(opts.cache, opts.scope);
}

/** Refuses a cache (or what was made from it) for another service, patient or key than the request's. */
export function checkCacheScope(cache: DeidentificationCache, scope: PseudonymScope): void {
  if (cache.scope.serviceId !== scope.serviceId || cache.scope.subject !== scope.subject || !Buffer.from(cache.scope.secret).equals(Buffer.from(scope.secret))) {
    throw new Error('a de-identification cache is only valid for the service, patient and key it was made for');
  }
}

/** Walks the Bundle once with these request values. */
function run(bundle: FhirJson, opts: Omit<DeidentifyOptions, 'shiftDays' | 'now'>, values: RequestValues): { bundle: FhirJson; ctx: Context; resources: number } {
  const cache = opts.cache;
  const ctx = cache
    ? new Context(opts.scope, values, cache.scrubber, cache.pseudonyms)
    : new Context(opts.scope, values, compileScrubber(mergeIdentity(identityOf(bundle), opts.identity)), new Map());
  const resources = resourcesOf(bundle);
  // Ids first, so that a reference to a resource later in the bundle gets the same pseudonym.
  for (const r of resources) {
    if (typeof r['resourceType'] !== 'string') throw invalid('every Bundle entry must hold a resource with a resourceType');
    if (typeof r['id'] === 'string') ctx.resourceId(r['resourceType'], r['id']);
  }
  const out: FhirJson[] = [];
  for (const r of resources) out.push(resource(r, ctx, opts.birthDate));
  return { bundle: { resourceType: 'Bundle', type: 'collection', entry: out.map((r) => ({ resource: r })) }, ctx, resources: out.length };
}

/** De-identifies one Bundle. Throws `unprocessable` for something that is not a Bundle. */
export function deidentify(bundle: unknown, opts: DeidentifyOptions): DeidentifyResult {
  checkInput(bundle, opts);
  if (!Number.isInteger(opts.shiftDays)) throw invalid('the date shift must be a whole number of days');
  const r = run(bundle, opts, requestValues(opts.shiftDays, opts.now));
  return {
    bundle: r.bundle,
    report: { resources: r.resources, counts: r.ctx.counts },
    key: { serviceId: opts.scope.serviceId, subject: opts.scope.subject, shiftDays: opts.shiftDays, pseudonyms: r.ctx.pseudonyms },
  };
}

/**
 * One patient's de-identified Bundle for one service with what depends on the request left
 * open: its JSON text is written once, with a marker wherever a shifted date, the age, or a text
 * attachment holding dates goes; `renderBytes` fills them in for one request. What it gives is
 * exactly `JSON.stringify(deidentify(...).bundle)` with that shift and instant (the tests hold
 * it to that), at the cost of copying bytes instead of a walk of the whole Bundle.
 */
export interface DeidentifiedTemplate {
  /** Unique to this template (random). */
  id: string;
  report: DeidentifyReport;
  /** The key's pseudonyms (the same for every request of this template). */
  pseudonyms: Record<string, PseudonymEntry>;
  /**
   * The Bundle's JSON for one request as UTF-8 bytes, between `before` and `after`, written
   * straight into one buffer of its own (never a slice of Node's pool: it can be handed to
   * another thread); undefined when this template cannot give it (then deidentify).
   */
  renderBytes(shiftDays: number, now: number, before?: string, after?: string): Buffer | undefined;
}

type Slot =
  | { kind: 'fhir-date'; value: string; compact: boolean }
  | { kind: 'text-date'; y: number; m: number; d: number; format: TextDateFormat }
  | { kind: 'age'; birthDate: string }
  | { kind: 'attachment-data' | 'attachment-size'; parts: (string | number)[] };

const letters = (n: number): string => {
  let s = '';
  do {
    s += String.fromCharCode(97 + (n % 26));
    n = Math.floor(n / 26);
  } while (n > 0);
  return s;
};

export function deidentifyTemplate(bundle: unknown, opts: Omit<DeidentifyOptions, 'shiftDays' | 'now'> & { now: number }): DeidentifiedTemplate {
  checkInput(bundle, opts);
  // Markers: private-use characters around a random nonce and the slot's number in letters
  // (no digits, so that no date pattern of free text can meet one). Inside a JSON string, or a
  // whole JSON string standing for a number.
  const nonce = [...randomBytes(12)].map((b) => String.fromCharCode(97 + (b % 26))).join('');
  const slots: Slot[] = [];
  const add = (slot: Slot, raw = false) => {
    slots.push(slot);
    return raw ? `\uE002${nonce}${letters(slots.length - 1)}\uE003` : `\uE000${nonce}${letters(slots.length - 1)}\uE001`;
  };
  const inText = new RegExp(`\uE000${nonce}([a-z]+)\uE001`, 'g');
  const number = (code: string) => {
    let n = 0;
    for (let i = code.length - 1; i >= 0; i--) n = n * 26 + (code.charCodeAt(i) - 97);
    return n;
  };
  // Whether the age is given is decided here, at the template's instant; a request for which
  // that differs (a birth date later than it) is not rendered from the template.
  const ageGiven = new Map<string, boolean>();
  const values: RequestValues = {
    fhirDate: (value, compact) => add({ kind: 'fhir-date', value, compact: !!compact }),
    textDate: (y, m, d, format) => add({ kind: 'text-date', y, m, d, format }),
    age: (birthDate) => {
      const given = ageAt(birthDate, opts.now) !== undefined;
      ageGiven.set(birthDate, given);
      return given ? add({ kind: 'age', birthDate }, true) : undefined;
    },
    attachment: (text) => {
      inText.lastIndex = 0;
      if (!inText.test(text)) return requestValues(0, opts.now).attachment(text);
      const parts = text.split(inText).map((p, i) => (i % 2 ? number(p) : p));
      return { data: add({ kind: 'attachment-data', parts }), size: add({ kind: 'attachment-size', parts }, true) };
    },
  };
  const r = run(bundle, opts, values);
  const json = JSON.stringify(r.bundle);
  const marker = new RegExp(`\uE000${nonce}([a-z]+)\uE001|"\uE002${nonce}([a-z]+)\uE003"`, 'g');
  const pieces: string[] = [];
  const refs: number[] = [];
  let pos = 0;
  for (const m of json.matchAll(marker)) {
    pieces.push(json.slice(pos, m.index));
    refs.push(number(m[1] ?? m[2]!));
    pos = m.index + m[0].length;
  }
  pieces.push(json.slice(pos));
  // Every slot is written exactly once: in the JSON, or in a text attachment's text.
  const reached = new Set(refs);
  for (const s of slots) if (s.kind === 'attachment-data') for (const p of s.parts) if (typeof p === 'number') reached.add(p);
  if (reached.size !== slots.length || new Set(refs).size !== refs.length) throw new Error('the de-identified Bundle could not be written as a template');
  /** The JSON text of each marker in order, for one request (undefined: not from this template). */
  const valuesOf = (shiftDays: number, now: number): string[] | undefined => {
    if (!Number.isInteger(shiftDays)) throw invalid('the date shift must be a whole number of days');
    for (const [birthDate, given] of ageGiven) if ((ageAt(birthDate, now) !== undefined) !== given) return undefined;
    const actual = requestValues(shiftDays, now);
    const raw = new Map<number, string | number>();
    const value = (i: number): string | number => {
      let v = raw.get(i);
      if (v !== undefined) return v;
      const s = slots[i]!;
      if (s.kind === 'fhir-date') v = actual.fhirDate(s.value, s.compact);
      else if (s.kind === 'text-date') v = actual.textDate(s.y, s.m, s.d, s.format);
      else if (s.kind === 'age') v = ageAt(s.birthDate, now)!;
      else {
        const a = actual.attachment(s.parts.map((p) => (typeof p === 'number' ? value(p) : p)).join(''));
        v = s.kind === 'attachment-data' ? a.data : a.size;
      }
      raw.set(i, v);
      return v;
    };
    // A text date may carry quotes (value="..."): written as JSON.stringify writes them.
    return refs.map((i) => (slots[i]!.kind === 'text-date' ? JSON.stringify(value(i)).slice(1, -1) : String(value(i))));
  };
  let encoded: Buffer[] | undefined;
  return {
    id: nonce,
    report: { resources: r.resources, counts: r.ctx.counts },
    pseudonyms: r.ctx.pseudonyms,
    renderBytes(shiftDays, now, before = '', after = '') {
      const v = valuesOf(shiftDays, now);
      if (!v) return undefined;
      encoded ??= pieces.map((p) => Buffer.from(p, 'utf8'));
      let total = Buffer.byteLength(before) + Buffer.byteLength(after);
      for (const p of encoded) total += p.byteLength;
      for (const x of v) total += Buffer.byteLength(x);
      const out = Buffer.allocUnsafeSlow(total);
      let at = out.write(before, 0);
      for (let k = 0; k < v.length; k++) {
        out.set(encoded[k]!, at);
        at += encoded[k]!.byteLength;
        at += out.write(v[k]!, at);
      }
      out.set(encoded[v.length]!, at);
      at += encoded[v.length]!.byteLength;
      at += out.write(after, at);
      if (at !== total) throw new Error('the de-identified Bundle was not written whole');
      return out;
    },
  };
}

function resource(r: FhirJson, ctx: Context, birthDate: BirthDateNeed): FhirJson {
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
  const age = type === 'Patient' ? patient(copy, ctx, birthDate) : undefined;
  if (type === 'Coverage') coverage(copy, ctx);
  const out = walk(copy, 'resource', ctx) as FhirJson;
  // Added after the walk: it holds nothing to de-identify (and the age may be a template's marker).
  if (age) out['extension'] = [...arr(out['extension']), age];
  return prune(out);
}

/** Removes the patient's demographics; answers the age extension to add, if the service asked for the age. */
function patient(p: FhirJson, ctx: Context, need: BirthDateNeed): FhirJson | undefined {
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
  if (!birth) return undefined;
  delete p['birthDate'];
  ctx.count('birth-date');
  if (need === 'year' && /^\d{4}/.test(birth)) p['birthDate'] = birth.slice(0, 4);
  if (need !== 'age') return undefined;
  const age = ctx.values.age(birth);
  if (age === undefined) return undefined;
  // Where the old extensions were, or last.
  if (p['extension'] === undefined) p['extension'] = [];
  return { url: AGE_EXTENSION, valueAge: { value: age, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' } };
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
      return ctx.values.fhirDate(v);
    }
  }
  // An HL7 TS value kept as text (OBX value type TS): YYYYMMDD[HHMM[SS]].
  if (key === 'valueString') {
    const m = /^(\d{4})(\d{2})(\d{2})(\d{0,6})$/.exec(v);
    if (m && isFhirDateLike(`${m[1]}-${m[2]}-${m[3]}`)) {
      const scrubbed = ctx.text(v);
      if (scrubbed !== v) return scrubbed;
      ctx.count('date');
      return ctx.values.fhirDate(`${m[1]}-${m[2]}-${m[3]}`, true) + m[4];
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
      const scrubbed = ctx.values.attachment(ctx.text(text));
      out['data'] = scrubbed.data;
      out['size'] = scrubbed.size;
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
