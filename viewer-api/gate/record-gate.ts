import { ExchangeError, forbidden } from '../../store/errors.js';
import type { Category } from '../../consent/categories.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { Principal } from '../auth/auth.service.js';
import { readableCategories, roleMay, type RolePolicy } from '../roles/roles.js';
import { visibleRecord, type Gate, type GateRecord, type PermittedRead, type ViewerPurpose, type VisibleRecord } from './gate.js';

/**
 * Reads of ONE record by its id (record detail, the original message, a document's file) through
 * the same gate as the timeline: the record's local ID must be linked to a regional patient, the
 * role must read its category, and the gate's consent decision for that patient must permit
 * exactly its (source facility, local ID, category). A record that fails any of these answers
 * exactly like a record that does not exist (the same 404 text); the audit entry keeps the real
 * reason. The handle a handler receives holds that one record and can read only its bytes.
 */

/** The one text of a record that does not exist or may not be seen. */
export const NO_SUCH_RECORD = 'No such record.';

/** What the record gate needs from the index: one published, served record by id. */
export interface RecordLookup {
  byId(id: number): Promise<GateRecord | undefined>;
}

/** The exact bytes of a stored file by its SHA-256 (the backup store). */
export interface BlobReader {
  read(sha256: Buffer): Promise<Buffer>;
}

export type RecordAction = 'record.read' | 'record.original' | 'record.content';

export interface RecordDetail extends VisibleRecord {
  regionalId: string;
  /** SHA-256 of the stored source file (message or document). */
  sha256: string;
  /** Its path in the facility's SS-MIX2 tree (`standard/...` or `extended/...`). */
  path: string;
}

export interface RecordHandle {
  readonly record: RecordDetail;
  /** The exact stored bytes of the source file; a damaged or missing blob is an error (audited). */
  bytes(): Promise<Buffer>;
}

export interface RecordGate {
  open(p: Principal, req: { recordId: number; purpose: ViewerPurpose; endpoint: string; action: RecordAction }): Promise<RecordHandle>;
}

export interface RecordGateDeps {
  gate: Gate;
  roles: RolePolicy;
  audit: AuditLog;
  records: RecordLookup;
  blobs: BlobReader;
  /** The regional patient a local ID is linked to now, if any. */
  linkOf(key: { facilityId: string; localId: string }): Promise<{ regionalId: string } | undefined>;
}

export function createRecordGate(deps: RecordGateDeps): RecordGate {
  const { audit, roles } = deps;

  return {
    async open(p, req) {
      const trail = {
        action: req.action,
        actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role },
        address: p.address,
        deviceId: p.deviceId,
        endpoint: req.endpoint,
        purpose: req.purpose,
      };
      const deny = async (reason: string, patient: string | null, err: ExchangeError): Promise<never> => {
        await audit.record({ ...trail, outcome: 'denied', reason, patient, detail: { recordId: req.recordId } });
        throw err;
      };
      const hidden = () => new ExchangeError('not-found', NO_SUCH_RECORD);

      // Refusals by role alone say nothing about the record, so they may say why.
      if (!roleMay(roles, p.role, 'record.read') || readableCategories(roles, p.role).length === 0) {
        return deny(`role ${p.role} may not read clinical records`, null, forbidden('Your role may not read clinical records.'));
      }
      if (req.action === 'record.original' && !roleMay(roles, p.role, 'record.original')) {
        return deny(`role ${p.role} may not read original messages`, null, forbidden('Your role may not read original messages.'));
      }

      const r = await deps.records.byId(req.recordId);
      if (!r) return deny('no such record in the published index', null, hidden());
      if (!readableCategories(roles, p.role).includes(r.category)) {
        return deny(`role ${p.role} may not read category ${r.category}`, null, hidden());
      }
      if (req.action === 'record.content' && r.category !== 'documents') {
        return deny(`record ${r.id} is not a document (category ${r.category})`, null, hidden());
      }
      const link = await deps.linkOf({ facilityId: r.facilityId, localId: r.patientId });
      if (!link) return deny(`local patient ${r.facilityId}/${r.patientId} is not linked`, null, hidden());

      let permit: PermittedRead | undefined;
      try {
        // The gate audits its own refusal (with the consent decision's reasons).
        const view = await deps.gate.open(p, { regionalId: link.regionalId, purpose: req.purpose, endpoint: req.endpoint });
        permit = view.permits(r.facilityId, r.patientId, r.category);
      } catch (e) {
        if ((e as { status?: number }).status === 403) return deny('the patient is not visible to the caller', link.regionalId, hidden());
        throw e;
      }
      if (!permit) return deny(`${r.category} of ${r.facilityId}/${r.patientId} is not permitted`, link.regionalId, hidden());

      const record: RecordDetail = {
        ...visibleRecord(r, permit.basis),
        regionalId: link.regionalId,
        sha256: r.sha256,
        path: r.path,
      };
      const seen = {
        recordIds: [r.id],
        categories: [r.category] as Category[],
        facilities: [r.facilityId],
        bases: [permit.basis],
        ...(permit.grantId ? { grantIds: [permit.grantId] } : {}),
      };
      await audit.record({ ...trail, outcome: 'success', patient: link.regionalId, breakGlassReason: permit.breakGlassReason, detail: seen });

      return {
        record,
        async bytes() {
          try {
            return await deps.blobs.read(Buffer.from(r.sha256, 'hex'));
          } catch (e) {
            await audit.record({
              ...trail,
              outcome: 'failure',
              patient: link.regionalId,
              reason: `stored file ${r.sha256} cannot be read: ${(e as Error).message}`,
              detail: { recordId: r.id },
            });
            throw new ExchangeError('unavailable', 'the stored file of this record cannot be read (the failure is in the audit trail)');
          }
        },
      };
    },
  };
}
