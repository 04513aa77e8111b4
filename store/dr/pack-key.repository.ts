import { sql } from 'kysely';
import type { Db } from '../db.js';

/** The wrapped data key of one encrypted pack object. */
export interface PackKeyRecord {
  objectName: string;
  keyId: string;
  wrappedDek: Buffer;
  plainSize: number;
}

/** Every SQL statement about pack keys. */

export async function findPackKey(db: Db, objectName: string): Promise<PackKeyRecord | undefined> {
  const r = await db
    .selectFrom('pack_key')
    .select(['object_name', 'key_id', 'wrapped_dek', 'plain_size'])
    .where('object_name', '=', objectName)
    .executeTakeFirst();
  return r && { objectName: r.object_name, keyId: r.key_id, wrappedDek: r.wrapped_dek, plainSize: r.plain_size };
}

/** Inserts a key record unless the object already has one; true when this one was stored. */
export async function insertPackKey(db: Db, k: PackKeyRecord): Promise<boolean> {
  const r = await db
    .insertInto('pack_key')
    .values({ object_name: k.objectName, key_id: k.keyId, wrapped_dek: k.wrappedDek, plain_size: k.plainSize })
    .onConflict((oc) => oc.column('object_name').doNothing())
    .returning('object_name')
    .executeTakeFirst();
  return r !== undefined;
}

/** Inserts key records that are not there yet (a replica's import), in one statement. */
export async function insertPackKeys(db: Db, keys: PackKeyRecord[]): Promise<number> {
  if (keys.length === 0) return 0;
  const r = await sql<{ object_name: string }>`
    insert into pack_key (object_name, key_id, wrapped_dek, plain_size)
    select * from unnest(${keys.map((k) => k.objectName)}::text[], ${keys.map((k) => k.keyId)}::text[],
                         ${keys.map((k) => k.wrappedDek)}::bytea[], ${keys.map((k) => k.plainSize)}::int8[])
    on conflict (object_name) do nothing
    returning object_name`.execute(db);
  return r.rows.length;
}

export async function deletePackKey(db: Db, objectName: string): Promise<void> {
  await db.deleteFrom('pack_key').where('object_name', '=', objectName).execute();
}

/** A page of key records wrapped by another master key than `keyId`, in object-name order. */
export async function pageKeysNotUnder(db: Db, keyId: string, afterName: string | undefined, limit: number): Promise<PackKeyRecord[]> {
  let q = db
    .selectFrom('pack_key')
    .select(['object_name', 'key_id', 'wrapped_dek', 'plain_size'])
    .where('key_id', '<>', keyId);
  if (afterName !== undefined) q = q.where(sql<boolean>`object_name > ${afterName} collate "C"`);
  const rows = await q.orderBy(sql`object_name collate "C"`).limit(limit).execute();
  return rows.map((r) => ({ objectName: r.object_name, keyId: r.key_id, wrappedDek: r.wrapped_dek, plainSize: r.plain_size }));
}

/** A page of all key records in object-name order. */
export async function pageKeys(db: Db, afterName: string | undefined, limit: number): Promise<PackKeyRecord[]> {
  let q = db.selectFrom('pack_key').select(['object_name', 'key_id', 'wrapped_dek', 'plain_size']);
  if (afterName !== undefined) q = q.where(sql<boolean>`object_name > ${afterName} collate "C"`);
  const rows = await q.orderBy(sql`object_name collate "C"`).limit(limit).execute();
  return rows.map((r) => ({ objectName: r.object_name, keyId: r.key_id, wrappedDek: r.wrapped_dek, plainSize: r.plain_size }));
}

/**
 * Replaces a wrapped key only if it is still wrapped by `fromKeyId` (compare and set): two
 * rotations running at once, or a rerun, never undo each other.
 */
export async function rewrapPackKey(db: Db, objectName: string, fromKeyId: string, toKeyId: string, wrapped: Buffer): Promise<boolean> {
  const r = await db
    .updateTable('pack_key')
    .set({ key_id: toKeyId, wrapped_dek: wrapped, rotated_at: new Date() })
    .where('object_name', '=', objectName)
    .where('key_id', '=', fromKeyId)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function countKeysByMasterKey(db: Db): Promise<{ keyId: string; objects: number }[]> {
  const rows = await db
    .selectFrom('pack_key')
    .select(['key_id', sql<number>`count(*)::int8`.as('n')])
    .groupBy('key_id')
    .orderBy('key_id')
    .execute();
  return rows.map((r) => ({ keyId: r.key_id, objects: r.n }));
}

export async function countKeysNotUnder(db: Db, keyId: string): Promise<number> {
  const r = await db
    .selectFrom('pack_key')
    .select(sql<number>`count(*)::int8`.as('n'))
    .where('key_id', '<>', keyId)
    .executeTakeFirstOrThrow();
  return r.n;
}
