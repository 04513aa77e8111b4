import { generate, generateSecret, generateURI, verify } from 'otplib';

/**
 * The second factor: TOTP (RFC 6238) with the parameters every authenticator app understands
 * (SHA-1, 6 digits, 30-second steps, base32 secret of 160 bits as RFC 4226 section 4 recommends).
 */
export const TOTP_PERIOD_SECONDS = 30;
/** One step either side: clocks of phones drift, and a code typed at the end of a step arrives late (RFC 6238 section 5.2). */
const DRIFT_SECONDS = TOTP_PERIOD_SECONDS;

export function newTotpSecret(): string {
  return generateSecret({ length: 20 });
}

export function totpUri(issuer: string, label: string, secret: string): string {
  return generateURI({ issuer, label, secret, period: TOTP_PERIOD_SECONDS });
}

/** The code of the given moment (for the demo and for tests of the login flow). */
export function totpCode(secret: string, nowMs: number): Promise<string> {
  return generate({ secret, epoch: Math.floor(nowMs / 1000), period: TOTP_PERIOD_SECONDS });
}

export type TotpCheck = { ok: true; step: number } | { ok: false; reason: 'malformed' | 'wrong' | 'replayed' };

/**
 * Checks a code at `nowMs`. `lastStep` is the time step of the last code accepted for this user:
 * RFC 6238 section 5.2 asks that a code is accepted once only, so a code of that step or an
 * earlier one is refused even though it is otherwise correct.
 */
export async function checkTotp(secret: string, code: string, nowMs: number, lastStep: number | null): Promise<TotpCheck> {
  if (!/^\d{6}$/.test(code)) return { ok: false, reason: 'malformed' };
  const base = {
    secret,
    token: code,
    epoch: Math.floor(nowMs / 1000),
    period: TOTP_PERIOD_SECONDS,
    epochTolerance: DRIFT_SECONDS,
  };
  const fresh = await verify(lastStep === null ? base : { ...base, afterTimeStep: lastStep });
  // The functional API answers for HOTP and TOTP alike; a TOTP result carries its time step.
  if (fresh.valid && 'timeStep' in fresh) return { ok: true, step: fresh.timeStep };
  if (lastStep !== null && (await verify(base)).valid) return { ok: false, reason: 'replayed' };
  return { ok: false, reason: 'wrong' };
}
