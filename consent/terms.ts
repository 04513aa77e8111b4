import { z } from 'zod';
import { CATEGORIES } from './categories.js';
import { FACILITY_KINDS, type ConsentTerms } from './model.js';

/** Validation of consent terms coming from outside (HTTP, CLI, FHIR import). */

const facilityId = z.string().trim().min(1).max(64);
const unique = <T>(list: T[]) => new Set(list).size === list.length;

const FacilityScopeSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('all') }),
  z.strictObject({ mode: z.literal('all-except'), facilities: z.array(facilityId).min(1).refine(unique, 'listed twice') }),
  z.strictObject({ mode: z.literal('listed'), facilities: z.array(facilityId).min(1).refine(unique, 'listed twice') }),
]);

const CategoryScopeSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('all') }),
  z.strictObject({ mode: z.literal('all-except'), categories: z.array(z.enum(CATEGORIES)).min(1).refine(unique, 'listed twice') }),
  z.strictObject({ mode: z.literal('listed'), categories: z.array(z.enum(CATEGORIES)).min(1).refine(unique, 'listed twice') }),
]);

export const ConsentTermsSchema = z
  .strictObject({
    status: z.enum(['opted-in', 'opted-out', 'withdrawn']),
    disclosing: FacilityScopeSchema,
    receiving: z.strictObject({
      kinds: z.union([z.literal('all'), z.array(z.enum(FACILITY_KINDS)).refine(unique, 'listed twice')]),
      facilities: z.array(facilityId).refine(unique, 'listed twice'),
      exclude: z.array(facilityId).refine(unique, 'listed twice'),
    }),
    categories: CategoryScopeSchema,
    purposes: z.strictObject({
      treatment: z.boolean(),
      emergency: z.enum(['permit', 'refuse', 'unspecified']),
      aiServices: z.array(z.string().trim().min(1).max(64)).refine(unique, 'listed twice'),
      research: z.boolean(),
    }),
    validFrom: z.number().int().nonnegative(),
    validTo: z.number().int().nonnegative().nullable(),
  })
  .refine((t) => t.validTo === null || t.validTo > t.validFrom, { message: 'validTo must be after validFrom', path: ['validTo'] });

/** Parses terms or throws a message naming each problem by its path. */
export function parseTerms(value: unknown): ConsentTerms {
  const r = ConsentTermsSchema.safeParse(value);
  if (!r.success) {
    throw new TermsError(r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })));
  }
  return r.data as ConsentTerms;
}

export class TermsError extends Error {
  override name = 'TermsError';
  constructor(readonly issues: { path: string; message: string }[]) {
    super(`invalid consent terms: ${issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ')}`);
  }
}
