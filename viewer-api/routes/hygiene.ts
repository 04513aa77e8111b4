import type { Context, Next } from 'koa';

/**
 * Headers every viewer, auth and FHIR response carries, errors included: clinical data and tokens
 * must not be kept by browsers or proxies (Cache-Control: no-store, RFC 9111 section 5.2.2.5),
 * and a JSON API has nothing to frame, sniff or run.
 */
export function securityHeaders(opts: { tls: boolean }) {
  return async function hygiene(ctx: Context, next: Next): Promise<void> {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.set('Cross-Origin-Resource-Policy', 'same-origin');
    if (opts.tls) ctx.set('Strict-Transport-Security', 'max-age=31536000');
    await next();
  };
}

/** The caller's address as the socket saw it (the exchange trusts no X-Forwarded-For). */
export function clientAddress(ctx: Context): string {
  const ip = ctx.request.ip || ctx.req.socket.remoteAddress || 'unknown';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}
