import { badRequest, forbidden } from '../../store/errors.js';
import { NAME_TEXT, type NameQuery } from '../../consent/name-search.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { Principal } from '../auth/auth.service.js';
import type { Gate } from '../gate/gate.js';
import { roleMay, type RolePolicy } from '../roles/roles.js';

/**
 * Patient search by name: the candidates the name index finds are kept only when the gate says
 * the caller may see something of them, so a hidden patient is simply not found. The search is
 * audited with its query and what it answered.
 */

export interface NameSearchDeps {
  gate: Gate;
  roles: RolePolicy;
  audit: AuditLog;
  /** Regional patients whose linked local patients bear the name (consent/name-search.ts). */
  find(q: NameQuery, limit: number): Promise<string[]>;
}

/** How many candidates are checked against the gate at most (a very common name is cut here). */
export const MAX_NAME_CANDIDATES = 200;

export async function searchPatientsByName(deps: NameSearchDeps, p: Principal, q: NameQuery, limit: number, endpoint: string): Promise<string[]> {
  for (const [k, v] of Object.entries(q)) {
    if (v !== undefined && !NAME_TEXT.test(v)) throw badRequest(`${k} may hold 1-64 letters, digits, spaces, "・" and dashes`);
  }
  const query = Object.fromEntries(Object.entries(q).filter(([, v]) => v !== undefined));
  const trail = { action: 'patient.search', actor: p, address: p.address, deviceId: p.deviceId, endpoint, purpose: 'treatment' };
  if (!roleMay(deps.roles, p.role, 'patient.search')) {
    await deps.audit.record({ ...trail, outcome: 'denied', reason: `role ${p.role} may not search patients`, detail: { query } });
    throw forbidden('Your role may not search patients.');
  }
  const candidates = await deps.find(q, MAX_NAME_CANDIDATES);
  const visible: string[] = [];
  for (const id of candidates) {
    if (visible.length >= limit) break;
    if (await deps.gate.canSee(p, id, 'treatment')) visible.push(id);
  }
  await deps.audit.record({
    ...trail,
    outcome: 'success',
    patient: visible.length === 1 ? visible[0]! : null,
    detail: { query, results: visible.length, patients: visible },
  });
  return visible;
}
