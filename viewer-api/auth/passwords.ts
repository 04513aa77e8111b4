import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * Password hashing with scrypt (RFC 7914), a memory-hard KDF: each guess costs an attacker
 * 128 * N * r bytes of memory (32 MiB at the parameters below) as well as time. Measured on the
 * 2-core development machine: about 140 ms per hash (`node -e` with scryptSync, N=2^15, r=8, p=1).
 *
 * The stored form carries its parameters, `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>`, so that the
 * cost can be raised later without invalidating existing hashes.
 */
export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Cheaper parameters are refused when reading a stored hash (a tampered row must not lower the cost). */
const MIN_N = 2 ** 14;

function derive(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = {
    N: params.N,
    r: params.r,
    p: params.p,
    // Node's default limit is 32 MiB, exactly what N=2^15, r=8 needs; leave headroom.
    maxmem: 256 * params.N * params.r + 1024 * 1024,
  };
  return new Promise((resolve, reject) =>
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, options, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, params);
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), key.toString('base64')].join('$');
}

interface ParsedHash extends ScryptParams {
  salt: Buffer;
  key: Buffer;
}

export function parsePasswordHash(stored: string): ParsedHash | undefined {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [N, r, p] = parts.slice(1, 4).map((x) => Number(x));
  if (![N, r, p].every((x) => Number.isSafeInteger(x) && x! > 0)) return undefined;
  if (N! < MIN_N || (N! & (N! - 1)) !== 0 || r! > 32 || p! > 16) return undefined;
  const salt = Buffer.from(parts[4]!, 'base64');
  const key = Buffer.from(parts[5]!, 'base64');
  if (salt.length < SALT_BYTES || key.length !== KEY_BYTES) return undefined;
  return { N: N!, r: r!, p: p!, salt, key };
}

/** True when the password matches; compares in constant time. A malformed stored hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parsePasswordHash(stored);
  if (!parsed) return false;
  const key = await derive(password, parsed.salt, parsed);
  return timingSafeEqual(key, parsed.key);
}

/**
 * A hash of nothing, verified when the account does not exist, so that an unknown user name costs
 * the same time as a wrong password and the response time does not tell which it was.
 */
let dummy: Promise<string> | undefined;
export function dummyPasswordHash(): Promise<string> {
  return (dummy ??= hashPassword(randomBytes(16).toString('hex')));
}

/** Minimal password rules (NIST SP 800-63B 5.1.1.2: length matters, composition rules do not). */
export function passwordProblem(password: string): string | undefined {
  if (password.length < 12) return 'a password must be at least 12 characters';
  if (password.length > 256) return 'a password must be at most 256 characters';
  return undefined;
}
