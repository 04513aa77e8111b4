import type Router from '@koa/router';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Db } from '../../store/db.js';
import { createAuditLog, type AuditLog } from '../audit/audit.service.js';
import { createAuthService, type AuthService } from '../auth/auth.service.js';
import { createAdminService, type AdminService } from '../auth/admin.service.js';
import { SecretBox } from '../auth/secret-box.js';
import { findFacility } from '../../store/backup/backup.repository.js';
import { loadRolePolicy, type RolePolicy } from '../roles/roles.js';
import { authRouter } from './auth.routes.js';
import { securityHeaders } from './hygiene.js';

/** The viewer API's parts, built once by the composition root. */
export interface Viewer {
  routers: Router[];
  audit: AuditLog;
  auth: AuthService;
  admin: AdminService;
  roles: RolePolicy;
}

export interface ViewerDeps {
  db: Db;
  config: Config;
  log: Logger;
  /** Milliseconds since the epoch; every time the viewer reasons about comes from here. */
  clock: () => number;
}

export function createViewer(deps: ViewerDeps): Viewer {
  const { db, config, clock } = deps;
  const box = SecretBox.fromKeyFile(config.auth.secretKeyFile);
  const roles = loadRolePolicy(config.auth.rolePolicyFile);
  const audit = createAuditLog(db, clock);
  const auth = createAuthService({ db, box, settings: config.auth, clock, audit });
  const admin = createAdminService({
    db,
    box,
    clock,
    audit,
    facilityExists: async (id) => (await findFacility(db, id)) !== undefined,
  });
  const hygiene = securityHeaders({ tls: !!config.tls });
  return { routers: [authRouter(auth, hygiene)], audit, auth, admin, roles };
}
