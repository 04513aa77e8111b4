import { sql, type Selectable } from 'kysely';
import { preparedRead, type Db } from '../../store/db.js';
import type { Category } from '../../consent/categories.js';
import type { Role } from '../roles/roles.js';
import type { SecretBox } from '../auth/secret-box.js';
import type { AiServiceTable } from './ai.tables.js';
import type { BirthDateNeed } from './deidentify.js';
import type { AiAuth, AiService } from './registry.js';

/** SQL of the AI service registry. Secrets are sealed under the exchange's key, bound to the id. */

export function jsonb(value: unknown) {
  return sql<string>`cast(cast(${JSON.stringify(value)} as text) as jsonb)`;
}

const aad = (id: string) => `ai-service:${id}`;

function toService(r: Selectable<AiServiceTable>, box: SecretBox): AiService {
  let auth: AiAuth = { kind: 'none' };
  if (r.auth_kind !== 'none') {
    const secret = JSON.parse(box.open(r.auth_secret_enc!, aad(r.id)).toString('utf8')) as { token?: string; clientSecret?: string };
    auth =
      r.auth_kind === 'bearer'
        ? { kind: 'bearer', token: secret.token! }
        : {
            kind: 'oauth2',
            tokenUrl: r.auth_public.tokenUrl!,
            clientId: r.auth_public.clientId!,
            clientSecret: secret.clientSecret!,
            ...(r.auth_public.scope ? { scope: r.auth_public.scope } : {}),
          };
  }
  return {
    id: r.id,
    name: r.name,
    baseUrl: r.base_url,
    operation: r.operation,
    auth,
    categories: r.categories as Category[],
    facilities: r.facilities,
    roles: r.roles as Role[],
    timeoutMs: r.timeout_ms,
    rateLimit: { perMinute: r.rate_per_minute, burst: r.rate_burst },
    location: { country: r.country, region: r.region },
    allowOutsideJapan: r.allow_outside_japan,
    birthDate: r.birth_date as BirthDateNeed,
    enabled: r.enabled,
    createdAt: r.created_at.getTime(),
    updatedAt: r.updated_at.getTime(),
    updatedBy: r.updated_by,
  };
}

function columns(s: AiService, box: SecretBox) {
  const pub = s.auth.kind === 'oauth2' ? { tokenUrl: s.auth.tokenUrl, clientId: s.auth.clientId, ...(s.auth.scope ? { scope: s.auth.scope } : {}) } : {};
  const secret = s.auth.kind === 'bearer' ? { token: s.auth.token } : s.auth.kind === 'oauth2' ? { clientSecret: s.auth.clientSecret } : undefined;
  return {
    name: s.name,
    base_url: s.baseUrl,
    operation: s.operation,
    auth_kind: s.auth.kind,
    auth_public: jsonb(pub),
    auth_secret_enc: secret ? box.seal(Buffer.from(JSON.stringify(secret), 'utf8'), aad(s.id)) : null,
    categories: jsonb(s.categories),
    facilities: jsonb(s.facilities),
    roles: jsonb(s.roles),
    timeout_ms: s.timeoutMs,
    rate_per_minute: s.rateLimit.perMinute,
    rate_burst: s.rateLimit.burst,
    country: s.location.country,
    region: s.location.region,
    allow_outside_japan: s.allowOutsideJapan,
    birth_date: s.birthDate,
    enabled: s.enabled,
    updated_at: new Date(s.updatedAt),
    updated_by: s.updatedBy,
  };
}

/** Inserts; resolves false when the id is taken. */
export async function insertService(db: Db, box: SecretBox, s: AiService): Promise<boolean> {
  const r = await db
    .insertInto('ai_service')
    .values({ id: s.id, created_at: new Date(s.createdAt), ...columns(s, box) })
    .onConflict((oc) => oc.column('id').doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0) === 1;
}

export async function updateService(db: Db, box: SecretBox, s: AiService): Promise<boolean> {
  const r = await db.updateTable('ai_service').set(columns(s, box)).where('id', '=', s.id).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function findService(db: Db, box: SecretBox, id: string): Promise<AiService | undefined> {
  // Every AI request reads its service twice (submit, send): a prepared statement, over the
  // pipelined connections (it only reads) rather than a round trip on a pooled one.
  const [r] = await preparedRead<Selectable<AiServiceTable>>(db, 'ai-service-find', 'select * from ai_service where id = $1', [id]);
  return r && toService(r, box);
}

export async function listServices(db: Db, box: SecretBox): Promise<AiService[]> {
  const rows = await db.selectFrom('ai_service').selectAll().orderBy('id').execute();
  return rows.map((r) => toService(r, box));
}
