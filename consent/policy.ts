import { z } from 'zod';
import { CATEGORIES, type Category } from './categories.js';
import { PURPOSES, type Purpose } from './model.js';

/**
 * The exchange's rules around consent: what the consent alone does not say. Which role may read
 * which category is the viewer's role matrix, not this; this holds the exceptional paths
 * (own facility, emergency, break-glass, disaster) and the masking duties.
 */
export interface ConsentPolicy {
  ownFacility: {
    /**
     * Purposes for which a facility reading its own records through the exchange is not a
     * cross-facility disclosure and needs no consent (the facility holds the data already).
     * AI analysis and research send data onwards, so they are never in this list by default.
     */
    purposes: Purpose[];
  };
  emergency: {
    /** A consent for treatment also covers emergency use unless the patient said otherwise. */
    impliedByTreatment: boolean;
  };
  breakGlass: {
    enabled: boolean;
    roles: string[];
    categories: Category[] | 'all';
    /** Longest grant a user may open. */
    maxMinutes: number;
    /**
     * Whether break-glass opens records of a patient who withdrew, opted out, or explicitly
     * refused emergency sharing. Off by default: the patient's explicit "no" beats any permit.
     * Explicit exclusions of a facility or category always hold, whatever this says.
     */
    overridesRefusal: boolean;
    /** Purposes under which a break-glass grant may be used. */
    purposes: Purpose[];
  };
  disaster: {
    enabled: boolean;
    roles: string[];
    /** Categories the emergency rule opens during a declared disaster. */
    categories: Category[];
    /** A declaration covers a read when it names the requesting facility, the source, or either. */
    appliesTo: 'requester' | 'source' | 'either';
    overridesRefusal: boolean;
    /** Report disaster reads to the patient's facilities. */
    notify: boolean;
  };
  /** Fields to mask in what is returned, by purpose / basis / category. */
  masks: MaskRule[];
}

export type DecisionBasis = 'own-facility' | 'consent' | 'disaster' | 'break-glass';

export interface MaskRule {
  purposes?: Purpose[];
  bases?: DecisionBasis[];
  categories?: Category[];
  fields: string[];
}

/** The identifying fields that never leave the exchange for an AI service (issue 8). */
export const IDENTIFYING_FIELDS = [
  'name',
  'address',
  'phone',
  'insuranceNumber',
  'localId',
  'birthDate',
  'postalCode',
] as const;

export function defaultPolicy(): ConsentPolicy {
  return {
    ownFacility: { purposes: ['treatment', 'emergency'] },
    emergency: { impliedByTreatment: true },
    breakGlass: {
      enabled: true,
      roles: ['physician'],
      categories: 'all',
      maxMinutes: 240,
      overridesRefusal: false,
      purposes: ['treatment', 'emergency'],
    },
    disaster: {
      enabled: true,
      roles: ['physician', 'nurse', 'pharmacist'],
      categories: ['demographics', 'allergies', 'diagnoses', 'prescriptions', 'injections', 'labs'],
      appliesTo: 'either',
      overridesRefusal: false,
      notify: true,
    },
    masks: [{ purposes: ['ai-analysis'], fields: [...IDENTIFYING_FIELDS] }],
  };
}

const purpose = z.enum(PURPOSES);
const category = z.enum(CATEGORIES);

const PolicySchema = z.strictObject({
  ownFacility: z.strictObject({ purposes: z.array(purpose) }),
  emergency: z.strictObject({ impliedByTreatment: z.boolean() }),
  breakGlass: z.strictObject({
    enabled: z.boolean(),
    roles: z.array(z.string().min(1)),
    categories: z.union([z.literal('all'), z.array(category)]),
    maxMinutes: z.number().int().min(1).max(7 * 24 * 60),
    overridesRefusal: z.boolean(),
    purposes: z.array(purpose),
  }),
  disaster: z.strictObject({
    enabled: z.boolean(),
    roles: z.array(z.string().min(1)),
    categories: z.array(category),
    appliesTo: z.enum(['requester', 'source', 'either']),
    overridesRefusal: z.boolean(),
    notify: z.boolean(),
  }),
  masks: z.array(
    z.strictObject({
      purposes: z.array(purpose).optional(),
      bases: z.array(z.enum(['own-facility', 'consent', 'disaster', 'break-glass'])).optional(),
      categories: z.array(category).optional(),
      fields: z.array(z.string().min(1)).min(1),
    }),
  ),
});

/** Validates a policy read from configuration; throws with every problem named. */
export function parsePolicy(value: unknown): ConsentPolicy {
  const r = PolicySchema.safeParse(value);
  if (!r.success) {
    throw new Error(`invalid consent policy: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  const p = r.data as ConsentPolicy;
  if (p.breakGlass.purposes.some((x) => x === 'research' || x === 'ai-analysis')) {
    throw new Error('invalid consent policy: breakGlass.purposes may hold only treatment and emergency');
  }
  if (p.ownFacility.purposes.some((x) => x === 'research' || x === 'ai-analysis')) {
    throw new Error('invalid consent policy: ownFacility.purposes may hold only treatment and emergency');
  }
  return p;
}
