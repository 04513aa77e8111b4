import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import type { Db } from '../db.js';
import { ExchangeError, badRequest } from '../errors.js';
import type { AuditActor } from '../../viewer-api/audit/audit.entry.js';
import type { AuditLog } from '../../viewer-api/audit/audit.service.js';
import { claimDeleteNonce } from './retention.repository.js';

/**
 * Deletion is a privilege apart from every other: an uploader token can only add, a viewer
 * session cannot delete, and a forget or prune runs only on a request signed with the operator's
 * Ed25519 delete key (RFC 8032) over what it deletes, when it was signed and a one-time nonce.
 * The exchange holds only the public key, so nothing on the exchange can sign a delete.
 */
export type DeleteAction = 'forget' | 'prune';

export interface DeleteRequest {
  action: DeleteAction;
  /** The facility whose snapshots are forgotten; null for the whole store (prune). */
  facility: string | null;
  snapshotIds: string[];
  /** ISO 8601 time of signing. */
  timestamp: string;
  nonce: string;
}

export interface SignedDeleteRequest extends DeleteRequest {
  /** Ed25519 signature of deleteMessage(request), base64. */
  signature: string;
}

/** How long a signed request stays valid (either side of the exchange's clock). */
export const DELETE_REQUEST_MAX_AGE_MS = 5 * 60_000;

/** The exact bytes that are signed: a fixed field order, snapshot ids sorted. */
export function deleteMessage(r: DeleteRequest): Buffer {
  return Buffer.from(`hakobune-delete-v1\n${JSON.stringify([r.action, r.facility, [...r.snapshotIds].sort(), r.timestamp, r.nonce])}`, 'utf8');
}

export function generateDeleteKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function readKey(file: string, what: string, parse: (pem: string) => KeyObject): KeyObject {
  let pem: string;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw badRequest(`cannot read the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = parse(pem);
  } catch {
    throw badRequest(`${file} is not a PEM ${what}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw badRequest(`${file} is not an Ed25519 ${what}`);
  return key;
}

export const readDeletePrivateKey = (file: string) => readKey(file, 'delete private key', (pem) => createPrivateKey(pem));
export const readDeletePublicKey = (file: string) => readKey(file, 'delete public key', (pem) => createPublicKey(pem));

/** Signs a delete request now, with a fresh nonce (what the operator's command line does). */
export function signDeleteRequest(privateKey: KeyObject, req: Omit<DeleteRequest, 'timestamp' | 'nonce'>, now = new Date()): SignedDeleteRequest {
  const full: DeleteRequest = { ...req, timestamp: now.toISOString(), nonce: randomBytes(18).toString('base64url') };
  return { ...full, signature: sign(null, deleteMessage(full), privateKey).toString('base64') };
}

const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

/** Checks signed delete requests against the operator's public key; every refusal is audited. */
export class DeleteGuard {
  constructor(
    private readonly db: Db,
    private readonly publicKey: KeyObject | undefined,
    private readonly audit: AuditLog,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Throws a 403 (unsigned, forged, expired or replayed) or 400 (malformed); else consumes the nonce. */
  async authorize(req: SignedDeleteRequest, who: { actor: AuditActor; endpoint: string; address?: string | null }): Promise<void> {
    const refuse = async (code: 'forbidden' | 'bad-request', reason: string): Promise<never> => {
      await this.audit.record({
        action: `retention.${req.action === 'prune' ? 'prune' : 'forget'}`,
        outcome: 'denied',
        reason,
        actor: who.actor,
        endpoint: who.endpoint,
        address: who.address ?? null,
        detail: { facility: req.facility ?? null, snapshots: Array.isArray(req.snapshotIds) ? req.snapshotIds : [], nonce: String(req.nonce ?? '') },
      });
      throw new ExchangeError(code, reason);
    };
    if (req.action !== 'forget' && req.action !== 'prune') return refuse('bad-request', 'a delete request\'s action is "forget" or "prune"');
    if (!Array.isArray(req.snapshotIds) || req.snapshotIds.some((s) => typeof s !== 'string')) return refuse('bad-request', 'snapshotIds must be a list of snapshot ids');
    if (typeof req.nonce !== 'string' || !NONCE.test(req.nonce)) return refuse('bad-request', 'a delete request needs a nonce of 16-128 letters, digits, "-" or "_"');
    const signedAt = Date.parse(req.timestamp);
    if (typeof req.timestamp !== 'string' || Number.isNaN(signedAt)) return refuse('bad-request', 'a delete request needs an ISO 8601 timestamp');
    if (!this.publicKey) return refuse('forbidden', 'deletes are not enabled on this exchange: HAKOBUNE_DELETE_PUBLIC_KEY_FILE is not set');
    let good = false;
    try {
      good = verify(null, deleteMessage(req), this.publicKey, Buffer.from(String(req.signature ?? ''), 'base64'));
    } catch {
      good = false;
    }
    if (!good) return refuse('forbidden', 'the delete request\'s signature is not valid for the operator delete key');
    const age = this.clock() - signedAt;
    if (Math.abs(age) > DELETE_REQUEST_MAX_AGE_MS) {
      return refuse('forbidden', `the delete request has expired: signed at ${req.timestamp}, requests are valid for ${DELETE_REQUEST_MAX_AGE_MS / 60_000} minutes`);
    }
    if (!(await claimDeleteNonce(this.db, { nonce: req.nonce, action: req.action, signedAt: new Date(signedAt) }))) {
      return refuse('forbidden', `the delete request has been used already (nonce ${req.nonce}): a signed request is accepted once`);
    }
  }
}

/** The guard of an exchange: verifies with HAKOBUNE_DELETE_PUBLIC_KEY_FILE when it is set. */
export function createDeleteGuard(settings: { deletePublicKeyFile: string | undefined }, db: Db, audit: AuditLog, clock: () => number = Date.now): DeleteGuard {
  return new DeleteGuard(db, settings.deletePublicKeyFile ? readDeletePublicKey(settings.deletePublicKeyFile) : undefined, audit, clock);
}
