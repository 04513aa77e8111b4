import type { Kysely } from 'kysely';
import type { Database } from '../../store/database.js';
import { preparedRead } from '../../store/db.js';

/** SQL of users, devices and sessions; turns rows into the plain types below. */
type Q = Kysely<Database>;

export interface UserRecord {
  id: number;
  facilityId: string;
  username: string;
  displayName: string;
  role: string;
  passwordHash: string;
  totpSecretEnc: Buffer;
  totpLastStep: number | null;
  failedLogins: number;
  lockedUntil: Date | null;
  disabledAt: Date | null;
}

export interface DeviceRecord {
  id: string;
  facilityId: string;
  label: string;
  createdAt: Date;
  createdBy: string;
  revokedAt: Date | null;
}

/** A session with what every request must re-check about its user and device. */
export interface SessionRecord {
  id: string;
  tokenHash: string;
  userId: number;
  deviceId: string;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
  user: { username: string; displayName: string; facilityId: string; role: string; disabledAt: Date | null };
  device: { facilityId: string; revokedAt: Date | null; credentialHash: string };
}

export async function findUser(db: Q, facilityId: string, username: string): Promise<UserRecord | undefined> {
  const r = await db
    .selectFrom('viewer_user')
    .selectAll()
    .where('facility_id', '=', facilityId)
    .where('username', '=', username)
    .executeTakeFirst();
  if (!r) return undefined;
  return {
    id: r.id,
    facilityId: r.facility_id,
    username: r.username,
    displayName: r.display_name,
    role: r.role,
    passwordHash: r.password_hash,
    totpSecretEnc: r.totp_secret_enc,
    totpLastStep: r.totp_last_step,
    failedLogins: r.failed_logins,
    lockedUntil: r.locked_until,
    disabledAt: r.disabled_at,
  };
}

export interface NewUser {
  facilityId: string;
  username: string;
  displayName: string;
  role: string;
  passwordHash: string;
  totpSecretEnc: Buffer;
  createdAt: Date;
}

/** Inserts a user; resolves with its id, or undefined when the name is taken at that facility. */
export async function insertUser(db: Q, u: NewUser): Promise<number | undefined> {
  const r = await db
    .insertInto('viewer_user')
    .values({
      facility_id: u.facilityId,
      username: u.username,
      display_name: u.displayName,
      role: u.role,
      password_hash: u.passwordHash,
      totp_secret_enc: u.totpSecretEnc,
      totp_last_step: null,
      locked_until: null,
      disabled_at: null,
      created_at: u.createdAt,
    })
    .onConflict((oc) => oc.columns(['facility_id', 'username']).doNothing())
    .returning('id')
    .executeTakeFirst();
  return r?.id;
}

/**
 * Counts a failed login. The `max`-th failure in a row locks the account until `lockUntil` and
 * starts the count again, so that after the lock the user has `max` tries again.
 * Resolves with true when this failure locked the account.
 */
export async function countLoginFailure(db: Q, userId: number, max: number, lockUntil: Date): Promise<boolean> {
  const r = await db
    .updateTable('viewer_user')
    .set((eb) => ({
      failed_logins: eb.case().when('failed_logins', '>=', max - 1).then(0).else(eb('failed_logins', '+', 1)).end(),
      locked_until: eb.case().when('failed_logins', '>=', max - 1).then(lockUntil).else(eb.ref('locked_until')).end(),
    }))
    .where('id', '=', userId)
    .returning(['failed_logins', 'locked_until'])
    .executeTakeFirst();
  return !!r && r.failed_logins === 0 && r.locked_until?.getTime() === lockUntil.getTime();
}

/**
 * Records a successful login: clears the failure count and moves the last accepted TOTP step
 * forward. The step moves only forward, atomically: when two logins race with the same code, one
 * of them finds the step already taken and resolves false (a replay).
 */
export async function acceptLogin(db: Q, userId: number, totpStep: number): Promise<boolean> {
  const r = await db
    .updateTable('viewer_user')
    .set({ failed_logins: 0, locked_until: null, totp_last_step: totpStep })
    .where('id', '=', userId)
    .where((eb) => eb.or([eb('totp_last_step', 'is', null), eb('totp_last_step', '<', totpStep)]))
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** A user as administrators see it: never the password hash or the TOTP secret. */
export interface UserListing {
  userId: number;
  facilityId: string;
  username: string;
  displayName: string;
  role: string;
  disabledAt: Date | null;
  lockedUntil: Date | null;
  createdAt: Date;
}

export async function listUsers(db: Q, facilityId: string): Promise<UserListing[]> {
  const rows = await db
    .selectFrom('viewer_user')
    .select(['id', 'facility_id', 'username', 'display_name', 'role', 'disabled_at', 'locked_until', 'created_at'])
    .where('facility_id', '=', facilityId)
    .orderBy('username')
    .execute();
  return rows.map((r) => ({
    userId: r.id,
    facilityId: r.facility_id,
    username: r.username,
    displayName: r.display_name,
    role: r.role,
    disabledAt: r.disabled_at,
    lockedUntil: r.locked_until,
    createdAt: r.created_at,
  }));
}

/** Sets a user's role if it is still `from` (a change made meanwhile is not overwritten); whether it was. */
export async function setUserRole(db: Q, userId: number, from: string, to: string): Promise<boolean> {
  const r = await db.updateTable('viewer_user').set({ role: to }).where('id', '=', userId).where('role', '=', from).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function setUserDisabled(db: Q, userId: number, at: Date | null): Promise<void> {
  await db.updateTable('viewer_user').set({ disabled_at: at }).where('id', '=', userId).execute();
}

export async function findDeviceByCredentialHash(db: Q, hash: string): Promise<DeviceRecord | undefined> {
  const r = await db.selectFrom('viewer_device').selectAll().where('credential_hash', '=', hash).executeTakeFirst();
  return r && deviceOf(r);
}

export async function findDevice(db: Q, id: string): Promise<DeviceRecord | undefined> {
  const r = await db.selectFrom('viewer_device').selectAll().where('id', '=', id).executeTakeFirst();
  return r && deviceOf(r);
}

export async function listDevices(db: Q, facilityId: string): Promise<DeviceRecord[]> {
  const rows = await db.selectFrom('viewer_device').selectAll().where('facility_id', '=', facilityId).orderBy('created_at').execute();
  return rows.map(deviceOf);
}

function deviceOf(r: {
  id: string;
  facility_id: string;
  label: string;
  created_at: Date;
  created_by: string;
  revoked_at: Date | null;
}): DeviceRecord {
  return {
    id: r.id,
    facilityId: r.facility_id,
    label: r.label,
    createdAt: r.created_at,
    createdBy: r.created_by,
    revokedAt: r.revoked_at,
  };
}

export async function insertDevice(
  db: Q,
  d: { id: string; facilityId: string; label: string; credentialHash: string; createdAt: Date; createdBy: string },
): Promise<void> {
  await db
    .insertInto('viewer_device')
    .values({
      id: d.id,
      facility_id: d.facilityId,
      label: d.label,
      credential_hash: d.credentialHash,
      created_at: d.createdAt,
      created_by: d.createdBy,
      revoked_at: null,
    })
    .execute();
}

/** Resolves true when the device was active and is now revoked. */
export async function revokeDevice(db: Q, id: string, at: Date): Promise<boolean> {
  const r = await db
    .updateTable('viewer_device')
    .set({ revoked_at: at })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function insertSession(
  db: Q,
  s: { tokenHash: string; id: string; userId: number; deviceId: string; address: string; createdAt: Date; expiresAt: Date },
): Promise<void> {
  await db
    .insertInto('viewer_session')
    .values({
      token_hash: s.tokenHash,
      id: s.id,
      user_id: s.userId,
      device_id: s.deviceId,
      address: s.address,
      created_at: s.createdAt,
      last_seen_at: s.createdAt,
      expires_at: s.expiresAt,
      revoked_at: null,
      revoked_reason: null,
    })
    .execute();
}

/** The session check's statement, for the sessions whose token hash meets `match`. */
const sessionSql = (match: string) => `
  select s.id, s.token_hash, s.user_id, s.device_id, s.created_at, s.last_seen_at, s.expires_at, s.revoked_at,
         u.username, u.display_name, u.facility_id as user_facility, u.role, u.disabled_at,
         d.facility_id as device_facility, d.revoked_at as device_revoked_at, d.credential_hash
  from viewer_session s
  join viewer_user u on u.id = s.user_id
  join viewer_device d on d.id = s.device_id
  where s.token_hash ${match}`;

/** The session check of every request, the token hash given as `$1`. */
export const SESSION_SQL = sessionSql('= $1');

/** A row of SESSION_SQL (every column null: no session). */
export interface SessionRow {
  id: string | null; token_hash: string; user_id: number; device_id: string; created_at: Date; last_seen_at: Date; expires_at: Date;
  revoked_at: Date | null; username: string; display_name: string; user_facility: string; role: string; disabled_at: Date | null;
  device_facility: string; device_revoked_at: Date | null; credential_hash: string;
}

export function sessionOf(r: SessionRow | undefined): SessionRecord | undefined {
  if (!r?.id) return undefined;
  return {
    id: r.id,
    tokenHash: r.token_hash,
    userId: r.user_id,
    deviceId: r.device_id,
    createdAt: r.created_at,
    lastSeenAt: r.last_seen_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    user: { username: r.username, displayName: r.display_name, facilityId: r.user_facility, role: r.role, disabledAt: r.disabled_at },
    device: { facilityId: r.device_facility, revokedAt: r.device_revoked_at, credentialHash: r.credential_hash },
  };
}

/** The session of a token hash (a prepared statement: see preparedRead). */
export async function findSession(db: Q, tokenHash: string): Promise<SessionRecord | undefined> {
  return sessionOf((await preparedRead<SessionRow>(db, 'viewer-find-session', SESSION_SQL, [tokenHash]))[0]);
}

/** SESSION_SQL for several token hashes at once (`$1`, a text array). */
const SESSIONS_SQL = sessionSql('= any($1::text[])');

/**
 * The sessions of several token hashes in one statement, one answer per hash in order (undefined:
 * no such session): the session checks of requests arriving together (AuthService groups them).
 */
export async function findSessions(db: Q, tokenHashes: string[]): Promise<(SessionRecord | undefined)[]> {
  if (tokenHashes.length === 1) return [await findSession(db, tokenHashes[0]!)];
  const rows = await preparedRead<SessionRow>(db, 'viewer-find-sessions', SESSIONS_SQL, [[...new Set(tokenHashes)]]);
  const byHash = new Map(rows.map((r) => [r.token_hash, r]));
  return tokenHashes.map((h) => sessionOf(byHash.get(h)));
}

/** Marks the session used now, unless it was marked less than `granularityMs` ago (saves a write per request). */
export async function touchSession(db: Q, tokenHash: string, at: Date, granularityMs: number): Promise<void> {
  await db
    .updateTable('viewer_session')
    .set({ last_seen_at: at })
    .where('token_hash', '=', tokenHash)
    .where('last_seen_at', '<', new Date(at.getTime() - granularityMs))
    .execute();
}

export async function revokeSession(db: Q, tokenHash: string, at: Date, reason: string): Promise<boolean> {
  const r = await db
    .updateTable('viewer_session')
    .set({ revoked_at: at, revoked_reason: reason })
    .where('token_hash', '=', tokenHash)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Revokes every open session of a user; resolves with how many. */
export async function revokeSessionsOfUser(db: Q, userId: number, at: Date, reason: string): Promise<number> {
  const r = await db
    .updateTable('viewer_session')
    .set({ revoked_at: at, revoked_reason: reason })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}
