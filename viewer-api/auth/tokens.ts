import { createHash, randomBytes } from 'node:crypto';

/** 256 random bits, URL-safe: guessing one is hopeless, so a plain SHA-256 is enough to store it. */
export function randomToken(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

/** A short random public id (96 bits) for rows shown to people: device ids, session ids. */
export function randomId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('base64url')}`;
}

/** SHA-256 hex of a high-entropy secret (session token, device credential), as stored. */
export function secretDigest(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}
