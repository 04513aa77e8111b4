import Router from '@koa/router';
import type { Middleware } from 'koa';
import { CATEGORIES } from '../../consent/categories.js';
import { ROLES } from '../roles/roles.js';
import { adminPaths, recordPaths, RECORD_DETAIL_SCHEMA } from './openapi.records.js';
import { restorePaths, retentionPaths } from './openapi.restores.js';

/**
 * The OpenAPI 3.0 description of the viewer's JSON API, served at /api/openapi.json. It lists the
 * endpoints that exist; nothing here is planned-but-absent.
 */
const problem = { $ref: '#/components/responses/Problem' };
const errors = { '400': problem, '401': problem, '403': problem, '429': problem };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' }, description: 'regional patient id' };
const purpose = { name: 'purpose', in: 'query', schema: { type: 'string', enum: ['treatment', 'emergency'], default: 'treatment' } };

export function openApiDocument(clinical: boolean): Record<string, unknown> {
  const paths: Record<string, unknown> = {
    '/api/auth/login': {
      post: {
        summary: 'Sign in with password, TOTP code and a registered device',
        security: [],
        parameters: [{ name: 'X-Device-Credential', in: 'header', required: true, schema: { type: 'string' } }],
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['facilityId', 'username', 'password', 'totp'],
          properties: {
            facilityId: { type: 'string', maxLength: 32 },
            username: { type: 'string', maxLength: 64 },
            password: { type: 'string', maxLength: 256 },
            totp: { type: 'string', pattern: '^\\d{6}$' },
          },
        }),
        responses: {
          '200': json({
            type: 'object',
            properties: {
              token: { type: 'string' },
              tokenType: { type: 'string', enum: ['Bearer'] },
              expiresAt: { type: 'string', format: 'date-time' },
              idleTimeoutSeconds: { type: 'integer' },
              user: { $ref: '#/components/schemas/User' },
            },
          }),
          ...errors,
          '413': problem,
        },
      },
    },
    '/api/auth/logout': { post: { summary: 'End this session', responses: { '204': { description: 'ended' }, ...errors } } },
    '/api/auth/me': { get: { summary: 'The signed-in user and session', responses: { '200': json({ type: 'object' }), ...errors } } },
    '/api/audit': {
      get: {
        summary: 'Search the audit trail (auditors)',
        parameters: ['from', 'to', 'user', 'patient', 'facility', 'action', 'after', 'limit'].map((name) => ({ name, in: 'query', schema: { type: 'string' } })),
        responses: { '200': json({ type: 'object' }), ...errors },
      },
    },
    '/api/audit/AuditEvent': {
      get: { summary: 'Export audit entries as a FHIR R4 Bundle of AuditEvent (auditors)', responses: { '200': { description: 'FHIR Bundle' }, ...errors } },
    },
    '/api/admin/users': {
      get: { summary: "A facility's users and their roles (never secrets)", parameters: [{ name: 'facility', in: 'query', schema: { type: 'string' } }], responses: { '200': json({ type: 'object' }), ...errors } },
      post: {
        summary: "Enrol a user (facility admin: own facility; network admin: any); answers the TOTP secret once",
        requestBody: json({ type: 'object', required: ['username', 'displayName', 'role', 'password'], properties: { facilityId: { type: 'string' }, username: { type: 'string' }, displayName: { type: 'string' }, role: { type: 'string', enum: [...ROLES] }, password: { type: 'string', minLength: 12 } } }),
        responses: { '201': json({ type: 'object' }), ...errors, '409': problem },
      },
    },
    '/api/admin/users/{facility}/{username}/role': {
      post: {
        summary: "Give a user another role, with a reason (facility admin: own facility, not network-wide roles; never one's own); holds from the user's next request",
        requestBody: json({ type: 'object', required: ['role', 'reason'], properties: { role: { type: 'string', enum: [...ROLES] }, reason: { type: 'string' } } }),
        responses: { '200': json({ type: 'object', properties: { from: { type: 'string' }, to: { type: 'string' }, changed: { type: 'boolean' } } }), ...errors, '404': problem, '409': problem },
      },
    },
    '/api/admin/users/{facility}/{username}/disable': { post: { summary: 'Disable a user and end their sessions', responses: { '200': json({ type: 'object' }), ...errors, '404': problem } } },
    '/api/admin/users/{facility}/{username}/enable': { post: { summary: 'Enable a user', responses: { '200': json({ type: 'object' }), ...errors, '404': problem } } },
    '/api/admin/users/{facility}/{username}/revoke-sessions': { post: { summary: "End a user's sessions", responses: { '200': json({ type: 'object' }), ...errors, '404': problem } } },
    '/api/admin/devices': {
      get: { summary: "A facility's devices", parameters: [{ name: 'facility', in: 'query', schema: { type: 'string' } }], responses: { '200': json({ type: 'object' }), ...errors } },
      post: { summary: 'Register a device; answers its credential once', requestBody: json({ type: 'object', required: ['label'], properties: { facilityId: { type: 'string' }, label: { type: 'string' } } }), responses: { '201': json({ type: 'object' }), ...errors } },
    },
    '/api/admin/devices/{id}/revoke': { post: { summary: 'Revoke a device (its sessions end)', responses: { '200': json({ type: 'object' }), ...errors, '404': problem } } },
    '/api/audit/verify': { get: { summary: 'Recompute the audit hash chain (auditors)', responses: { '200': json({ type: 'object' }), ...errors } } },
  };
  if (clinical) {
    Object.assign(paths, {
      '/api/patients': {
        get: {
          summary: "Find a patient by a facility's local ID; lists only patients the caller may see",
          parameters: [
            { name: 'localId', in: 'query', required: true, schema: { type: 'string' } },
            { name: 'facility', in: 'query', schema: { type: 'string' }, description: "default: the caller's facility" },
            purpose,
          ],
          responses: { '200': json({ type: 'object', properties: { patients: { type: 'array', items: { type: 'object', properties: { id: { type: 'string' } } } } } }), ...errors },
        },
      },
      '/api/patients/{id}': {
        get: { summary: 'Patient summary: visible facilities and categories, demographics, recent records', parameters: [idParam, purpose], responses: { '200': json({ type: 'object' }), ...errors } },
      },
      '/api/patients/{id}/timeline': {
        get: {
          summary: 'Cross-facility timeline, newest first, limited by role and consent',
          parameters: [
            idParam,
            { name: 'category', in: 'query', schema: { type: 'string' }, description: `comma-separated: ${CATEGORIES.join(', ')}` },
            { name: 'facility', in: 'query', schema: { type: 'string' } },
            { name: 'from', in: 'query', schema: { type: 'string', format: 'date' } },
            { name: 'to', in: 'query', schema: { type: 'string', format: 'date' } },
            { name: 'history', in: 'query', schema: { type: 'boolean' } },
            { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 200, default: 50 } },
            { name: 'cursor', in: 'query', schema: { type: 'string' } },
            purpose,
          ],
          responses: {
            '200': json({
              type: 'object',
              properties: { patient: { type: 'string' }, records: { type: 'array', items: { $ref: '#/components/schemas/Record' } }, nextCursor: { type: 'string', nullable: true } },
            }),
            ...errors,
          },
        },
      },
      '/api/patients/{id}/break-glass': {
        post: {
          summary: 'Open time-limited emergency access with a reason (audited)',
          parameters: [idParam],
          requestBody: json({ type: 'object', required: ['reason', 'minutes'], properties: { reason: { type: 'string', minLength: 10 }, minutes: { type: 'integer', minimum: 1 } } }),
          responses: { '201': json({ type: 'object' }), ...errors },
        },
      },
    });
  }
  Object.assign(paths, adminPaths(), restorePaths(), retentionPaths(), clinical ? recordPaths() : {});
  return {
    openapi: '3.0.3',
    info: {
      title: 'Hakobune viewer API',
      version: '1',
      description: `Roles: ${ROLES.join(', ')}. FHIR R4 is served under /fhir (see /fhir/metadata). Every response is Cache-Control: no-store.`,
    },
    paths,
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      responses: {
        Problem: { description: 'RFC 9457 problem document', content: { 'application/problem+json': { schema: { type: 'object', properties: { title: { type: 'string' }, status: { type: 'integer' }, detail: { type: 'string' }, requestId: { type: 'string' } } } } } },
      },
      schemas: {
        RecordDetail: RECORD_DETAIL_SCHEMA,
        User: { type: 'object', properties: { id: { type: 'integer' }, username: { type: 'string' }, displayName: { type: 'string' }, facilityId: { type: 'string' }, role: { type: 'string', enum: [...ROLES] } } },
        Record: {
          type: 'object',
          properties: {
            id: { type: 'integer' },
            sourceFacilityId: { type: 'string' },
            localPatientId: { type: 'string' },
            category: { type: 'string', enum: [...CATEGORIES] },
            dataType: { type: 'string' },
            careDate: { type: 'string', format: 'date', nullable: true },
            timestamp: { type: 'string' },
            basis: { type: 'string', enum: ['own-facility', 'consent', 'disaster', 'break-glass'] },
            content: { type: 'object' },
          },
        },
      },
    },
  };
}

export function openApiRouter(hygiene: Middleware, clinical: boolean): Router {
  const r = new Router();
  const doc = openApiDocument(clinical);
  r.get('/api/openapi.json', hygiene, (ctx) => {
    ctx.body = doc;
  });
  return r;
}
