/**
 * OpenAPI paths of disaster-recovery operations: restore requests (restore.routes.ts: ask for a
 * facility's snapshot, poll the job, download the tar) and retention (retention.routes.ts: the
 * forget plan, and forget under a signed delete request). openapi.ts merges them into the document.
 */
const problem = { $ref: '#/components/responses/Problem' };
const errors = { '400': problem, '401': problem, '403': problem, '429': problem };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const requestId = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^R[0-9a-f]{24}$' }, description: 'restore request id' };

const RESTORE_REQUEST = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    facilityId: { type: 'string' },
    snapshotId: { type: 'string' },
    patients: { type: 'array', items: { type: 'string' }, nullable: true },
    mode: { type: 'string', enum: ['download', 'path'] },
    path: { type: 'string', nullable: true },
    state: { type: 'string', enum: ['queued', 'running', 'ready', 'failed'] },
    reason: { type: 'string', nullable: true, description: 'why it failed (damaged files are named)' },
    priority: { type: 'integer', description: '1 under a declared disaster for the facility, else 10' },
    progress: { type: 'object', properties: { files: { type: 'integer' }, bytes: { type: 'integer' }, totalFiles: { type: 'integer', nullable: true }, totalBytes: { type: 'integer', nullable: true } } },
    requestedBy: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    finishedAt: { type: 'string', format: 'date-time', nullable: true },
  },
};

export function restorePaths(): Record<string, unknown> {
  return {
    '/api/restores': {
      post: {
        summary: "Ask for a restore of a facility's tree (role with restore.run): by snapshot id, by night, or the latest; optionally only some patients; prepared by a job",
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['facilityId', 'mode'],
          properties: {
            facilityId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' },
            snapshotId: { type: 'string', description: 'one of snapshotId and at; neither: the latest snapshot' },
            at: { type: 'string', format: 'date', description: 'a night (Asia/Tokyo date): its last snapshot, or the last before it' },
            patients: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 1000 },
            mode: { type: 'string', enum: ['download', 'path'], description: 'download: a tar stream; path: written below HAKOBUNE_RESTORE_ROOT' },
            path: { type: 'string', description: 'mode path only: a new or empty folder under the restore root' },
          },
        }),
        responses: {
          '202': { description: 'queued; Location names the request', ...json({ type: 'object', properties: { id: { type: 'string' }, state: { type: 'string' }, snapshotId: { type: 'string' }, priority: { type: 'integer' } } }) },
          ...errors,
          '404': { ...problem, description: 'no such facility, snapshot or night' },
        },
      },
    },
    '/api/restores/{id}': {
      get: { summary: 'State and progress of a restore request', parameters: [requestId], responses: { '200': json(RESTORE_REQUEST), ...errors, '404': problem } },
    },
    '/api/restores/{id}/download': {
      get: {
        summary: 'The restored tree as a tar stream (paths, bytes and mtimes as stored); a blob found damaged mid-stream cuts the transfer',
        parameters: [requestId],
        responses: { '200': { description: 'POSIX tar', content: { 'application/x-tar': { schema: { type: 'string', format: 'binary' } } } }, ...errors, '404': problem, '409': { ...problem, description: 'not ready, failed, or written to a path' } },
      },
    },
  };
}

const decision = {
  type: 'object',
  properties: { id: { type: 'string' }, facilityId: { type: 'string' }, nightlyDate: { type: 'string', format: 'date' }, createdAt: { type: 'string', format: 'date-time' }, reasons: { type: 'array', items: { type: 'string' } } },
};

export function retentionPaths(): Record<string, unknown> {
  return {
    '/api/retention/plan': {
      get: {
        summary: 'What forget would do under HAKOBUNE_RETENTION: every snapshot, kept (by which rule) or not (why)',
        parameters: [{ name: 'facility', in: 'query', schema: { type: 'string' } }],
        responses: {
          '200': json({ type: 'object', properties: { policy: { type: 'string' }, lockDays: { type: 'integer' }, at: { type: 'string' }, facility: { type: 'string', nullable: true }, keep: { type: 'array', items: decision }, forget: { type: 'array', items: decision } } }),
          ...errors,
          '404': problem,
        },
      },
    },
    '/api/retention/forget': {
      post: {
        summary: 'Forget snapshots the policy lets go; the body is a delete request signed with the operator Ed25519 delete key (hakobune delete-key generate)',
        requestBody: json({
          type: 'object',
          additionalProperties: false,
          required: ['action', 'facility', 'snapshotIds', 'timestamp', 'nonce', 'signature'],
          properties: {
            action: { type: 'string', enum: ['forget'] },
            facility: { type: 'string', nullable: true },
            snapshotIds: { type: 'array', items: { type: 'string' }, minItems: 1 },
            timestamp: { type: 'string', format: 'date-time', description: 'signing time; valid for 5 minutes' },
            nonce: { type: 'string', pattern: '^[A-Za-z0-9_-]{16,128}$', description: 'accepted once' },
            signature: { type: 'string', description: 'base64 Ed25519 over "hakobune-delete-v1\\n" + JSON [action, facility, sorted snapshotIds, timestamp, nonce]' },
          },
        }),
        responses: {
          '200': json({ type: 'object', properties: { forgotten: { type: 'array', items: { type: 'string' } } } }),
          ...errors,
          '404': { ...problem, description: 'no such facility or snapshot' },
          '409': { ...problem, description: 'a snapshot the policy keeps (inside the delete lock, the latest, a rule, pinned)' },
        },
      },
    },
  };
}
