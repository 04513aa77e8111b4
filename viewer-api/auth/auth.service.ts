import { ExchangeError, unauthorized } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { AuthSettings } from '../config.js';
import type { AuditLog } from '../audit/audit.service.js';
import { isRole, type Role } from '../roles/roles.js';
import { dummyPasswordHash, verifyPassword } from './passwords.js';
import { checkTotp } from './totp.js';
import { RateLimiter, type RateLimit } from './rate-limit.js';
import type { SecretBox } from './secret-box.js';
import { randomId, randomToken, secretDigest } from './tokens.js';
import * as repo from './auth.repository.js';
import { grouped } from '../../store/group.js';

/** Who is calling, established from a valid session. Handlers get this, never a row. */
export interface Principal {
  userId: number;
  username: string;
  displayName: string;
  facilityId: string;
  role: Role;
  sessionId: string;
  deviceId: string;
  address: string;
  expiresAt: Date;
}

export interface LoginRequest {
  facilityId: string;
  username: string;
  password: string;
  totp: string;
  /** The X-Device-Credential header; undefined when it was not sent. */
  deviceCredential: string | undefined;
  address: string;
}

export interface LoginResult {
  token: string;
  expiresAt: Date;
  idleTimeoutSeconds: number;
  principal: Principal;
}

/** The one message every failed login gets: it must not tell which factor was wrong. */
const LOGIN_FAILED = 'login failed: the credentials, the one-time code or this device were not accepted';
const SESSION_INVALID = 'no valid session: sign in again';

/** A session's last use is written at most this often; idle expiry is therefore this coarse. */
const TOUCH_GRANULARITY_MS = 10_000;

/** The TOTP seed of a user is sealed with the user's identity as associated data. */
export const totpAad = (facilityId: string, username: string) => `totp:${facilityId}/${username}`;

export interface AuthServiceDeps {
  db: Db;
  box: SecretBox;
  settings: AuthSettings;
  clock: () => number;
  audit: AuditLog;
  /**
   * Makes the per-address limiters (logins; requests with bad bearer tokens); default: counts in
   * this process's memory. Several processes of one exchange share counts in Redis instead.
   */
  rateLimit?: (name: 'login' | 'token', limit: number, windowMs: number) => RateLimit;
}

export interface AuthService {
  login(req: LoginRequest): Promise<LoginResult>;
  /**
   * Resolves with the caller of a bearer token, or throws a 401 (and audits why). `lookup` reads
   * the session of a token hash instead of the plain session query, for a statement that reads
   * something else with it (gate/session-context.ts); every check is the same.
   */
  authenticate(
    token: string | undefined,
    deviceCredential: string | undefined,
    address: string,
    endpoint: string,
    lookup?: (tokenHash: string) => Promise<repo.SessionRecord | undefined>,
  ): Promise<Principal>;
  logout(principal: Principal, token: string): Promise<void>;
}

export function createAuthService(deps: AuthServiceDeps): AuthService {
  const { db, box, settings, clock, audit } = deps;
  const limiter = deps.rateLimit ?? ((_name, limit, windowMs) => new RateLimiter(limit, windowMs, clock));
  const loginLimiter = limiter('login', settings.loginAttemptsPerMinute, 60_000);
  // Bad bearer tokens from one address are limited too: guessing tokens is guessing.
  const tokenLimiter = limiter('token', settings.loginAttemptsPerMinute, 60_000);
  const idleMs = settings.sessionIdleMinutes * 60_000;
  // The session checks of requests arriving while one is read go together in the next statement
  // (store/group.ts): each is still read after its request asked, and alone a check goes at once.
  const sessions = grouped<string, repo.SessionRecord | undefined>((hashes) => repo.findSessions(db, hashes));

  async function login(req: LoginRequest): Promise<LoginResult> {
    const now = new Date(clock());
    const base = {
      action: 'auth.login',
      actor: { facilityId: req.facilityId, username: req.username },
      address: req.address,
      endpoint: 'POST /api/auth/login',
    };
    const limit = await loginLimiter.take(req.address);
    if (!limit.allowed) {
      if (limit.firstRefusal) await audit.record({ ...base, outcome: 'denied', reason: 'rate-limited' });
      throw new ExchangeError('too-many-requests', 'too many login attempts from this address; try again later', {
        retryAfterSeconds: limit.retryAfterSeconds,
      });
    }

    const device = req.deviceCredential ? await repo.findDeviceByCredentialHash(db, secretDigest(req.deviceCredential)) : undefined;
    const user = await repo.findUser(db, req.facilityId, req.username);
    // The password is always checked, even for an unknown user or device, so that the time taken
    // does not tell an attacker which part was wrong.
    const passwordOk = await verifyPassword(req.password, user?.passwordHash ?? (await dummyPasswordHash()));

    const fail = async (reason: string, counts: boolean): Promise<never> => {
      let locked = false;
      if (user && counts) {
        locked = await repo.countLoginFailure(db, user.id, settings.maxFailedLogins, new Date(now.getTime() + settings.lockoutMinutes * 60_000));
      }
      await audit.record({
        ...base,
        actor: user ? { userId: user.id, username: user.username, facilityId: user.facilityId, role: user.role } : base.actor,
        deviceId: device?.id ?? null,
        outcome: 'denied',
        reason: locked ? `${reason}; account locked for ${settings.lockoutMinutes} min` : reason,
      });
      throw unauthorized(LOGIN_FAILED);
    };

    // Device problems do not count against the account: an attacker without a registered device
    // must not be able to lock real users out. The address limit covers them.
    if (!req.deviceCredential) return fail('no device credential', false);
    if (!device) return fail('unknown device credential', false);
    if (device.revokedAt) return fail('device revoked', false);
    if (!user) return fail('unknown user', false);
    if (device.facilityId !== user.facilityId) return fail(`device ${device.id} belongs to facility ${device.facilityId}`, false);
    if (user.disabledAt) return fail('user disabled', false);
    if (!isRole(user.role)) return fail(`unknown role ${user.role}`, false);
    if (user.lockedUntil && user.lockedUntil.getTime() > now.getTime()) {
      return fail(`account locked until ${user.lockedUntil.toISOString()}`, false);
    }
    if (!passwordOk) return fail('wrong password', true);

    let secret: string;
    try {
      secret = box.open(user.totpSecretEnc, totpAad(user.facilityId, user.username)).toString('utf8');
    } catch {
      return fail('TOTP secret cannot be decrypted (wrong key file or altered row)', false);
    }
    const totp = await checkTotp(secret, req.totp, now.getTime(), user.totpLastStep);
    if (!totp.ok) return fail(totp.reason === 'replayed' ? 'TOTP code already used' : `TOTP code ${totp.reason}`, true);
    if (!(await repo.acceptLogin(db, user.id, totp.step))) return fail('TOTP code already used (concurrent login)', true);

    const token = randomToken('hks');
    const sessionId = randomId('ses');
    const expiresAt = new Date(now.getTime() + settings.sessionMaxMinutes * 60_000);
    await repo.insertSession(db, {
      tokenHash: secretDigest(token),
      id: sessionId,
      userId: user.id,
      deviceId: device.id,
      address: req.address,
      createdAt: now,
      expiresAt,
    });
    const principal: Principal = {
      userId: user.id,
      username: user.username,
      displayName: user.displayName,
      facilityId: user.facilityId,
      role: user.role,
      sessionId,
      deviceId: device.id,
      address: req.address,
      expiresAt,
    };
    await audit.record({
      ...base,
      actor: { userId: user.id, username: user.username, facilityId: user.facilityId, role: user.role },
      deviceId: device.id,
      outcome: 'success',
      detail: { sessionId, totpDrift: totp.step - Math.floor(now.getTime() / 30_000) },
    });
    return { token, expiresAt, idleTimeoutSeconds: settings.sessionIdleMinutes * 60, principal };
  }

  async function authenticate(
    token: string | undefined,
    deviceCredential: string | undefined,
    address: string,
    endpoint: string,
    lookup: (tokenHash: string) => Promise<repo.SessionRecord | undefined> = sessions,
  ): Promise<Principal> {
    const now = clock();
    const deny = async (reason: string, s?: repo.SessionRecord): Promise<never> => {
      const limit = await tokenLimiter.take(address);
      // Beyond the limit only the first refusal is audited, so a flood cannot flood the trail.
      if (limit.allowed || limit.firstRefusal) {
        await audit.record({
          action: 'auth.session',
          outcome: 'denied',
          reason: limit.allowed ? reason : `${reason}; too many bad sessions from this address`,
          actor: s ? { userId: s.userId, username: s.user.username, facilityId: s.user.facilityId, role: s.user.role } : undefined,
          deviceId: s?.deviceId ?? null,
          address,
          endpoint,
          detail: s ? { sessionId: s.id } : {},
        });
      }
      if (!limit.allowed) {
        throw new ExchangeError('too-many-requests', 'too many requests without a valid session; try again later', {
          retryAfterSeconds: limit.retryAfterSeconds,
        });
      }
      throw unauthorized(SESSION_INVALID);
    };

    if (!token) return deny('no bearer token');
    if (!/^hks_[A-Za-z0-9_-]{43}$/.test(token)) return deny('malformed bearer token');
    const tokenHash = secretDigest(token);
    const s = await lookup(tokenHash);
    if (!s) return deny('unknown bearer token');
    if (s.revokedAt) return deny('session revoked', s);
    if (s.expiresAt.getTime() <= now) return deny('session expired', s);
    if (s.lastSeenAt.getTime() + idleMs <= now) {
      await repo.revokeSession(db, tokenHash, new Date(now), 'idle timeout');
      return deny('session idle timeout', s);
    }
    if (s.user.disabledAt) return deny('user disabled', s);
    if (s.device.revokedAt) return deny('device revoked', s);
    // A client that sends its device credential must send the one the session was opened with.
    if (deviceCredential !== undefined && secretDigest(deviceCredential) !== s.device.credentialHash) {
      return deny('device credential differs from the session device', s);
    }
    if (!isRole(s.user.role)) return deny(`unknown role ${s.user.role}`, s);
    // The last use is written at most every TOUCH_GRANULARITY_MS: a session read as used more
    // recently than that needs no write (nor the round trip of an update that changes nothing).
    if (s.lastSeenAt.getTime() < now - TOUCH_GRANULARITY_MS) await repo.touchSession(db, tokenHash, new Date(now), TOUCH_GRANULARITY_MS);
    return {
      userId: s.userId,
      username: s.user.username,
      displayName: s.user.displayName,
      facilityId: s.user.facilityId,
      role: s.user.role,
      sessionId: s.id,
      deviceId: s.deviceId,
      address,
      expiresAt: s.expiresAt,
    };
  }

  async function logout(principal: Principal, token: string): Promise<void> {
    await repo.revokeSession(db, secretDigest(token), new Date(clock()), 'logout');
    await audit.record({
      action: 'auth.logout',
      outcome: 'success',
      actor: principal,
      address: principal.address,
      deviceId: principal.deviceId,
      endpoint: 'POST /api/auth/logout',
      detail: { sessionId: principal.sessionId },
    });
  }

  return { login, authenticate, logout };
}
