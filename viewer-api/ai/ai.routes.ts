import Router from '@koa/router';
import type { Middleware } from 'koa';
import { z } from 'zod';
import { readJson } from '../http/body.js';
import { forbidden } from '../../store/errors.js';
import type { AuthService } from '../auth/auth.service.js';
import type { AdminContext } from '../auth/admin.service.js';
import { checkSession, principalOf, requireSession } from '../routes/session.js';
import type { AiFlow, SubmitReads } from './ai.service.js';
import type { AiRegistry } from './registry.service.js';

/**
 * AI endpoints of the viewer API:
 *   POST /api/ai/requests {serviceId, patientId}  -> 202, the request (status sending, or queued)
 *   GET  /api/ai/requests/:id                     -> the request's status and progress
 *   GET  /api/ai/requests/:id/result              -> the re-identified result (when done)
 *   GET  /api/ai/services                         -> services the caller may use
 *   GET|POST /api/admin/ai/services, PATCH|GET /api/admin/ai/services/:id (network administrators)
 */
const SubmitBody = z
  .object({
    serviceId: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'an AI service id'),
    patientId: z.string().min(1).max(64).regex(/^[\x21-\x7e]+$/, 'a regional patient id'),
  })
  .strict();

const PatchBody = z.record(z.string(), z.unknown());

export function aiRouter(deps: { auth: AuthService; flow: AiFlow; registry: AiRegistry; hygiene: Middleware }): Router {
  const r = new Router({ prefix: '/api' });
  r.use(deps.hygiene);
  const session = requireSession(deps.auth);
  const endpoint = (ctx: { method: string; path: string }) => `${ctx.method} ${ctx.path}`;
  const admin = (ctx: Parameters<Middleware>[0]): AdminContext => {
    const p = principalOf(ctx);
    return { actor: { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role }, address: p.address, deviceId: p.deviceId, endpoint: endpoint(ctx) };
  };

  r.post('/ai/requests', async (ctx) => {
    // The body first (at most 4 kB): the session check then reads what the submit needs with it
    // (AiFlow.preloadSubmit), one round trip for both. A bad body is refused after the session
    // check, so that a caller without a session learns nothing but that.
    const body = await readJson(ctx, SubmitBody, 4096).catch((e: unknown) => ({ invalid: e }));
    const valid = 'invalid' in body ? undefined : body;
    let reads: SubmitReads | undefined;
    const preload = deps.flow.preloadSubmit?.bind(deps.flow);
    await checkSession(deps.auth, ctx, valid && preload ? (tokenHash) => preload(tokenHash, valid).then((r) => ((reads = r.reads), r.session)) : undefined);
    if (!valid) throw (body as { invalid: unknown }).invalid;
    const view = await deps.flow.submit(principalOf(ctx), valid, endpoint(ctx), reads);
    ctx.status = 202;
    ctx.set('Location', `/api/ai/requests/${view.id}`);
    ctx.body = view;
  });

  r.get('/ai/requests/:id', session, async (ctx) => {
    ctx.body = await deps.flow.status(principalOf(ctx), ctx.params['id']!);
  });

  r.get('/ai/requests/:id/result', session, async (ctx) => {
    ctx.body = await deps.flow.result(principalOf(ctx), ctx.params['id']!, endpoint(ctx));
  });

  r.get('/ai/services', session, async (ctx) => {
    const p = principalOf(ctx);
    const all = await deps.registry.list();
    ctx.body = {
      services: all
        .filter((s) => s.enabled && (s.facilities === 'all' || s.facilities.includes(p.facilityId)) && s.roles.includes(p.role))
        .map((s) => ({ id: s.id, name: s.name, categories: s.categories, location: s.location, birthDate: s.birthDate })),
    };
  });

  r.get('/admin/ai/services', session, async (ctx) => {
    if (principalOf(ctx).role !== 'network_admin') throw forbidden('only network administrators manage AI services');
    ctx.body = { services: await deps.registry.list() };
  });

  r.post('/admin/ai/services', session, async (ctx) => {
    const body = await readJson(ctx, z.unknown(), 64 * 1024);
    ctx.status = 201;
    ctx.body = await deps.registry.register(admin(ctx), body);
  });

  r.patch('/admin/ai/services/:id', session, async (ctx) => {
    const body = await readJson(ctx, PatchBody, 64 * 1024);
    ctx.body = await deps.registry.update(admin(ctx), ctx.params['id']!, body);
  });

  return r;
}
