import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { badRequest, notFound } from '../../store/errors.js';
import { toFhir, type FhirResource } from '../../ingest/fhir/to-fhir.js';
import type { ClinicalRecord } from '../../ingest/records/types.js';
import type { Category } from '../../consent/categories.js';
import type { AuthService } from '../auth/auth.service.js';
import type { Gate, PatientView, VisibleRecord } from '../gate/gate.js';
import { preloadedContext, principalOf, requirePatientSession, requireSession } from './session.js';
import type { SessionContextLoader } from '../gate/session-context.js';
import { regionalIdParam } from './params.js';
import { searchPatientsByName, type NameSearchDeps } from './patient-search.js';
import { linkDocumentContent } from './records.routes.js';

/**
 * FHIR R4 under /fhir (http://hl7.org/fhir/R4/http.html): metadata, Patient read and search by
 * _id, Patient/{id}/$everything, and searches by patient and date for the clinical types. Every
 * read goes through the same gate as the JSON API; errors are OperationOutcome (the error
 * renderer does that for every path under /fhir).
 */

/** Which record categories can hold each searchable resource type (see ingest/fhir/to-fhir.ts). */
export const TYPE_CATEGORIES: Record<string, Category[]> = {
  Condition: ['diagnoses'],
  AllergyIntolerance: ['allergies', 'demographics'],
  MedicationRequest: ['prescriptions'],
  MedicationAdministration: ['injections'],
  Observation: ['labs', 'imaging', 'demographics'],
  DiagnosticReport: ['labs', 'imaging'],
  Encounter: ['encounters'],
  DocumentReference: ['documents'],
};

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_COUNT = 200;

function resourcesOf(r: VisibleRecord): FhirResource[] {
  return toFhir(r.content as ClinicalRecord).map((res) =>
    linkDocumentContent(
      {
        ...res,
        // Where the data came from: the facility that holds the original (meta.source is a uri).
        meta: { ...(res.meta as object), source: `urn:hakobune:facility:${r.sourceFacilityId}` },
      },
      r.id,
    ),
  );
}

/** FHIR search parameters arrive once or repeated (date=ge...&date=le...). */
function params(ctx: Context, allowed: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of Object.entries(ctx.query)) {
    if (!allowed.includes(k)) throw badRequest(`unsupported search parameter: ${k}`);
    const list = (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === 'string');
    if (list.some((x) => x.length > 200)) throw badRequest(`parameter ${k} is too long`);
    out.set(k, list);
  }
  return out;
}

/** date=geYYYY-MM-DD / leYYYY-MM-DD / eqYYYY-MM-DD / YYYY-MM-DD (day precision). */
function dateRange(values: string[] | undefined): { from?: string; to?: string } {
  const range: { from?: string; to?: string } = {};
  for (const v of values ?? []) {
    const m = /^(eq|ge|le|gt|lt)?(\d{4}-\d{2}-\d{2})$/.exec(v);
    if (!m || Number.isNaN(Date.parse(`${m[2]}T00:00:00Z`)) || new Date(`${m[2]}T00:00:00Z`).toISOString().slice(0, 10) !== m[2]) {
      throw badRequest(`date must be [ge|le|gt|lt|eq]YYYY-MM-DD, got "${v}"`);
    }
    const day = m[2]!;
    const shift = (d: string, n: number) => new Date(Date.parse(`${d}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);
    switch (m[1] ?? 'eq') {
      case 'eq':
        range.from = day;
        range.to = day;
        break;
      case 'ge':
        range.from = day;
        break;
      case 'gt':
        range.from = shift(day, 1);
        break;
      case 'le':
        range.to = day;
        break;
      case 'lt':
        range.to = shift(day, -1);
        break;
    }
  }
  return range;
}

function count(values: string[] | undefined): number {
  if (!values) return 50;
  const v = values[values.length - 1]!;
  if (!/^\d{1,4}$/.test(v) || Number(v) < 1) throw badRequest('_count must be a whole number of at least 1');
  return Math.min(Number(v), MAX_COUNT);
}

function single(values: string[] | undefined, name: string): string | undefined {
  if (!values) return undefined;
  if (values.length !== 1) throw badRequest(`${name} may be given once`);
  return values[0];
}

function bundle(ctx: Context, resources: FhirResource[], next: string | undefined) {
  // The server's own base (koa 3's ctx.origin is the request's Origin header, not this).
  const base = `${ctx.protocol}://${ctx.host}`;
  const self = `${base}${ctx.originalUrl}`;
  const links = [{ relation: 'self', url: self }];
  if (next) {
    const u = new URL(self);
    u.searchParams.set('_cursor', next);
    links.push({ relation: 'next', url: u.toString() });
  }
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    link: links,
    entry: resources.map((r) => ({ fullUrl: `${base}/fhir/${r.resourceType}/${r.id}`, resource: r, search: { mode: 'match' } })),
  };
}

function patientResource(view: PatientView, demographics: VisibleRecord | undefined): FhirResource {
  const base = demographics ? resourcesOf(demographics).find((r) => r.resourceType === 'Patient') : undefined;
  return {
    ...(base ?? {}),
    resourceType: 'Patient',
    id: view.regionalId,
    identifier: [
      { system: 'urn:hakobune:regional-patient', value: view.regionalId },
      ...(((base?.identifier as unknown[]) ?? []) as object[]),
    ],
    ...(base ? { link: [{ other: { reference: `Patient/${base.id}` }, type: 'seealso' }] } : {}),
  };
}

export function capabilityStatement(now: Date) {
  const search = (extra: Array<{ name: string; type: string }>) => [
    { name: 'patient', type: 'reference' },
    { name: 'date', type: 'date' },
    { name: '_count', type: 'number' },
    ...extra,
  ];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: now.toISOString(),
    kind: 'instance',
    software: { name: 'Hakobune' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json'],
    rest: [
      {
        mode: 'server',
        security: {
          description:
            'Bearer session token from POST /api/auth/login (password, TOTP and a registered device). Every read is limited by role and patient consent, and audited.',
        },
        resource: [
          {
            type: 'Patient',
            interaction: [{ code: 'read' }, { code: 'search-type' }],
            searchParam: [
              { name: '_id', type: 'token' },
              { name: 'name', type: 'string' },
              { name: 'family', type: 'string' },
              { name: 'given', type: 'string' },
              { name: '_count', type: 'number' },
            ],
            operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }],
          },
          ...Object.keys(TYPE_CATEGORIES).map((type) => ({
            type,
            interaction: [{ code: 'search-type' }],
            searchParam: search([]),
          })),
        ],
      },
    ],
  };
}

export function fhirRouter(deps: {
  auth: AuthService;
  gate: Gate;
  hygiene: Middleware;
  clock: () => number;
  names: NameSearchDeps;
  /** Reads the session and the patient's decision context in one statement (see session-context.ts). */
  sessionContexts?: SessionContextLoader;
}): Router {
  const r = new Router({ prefix: '/fhir' });
  r.use(deps.hygiene);
  r.use(async (ctx, next) => {
    await next();
    if (ctx.body !== undefined && ctx.status < 400) ctx.type = FHIR_JSON;
  });

  r.get('/metadata', (ctx) => {
    ctx.body = capabilityStatement(new Date(deps.clock()));
  });

  const session = requireSession(deps.auth);
  const patientSession = requirePatientSession(deps.auth, deps.sessionContexts, deps.clock);

  async function openFor(ctx: Context, id: string) {
    const regionalId = regionalIdParam(id);
    return deps.gate.open(principalOf(ctx), { regionalId, purpose: 'treatment', endpoint: `GET ${ctx.path}`, preloaded: preloadedContext(ctx) });
  }

  r.get('/Patient', session, async (ctx) => {
    const q = params(ctx, ['_id', 'name', 'family', 'given', '_count']);
    const id = single(q.get('_id'), '_id');
    const byName = { name: single(q.get('name'), 'name'), family: single(q.get('family'), 'family'), given: single(q.get('given'), 'given') };
    if (!id) {
      if (!byName.name && !byName.family && !byName.given) throw badRequest('Patient search needs _id (the regional patient id), or name, family or given');
      const found = await searchPatientsByName(deps.names, principalOf(ctx), byName, count(q.get('_count')), `GET ${ctx.path}`);
      const resources: FhirResource[] = [];
      for (const rid of found) {
        const view = await openFor(ctx, rid).catch((e: { status?: number }) => (e.status === 403 ? undefined : Promise.reject(e)));
        if (!view) continue;
        const demo = view.categories.includes('demographics') ? (await view.timeline({ categories: ['demographics'], limit: 1 })).records[0] : undefined;
        resources.push(patientResource(view, demo));
      }
      ctx.body = bundle(ctx, resources, undefined);
      return;
    }
    if (byName.name || byName.family || byName.given) throw badRequest('search by _id or by name, not both');
    let view: PatientView;
    try {
      view = await openFor(ctx, id);
    } catch (e) {
      // Search answers only with patients the caller may see: a hidden patient is simply not found.
      if ((e as { status?: number }).status === 403) {
        ctx.body = bundle(ctx, [], undefined);
        return;
      }
      throw e;
    }
    const demo = view.categories.includes('demographics') ? (await view.timeline({ categories: ['demographics'], limit: 1 })).records[0] : undefined;
    ctx.body = bundle(ctx, [patientResource(view, demo)], undefined);
  });

  r.get('/Patient/:id', patientSession, async (ctx) => {
    if (Object.keys(ctx.query).length) throw badRequest('read takes no parameters');
    const view = await openFor(ctx, ctx.params.id!);
    const demo = view.categories.includes('demographics') ? (await view.timeline({ categories: ['demographics'], limit: 1 })).records[0] : undefined;
    ctx.body = patientResource(view, demo);
  });

  r.get('/Patient/:id/:operation', patientSession, async (ctx) => {
    if (ctx.params.operation !== '$everything') throw notFound(`no such operation: ${ctx.params.operation}`);
    const q = params(ctx, ['_count', '_cursor', 'start', 'end']);
    const start = single(q.get('start'), 'start');
    const end = single(q.get('end'), 'end');
    const range = dateRange([...(start ? [`ge${start}`] : []), ...(end ? [`le${end}`] : [])]);
    const view = await openFor(ctx, ctx.params.id!);
    const page = await view.timeline({ limit: count(q.get('_count')), cursor: single(q.get('_cursor'), '_cursor'), ...range });
    const demo = view.categories.includes('demographics') ? (await view.timeline({ categories: ['demographics'], limit: 1 })).records[0] : undefined;
    ctx.body = bundle(ctx, [patientResource(view, demo), ...page.records.flatMap(resourcesOf)], page.nextCursor);
  });

  r.get('/:type', session, async (ctx) => {
    const type = ctx.params.type!;
    const categories = TYPE_CATEGORIES[type];
    if (!categories) throw notFound(`resource type ${type} is not served here`);
    const q = params(ctx, ['patient', 'date', '_count', '_cursor']);
    const patient = single(q.get('patient'), 'patient');
    if (!patient) throw badRequest(`${type} search needs patient (the regional patient id)`);
    const view = await openFor(ctx, patient.replace(/^Patient\//, ''));
    const visible = categories.filter((c) => view.categories.includes(c));
    if (!visible.length) {
      ctx.body = bundle(ctx, [], undefined);
      return;
    }
    const page = await view.timeline({ categories: visible, limit: count(q.get('_count')), cursor: single(q.get('_cursor'), '_cursor'), ...dateRange(q.get('date')) });
    ctx.body = bundle(ctx, page.records.flatMap(resourcesOf).filter((res) => res.resourceType === type), page.nextCursor);
  });

  return r;
}
