import type { Context, Next } from 'koa';
import type { AuthService, Principal } from '../auth/auth.service.js';
import { clientAddress } from './hygiene.js';
import { isExchangeError } from '../../store/errors.js';

export const DEVICE_HEADER = 'X-Device-Credential';

/** Reads the bearer token of `Authorization: Bearer <token>` (RFC 6750 section 2.1). */
export function bearerToken(ctx: Context): string | undefined {
  const h = ctx.get('Authorization');
  const m = /^Bearer ([^\s]+)$/i.exec(h.trim());
  return m ? m[1] : undefined;
}

export function deviceCredential(ctx: Context): string | undefined {
  const v = ctx.get(DEVICE_HEADER).trim();
  return v === '' ? undefined : v;
}

/** Lets only requests with a valid session through; the handler then finds the caller in ctx.state. */
export function requireSession(auth: AuthService) {
  return async function session(ctx: Context, next: Next): Promise<void> {
    const token = bearerToken(ctx);
    ctx.state.principal = await auth
      .authenticate(token, deviceCredential(ctx), clientAddress(ctx), `${ctx.method} ${ctx.path}`)
      .catch((e: unknown) => {
        if (isExchangeError(e) && typeof e.details?.retryAfterSeconds === 'number') ctx.set('Retry-After', String(e.details.retryAfterSeconds));
        throw e;
      });
    ctx.state.token = token;
    await next();
  };
}

/** The caller of a request that passed requireSession. */
export function principalOf(ctx: Context): Principal {
  const p = ctx.state.principal as Principal | undefined;
  // Only reachable by mounting a handler without requireSession: a programming error, a bare 500.
  if (!p) throw new Error('handler mounted without requireSession');
  return p;
}
