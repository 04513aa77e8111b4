import type { Conn } from './identity.repository.js';
import { createConsentService } from './consent.service.js';
import { createIdentityService } from './identity.service.js';
import { createDecisionContextLoader, createParticipationCache } from './decision-context.js';
import type { MatchConfig } from './match.js';
import type { EvidenceStore } from './model.js';
import { defaultPolicy, type ConsentPolicy } from './policy.js';

/**
 * The consent feature, wired for the composition root: identity and consent services and the
 * decision-context loader, sharing one participation cache that a participation change clears.
 */
export interface ConsentModuleOptions {
  db: Conn;
  evidence: EvidenceStore;
  policy?: ConsentPolicy;
  match?: MatchConfig;
  /** How long facility participation may be served from memory (other processes' changes). */
  participationTtlMs?: number;
  now?: () => number;
}

export function createConsentModule(opts: ConsentModuleOptions) {
  const policy = opts.policy ?? defaultPolicy();
  const participation = createParticipationCache(opts.db, { ttlMs: opts.participationTtlMs ?? 2000, now: opts.now });
  const identity = createIdentityService({ db: opts.db, match: opts.match, now: opts.now });
  const consent = createConsentService({ db: opts.db, policy, evidence: opts.evidence, now: opts.now, onParticipationChange: () => participation.invalidate() });
  const contexts = createDecisionContextLoader(opts.db, { policy, participation });
  return { policy, identity, consent, contexts, participation };
}

export type ConsentModule = ReturnType<typeof createConsentModule>;
