import type Router from '@koa/router';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Db } from '../../store/db.js';
import { createAuditLog, type AuditLog } from '../audit/audit.service.js';
import { createAuthService, type AuthService, type AuthServiceDeps } from '../auth/auth.service.js';
import { createAdminService, type AdminService } from '../auth/admin.service.js';
import { SecretBox } from '../auth/secret-box.js';
import { findFacility } from '../../store/backup/backup.repository.js';
import { loadRolePolicy, type RolePolicy } from '../roles/roles.js';
import { authRouter } from './auth.routes.js';
import { securityHeaders } from './hygiene.js';
import { patientsRouter, type BreakGlassOpener, type PatientFinder } from './patients.routes.js';
import { fhirRouter } from './fhir.routes.js';
import { auditRouter } from './audit.routes.js';
import { adminRouter } from './admin.routes.js';
import { openApiRouter } from './openapi.js';
import { createGate, type Gate, type RecordReader } from '../gate/gate.js';
import { createRecordGate, type BlobReader, type RecordLookup } from '../gate/record-gate.js';
import { recordsRouter } from './records.routes.js';
import { findPatientsByName, type NameQuery } from '../../consent/name-search.js';
import type { DecisionContextLoader } from '../../consent/decision-context.js';
import type { FacilityKind } from '../../consent/model.js';
import type { SessionContextLoader } from '../gate/session-context.js';

/** The viewer API's parts, built once by the composition root. */
export interface Viewer {
  routers: Router[];
  audit: AuditLog;
  auth: AuthService;
  admin: AdminService;
  roles: RolePolicy;
  /** The gate of clinical reads (absent when the clinical endpoints are not mounted). */
  gate: Gate | undefined;
}

/** What the clinical endpoints need from the consent service and the record index. */
export interface ClinicalDeps {
  contexts: DecisionContextLoader;
  breakGlass: BreakGlassOpener;
  finder: PatientFinder;
  records: RecordReader;
  /** One record by id, for record detail, original messages and documents. */
  recordById: RecordLookup;
  /** The stored bytes of source files (messages and documents). */
  blobs: BlobReader;
  facilityKind(facilityId: string): Promise<FacilityKind | undefined>;
  /** Reads a request's session and its patient's decision context in one statement. */
  sessionContexts?: SessionContextLoader;
}

export interface ViewerDeps {
  db: Db;
  config: Config;
  log: Logger;
  /** Milliseconds since the epoch; every time the viewer reasons about comes from here. */
  clock: () => number;
  /** When given, the gated clinical endpoints (JSON and FHIR) are mounted. */
  clinical?: ClinicalDeps;
  /** The per-address rate limiters of logins and bad tokens (default: in this process's memory). */
  rateLimit?: AuthServiceDeps['rateLimit'];
}

export function createViewer(deps: ViewerDeps): Viewer {
  const { db, config, clock } = deps;
  const box = SecretBox.fromKeyFile(config.auth.secretKeyFile);
  const roles = loadRolePolicy(config.auth.rolePolicyFile);
  const audit = createAuditLog(db, clock);
  const auth = createAuthService({ db, box, settings: config.auth, clock, audit, rateLimit: deps.rateLimit });
  const admin = createAdminService({
    db,
    box,
    clock,
    audit,
    facilityExists: async (id) => (await findFacility(db, id)) !== undefined,
  });
  const hygiene = securityHeaders({ tls: !!config.tls });
  const routers = [
    authRouter(auth, hygiene),
    adminRouter({ auth, admin, audit, roles, hygiene }),
    auditRouter({ auth, db, audit, roles, hygiene }),
    openApiRouter(hygiene, !!deps.clinical),
  ];
  let gate: Gate | undefined;
  if (deps.clinical) {
    const c = deps.clinical;
    gate = createGate({ contexts: c.contexts, roles, records: c.records, facilityKind: c.facilityKind, audit, clock });
    routers.push(patientsRouter({ auth, gate, roles, audit, breakGlass: c.breakGlass, finder: c.finder, hygiene, sessionContexts: c.sessionContexts, clock }));
    const names = { gate, roles, audit, find: (q: NameQuery, limit: number) => findPatientsByName(db, q, limit) };
    routers.push(fhirRouter({ auth, gate, hygiene, clock, names, sessionContexts: c.sessionContexts }));
    const records = createRecordGate({ gate, roles, audit, records: c.recordById, blobs: c.blobs, linkOf: (k) => c.finder.linkOf(k) });
    routers.push(recordsRouter({ auth, records, hygiene }));
  }
  return { routers, audit, auth, admin, roles, gate };
}
