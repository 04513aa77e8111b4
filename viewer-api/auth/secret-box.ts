import fs from 'node:fs';
import path from 'node:path';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * Encryption at rest of small secrets (TOTP seeds) with AES-256-GCM under a key kept in a file
 * apart from the database, so that a copy of the database alone does not give anyone the second
 * factor. Every API process of one exchange must read the same key file.
 * Layout: 12-byte nonce | 16-byte tag | ciphertext. The associated data binds a ciphertext to its
 * owner (a seed moved to another user's row does not decrypt).
 */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** Reads the key file, creating it (mode 0600) with a fresh random key when it does not exist. */
  static fromKeyFile(file: string): SecretBox {
    let key: Buffer;
    try {
      key = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      fs.mkdirSync(path.dirname(file), { recursive: true });
      key = randomBytes(32);
      // Written whole under a name of its own, then linked into place: processes starting
      // together (serve --workers) read either no file or the whole key, never an empty one.
      const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      fs.writeFileSync(tmp, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
      try {
        fs.linkSync(tmp, file);
      } catch (w) {
        // Another process created it first: use theirs.
        if ((w as NodeJS.ErrnoException).code !== 'EEXIST') throw w;
        key = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
      } finally {
        fs.rmSync(tmp, { force: true });
      }
    }
    if (key.length !== 32) throw new Error(`the secret key file ${file} must hold 32 bytes in base64`);
    return new SecretBox(key);
  }

  seal(plain: Buffer, aad: string): Buffer {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([c.update(plain), c.final()]);
    return Buffer.concat([nonce, c.getAuthTag(), body]);
  }

  /** Throws when the ciphertext was altered, moved to another owner or sealed under another key. */
  open(sealed: Buffer, aad: string): Buffer {
    if (sealed.length < 28) throw new Error('sealed secret too short');
    const d = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(sealed.subarray(12, 28));
    return Buffer.concat([d.update(sealed.subarray(28)), d.final()]);
  }
}
