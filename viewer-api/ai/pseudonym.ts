import { createHmac } from 'node:crypto';

/**
 * Keyed pseudonyms for identifiers and resource ids that leave the exchange.
 *
 * The choice: a pseudonym is HMAC-SHA-256 over (AI service id, regional patient id, kind,
 * original value) with a secret key only the exchange holds, truncated to 100 bits, written in
 * base32 and prefixed `hkb-`. Consequences:
 *  - deterministic per (service, patient): a service sees the same pseudonym for the same
 *    patient and record in every request, so it can follow a patient over time (what a risk
 *    model needs) without ever learning who it is;
 *  - different services get unrelated pseudonyms for the same patient, so they cannot join their
 *    data sets;
 *  - without the key nobody can test a guessed local ID (a plain hash of a 7-digit ID could be
 *    reversed by trying all 10^7);
 *  - reversal needs no cryptography: every request stores the mapping pseudonym -> original in
 *    the exchange (the re-identification key), and only the exchange reads it.
 * 100 bits keep collisions out of reach for any realistic number of values per patient.
 */
export const PSEUDONYM_PREFIX = 'hkb-';
export const PSEUDONYM_PATTERN = /hkb-[a-z2-7]{20}/g;

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

function base32(bytes: Uint8Array, chars: number): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
    if (out.length >= chars) break;
  }
  return out;
}

export interface PseudonymScope {
  secret: Uint8Array;
  serviceId: string;
  /** The regional patient id. */
  subject: string;
}

export function pseudonym(scope: PseudonymScope, kind: string, value: string): string {
  if (scope.secret.byteLength < 32) throw new Error('the pseudonym key must be at least 32 bytes');
  const mac = createHmac('sha256', scope.secret)
    .update([scope.serviceId, scope.subject, kind, value].join('\u0000'))
    .digest();
  return PSEUDONYM_PREFIX + base32(mac, 20);
}
