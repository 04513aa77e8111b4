import type { AuditRecord } from './audit.chain.js';

/**
 * An audit entry as a FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html), the form in
 * which auditors and other systems take the trail away. Codes come from DICOM PS3.16 CID 400-403
 * (event types and subtypes), the FHIR audit value sets, and HL7 v3 ActReason for purposes.
 */
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACTION_SYSTEM = 'urn:hakobune:audit-action';

function eventType(action: string): { system: string; code: string; display: string } {
  if (action.startsWith('auth.')) return { system: DCM, code: '110114', display: 'User Authentication' };
  if (action.startsWith('break-glass')) return { system: DCM, code: '110113', display: 'Security Alert' };
  if (action.startsWith('audit.export') || action.endsWith('.export')) return { system: DCM, code: '110106', display: 'Export' };
  if (action.startsWith('admin.')) return { system: DCM, code: '110136', display: 'Security Roles Changed' };
  return { system: DCM, code: '110110', display: 'Patient Record' };
}

function subtypes(action: string) {
  const out: Array<{ system: string; code: string; display?: string }> = [{ system: ACTION_SYSTEM, code: action }];
  if (action === 'auth.login') out.push({ system: DCM, code: '110122', display: 'Login' });
  if (action === 'auth.logout') out.push({ system: DCM, code: '110123', display: 'Logout' });
  if (action.startsWith('break-glass')) out.push({ system: DCM, code: '110127', display: 'Emergency Override Started' });
  return out;
}

/** C create, R read, U update, D delete, E execute (http://hl7.org/fhir/R4/valueset-audit-event-action.html). */
function actionCode(action: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (/\.(add|register|create)$/.test(action)) return 'C';
  if (/\.(revoke|disable|enable|update|withdraw)$/.test(action)) return 'U';
  if (/\.(delete|remove)$/.test(action)) return 'D';
  if (action.startsWith('auth.') || action.startsWith('break-glass') || action.endsWith('.export')) return 'E';
  return 'R';
}

/** 0 success, 4 minor failure (a refusal), 8 serious failure (http://hl7.org/fhir/R4/valueset-audit-event-outcome.html). */
function outcomeCode(outcome: AuditRecord['outcome']): '0' | '4' | '8' {
  return outcome === 'success' ? '0' : outcome === 'denied' ? '4' : '8';
}

const PURPOSE: Record<string, string> = {
  treatment: 'TREAT',
  emergency: 'ETREAT',
  research: 'HRESCH',
  'ai-analysis': 'HOPERAT',
};

export function toAuditEvent(e: AuditRecord): Record<string, unknown> {
  let detail: Record<string, unknown> = {};
  try {
    detail = JSON.parse(e.detail) as Record<string, unknown>;
  } catch {
    /* an altered entry: verification reports it; the export still carries the raw text below */
  }
  const purposes = [];
  if (e.purpose) {
    const code = PURPOSE[e.purpose];
    purposes.push({
      ...(code ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code }] } : {}),
      text: e.purpose,
    });
  }
  if (e.breakGlassReason) {
    purposes.push({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'BTG', display: 'break the glass' }] });
  }

  const agents: Record<string, unknown>[] = [];
  if (e.userId !== null || e.username !== null) {
    agents.push({
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', code: 'humanuser', display: 'human user' }] },
      who: {
        identifier: { system: 'urn:hakobune:user', value: e.facilityId ? `${e.facilityId}/${e.username ?? e.userId}` : String(e.username ?? e.userId) },
        display: e.username ?? undefined,
      },
      ...(e.role ? { role: [{ text: e.role }] } : {}),
      requestor: true,
      ...(e.address ? { network: { address: e.address, type: '2' } } : {}),
      ...(e.facilityId ? { location: { identifier: { system: 'urn:hakobune:facility', value: e.facilityId } } } : {}),
    });
  }
  if (e.deviceId) {
    agents.push({
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', code: 'dataprocessor', display: 'data processor' }] },
      who: { identifier: { system: 'urn:hakobune:device', value: e.deviceId } },
      requestor: false,
    });
  }
  if (agents.length === 0) agents.push({ who: { display: 'unidentified' }, requestor: true });

  const entities: Record<string, unknown>[] = [];
  if (e.patient) {
    entities.push({
      what: { identifier: { system: 'urn:hakobune:patient', value: e.patient } },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
  }
  entities.push({
    what: { identifier: { system: 'urn:hakobune:audit-entry', value: String(e.seq) } },
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '4', display: 'Other' },
    ...(e.endpoint ? { query: Buffer.from(e.endpoint, 'utf8').toString('base64') } : {}),
    detail: [
      { type: 'detail', valueString: e.detail },
      { type: 'prevHash', valueString: e.prevHash },
      { type: 'hash', valueString: e.hash },
      ...(e.breakGlassReason ? [{ type: 'breakGlassReason', valueString: e.breakGlassReason }] : []),
    ],
  });
  const categories = Array.isArray(detail.categories) ? (detail.categories as unknown[]) : [];

  return {
    resourceType: 'AuditEvent',
    id: `audit-${e.seq}`,
    type: eventType(e.action),
    subtype: subtypes(e.action),
    action: actionCode(e.action),
    recorded: e.at,
    outcome: outcomeCode(e.outcome),
    ...(e.reason ? { outcomeDesc: e.reason } : {}),
    ...(purposes.length ? { purposeOfEvent: purposes } : {}),
    agent: agents,
    source: {
      site: 'hakobune',
      observer: { display: 'Hakobune exchange' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
    },
    entity: entities,
    ...(categories.length ? { meta: { tag: categories.map((c) => ({ system: 'urn:hakobune:category', code: String(c) })) } } : {}),
  };
}
