import * as consents from './consent.repository.js';
import type { Conn } from './identity.repository.js';
import type { DecisionContext } from './decide.js';
import type { Participation } from './model.js';
import type { ConsentPolicy } from './policy.js';

/**
 * Assembles what decide() needs for one patient and one requester. The viewer calls it on every
 * request, so it costs one statement (patient + links, consents incl. merged patients, the
 * requester's grants, active disasters); facility participation (a small table that rarely
 * changes) comes from a short-lived cache. Consents, links and grants are never cached
 * across requests: a withdrawal or an unlink holds from the very next request.
 */

export interface LoadedContext {
  /** The patient the context is for: the survivor when the id asked for was merged. */
  regionalId: string;
  context: DecisionContext;
}

export interface DecisionContextLoader {
  /** Undefined when the patient does not exist. */
  load(regionalId: string, requester: { userId: string }, at: number): Promise<LoadedContext | undefined>;
}

/** Participation of every facility, refreshed after `ttlMs` or when told it changed. */
export interface ParticipationCache {
  get(): Promise<ReadonlyMap<string, Participation>>;
  invalidate(): void;
}

export function createParticipationCache(db: Conn, opts: { ttlMs: number; now?: () => number }): ParticipationCache {
  const now = opts.now ?? Date.now;
  let value: Promise<ReadonlyMap<string, Participation>> | undefined;
  let loadedAt = 0;
  return {
    get() {
      if (!value || now() - loadedAt >= opts.ttlMs) {
        loadedAt = now();
        const p = consents.allParticipation(db).then((rows) => new Map(rows.map((r) => [r.facilityId, r])) as ReadonlyMap<string, Participation>);
        // A failed load is not kept: the next request tries again.
        p.catch(() => {
          if (value === p) value = undefined;
        });
        value = p;
      }
      return value;
    },
    invalidate() {
      value = undefined;
    },
  };
}

export function createDecisionContextLoader(db: Conn, deps: { policy: ConsentPolicy; participation: ParticipationCache }): DecisionContextLoader {
  return {
    async load(regionalId, requester, at) {
      // One statement for the patient (a merged one answers for its survivor), links, consents,
      // the requester's grants and active disasters; participation comes from its cache.
      const [rows, participation] = await Promise.all([consents.decisionRows(db, regionalId, requester.userId, at), deps.participation.get()]);
      return contextOf(rows, participation, deps.policy);
    },
  };
}

/** The context of rows read by decisionRows or by a statement that embeds decisionRowsSql. */
export function contextOf(rows: consents.DecisionRows | undefined, participation: ReadonlyMap<string, Participation>, policy: ConsentPolicy): LoadedContext | undefined {
  if (!rows) return undefined;
  return {
    regionalId: rows.regionalId,
    context: { consents: rows.consents, links: rows.links, participation, policy, breakGlass: rows.grants, disasters: rows.disasters },
  };
}

/**
 * A loader for one request: a timeline asks decide() for many records of one patient, and loads
 * the context once. Make a new one per request; never share it between requests.
 */
export function perRequest(loader: DecisionContextLoader): DecisionContextLoader {
  const memo = new Map<string, Promise<LoadedContext | undefined>>();
  return {
    load(regionalId, requester, at) {
      const key = `${regionalId}\u0000${requester.userId}`;
      let v = memo.get(key);
      if (!v) memo.set(key, (v = loader.load(regionalId, requester, at)));
      return v;
    },
  };
}
