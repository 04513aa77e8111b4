import { CATEGORIES, type Category } from '../../consent/categories.js';
import { decide } from '../../consent/decide.js';
import type { DecisionContextLoader } from '../../consent/decision-context.js';
import type { Role } from '../roles/roles.js';
import { readableCategories, roleMay, type RolePolicy } from '../roles/roles.js';
import { assertUsable, type AiService } from './registry.js';

/**
 * The gate of data that leaves for an AI service (architecture principles 5 and 6): the
 * requester's role may ask for analyses and may use this service, the service may be used from
 * the requester's facility and is in Japan (or explicitly allowed), and the patient consented to
 * purpose ai-analysis for THIS service — decided per linked local ID and per category the
 * service declared, so that only what was both declared and consented is ever sent. An unlinked
 * local ID never is. Pure over the loaded decision context; the caller audits the outcome.
 */

export interface AiRequester {
  userId: number;
  facilityId: string;
  role: Role;
}

export interface PermittedSource {
  facilityId: string;
  localId: string;
  categories: Category[];
}

export type AiGateOutcome =
  | { permitted: true; regionalId: string; sources: PermittedSource[]; categories: Category[]; links: { facilityId: string; localId: string }[]; consentVersionIds: string[] }
  | { permitted: false; reason: string; publicReason: string };

/** What a refused requester is told: the same text whatever the patient's consent says. */
export const AI_NOT_PERMITTED = 'This patient’s data may not be sent to this AI service.';

export async function decideAiRequest(
  deps: { contexts: DecisionContextLoader; roles: RolePolicy },
  who: AiRequester,
  service: AiService,
  regionalId: string,
  at: number,
): Promise<AiGateOutcome> {
  if (!roleMay(deps.roles, who.role, 'ai.request')) {
    return { permitted: false, reason: `role ${who.role} may not request AI analyses`, publicReason: 'Your role may not request AI analyses.' };
  }
  try {
    assertUsable(service, { facilityId: who.facilityId, role: who.role });
  } catch (e) {
    return { permitted: false, reason: (e as Error).message, publicReason: (e as Error).message };
  }
  const loaded = await deps.contexts.load(regionalId, { userId: String(who.userId) }, at);
  if (!loaded) return { permitted: false, reason: 'unknown regional patient', publicReason: AI_NOT_PERMITTED };
  const { context } = loaded;
  const kind = context.participation.get(who.facilityId)?.kind;
  if (!kind) return { permitted: false, reason: `facility ${who.facilityId} does not participate`, publicReason: AI_NOT_PERMITTED };
  // What the service declared, and what the requester's role could see itself.
  const roleCats = new Set(readableCategories(deps.roles, who.role));
  const wanted = CATEGORIES.filter((c) => service.categories.includes(c) && roleCats.has(c));
  const sources: PermittedSource[] = [];
  const refusals = new Set<string>();
  const versions = new Set<string>();
  const links = context.links.filter((l) => l.regionalId === loaded.regionalId);
  for (const link of links) {
    const cats: Category[] = [];
    for (const category of wanted) {
      const d = decide(
        {
          user: { id: String(who.userId), facilityId: who.facilityId, facilityKind: kind, role: who.role },
          purpose: 'ai-analysis',
          aiServiceId: service.id,
          regionalId: loaded.regionalId,
          source: { facilityId: link.facilityId, localId: link.localId },
          category,
          at,
        },
        context,
      );
      if (d.effect === 'permit') {
        cats.push(category);
        if (d.consentVersionId) versions.add(d.consentVersionId);
      } else for (const r of d.reasons) refusals.add(r.code);
    }
    if (cats.length) sources.push({ facilityId: link.facilityId, localId: link.localId, categories: cats });
  }
  if (sources.length === 0) {
    return { permitted: false, reason: `nothing permitted for ai-analysis by ${service.id}: ${[...refusals].sort().join(', ') || 'no linked records'}`, publicReason: AI_NOT_PERMITTED };
  }
  const categories = CATEGORIES.filter((c) => sources.some((s) => s.categories.includes(c)));
  return {
    permitted: true,
    regionalId: loaded.regionalId,
    sources,
    categories,
    links: links.map((l) => ({ facilityId: l.facilityId, localId: l.localId })),
    consentVersionIds: [...versions].sort(),
  };
}
