import { preparedRead, type Db } from '../../store/db.js';
import { decisionRowsOf, decisionRowsSql, GRANT_WINDOW_MS } from '../../consent/consent.repository.js';
import { contextOf, type LoadedContext, type ParticipationCache } from '../../consent/decision-context.js';
import type { ConsentPolicy } from '../../consent/policy.js';
import { SESSION_SQL, sessionOf, type SessionRecord, type SessionRow } from '../auth/auth.repository.js';

/**
 * A request about one patient reads its session and that patient's decision context in ONE
 * statement: one round trip fewer than the session check followed by the gate's own load, which
 * on the viewer's hot path (the timeline, $everything) is a large share of the CPU each request
 * costs. Nothing is cached: both are read on this very request, from one snapshot. The patient's
 * rows are read only when the token names a session; the session is then checked by
 * AuthService.authenticate as any other, and the context is used by the gate only for the
 * patient and user it was read for (PreloadedContext).
 */
export interface PreloadedContext {
  regionalId: string;
  /** The session's user, whose break-glass grants were read. */
  userId: number;
  /** The time the context was read for (disasters, grant expiry); the gate decides at it. */
  at: number;
  context: LoadedContext | undefined;
}

export interface SessionContextLoader {
  load(tokenHash: string, regionalId: string, at: number): Promise<{ session: SessionRecord | undefined; preloaded: PreloadedContext | undefined }>;
}

/**
 * The statement of a session (`$1`, the token hash) and the decision context of patient `$2` as of
 * `$4` (grants since `$3`), read only when there is a session; `columns`, more columns of its
 * own (SQL over `ctx`, the decision rows). Its row: SessionAndContextRow.
 */
export const sessionAndContextSql = (columns = '') => `
  with sess as (${SESSION_SQL}),
  ctx as (${decisionRowsSql({ regionalId: '(select $2::text where exists (select 1 from sess))', userId: '(select user_id::text from sess)', since: '$3', at: '$4' })})
  select sess.*, ctx.*${columns ? `, ${columns}` : ''} from ctx left join sess on true`;

export type SessionAndContextRow = SessionRow & { survivor: string | null; links: unknown; consents: unknown; grants: unknown; disasters: unknown };

const SESSION_AND_CONTEXT = sessionAndContextSql();

export function createSessionContextLoader(db: Db, deps: { policy: ConsentPolicy; participation: ParticipationCache }): SessionContextLoader {
  return {
    async load(tokenHash, regionalId, at) {
      const [rows, participation] = await Promise.all([
        preparedRead<SessionAndContextRow>(
          db, 'viewer-session-and-context', SESSION_AND_CONTEXT, [tokenHash, regionalId, new Date(at - GRANT_WINDOW_MS), new Date(at)]),
        deps.participation.get(),
      ]);
      const session = sessionOf(rows[0]);
      if (!session) return { session, preloaded: undefined };
      return { session, preloaded: { regionalId, userId: session.userId, at, context: contextOf(decisionRowsOf(rows[0]), participation, deps.policy) } };
    },
  };
}
