import { CATEGORIES } from '../../consent/categories.js';
import { FACILITY_KINDS } from '../../consent/model.js';

/**
 * OpenAPI paths of records by id (detail, original message, document files), the quality report,
 * facilities and participation, identity links and consents (records.routes.ts,
 * facilities.routes.ts, consent-admin.routes.ts). openapi.ts merges them into the document.
 */
const problem = { $ref: '#/components/responses/Problem' };
const errors = { '400': problem, '401': problem, '403': problem, '429': problem };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const purpose = { name: 'purpose', in: 'query', schema: { type: 'string', enum: ['treatment', 'emergency'], default: 'treatment' } };
const recordId = { name: 'id', in: 'path', required: true, schema: { type: 'integer', minimum: 1 }, description: 'record id (from the timeline)' };
const patientId = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' }, description: 'regional patient id' };
const facilityId = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' } });
const hidden = { ...problem, description: 'no such record, or one the caller may not see (the same answer)' };
const reason = { type: 'string', minLength: 1, maxLength: 2000 };
const localId = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' };
const regional = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$', description: 'regional patient id' };
const localKey = { type: 'object', additionalProperties: false, required: ['facilityId', 'localId'], properties: { facilityId: { type: 'string' }, localId } };
const evidence = {
  type: 'object',
  additionalProperties: false,
  required: ['mediaType', 'base64'],
  properties: { mediaType: { type: 'string', example: 'application/pdf' }, base64: { type: 'string', description: 'the signed form, base64' } },
};

const count = { type: 'integer', minimum: 0 };
const matchRun = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^MR-[0-9A-F]{16}$' },
    status: { type: 'string', enum: ['queued', 'running', 'done', 'failed'] },
    reason: { type: 'string', nullable: true },
    requestedBy: { type: 'object', properties: { username: { type: 'string' }, facilityId: { type: 'string', nullable: true }, role: { type: 'string' } } },
    requestedAt: { type: 'string', format: 'date-time' },
    startedAt: { type: 'string', format: 'date-time', nullable: true },
    finishedAt: { type: 'string', format: 'date-time', nullable: true },
    progress: {
      type: 'object',
      properties: {
        phase: { type: 'string', enum: ['reading', 'searching', 'applying'], nullable: true },
        localPatients: { ...count, description: 'local patients read' },
        blocksSearched: { ...count, nullable: true },
        blocks: { ...count, nullable: true, description: 'blocks of two or more local patients to search' },
        candidates: { ...count, nullable: true, description: 'candidate pairs found so far' },
        applied: { ...count, description: 'candidate pairs applied' },
        toApply: { ...count, nullable: true, description: 'candidate pairs to apply in all (once the search is over)' },
      },
    },
    summary: {
      type: 'object',
      nullable: true,
      description: 'once done',
      properties: { localPatients: count, candidates: count, autoLinked: count, queued: count, skipped: count },
    },
    error: { type: 'string', nullable: true, description: 'why a failed run failed' },
  },
};

export function recordPaths(): Record<string, unknown> {
  return {
    '/api/records/{id}': {
      get: {
        summary: 'One record: source facility, data type, dates, condition flag, basis of access and mapped content (documents: their file type and a content link)',
        parameters: [recordId, purpose],
        responses: { '200': json({ $ref: '#/components/schemas/RecordDetail' }), ...errors, '404': hidden },
      },
    },
    '/api/records/{id}/original': {
      get: {
        summary: 'The original stored message or document (roles with record.original): decoded text, or with format=raw the exact stored bytes (HL7 v2 as ISO-2022-JP)',
        parameters: [recordId, purpose, { name: 'format', in: 'query', schema: { type: 'string', enum: ['text', 'raw'], default: 'text' } }],
        responses: {
          '200': {
            description: 'text/plain; charset=utf-8 (format=text), or the stored bytes with their type, e.g. x-application/hl7-v2+er7; charset=ISO-2022-JP, with Repr-Digest (sha-256)',
            content: { 'text/plain': { schema: { type: 'string' } }, 'x-application/hl7-v2+er7': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errors,
          '404': hidden,
        },
      },
    },
    '/api/records/{id}/content': {
      get: {
        summary: "A document's file (category documents): the CDA as text/xml, a PDF as application/pdf, other attachments with their type",
        parameters: [recordId, purpose],
        responses: {
          '200': { description: 'the stored file, byte for byte, with Repr-Digest (sha-256)', content: { 'application/pdf': { schema: { type: 'string', format: 'binary' } }, 'text/xml': { schema: { type: 'string' } } } },
          ...errors,
          '404': hidden,
        },
      },
    },
  };
}

export function adminPaths(): Record<string, unknown> {
  return {
    '/api/facilities/{id}/quality': {
      get: {
        summary: "A facility's data-quality report (facility administrator: own facility; network administrator: any), as `hakobune quality --json` prints it",
        parameters: [
          facilityId('id'),
          { name: 'snapshot', in: 'query', schema: { type: 'string' }, description: 'only the files this indexed snapshot brought; default: the published state' },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10000, default: 1000 }, description: 'findings listed at most' },
        ],
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem },
      },
    },
    '/api/admin/facilities': {
      get: { summary: 'Facilities with their participation in the network (facility.manage or participation.manage)', responses: { '200': json({ type: 'object' }), ...errors } },
    },
    '/api/admin/roles': {
      get: { summary: 'The role matrix in force: the record categories and actions of each role (user.manage; set by ROLE_POLICY_FILE)', responses: { '200': json({ type: 'object' }), ...errors } },
    },
    '/api/admin/participation': {
      get: { summary: 'Participation of every facility (participation.manage)', responses: { '200': json({ type: 'object' }), ...errors } },
    },
    '/api/admin/participation/{facility}': {
      put: {
        summary: "Set a facility's participation: its kind, whether it discloses and whether it views (audited)",
        parameters: [facilityId('facility')],
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['kind', 'discloses', 'views', 'reason'],
          properties: { kind: { type: 'string', enum: [...FACILITY_KINDS] }, discloses: { type: 'boolean' }, views: { type: 'boolean' }, reason },
        }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem, '413': problem },
      },
    },
    '/api/admin/patients/{id}/links': {
      get: { summary: "A person's identity links (facility-bound roles: their own facility's only)", parameters: [patientId], responses: { '200': json({ type: 'object' }), ...errors, '404': problem } },
    },
    '/api/admin/links/review': {
      get: {
        summary: 'Open candidate links proposed by the matcher (facility-bound roles: pairs of their own local IDs)',
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 500, default: 50 } },
          { name: 'after', in: 'query', schema: { type: 'integer' } },
        ],
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/admin/links/review/{match}/accept': {
      post: {
        summary: 'Confirm a candidate: the two local IDs are linked (audited)',
        parameters: [{ name: 'match', in: 'path', required: true, schema: { type: 'integer', minimum: 1 } }],
        requestBody: json({ type: 'object', additionalProperties: false, required: ['reason'], properties: { reason } }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem, '409': problem },
      },
    },
    '/api/admin/links/review/{match}/reject': {
      post: {
        summary: 'Reject a candidate: the pair is never proposed again (audited)',
        parameters: [{ name: 'match', in: 'path', required: true, schema: { type: 'integer', minimum: 1 } }],
        requestBody: json({ type: 'object', additionalProperties: false, required: ['reason'], properties: { reason } }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem, '409': problem },
      },
    },
    '/api/admin/links/unlink': {
      post: {
        summary: 'Remove the link of a local ID (facility-bound roles: their own facility only; audited)',
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['facilityId', 'localId', 'reason'],
          properties: { facilityId: { type: 'string' }, localId: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' }, reason },
        }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem },
      },
    },
    '/api/admin/links/enrol': {
      post: {
        summary:
          'Link a local ID to a regional patient, or to a new one when regionalId is left out (link.manage; facility-bound roles: their own local IDs, to patients linked at their facility; audited). 201 when linked, 200 when it already was',
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['facilityId', 'localId', 'evidence'],
          properties: { facilityId: { type: 'string' }, localId, regionalId: regional, evidence: { ...reason, description: 'what was checked: insurance card, ID, signed form' }, reason },
        }),
        responses: { '200': json({ type: 'object' }), '201': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
    '/api/admin/links/relink': {
      post: {
        summary: 'Move a linked local ID to another regional patient (link.manage; facility-bound roles: their own local IDs, to patients linked at their facility; audited)',
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['facilityId', 'localId', 'regionalId', 'reason'],
          properties: { facilityId: { type: 'string' }, localId, regionalId: regional, reason },
        }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
    '/api/admin/links/reject-pair': {
      post: {
        summary: 'Record that two local patients are different people: the matcher never proposes them again (link.manage; facility-bound roles: two of their own local IDs; audited)',
        requestBody: json({ type: 'object', additionalProperties: false, required: ['a', 'b', 'reason'], properties: { a: localKey, b: localKey, reason } }),
        responses: { '200': json({ type: 'object' }), ...errors, '409': problem, '413': problem },
      },
    },
    '/api/admin/links/match': {
      post: {
        summary:
          'Ask for a run of the matcher over every known local patient (network administrators; audited): answered 202 with the run (Location: its status); a background job searches in a worker thread, auto-links as configured and queues the rest for review. 409 while another run is queued or running (one at a time across the network; a run silent for ten minutes is abandoned)',
        requestBody: json({ type: 'object', additionalProperties: false, properties: { reason } }),
        responses: {
          '202': { ...json(matchRun), headers: { Location: { schema: { type: 'string' }, description: 'the run: /api/admin/links/match/{run}' } } },
          ...errors,
          '409': { ...problem, description: 'a run is already queued or running: runId names it' },
          '413': problem,
        },
      },
      get: {
        summary: 'The latest runs of the matcher, newest first (network administrators; audited)',
        parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } }],
        responses: { '200': json({ type: 'object', properties: { runs: { type: 'array', items: matchRun } } }), ...errors },
      },
    },
    '/api/admin/links/match/{run}': {
      get: {
        summary: 'A run of the matcher: status, progress and, once done, its summary; a failed run says why (network administrators; audited)',
        parameters: [{ name: 'run', in: 'path', required: true, schema: { type: 'string', pattern: '^MR-[0-9A-F]{16}$' } }],
        responses: { '200': json(matchRun), ...errors, '404': problem },
      },
    },
    '/api/admin/links/history': {
      get: {
        summary: 'Every link event of one local ID (link.manage; facility-bound roles: their own local IDs)',
        parameters: [
          { name: 'facilityId', in: 'query', required: true, schema: { type: 'string' } },
          { name: 'localId', in: 'query', required: true, schema: localId },
        ],
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem },
      },
    },
    '/api/admin/patients/{id}/links/history': {
      get: {
        summary: "A regional patient's links and every change to them; network administrators also get the patient-level identity audit (facility-bound roles: their own facility's links and events)",
        parameters: [patientId],
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem },
      },
    },
    '/api/admin/patients/{id}/merge': {
      post: {
        summary: "Merge this regional patient into another (one person): its links move to `into` (link.manage; facility-bound roles: only when every link of both is their own facility's; audited)",
        parameters: [patientId],
        requestBody: json({ type: 'object', additionalProperties: false, required: ['into', 'reason'], properties: { into: regional, reason } }),
        responses: { '200': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
    '/api/admin/patients/{id}/split': {
      post: {
        summary: 'Split local IDs off this regional patient into a new one (two people); at least one local ID stays; consents stay with this patient (link.manage; facility-bound roles: their own local IDs; audited)',
        parameters: [patientId],
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['localIds', 'reason'],
          properties: { localIds: { type: 'array', minItems: 1, maxItems: 500, items: localKey }, reason },
        }),
        responses: { '201': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
    '/api/admin/patients/{id}/consents': {
      get: { summary: "A patient's consent versions and the one in force (consent.read)", parameters: [patientId], responses: { '200': json({ type: 'object' }), ...errors, '404': problem } },
      post: {
        summary: 'Record a new consent version (consent.manage; audited); terms as in consent/terms.ts',
        parameters: [patientId],
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['terms'],
          properties: {
            terms: { type: 'object', description: `status, disclosing, receiving, categories (${CATEGORIES.join(', ')}), purposes, validFrom, validTo` },
            note: reason,
            evidence,
          },
        }),
        responses: { '201': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
    '/api/admin/patients/{id}/consents/withdraw': {
      post: {
        summary: "Withdraw the patient's consent from now on (consent.manage; audited)",
        parameters: [patientId],
        requestBody: json({ type: 'object', additionalProperties: false, required: ['reason'], properties: { reason, evidence } }),
        responses: { '201': json({ type: 'object' }), ...errors, '404': problem, '409': problem, '413': problem },
      },
    },
  };
}

export const RECORD_DETAIL_SCHEMA = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    patient: { type: 'string' },
    sourceFacilityId: { type: 'string' },
    localPatientId: { type: 'string' },
    category: { type: 'string', enum: [...CATEGORIES] },
    dataType: { type: 'string' },
    careDate: { type: 'string', format: 'date', nullable: true },
    timestamp: { type: 'string' },
    orderNo: { type: 'string' },
    department: { type: 'string', nullable: true },
    condition: { type: 'string', enum: ['0', '1', '2'], description: 'SS-MIX2 condition flag' },
    status: { type: 'string', enum: ['current', 'superseded', 'cancelled'] },
    basis: { type: 'string', enum: ['own-facility', 'consent', 'disaster', 'break-glass'] },
    sha256: { type: 'string' },
    content: { type: 'object' },
    document: { type: 'object', nullable: true, properties: { title: { type: 'string', nullable: true }, contentType: { type: 'string' }, size: { type: 'integer', nullable: true }, name: { type: 'string' } } },
    links: { type: 'object', properties: { self: { type: 'string' }, original: { type: 'string' }, content: { type: 'string' } } },
  },
};
