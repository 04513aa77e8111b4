import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Db } from '../db.js';
import { PackObjectMissing, type PackStore } from '../backup/pack-store.js';
import type { KeyProvider } from './key-provider.js';
import * as keysRepo from './pack-key.repository.js';
import type { PackKeyRecord } from './pack-key.repository.js';

/** Where the wrapped data keys are kept: outside the immutable objects, so rotation rewrites only them. */
export interface PackKeyStore {
  find(objectName: string): Promise<PackKeyRecord | undefined>;
  /** Stores a record unless the object has one; true when this one was stored. */
  insertIfAbsent(record: PackKeyRecord): Promise<boolean>;
  delete(objectName: string): Promise<void>;
}

/** Pack keys in PostgreSQL (table pack_key). */
export class DbPackKeys implements PackKeyStore {
  constructor(readonly db: Db) {}
  find(objectName: string) {
    return keysRepo.findPackKey(this.db, objectName);
  }
  insertIfAbsent(record: PackKeyRecord) {
    return keysRepo.insertPackKey(this.db, record);
  }
  delete(objectName: string) {
    return keysRepo.deletePackKey(this.db, objectName);
  }
}

/** An encrypted object that cannot be read back as it was written: damaged, altered or mis-keyed. */
export class PackDecryptionError extends Error {
  override name = 'PackDecryptionError';
  constructor(
    readonly objectName: string,
    detail: string,
  ) {
    super(`encrypted pack object ${objectName}: ${detail}`);
  }
}

/**
 * Format v1 of an encrypted object:
 *   header (8): "HKBE", version 1, log2 of the chunk size (16), two zero bytes
 *   chunks: nonce (12) | AES-256-GCM ciphertext of up to 64 KiB | tag (16), the last one shorter
 *   (an empty object has one empty chunk).
 * Each chunk's additional data is the header, the object name, the chunk index and the
 * plaintext size of the whole object: a chunk moved to another place or object, a dropped or
 * added chunk, or a truncated object all fail authentication (NIST SP 800-38D; the STREAM
 * construction of Hoang, Reyhanitabar, Rogaway and Vizár binds position and end the same way).
 */
export const CHUNK = 64 * 1024;
const OVERHEAD = 12 + 16;
const HEADER = Buffer.from([0x48, 0x4b, 0x42, 0x45, 1, 16, 0, 0]);

function chunkCount(plainSize: number): number {
  return Math.max(1, Math.ceil(plainSize / CHUNK));
}

/** Size of the stored object for a plaintext size. */
export function cipherSize(plainSize: number): number {
  return HEADER.length + plainSize + OVERHEAD * chunkCount(plainSize);
}

/** Plaintext size for a stored size; undefined when no plaintext size gives that stored size. */
export function plainSizeOf(stored: number): number | undefined {
  const body = stored - HEADER.length;
  if (body < OVERHEAD) return undefined;
  const n = Math.ceil(body / (CHUNK + OVERHEAD));
  const plain = body - n * OVERHEAD;
  return plain >= 0 && cipherSize(plain) === stored ? plain : undefined;
}

function aad(name: string, index: number, plainSize: number): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const tail = Buffer.alloc(4 + 8 + 8);
  tail.writeUInt32BE(nameBytes.length, 0);
  tail.writeBigUInt64BE(BigInt(index), 4);
  tail.writeBigUInt64BE(BigInt(plainSize), 12);
  return Buffer.concat([HEADER, tail.subarray(0, 4), nameBytes, tail.subarray(4)]);
}

/** Encrypts a whole object with its data key (format v1 above). */
export function encryptObject(name: string, dek: Buffer, data: Buffer): Buffer {
  const n = chunkCount(data.length);
  const parts: Buffer[] = [HEADER];
  for (let i = 0; i < n; i++) {
    const plain = data.subarray(i * CHUNK, Math.min((i + 1) * CHUNK, data.length));
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', dek, nonce);
    c.setAAD(aad(name, i, data.length));
    parts.push(nonce, c.update(plain), c.final(), c.getAuthTag());
  }
  return Buffer.concat(parts, cipherSize(data.length));
}

/** Decrypts chunks `first..` of an object from their stored bytes (which start at chunk `first`). */
export function decryptChunks(name: string, dek: Buffer, plainSize: number, first: number, stored: Buffer): Buffer {
  const n = chunkCount(plainSize);
  const out: Buffer[] = [];
  let pos = 0;
  for (let i = first; pos < stored.length; i++) {
    if (i >= n) throw new PackDecryptionError(name, `holds more bytes than its ${plainSize}-byte plaintext needs`);
    const plainLen = Math.min(CHUNK, plainSize - i * CHUNK);
    const end = pos + OVERHEAD + plainLen;
    if (end > stored.length) throw new PackDecryptionError(name, `chunk ${i} is truncated (${stored.length - pos} of ${OVERHEAD + plainLen} bytes)`);
    const d = createDecipheriv('aes-256-gcm', dek, stored.subarray(pos, pos + 12));
    d.setAAD(aad(name, i, plainSize));
    d.setAuthTag(stored.subarray(end - 16, end));
    try {
      out.push(d.update(stored.subarray(pos + 12, end - 16)), d.final());
    } catch {
      throw new PackDecryptionError(name, `chunk ${i} fails authentication: its bytes, its tag or its place were altered, or its data key is not the one it was written with`);
    }
    pos = end;
  }
  return Buffer.concat(out);
}

/** Decrypts a whole object written by encryptObject; any damage is a PackDecryptionError. */
export function decryptObject(name: string, dek: Buffer, stored: Buffer): Buffer {
  const plainSize = plainSizeOf(stored.length);
  if (plainSize === undefined || !stored.subarray(0, HEADER.length).equals(HEADER)) {
    throw new PackDecryptionError(name, `is not an object of format v1 (${stored.length} bytes)`);
  }
  return decryptChunks(name, dek, plainSize, 0, stored.subarray(HEADER.length));
}

interface OpenKey {
  dek: Buffer;
  plainSize: number;
}

/**
 * A PackStore that encrypts what it stores (AES-256-GCM, random 256-bit data key per object,
 * wrapped by a master key of the KeyProvider and kept in a PackKeyStore), in chunks so that a
 * ranged read decrypts only the chunks that cover it. Names and sizes stay visible to the
 * backend; contents do not.
 */
export class EncryptedPackStore implements PackStore {
  private readonly open = new Map<string, OpenKey>();
  private static readonly CACHE = 1024;

  constructor(
    readonly inner: PackStore,
    readonly keys: PackKeyStore,
    readonly provider: KeyProvider,
  ) {}

  private remember(name: string, k: OpenKey): OpenKey {
    this.open.delete(name);
    this.open.set(name, k);
    if (this.open.size > EncryptedPackStore.CACHE) {
      const oldest = this.open.keys().next().value as string;
      this.open.delete(oldest);
    }
    return k;
  }

  private async keyOf(name: string): Promise<OpenKey | undefined> {
    const cached = this.open.get(name);
    if (cached) return this.remember(name, cached);
    const rec = await this.keys.find(name);
    if (!rec) return undefined;
    const dek = await this.provider.unwrap(rec.keyId, rec.wrappedDek, `pack object ${name}`);
    return this.remember(name, { dek, plainSize: rec.plainSize });
  }

  async put(name: string, data: Buffer): Promise<void> {
    if ((await this.inner.stat(name)) !== undefined) return; // immutable: the first object stays
    let key = await this.keyOf(name);
    if (!key || key.plainSize !== data.length) {
      if (key) {
        // A key record without its object (a put interrupted after the record) for other bytes:
        // the record is replaced only while no object carries it.
        await this.keys.delete(name);
        this.open.delete(name);
      }
      const dek = randomBytes(32);
      const keyId = this.provider.currentKeyId();
      const wrapped = await this.provider.wrap(keyId, dek, `pack object ${name}`);
      // The record is stored before the object: an object never exists without its key.
      if (!(await this.keys.insertIfAbsent({ objectName: name, keyId, wrappedDek: wrapped, plainSize: data.length }))) {
        key = await this.keyOf(name); // a concurrent put of the same name won: use its key
        if (!key) throw new Error(`the key record of pack object ${name} vanished while it was written`);
        if (key.plainSize !== data.length) throw new Error(`pack object ${name} is being written with other content at the same time`);
      } else {
        key = this.remember(name, { dek, plainSize: data.length });
      }
    }
    await this.inner.put(name, encryptObject(name, key.dek, data));
  }

  async get(name: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const key = await this.keyOf(name);
    if (!key) {
      if ((await this.inner.stat(name)) === undefined) throw new PackObjectMissing(`pack object ${name} does not exist`);
      throw new PackDecryptionError(name, 'has no data key in pack_key (it was not written through encryption, or its key record was lost)');
    }
    const size = key.plainSize;
    const offset = range?.offset ?? 0;
    const end = Math.min(size, range ? offset + range.length : size);
    if (offset >= end) {
      // An empty answer still needs the object to exist (as a short read of a local file).
      if ((await this.inner.stat(name)) === undefined) throw new PackObjectMissing(`pack object ${name} does not exist`);
      return Buffer.alloc(0);
    }
    const first = Math.floor(offset / CHUNK);
    const last = Math.max(first, Math.floor((end - 1) / CHUNK));
    const from = HEADER.length + first * (CHUNK + OVERHEAD);
    const to = HEADER.length + last * (CHUNK + OVERHEAD) + OVERHEAD + Math.min(CHUNK, size - last * CHUNK);
    const stored = await this.inner.get(name, { offset: from, length: to - from });
    if (stored.length !== to - from) {
      throw new PackDecryptionError(name, `is truncated: ${stored.length} of ${to - from} bytes at offset ${from} were read`);
    }
    const plain = decryptChunks(name, key.dek, size, first, stored);
    const skip = offset - first * CHUNK;
    return plain.subarray(skip, skip + (end - offset));
  }

  async stat(name: string): Promise<number | undefined> {
    const stored = await this.inner.stat(name);
    // A stored size that no plaintext size explains is reported as is: the blob store's size
    // checks then flag the object as damaged.
    return stored === undefined ? undefined : (plainSizeOf(stored) ?? stored);
  }

  async *list(prefix: string): AsyncIterable<{ name: string; size: number }> {
    for await (const o of this.inner.list(prefix)) yield { name: o.name, size: plainSizeOf(o.size) ?? o.size };
  }

  async delete(name: string): Promise<void> {
    await this.inner.delete(name);
    // The key goes after the object: a crash in between leaves a harmless key record.
    await this.keys.delete(name);
    this.open.delete(name);
  }

  async close(): Promise<void> {
    this.open.clear();
    await this.inner.close();
  }
}
