import { z } from 'zod';
import { CATEGORIES, type Category } from '../../consent/categories.js';
import { ExchangeError, forbidden } from '../../store/errors.js';
import { ROLES, type Role } from '../roles/roles.js';
import { BIRTH_DATE_NEEDS, type BirthDateNeed } from './deidentify.js';

/**
 * The registry of AI services the exchange may send de-identified data to. Pure model and
 * rules; the repository stores it, the service (registry.service.ts) lets network administrators
 * manage it with an audit trail.
 */

export type AiAuth =
  | { kind: 'none' }
  | { kind: 'bearer'; token: string }
  | { kind: 'oauth2'; tokenUrl: string; clientId: string; clientSecret: string; scope?: string };

export interface AiService {
  /** Registry id, also the id consents name under purpose ai-analysis. */
  id: string;
  name: string;
  /** FHIR base URL of the service. */
  baseUrl: string;
  /**
   * What to call: `$name` or `Type/$name` (a FHIR operation; the Bundle goes in a Parameters
   * resource as parameter `bundle`), or a resource path such as `Bundle` (the Bundle is POSTed
   * as it is).
   */
  operation: string;
  auth: AiAuth;
  /** The record categories the service needs; nothing else is ever sent to it. */
  categories: Category[];
  /** Facilities whose staff may use it. */
  facilities: 'all' | string[];
  /** Roles that may ask for an analysis (besides the role matrix's ai.request action). */
  roles: Role[];
  timeoutMs: number;
  rateLimit: { perMinute: number; burst: number };
  /** Where the service's data centre is: ISO 3166-1 alpha-2 country, and a free region name. */
  location: { country: string; region: string | null };
  /** A service outside Japan is refused unless this is set, deliberately. */
  allowOutsideJapan: boolean;
  birthDate: BirthDateNeed;
  enabled: boolean;
  createdAt: number;
  updatedAt: number;
  updatedBy: string;
}

/** What may be shown of a service: everything but its secrets. */
export type AiServiceView = Omit<AiService, 'auth'> & {
  auth: { kind: 'none' } | { kind: 'bearer' } | { kind: 'oauth2'; tokenUrl: string; clientId: string; scope?: string };
};

export function viewOf(s: AiService): AiServiceView {
  const auth: AiServiceView['auth'] =
    s.auth.kind === 'oauth2'
      ? { kind: 'oauth2', tokenUrl: s.auth.tokenUrl, clientId: s.auth.clientId, ...(s.auth.scope ? { scope: s.auth.scope } : {}) }
      : { kind: s.auth.kind };
  return { ...s, auth };
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** HTTPS, or plain HTTP to this machine only (a local stand-in, tests). */
const serviceUrl = z
  .string()
  .trim()
  .max(2000)
  .refine((v) => {
    try {
      const u = new URL(v);
      if (u.username || u.password || u.hash) return false;
      return u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.has(u.hostname));
    } catch {
      return false;
    }
  }, 'must be an https:// URL (plain http only to 127.0.0.1 or localhost), without credentials');

const AuthSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('none') }).strict(),
  z.object({ kind: z.literal('bearer'), token: z.string().min(8).max(4000) }).strict(),
  z
    .object({
      kind: z.literal('oauth2'),
      tokenUrl: serviceUrl,
      clientId: z.string().min(1).max(500),
      clientSecret: z.string().min(8).max(4000),
      scope: z.string().max(1000).optional(),
    })
    .strict(),
]);

export const ServiceInputSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'lower-case letters, digits and hyphens, 2-63 characters'),
    name: z.string().trim().min(1).max(200),
    baseUrl: serviceUrl,
    operation: z
      .string()
      .regex(/^(?:(?:[A-Z][A-Za-z]+\/)?\$[a-z][A-Za-z0-9-]*|[A-Z][A-Za-z]+)$/, 'an operation ($name or Type/$name) or a resource type to POST to'),
    auth: AuthSchema,
    categories: z.array(z.enum(CATEGORIES)).min(1),
    facilities: z.union([z.literal('all'), z.array(z.string().min(1).max(100)).min(1)]),
    roles: z.array(z.enum(ROLES)).min(1).default(['physician']),
    timeoutMs: z.number().int().min(100).max(600_000).default(30_000),
    rateLimit: z.object({ perMinute: z.number().int().min(1).max(1_000_000), burst: z.number().int().min(1).max(10_000) }).strict().default({ perMinute: 60, burst: 10 }),
    location: z.object({ country: z.string().regex(/^[A-Z]{2}$/, 'an ISO 3166-1 alpha-2 code such as JP'), region: z.string().max(200).nullable().default(null) }).strict(),
    allowOutsideJapan: z.boolean().default(false),
    birthDate: z.enum(BIRTH_DATE_NEEDS).default('omit'),
    enabled: z.boolean().default(true),
  })
  .strict();

export type ServiceInput = z.input<typeof ServiceInputSchema>;

export function parseServiceInput(input: unknown): z.output<typeof ServiceInputSchema> {
  const parsed = ServiceInputSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 10).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ExchangeError('bad-request', `invalid AI service: ${problems.join('; ')}`);
  }
  const s = parsed.data;
  assertLocation(s);
  return s;
}

/** The data-centre rule: data leaves Japan only when an administrator said so, explicitly. */
export function assertLocation(s: { id: string; location: { country: string }; allowOutsideJapan: boolean }): void {
  if (s.location.country !== 'JP' && !s.allowOutsideJapan) {
    throw forbidden(`AI service ${s.id} has its data centre outside Japan (${s.location.country}); it can only be used when explicitly allowed`);
  }
}

export interface Requester {
  facilityId: string;
  role: Role;
}

/** May this requester send this patient's data to this service? Throws forbidden saying why. */
export function assertUsable(s: AiService, who: Requester): void {
  if (!s.enabled) throw forbidden(`AI service ${s.id} is disabled`);
  assertLocation(s);
  if (s.facilities !== 'all' && !s.facilities.includes(who.facilityId)) throw forbidden(`your facility may not use AI service ${s.id}`);
  if (!s.roles.includes(who.role)) throw forbidden(`your role may not use AI service ${s.id}`);
}
