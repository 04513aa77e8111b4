import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * Where master keys live. The exchange never stores a master key next to the data: it asks the
 * provider to wrap a fresh data key (one per pack object) and to unwrap it again for a read.
 *
 * A KMS plugs in by implementing these three methods: `currentKeyId()` returns the KMS key ARN
 * or alias in use, `wrap` calls the KMS Encrypt operation (the `context` as its encryption
 * context, so the service binds the wrapped key to its object and logs which object was
 * opened), `unwrap` calls Decrypt. The master key then never leaves the KMS.
 */
export interface KeyProvider {
  /** The key that wraps new data keys (and that rotation moves every data key to). */
  currentKeyId(): string;
  /** Every key id this provider can unwrap with. */
  keyIds(): string[];
  /** Wraps a 32-byte data key; `context` (the object name) is bound to the result. */
  wrap(keyId: string, dek: Buffer, context: string): Promise<Buffer>;
  /** The data key again; a wrong key or an altered record is an error, never other bytes. */
  unwrap(keyId: string, wrapped: Buffer, context: string): Promise<Buffer>;
}

/** A master key id that the configuration does not hold. */
export class MasterKeyUnavailable extends Error {
  override name = 'MasterKeyUnavailable';
  constructor(
    readonly keyId: string,
    available: string[],
  ) {
    super(`master key "${keyId}" is not configured (HAKOBUNE_MASTER_KEYS holds ${available.length ? available.map((k) => `"${k}"`).join(', ') : 'no key'})`);
  }
}

/** The configured key of that id does not open the wrapped key: another key under the same id, or an altered record. */
export class WrongMasterKey extends Error {
  override name = 'WrongMasterKey';
  constructor(
    readonly keyId: string,
    context: string,
  ) {
    super(`master key "${keyId}" does not open the data key of ${context}: the key configured under that id is not the one that wrapped it, or the key record was altered`);
  }
}

export const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A master key as configured: an id and 32 bytes. */
export interface MasterKey {
  id: string;
  key: Buffer;
}

/**
 * Parses `HAKOBUNE_MASTER_KEYS`: a comma list of `id:base64key`, each key 32 bytes (AES-256),
 * the first one current. Throws a message naming the bad entry (never the key itself).
 */
export function parseMasterKeys(value: string): MasterKey[] {
  const out: MasterKey[] = [];
  const entries = value.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (entries.length === 0) throw new Error('no master key given; the form is id:base64key[,id:base64key...]');
  entries.forEach((entry, i) => {
    const colon = entry.indexOf(':');
    const id = colon < 0 ? '' : entry.slice(0, colon);
    const b64 = colon < 0 ? '' : entry.slice(colon + 1);
    if (!KEY_ID.test(id)) throw new Error(`entry ${i + 1}: a master key id is 1-64 letters, digits, "-" or "_", followed by ":" and the key`);
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error(`entry ${i + 1} ("${id}"): the key is not base64`);
    const key = Buffer.from(b64, 'base64');
    if (key.length !== 32) throw new Error(`entry ${i + 1} ("${id}"): the key is ${key.length} bytes; AES-256 needs 32 (e.g. openssl rand -base64 32)`);
    if (out.some((k) => k.id === id)) throw new Error(`entry ${i + 1}: master key id "${id}" is given twice`);
    out.push({ id, key });
  });
  return out;
}

const WRAP_VERSION = 1;
const WRAP_LABEL = Buffer.from('hakobune-dek-wrap-v1\0');

function wrapAad(keyId: string, context: string): Buffer {
  return Buffer.concat([WRAP_LABEL, Buffer.from(keyId), Buffer.from([0]), Buffer.from(context)]);
}

/**
 * Master keys from configuration. A data key is wrapped with AES-256-GCM (NIST SP 800-38D):
 * version (1) | nonce (12) | encrypted key (32) | tag (16); the key id and the object name are
 * the additional data, so a wrapped key moved to another object or relabelled fails to open.
 */
export class ConfiguredKeyProvider implements KeyProvider {
  private readonly keys: Map<string, Buffer>;
  private readonly current: string;

  constructor(keys: MasterKey[]) {
    if (keys.length === 0) throw new Error('a key provider needs at least one master key');
    this.keys = new Map(keys.map((k) => [k.id, k.key]));
    this.current = keys[0]!.id;
  }

  currentKeyId(): string {
    return this.current;
  }

  keyIds(): string[] {
    return [...this.keys.keys()];
  }

  private key(keyId: string): Buffer {
    const k = this.keys.get(keyId);
    if (!k) throw new MasterKeyUnavailable(keyId, this.keyIds());
    return k;
  }

  async wrap(keyId: string, dek: Buffer, context: string): Promise<Buffer> {
    if (dek.length !== 32) throw new Error('a data key is 32 bytes');
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key(keyId), nonce);
    c.setAAD(wrapAad(keyId, context));
    const body = Buffer.concat([c.update(dek), c.final()]);
    return Buffer.concat([Buffer.from([WRAP_VERSION]), nonce, body, c.getAuthTag()]);
  }

  async unwrap(keyId: string, wrapped: Buffer, context: string): Promise<Buffer> {
    const key = this.key(keyId);
    if (wrapped.length !== 1 + 12 + 32 + 16 || wrapped[0] !== WRAP_VERSION) throw new WrongMasterKey(keyId, context);
    const d = createDecipheriv('aes-256-gcm', key, wrapped.subarray(1, 13));
    d.setAAD(wrapAad(keyId, context));
    d.setAuthTag(wrapped.subarray(45));
    try {
      return Buffer.concat([d.update(wrapped.subarray(13, 45)), d.final()]);
    } catch {
      throw new WrongMasterKey(keyId, context);
    }
  }
}
