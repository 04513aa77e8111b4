import type { Category } from './categories.js';

/** Domain types of patient identity and consent. Instants are epoch milliseconds (UTC). */

import type { FacilityKind } from '../store/facility-kind.js';

export { FACILITY_KINDS, type FacilityKind } from '../store/facility-kind.js';

export const PURPOSES = ['treatment', 'emergency', 'ai-analysis', 'research'] as const;
export type Purpose = (typeof PURPOSES)[number];

/** A facility-local patient, as its own records (ADT-00 / PID) describe it. */
export interface LocalKey {
  facilityId: string;
  localId: string;
}

export type LinkMethod = 'manual' | 'matcher';

/** The current link of one local patient to a regional patient. */
export interface Link extends LocalKey {
  regionalId: string;
  method: LinkMethod;
  linkedBy: string;
  linkedAt: number;
  evidence: string | null;
  score: number | null;
}

export interface RegionalPatient {
  id: string;
  createdAt: number;
  createdBy: string;
  /** Set when this patient was merged into another one; its links then live on the survivor. */
  mergedInto: string | null;
}

/** Which facilities: all, all except some, or only those listed. */
export type FacilityScope =
  | { mode: 'all' }
  | { mode: 'all-except'; facilities: string[] }
  | { mode: 'listed'; facilities: string[] };

/**
 * Which receivers: facilities of the listed kinds plus the listed facilities, minus the
 * excluded ones (an exclusion beats a kind and a listing).
 */
export interface ReceiverScope {
  kinds: FacilityKind[] | 'all';
  facilities: string[];
  exclude: string[];
}

export type CategoryScope =
  | { mode: 'all' }
  | { mode: 'all-except'; categories: Category[] }
  | { mode: 'listed'; categories: Category[] };

export interface PurposeTerms {
  treatment: boolean;
  /**
   * 'permit' consents to emergency use, 'refuse' is an explicit refusal (it closes the disaster
   * rules and, unless policy says otherwise, break-glass), 'unspecified' leaves it to policy.
   */
  emergency: 'permit' | 'refuse' | 'unspecified';
  /** AI services (by registry id) the patient agreed to send data to, for analysis. */
  aiServices: string[];
  /** Research is off unless stated. */
  research: boolean;
}

export type ConsentStatus = 'opted-in' | 'opted-out' | 'withdrawn';

/** What one consent version says. */
export interface ConsentTerms {
  status: ConsentStatus;
  disclosing: FacilityScope;
  receiving: ReceiverScope;
  categories: CategoryScope;
  purposes: PurposeTerms;
  /** Half-open validity [validFrom, validTo); validTo null = open-ended. */
  validFrom: number;
  validTo: number | null;
}

/**
 * One immutable version of a patient's consent. A new version supersedes the previous one from
 * the instant it was recorded; nothing is ever overwritten.
 */
export interface ConsentVersion extends ConsentTerms {
  id: string;
  regionalId: string;
  version: number;
  recordedAt: number;
  recordedBy: string;
  /** SHA-256 of the signed form in the blob store. */
  evidenceSha256: string | null;
  evidenceMediaType: string | null;
  note: string | null;
}

export interface Participation {
  facilityId: string;
  kind: FacilityKind;
  discloses: boolean;
  views: boolean;
}

export interface BreakGlassGrant {
  id: string;
  userId: string;
  facilityId: string;
  regionalId: string;
  reason: string;
  grantedAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export interface DisasterDeclaration {
  id: string;
  /** 'all' or the affected facilities. */
  facilities: 'all' | string[];
  from: number;
  to: number;
  declaredBy: string;
  reason: string;
  endedAt: number | null;
}

/** Stores the signed consent form (the composition root backs it with the blob store). */
export interface EvidenceStore {
  /** Stores the bytes; resolves with their SHA-256 (lower-case hex). */
  put(bytes: Uint8Array): Promise<string>;
}
