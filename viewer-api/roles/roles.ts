import fs from 'node:fs';
import { z } from 'zod';
import { CATEGORIES, type Category } from '../../consent/categories.js';

/** The people who use the exchange (issue 6). A user has exactly one role, at one facility. */
export const ROLES = [
  'physician',
  'nurse',
  'pharmacist',
  'care_worker',
  'clerk',
  'facility_admin',
  'network_admin',
  'dr_operator',
  'auditor',
] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** What a role may do besides reading categories of clinical records. */
export const ACTIONS = [
  /** Find patients (only ever among those the caller may see). */
  'patient.search',
  /** Read clinical records through the gate. */
  'record.read',
  /** Read the original SS-MIX2 message behind a record. */
  'record.original',
  /** Open time-limited emergency access, with a reason. */
  'break-glass',
  'consent.read',
  'consent.manage',
  'link.manage',
  /** Users and devices of the own facility (network_admin: of every facility). */
  'user.manage',
  'device.manage',
  'facility.manage',
  'participation.manage',
  'quality.read',
  'restore.run',
  'backup.verify',
  'audit.read',
  'audit.export',
  'ai.request',
] as const;
export type Action = (typeof ACTIONS)[number];

export interface RoleGrant {
  categories: readonly Category[];
  actions: readonly Action[];
}

export type RolePolicy = Readonly<Record<Role, RoleGrant>>;

const ALL = CATEGORIES;

/**
 * The built-in matrix: need-to-know by profession. Administrators, operators and auditors read no
 * clinical category at all (they manage, restore or audit; they do not treat).
 */
export const DEFAULT_ROLE_POLICY: RolePolicy = {
  physician: {
    categories: ALL,
    actions: ['patient.search', 'record.read', 'record.original', 'break-glass', 'consent.read', 'ai.request'],
  },
  nurse: {
    categories: ['demographics', 'encounters', 'diagnoses', 'allergies', 'prescriptions', 'injections', 'labs', 'diet'],
    actions: ['patient.search', 'record.read', 'consent.read'],
  },
  pharmacist: {
    categories: ['demographics', 'allergies', 'prescriptions', 'injections', 'labs'],
    actions: ['patient.search', 'record.read'],
  },
  care_worker: {
    categories: ['demographics', 'allergies', 'diet'],
    actions: ['patient.search', 'record.read'],
  },
  clerk: {
    categories: ['demographics', 'encounters'],
    actions: ['patient.search', 'record.read', 'consent.read', 'consent.manage', 'link.manage'],
  },
  facility_admin: {
    categories: [],
    actions: ['user.manage', 'device.manage', 'quality.read', 'consent.read', 'consent.manage', 'link.manage'],
  },
  network_admin: {
    categories: [],
    actions: [
      'user.manage',
      'device.manage',
      'facility.manage',
      'participation.manage',
      'quality.read',
      'consent.read',
      'consent.manage',
      'link.manage',
    ],
  },
  dr_operator: { categories: [], actions: ['restore.run', 'backup.verify'] },
  auditor: { categories: [], actions: ['audit.read', 'audit.export'] },
};

export function roleMayRead(policy: RolePolicy, role: Role, category: Category): boolean {
  return policy[role].categories.includes(category);
}

export function roleMay(policy: RolePolicy, role: Role, action: Action): boolean {
  return policy[role].actions.includes(action);
}

export function readableCategories(policy: RolePolicy, role: Role): Category[] {
  return CATEGORIES.filter((c) => policy[role].categories.includes(c));
}

const GrantSchema = z
  .object({
    categories: z.array(z.enum(CATEGORIES)),
    actions: z.array(z.enum(ACTIONS)),
  })
  .strict();
const OverrideSchema = z.partialRecord(z.enum(ROLES), GrantSchema);

/**
 * The built-in matrix with some roles replaced by an override, e.g.
 * `{"care_worker": {"categories": ["demographics", "allergies"], "actions": ["patient.search", "record.read"]}}`.
 * A role named in the override gets exactly what it says; roles not named keep the built-in grant.
 * Unknown roles, categories or actions are errors, never ignored.
 */
export function rolePolicyFrom(override: unknown): RolePolicy {
  const parsed = OverrideSchema.safeParse(override);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 10).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new Error(`invalid role policy: ${problems.join('; ')}`);
  }
  return { ...DEFAULT_ROLE_POLICY, ...parsed.data };
}

export function loadRolePolicy(file: string | undefined): RolePolicy {
  if (!file) return DEFAULT_ROLE_POLICY;
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read the role policy ${file}: ${(e as Error).message}`);
  }
  return rolePolicyFrom(json);
}
