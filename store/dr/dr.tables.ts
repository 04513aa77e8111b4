import type { ColumnType } from 'kysely';

/** Tables of disaster-recovery storage: the wrapped data keys of encrypted pack objects. */
export interface DrTables {
  pack_key: PackKeyTable;
}

export interface PackKeyTable {
  /** The pack store's object name (e.g. `data/ab/ab12…`). */
  object_name: string;
  /** Id of the master key that wraps the data key (HAKOBUNE_MASTER_KEYS). */
  key_id: string;
  /** The object's data key, wrapped by the master key (see key-provider.ts for the layout). */
  wrapped_dek: Buffer;
  /** Plaintext size of the object: ranged reads need it to bind every chunk to the whole. */
  plain_size: number;
  created_at: ColumnType<Date, Date | string | undefined, never>;
  rotated_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}
