import type { ColumnType, Generated } from 'kysely';

/** Tables of users, devices, sessions and the audit trail (made by migration 0004_viewer). */
export interface ViewerTables {
  viewer_user: ViewerUserTable;
  viewer_device: ViewerDeviceTable;
  viewer_session: ViewerSessionTable;
  audit_event: AuditEventTable;
  audit_head: AuditHeadTable;
}

export interface ViewerUserTable {
  id: Generated<number>;
  /** Facility id (e.g. F001). */
  facility_id: string;
  username: string;
  display_name: string;
  role: string;
  /** `scrypt$N$r$p$salt$hash` (base64 salt and hash): the parameters travel with the hash. */
  password_hash: string;
  /** The TOTP secret, AES-256-GCM encrypted under the exchange's secret key. */
  totp_secret_enc: Buffer;
  /** The last RFC 6238 time step accepted: a code of that step or earlier is never accepted again. */
  totp_last_step: number | null;
  failed_logins: Generated<number>;
  locked_until: Date | null;
  disabled_at: Date | null;
  created_at: ColumnType<Date, Date, never>;
}

export interface ViewerDeviceTable {
  /** Random public id, shown to administrators and in the audit trail. */
  id: string;
  facility_id: string;
  label: string;
  /** SHA-256 (hex) of the device credential; the credential itself is shown once and never stored. */
  credential_hash: string;
  created_at: ColumnType<Date, Date, never>;
  created_by: string;
  revoked_at: Date | null;
}

export interface ViewerSessionTable {
  /** SHA-256 (hex) of the bearer token; the token itself is never stored. */
  token_hash: string;
  /** Public id of the session (for the audit trail and revocation by administrators). */
  id: string;
  user_id: number;
  device_id: string;
  address: string;
  created_at: ColumnType<Date, Date, never>;
  last_seen_at: Date;
  expires_at: ColumnType<Date, Date, never>;
  revoked_at: Date | null;
  revoked_reason: string | null;
}

export interface AuditEventTable {
  seq: number;
  at: ColumnType<Date, Date, never>;
  action: string;
  outcome: string;
  reason: string | null;
  user_id: number | null;
  username: string | null;
  facility_id: string | null;
  role: string | null;
  address: string | null;
  device_id: string | null;
  endpoint: string | null;
  patient: string | null;
  purpose: string | null;
  break_glass_reason: string | null;
  /** Canonical JSON of the rest (categories, record ids, targets of administrative changes). */
  detail: string;
  prev_hash: string;
  hash: string;
}

/** One row (id 1): the chain's length and last hash, updated in the same transaction as each append. */
export interface AuditHeadTable {
  id: number;
  count: number;
  last_hash: string;
  updated_at: Date;
}
