import type { Context, Next } from 'koa';
import type { AuthService, Principal } from '../auth/auth.service.js';
import { clientAddress } from './hygiene.js';
import { validRegionalId } from './params.js';
import { isExchangeError } from '../../store/errors.js';
import type { PreloadedContext, SessionContextLoader } from '../gate/session-context.js';
import type { SessionRecord } from '../auth/auth.repository.js';

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

/** For a route about one patient: read the session and that patient's decision context together. */
export interface SessionPreload {
  loader: SessionContextLoader;
  clock: () => number;
  /** The patient the request is about; undefined: none (or not a valid id: the handler refuses it). */
  regionalIdOf(ctx: Context): string | undefined;
}

/**
 * Lets only requests with a valid session through; the handler then finds the caller in
 * ctx.state. With `preload`, the session comes from the statement that also reads the patient's
 * decision context, which the handler hands to the gate (preloadedContext).
 */
export function requireSession(auth: AuthService, preload?: SessionPreload) {
  return async function session(ctx: Context, next: Next): Promise<void> {
    const regionalId = preload?.regionalIdOf(ctx);
    const lookup =
      preload && regionalId !== undefined
        ? async (tokenHash: string) => {
            const r = await preload.loader.load(tokenHash, regionalId, preload.clock());
            ctx.state.preloaded = r.preloaded;
            return r.session;
          }
        : undefined;
    await checkSession(auth, ctx, lookup);
    await next();
  };
}

/**
 * The session check of requireSession, for a route that reads more with it: `lookup` reads the
 * session of a token hash (default: the session check alone). The caller is then in ctx.state.
 */
export async function checkSession(auth: AuthService, ctx: Context, lookup?: (tokenHash: string) => Promise<SessionRecord | undefined>): Promise<void> {
  const token = bearerToken(ctx);
  ctx.state.principal = await auth
    .authenticate(token, deviceCredential(ctx), clientAddress(ctx), `${ctx.method} ${ctx.path}`, lookup)
    .catch((e: unknown) => {
      if (isExchangeError(e) && typeof e.details?.retryAfterSeconds === 'number') ctx.set('Retry-After', String(e.details.retryAfterSeconds));
      throw e;
    });
  ctx.state.token = token;
}

/**
 * requireSession for a route whose `:id` is a regional patient id: with a loader, the session and
 * that patient's decision context are read in one statement.
 */
export function requirePatientSession(auth: AuthService, loader: SessionContextLoader | undefined, clock: () => number) {
  return requireSession(auth, loader && { loader, clock, regionalIdOf: (ctx) => validRegionalId(ctx.params.id) });
}

/** The decision context read with the session (requireSession with a preload), if any. */
export function preloadedContext(ctx: Context): PreloadedContext | undefined {
  return ctx.state.preloaded as PreloadedContext | undefined;
}

/** The caller of a request that passed requireSession. */
export function principalOf(ctx: Context): Principal {
  const p = ctx.state.principal as Principal | undefined;
  // Only reachable by mounting a handler without requireSession: a programming error, a bare 500.
  if (!p) throw new Error('handler mounted without requireSession');
  return p;
}
