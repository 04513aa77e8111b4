import Router from '@koa/router';
import type { Middleware } from 'koa';
import { z } from 'zod';
import { readJson } from '../http/body.js';
import { isExchangeError } from '../../store/errors.js';
import type { AuthService } from '../auth/auth.service.js';
import { clientAddress } from './hygiene.js';
import { deviceCredential, principalOf, requireSession } from './session.js';

const LoginBody = z
  .object({
    facilityId: z.string().min(1).max(32),
    username: z.string().min(1).max(64),
    password: z.string().min(1).max(256),
    totp: z.string().min(1).max(16),
  })
  .strict();

/** A login body is small; anything larger is refused before it is read. */
const LOGIN_BODY_LIMIT = 4096;

/** POST /api/auth/login, POST /api/auth/logout, GET /api/auth/me. */
export function authRouter(auth: AuthService, hygiene: Middleware): Router {
  const r = new Router({ prefix: '/api/auth' });
  r.use(hygiene);

  r.post('/login', async (ctx) => {
    const body = await readJson(ctx, LoginBody, LOGIN_BODY_LIMIT);
    const result = await auth
      .login({ ...body, deviceCredential: deviceCredential(ctx), address: clientAddress(ctx) })
      .catch((e: unknown) => {
        // RFC 9110 section 10.2.3: tell a rate-limited client when to come back.
        if (isExchangeError(e) && typeof e.details?.retryAfterSeconds === 'number') ctx.set('Retry-After', String(e.details.retryAfterSeconds));
        throw e;
      });
    ctx.body = {
      token: result.token,
      tokenType: 'Bearer',
      expiresAt: result.expiresAt.toISOString(),
      idleTimeoutSeconds: result.idleTimeoutSeconds,
      user: userView(result.principal),
    };
  });

  r.post('/logout', requireSession(auth), async (ctx) => {
    await auth.logout(principalOf(ctx), ctx.state.token as string);
    ctx.status = 204;
  });

  r.get('/me', requireSession(auth), async (ctx) => {
    const p = principalOf(ctx);
    ctx.body = { user: userView(p), session: { id: p.sessionId, deviceId: p.deviceId, expiresAt: p.expiresAt.toISOString() } };
  });

  return r;
}

function userView(p: { userId: number; username: string; displayName: string; facilityId: string; role: string }) {
  return { id: p.userId, username: p.username, displayName: p.displayName, facilityId: p.facilityId, role: p.role };
}
