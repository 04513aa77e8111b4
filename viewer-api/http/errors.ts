import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { ExchangeError, isExchangeError } from '../../store/errors.js';

/**
 * The one place where errors become responses. Every request gets an id (echoed in
 * `X-Request-Id`); ExchangeErrors become RFC 9457 problem+json, or a FHIR OperationOutcome under
 * /fhir; anything else is logged with the id and answered with a bare 500 that says nothing more.
 */
export function errorHandler(log: Logger) {
  return async function handleErrors(ctx: Context, next: Next): Promise<void> {
    const requestId = randomUUID();
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new ExchangeError('not-found', `no such endpoint: ${ctx.method} ${ctx.path}`);
      }
    } catch (err) {
      const known = toExchangeError(err);
      if (!known) log.error({ err, requestId, method: ctx.method, path: ctx.path }, 'unhandled error');
      const e = known ?? new ExchangeError('unavailable', 'internal error');
      const status = known ? e.status : 500;
      ctx.status = status;
      if (status === 401) ctx.set('WWW-Authenticate', 'Bearer');
      if (ctx.path === '/fhir' || ctx.path.startsWith('/fhir/')) {
        ctx.type = 'application/fhir+json';
        ctx.body = operationOutcome(known ? e.fhirIssueType : 'exception', known ? e.message : 'internal error', requestId);
      } else {
        ctx.type = 'application/problem+json';
        ctx.body = {
          type: 'about:blank',
          title: known ? e.code : 'internal-error',
          status,
          detail: known ? e.message : 'internal error',
          requestId,
          ...(known ? e.details : {}),
        };
      }
    }
  };
}

export function operationOutcome(code: string, diagnostics: string, requestId?: string) {
  return {
    resourceType: 'OperationOutcome',
    ...(requestId ? { id: requestId } : {}),
    issue: [{ severity: 'error', code, diagnostics }],
  };
}

/** Errors thrown by koa helpers (ctx.throw, body parsers) carry an exposed status. */
function toExchangeError(err: unknown): ExchangeError | undefined {
  if (isExchangeError(err)) return err;
  const e = err as { status?: number; expose?: boolean; message?: string };
  if (e && typeof e.status === 'number' && e.expose && e.status >= 400 && e.status < 500) {
    const code = e.status === 413 ? 'payload-too-large' : e.status === 404 ? 'not-found' : 'bad-request';
    return new ExchangeError(code, e.message ?? 'bad request');
  }
  return undefined;
}
