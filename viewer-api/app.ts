import Koa from 'koa';
import Router from '@koa/router';
import type { Logger } from 'pino';
import { errorHandler } from './http/errors.js';

export interface HttpDeps {
  log: Logger;
  /** Liveness of what the exchange depends on; a failing check makes /health answer 503. */
  health: () => Promise<Record<string, 'ok' | string>>;
  /** Routers of the features (upload protocol, viewer API, FHIR), mounted in order. */
  routers: Router[];
}

/** The exchange's koa application: one error handler at the top, then the features' routers. */
export function createHttpApp(deps: HttpDeps): Koa {
  const app = new Koa({ proxy: false });
  app.use(errorHandler(deps.log));
  const root = new Router();
  root.get('/health', async (ctx) => {
    const checks = await deps.health();
    const ok = Object.values(checks).every((v) => v === 'ok');
    ctx.status = ok ? 200 : 503;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: ok ? 'ok' : 'degraded', checks };
  });
  app.use(root.routes()).use(root.allowedMethods());
  for (const r of deps.routers) app.use(r.routes()).use(r.allowedMethods());
  return app;
}
