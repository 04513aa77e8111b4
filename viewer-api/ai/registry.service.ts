import { conflict, forbidden, notFound } from '../../store/errors.js';
import type { Db } from '../../store/db.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { AdminContext } from '../auth/admin.service.js';
import type { SecretBox } from '../auth/secret-box.js';
import { parseServiceInput, viewOf, type AiService, type AiServiceView } from './registry.js';
import * as repo from './registry.repository.js';

/**
 * Management of the AI service registry by network administrators. Every change is audited
 * (never with a secret in it); a refused change is audited too.
 */
export interface AiRegistry {
  register(ctx: AdminContext, input: unknown): Promise<AiServiceView>;
  /** Replaces the given fields; the result is validated as a whole. Secrets kept unless given. */
  update(ctx: AdminContext, id: string, patch: Record<string, unknown>): Promise<AiServiceView>;
  setEnabled(ctx: AdminContext, id: string, enabled: boolean): Promise<AiServiceView>;
  list(): Promise<AiServiceView[]>;
  view(id: string): Promise<AiServiceView>;
  /** The full definition with its credentials: for the exchange's own calls, never for a client. */
  load(id: string): Promise<AiService | undefined>;
}

export interface AiRegistryDeps {
  db: Db;
  box: SecretBox;
  audit: AuditLog;
  clock: () => number;
}

/** A signed-in user must be a network administrator; the machine's operator (CLI) may too. */
function assertManager(ctx: AdminContext): void {
  const signedIn = ctx.actor.userId !== undefined && ctx.actor.userId !== null;
  if (signedIn && ctx.actor.role !== 'network_admin') throw forbidden('only network administrators manage AI services');
}

const auditDetail = (s: AiServiceView) => ({
  service: s.id,
  baseUrl: s.baseUrl,
  operation: s.operation,
  auth: s.auth.kind,
  categories: s.categories,
  facilities: s.facilities,
  roles: s.roles,
  location: s.location,
  allowOutsideJapan: s.allowOutsideJapan,
  birthDate: s.birthDate,
  enabled: s.enabled,
});

export function createAiRegistry(deps: AiRegistryDeps): AiRegistry {
  const { db, box, audit, clock } = deps;
  const who = (ctx: AdminContext) => ctx.actor.username ?? `user:${ctx.actor.userId ?? 'unknown'}`;

  async function guarded<T>(ctx: AdminContext, action: string, target: string | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      assertManager(ctx);
      return await fn();
    } catch (e) {
      await audit.record({
        action,
        outcome: 'denied',
        reason: (e as Error).message,
        actor: ctx.actor,
        address: ctx.address,
        deviceId: ctx.deviceId ?? null,
        endpoint: ctx.endpoint,
        detail: target ? { service: target } : {},
      });
      throw e;
    }
  }

  async function existing(id: string): Promise<AiService> {
    const s = await repo.findService(db, box, id);
    if (!s) throw notFound(`no AI service ${id}`);
    return s;
  }

  async function save(ctx: AdminContext, action: string, s: AiService, before?: AiService): Promise<AiServiceView> {
    const ok = before ? await repo.updateService(db, box, s) : await repo.insertService(db, box, s);
    if (!ok) throw before ? notFound(`no AI service ${s.id}`) : conflict(`an AI service ${s.id} already exists`);
    const view = viewOf(s);
    await audit.record({
      action,
      outcome: 'success',
      actor: ctx.actor,
      address: ctx.address,
      deviceId: ctx.deviceId ?? null,
      endpoint: ctx.endpoint,
      detail: { ...auditDetail(view), ...(before ? { before: auditDetail(viewOf(before)), credentialsChanged: before.auth.kind !== s.auth.kind || JSON.stringify(before.auth) !== JSON.stringify(s.auth) } : {}) },
    });
    return view;
  }

  return {
    register(ctx, input) {
      const target = typeof input === 'object' && input && typeof (input as { id?: unknown }).id === 'string' ? (input as { id: string }).id : undefined;
      return guarded(ctx, 'ai.service.register', target, async () => {
        const p = parseServiceInput(input);
        const now = clock();
        return save(ctx, 'ai.service.register', { ...p, createdAt: now, updatedAt: now, updatedBy: who(ctx) });
      });
    },
    update(ctx, id, patch) {
      return guarded(ctx, 'ai.service.update', id, async () => {
        const before = await existing(id);
        const { createdAt: _c, updatedAt: _u, updatedBy: _b, ...current } = before;
        const p = parseServiceInput({ ...current, ...patch, id });
        return save(ctx, 'ai.service.update', { ...p, createdAt: before.createdAt, updatedAt: clock(), updatedBy: who(ctx) }, before);
      });
    },
    setEnabled(ctx, id, enabled) {
      return guarded(ctx, enabled ? 'ai.service.enable' : 'ai.service.disable', id, async () => {
        const before = await existing(id);
        return save(ctx, enabled ? 'ai.service.enable' : 'ai.service.disable', { ...before, enabled, updatedAt: clock(), updatedBy: who(ctx) }, before);
      });
    },
    async list() {
      return (await repo.listServices(db, box)).map(viewOf);
    },
    async view(id) {
      return viewOf(await existing(id));
    },
    load(id) {
      return repo.findService(db, box, id);
    },
  };
}
