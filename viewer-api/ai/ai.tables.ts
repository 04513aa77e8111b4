import type { ColumnType } from 'kysely';

/** Tables of the AI service registry and of analysis requests (made by migration 0006_ai). */
export interface AiTables {
  ai_service: AiServiceTable;
  ai_request: AiRequestTable;
}

/** jsonb: written through a cast of its JSON text (see registry.repository.ts `jsonb`). */
type Json<T> = ColumnType<T, string, string>;

export interface AiServiceTable {
  id: string;
  name: string;
  base_url: string;
  operation: string;
  auth_kind: 'none' | 'bearer' | 'oauth2';
  auth_public: Json<{ tokenUrl?: string; clientId?: string; scope?: string }>;
  /** Sealed JSON of the secret part (token or client secret). */
  auth_secret_enc: Buffer | null;
  categories: Json<string[]>;
  facilities: Json<'all' | string[]>;
  roles: Json<string[]>;
  timeout_ms: number;
  rate_per_minute: number;
  rate_burst: number;
  country: string;
  region: string | null;
  allow_outside_japan: boolean;
  birth_date: string;
  enabled: boolean;
  created_at: ColumnType<Date, Date, never>;
  updated_at: Date;
  updated_by: string;
}

export interface AiRequestTable {
  id: string;
  service_id: string;
  regional_id: string;
  user_id: number;
  facility_id: string;
  role: string;
  status: string;
  status_detail: string | null;
  attempts: ColumnType<number, number | undefined, number>;
  categories: Json<string[]>;
  records: ColumnType<number, number | undefined, number>;
  report: ColumnType<Record<string, unknown> | null, string | null, string | null>;
  /** Sealed de-identified Bundle, waiting to be sent (removed once the request ends). */
  outgoing_enc: Buffer | null;
  /** Sealed re-identification key: pseudonym mapping and date shift. */
  reid_key_enc: Buffer | null;
  sent_sha256: string | null;
  sent_bytes: number | null;
  received_bytes: number | null;
  result: ColumnType<Record<string, unknown> | null, string | null, string | null>;
  created_at: ColumnType<Date, Date, never>;
  updated_at: Date;
  completed_at: Date | null;
}
