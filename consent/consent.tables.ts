import type { ColumnType, Generated } from 'kysely';
import type { FacilityKind } from '../store/facility-kind.js';

/**
 * Tables of patient identity links and consent (made by store/migrations/0003_identity_consent).
 * JSON columns are jsonb; the repositories turn every row into a domain type.
 */
type Json<T> = ColumnType<T, string, string>;
type Instant = ColumnType<Date, Date, Date>;

export interface RegionalPatientTable {
  id: string;
  created_at: Instant;
  created_by: string;
  /** The survivor when this patient was merged into another one. */
  merged_into: string | null;
  merged_at: Instant | null;
}

/** A facility's local patient as its ADT-00 describes it, with the matcher's keys. */
export interface IdentityLocalPatientTable {
  facility_id: string;
  local_id: string;
  family_kanji: string;
  given_kanji: string;
  family_kana: string;
  given_kana: string;
  birth_date: string;
  sex: string;
  postal_code: string;
  address: string;
  phone: string;
  /** Normalised kana and kanji names (family + NUL + given) used as fallback block keys. */
  kana_key: string;
  kanji_key: string;
  updated_at: Instant;
}

export interface IdentityLinkTable {
  facility_id: string;
  local_id: string;
  regional_id: string;
  method: 'manual' | 'matcher';
  score: number | null;
  linked_by: string;
  linked_at: Instant;
  evidence: string | null;
}

/** Append-only history of every link change. */
export interface IdentityLinkEventTable {
  id: Generated<number>;
  at: Instant;
  actor: string;
  action: 'link' | 'unlink' | 'relink';
  /** The operation the change was part of: enrol, match-accept, auto-link, unlink, merge, split. */
  operation: string;
  facility_id: string;
  local_id: string;
  regional_id: string | null;
  previous_regional_id: string | null;
  method: string | null;
  score: number | null;
  evidence: string | null;
  reason: string;
}

export interface IdentityMatchTable {
  id: Generated<number>;
  /** The pair in key order (facility, local), so that a pair has one row. */
  a_facility_id: string;
  a_local_id: string;
  b_facility_id: string;
  b_local_id: string;
  score: number;
  reasons: Json<string[]>;
  status: 'open' | 'accepted' | 'rejected' | 'superseded';
  created_at: Instant;
  decided_by: string | null;
  decided_at: Instant | null;
  decision_reason: string | null;
}

/** Who did what to identities, consents, participation, break-glass and disasters, and why. */
export interface IdentityAuditTable {
  id: Generated<number>;
  at: Instant;
  actor: string;
  action: string;
  target_kind: string;
  target_id: string;
  reason: string | null;
  details: Json<Record<string, unknown>>;
}

export interface ConsentVersionTable {
  id: string;
  regional_id: string;
  version: number;
  recorded_at: Instant;
  recorded_by: string;
  status: 'opted-in' | 'opted-out' | 'withdrawn';
  /** { disclosing, receiving, categories, purposes } */
  terms: Json<Record<string, unknown>>;
  valid_from: Instant;
  valid_to: Instant | null;
  evidence_sha256: string | null;
  evidence_media_type: string | null;
  note: string | null;
}

export interface FacilityParticipationTable {
  facility_id: string;
  kind: FacilityKind;
  discloses: boolean;
  views: boolean;
  updated_at: Instant;
  updated_by: string;
}

export interface BreakGlassGrantTable {
  id: string;
  user_id: string;
  facility_id: string;
  role: string;
  regional_id: string;
  reason: string;
  granted_at: Instant;
  expires_at: Instant;
  revoked_at: Instant | null;
  revoked_by: string | null;
}

export interface DisasterDeclarationTable {
  id: string;
  /** 'all' or a list of facility ids. */
  facilities: Json<'all' | string[]>;
  starts_at: Instant;
  ends_at: Instant;
  declared_by: string;
  declared_at: Instant;
  reason: string;
  ended_at: Instant | null;
  ended_by: string | null;
}

/** A run of the matcher over the region (migration 0015): status, progress and its summary. */
export interface IdentityMatchRunTable {
  id: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  reason: string | null;
  user_id: number | null;
  username: string;
  user_facility_id: string | null;
  role: string;
  phase: 'reading' | 'searching' | 'applying' | null;
  local_patients: Generated<number>;
  blocks_searched: number | null;
  blocks: number | null;
  candidates: number | null;
  applied: Generated<number>;
  auto_linked: number | null;
  queued: number | null;
  skipped: number | null;
  error: string | null;
  attempts: Generated<number>;
  created_at: Instant;
  started_at: Instant | null;
  updated_at: Instant;
  finished_at: Instant | null;
}

export interface ConsentTables {
  regional_patient: RegionalPatientTable;
  identity_local_patient: IdentityLocalPatientTable;
  identity_link: IdentityLinkTable;
  identity_link_event: IdentityLinkEventTable;
  identity_match: IdentityMatchTable;
  identity_audit: IdentityAuditTable;
  consent_version: ConsentVersionTable;
  facility_participation: FacilityParticipationTable;
  break_glass_grant: BreakGlassGrantTable;
  disaster_declaration: DisasterDeclarationTable;
  identity_match_run: IdentityMatchRunTable;
}
