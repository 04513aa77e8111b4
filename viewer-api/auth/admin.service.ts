import { badRequest, conflict, notFound } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { AuditActor } from '../audit/audit.entry.js';
import type { AuditLog } from '../audit/audit.service.js';
import { isRole, ROLES } from '../roles/roles.js';
import { hashPassword, passwordProblem } from './passwords.js';
import type { SecretBox } from './secret-box.js';
import { randomId, randomToken, secretDigest } from './tokens.js';
import { newTotpSecret, totpUri } from './totp.js';
import { totpAad } from './auth.service.js';
import * as repo from './auth.repository.js';

export const FACILITY_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
export const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Who makes an administrative change, and from where (audited with the change). */
export interface AdminContext {
  actor: AuditActor;
  address: string | null;
  deviceId?: string | null;
  endpoint: string;
}

export interface NewUserInput {
  facilityId: string;
  username: string;
  displayName: string;
  role: string;
  password: string;
}

/** Returned once at enrolment: the TOTP secret is never shown again. */
export interface Enrolment {
  userId: number;
  facilityId: string;
  username: string;
  role: string;
  totpSecret: string;
  totpUri: string;
}

export interface DeviceRegistration {
  deviceId: string;
  facilityId: string;
  label: string;
  /** Shown once; only its SHA-256 is kept. */
  credential: string;
}

export interface AdminService {
  addUser(ctx: AdminContext, input: NewUserInput): Promise<Enrolment>;
  setUserDisabled(ctx: AdminContext, facilityId: string, username: string, disabled: boolean): Promise<void>;
  revokeUserSessions(ctx: AdminContext, facilityId: string, username: string): Promise<number>;
  registerDevice(ctx: AdminContext, facilityId: string, label: string): Promise<DeviceRegistration>;
  revokeDevice(ctx: AdminContext, deviceId: string): Promise<void>;
  listDevices(facilityId: string): Promise<repo.DeviceRecord[]>;
  getDevice(deviceId: string): Promise<repo.DeviceRecord | undefined>;
  listUsers(facilityId: string): Promise<repo.UserListing[]>;
  /** The user's role now, or undefined for no such user. */
  userRole(facilityId: string, username: string): Promise<string | undefined>;
  /**
   * Gives a user another role (audited with the reason). The role is read with the session on
   * every request, so it holds from the user's next request on; their sessions stay. With
   * `expected`, the role the caller's checks were made on: a role changed since is a conflict.
   */
  setUserRole(ctx: AdminContext, facilityId: string, username: string, role: string, reason: string, expected?: string): Promise<{ from: string; to: string; changed: boolean }>;
}

export interface AdminServiceDeps {
  db: Db;
  box: SecretBox;
  clock: () => number;
  audit: AuditLog;
  /** Whether a facility participates in the exchange (the backup store keeps the list). */
  facilityExists(facilityId: string): Promise<boolean>;
}

export function createAdminService(deps: AdminServiceDeps): AdminService {
  const { db, box, clock, audit } = deps;
  async function knownFacility(facilityId: string): Promise<void> {
    if (!FACILITY_ID.test(facilityId)) throw badRequest(`facility id "${facilityId}" is malformed (letters, digits, _ and -)`);
    // The user and device tables hold the id as text (migration 0004 predates the facility
    // table), so the reference is checked here.
    if (!(await deps.facilityExists(facilityId))) throw notFound(`no facility ${facilityId}: add it first (hakobune facility add)`);
  }
  const trail = (ctx: AdminContext, action: string, detail: Record<string, unknown>) =>
    audit.record({
      action,
      outcome: 'success',
      actor: ctx.actor,
      address: ctx.address,
      deviceId: ctx.deviceId ?? null,
      endpoint: ctx.endpoint,
      detail,
    });

  async function userOrThrow(facilityId: string, username: string) {
    const u = await repo.findUser(db, facilityId, username);
    if (!u) throw notFound(`no user ${username} at facility ${facilityId}`);
    return u;
  }

  return {
    async addUser(ctx, input) {
      if (!USERNAME.test(input.username)) throw badRequest('a user name is 1-64 lower-case letters, digits, ".", "_" or "-"');
      if (!isRole(input.role)) throw badRequest(`unknown role "${input.role}"; roles: ${ROLES.join(', ')}`);
      const displayName = input.displayName.trim();
      if (!displayName || displayName.length > 200) throw badRequest('a display name is 1-200 characters');
      const problem = passwordProblem(input.password);
      if (problem) throw badRequest(problem);
      await knownFacility(input.facilityId);
      const totpSecret = newTotpSecret();
      const id = await repo.insertUser(db, {
        facilityId: input.facilityId,
        username: input.username,
        displayName,
        role: input.role,
        passwordHash: await hashPassword(input.password),
        totpSecretEnc: box.seal(Buffer.from(totpSecret, 'utf8'), totpAad(input.facilityId, input.username)),
        createdAt: new Date(clock()),
      });
      if (id === undefined) throw conflict(`user ${input.username} already exists at facility ${input.facilityId}`);
      await trail(ctx, 'admin.user.add', { target: { userId: id, facilityId: input.facilityId, username: input.username, role: input.role } });
      return {
        userId: id,
        facilityId: input.facilityId,
        username: input.username,
        role: input.role,
        totpSecret,
        totpUri: totpUri('Hakobune', `${input.facilityId}/${input.username}`, totpSecret),
      };
    },

    async setUserDisabled(ctx, facilityId, username, disabled) {
      const u = await userOrThrow(facilityId, username);
      const now = new Date(clock());
      await repo.setUserDisabled(db, u.id, disabled ? now : null);
      const revoked = disabled ? await repo.revokeSessionsOfUser(db, u.id, now, 'user disabled') : 0;
      await trail(ctx, disabled ? 'admin.user.disable' : 'admin.user.enable', {
        target: { userId: u.id, facilityId, username },
        sessionsRevoked: revoked,
      });
    },

    async revokeUserSessions(ctx, facilityId, username) {
      const u = await userOrThrow(facilityId, username);
      const n = await repo.revokeSessionsOfUser(db, u.id, new Date(clock()), 'revoked by administrator');
      await trail(ctx, 'admin.session.revoke', { target: { userId: u.id, facilityId, username }, sessionsRevoked: n });
      return n;
    },

    async registerDevice(ctx, facilityId, label) {
      const l = label.trim();
      if (!l || l.length > 200) throw badRequest('a device label is 1-200 characters');
      await knownFacility(facilityId);
      const deviceId = randomId('dev');
      const credential = randomToken('hkd');
      await repo.insertDevice(db, {
        id: deviceId,
        facilityId,
        label: l,
        credentialHash: secretDigest(credential),
        createdAt: new Date(clock()),
        createdBy: ctx.actor.username ?? 'unknown',
      });
      await trail(ctx, 'admin.device.register', { target: { deviceId, facilityId, label: l } });
      return { deviceId, facilityId, label: l, credential };
    },

    async revokeDevice(ctx, deviceId) {
      const d = await repo.findDevice(db, deviceId);
      if (!d) throw notFound(`no device ${deviceId}`);
      if (!(await repo.revokeDevice(db, deviceId, new Date(clock())))) throw conflict(`device ${deviceId} is already revoked`);
      await trail(ctx, 'admin.device.revoke', { target: { deviceId, facilityId: d.facilityId } });
    },

    async setUserRole(ctx, facilityId, username, role, reason, expected) {
      if (!isRole(role)) throw badRequest(`unknown role "${role}"; roles: ${ROLES.join(', ')}`);
      const why = reason.trim();
      if (!why || why.length > 2000) throw badRequest('a reason is 1-2000 characters');
      const u = await userOrThrow(facilityId, username);
      const meanwhile = () => conflict(`the role of ${username} at ${facilityId} changed meanwhile: read it again`);
      if (expected !== undefined && u.role !== expected) throw meanwhile();
      const changed = u.role !== role;
      if (changed && !(await repo.setUserRole(db, u.id, u.role, role))) throw meanwhile();
      await audit.record({
        action: 'admin.user.role',
        outcome: 'success',
        actor: ctx.actor,
        address: ctx.address,
        deviceId: ctx.deviceId ?? null,
        endpoint: ctx.endpoint,
        reason: why,
        detail: { target: { userId: u.id, facilityId, username }, from: u.role, to: role, changed },
      });
      return { from: u.role, to: role, changed };
    },

    listUsers: (facilityId) => repo.listUsers(db, facilityId),
    userRole: async (facilityId, username) => (await repo.findUser(db, facilityId, username))?.role,
    listDevices: (facilityId) => repo.listDevices(db, facilityId),
    getDevice: (deviceId) => repo.findDevice(db, deviceId),
  };
}
