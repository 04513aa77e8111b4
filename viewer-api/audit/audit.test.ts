import { describe, expect, it } from 'vitest';
import { canonicalJson, ChainVerifier, GENESIS_HASH, hashedJson, type AuditRecord } from './audit.chain.js';
import { buildEntry, cleanCanonicalJson, cleanDeep } from './audit.entry.js';
import { toAuditEvent } from './audit.fhir.js';
import { loadFhirValidator } from '../../ingest/fhir/schema.js';

function chain(n: number): AuditRecord[] {
  const out: AuditRecord[] = [];
  let prev = GENESIS_HASH;
  for (let i = 1; i <= n; i++) {
    const e = buildEntry(
      { action: 'record.read', outcome: 'success', actor: { userId: 7, username: 'alice', facilityId: 'F001', role: 'physician' }, patient: `R${i}` },
      i,
      new Date(Date.UTC(2026, 10, 21, 9, 0, i)),
      prev,
    );
    out.push(e);
    prev = e.hash;
  }
  return out;
}

function verify(rows: AuditRecord[], head = { count: rows.length, lastHash: rows.at(-1)?.hash ?? GENESIS_HASH }) {
  const v = new ChainVerifier();
  for (const r of rows) if (!v.push(r)) break;
  return v.finish(head);
}

describe('canonical JSON', () => {
  it('sorts keys, drops undefined and refuses what JSON cannot carry', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x'], c: undefined, d: { z: 1, y: 2 } })).toBe('{"a":[true,null,"x"],"b":1,"d":{"y":2,"z":1}}');
    expect(canonicalJson('日本"\n')).toBe('"日本\\"\\n"');
    expect(() => canonicalJson(NaN)).toThrow();
    expect(() => canonicalJson(() => 1)).toThrow();
  });
});

describe('the one-walk writers', () => {
  it('write exactly what the general canonical JSON writes', () => {
    const details: unknown[] = [
      {},
      { request: 'r1', categories: ['labs', 'demographics'], attempts: [{ attempt: 1, outcome: 'ok', ms: 201.5 }], unknown: undefined, d: new Date(0) },
      { 'z\u0000k': 'v\u0000', b: ['x'.repeat(2100), undefined, null, 3, true], nested: { y: { b: 1, a: [{}] }, x: '' }, B: 1, 'é': 2 },
      { long: { ['k'.repeat(2001)]: 1, a: 2 } },
      Array.from({ length: 1200 }, (_, i) => i),
    ];
    for (const d of details) expect(cleanCanonicalJson(d)).toBe(canonicalJson(cleanDeep(d)));
    expect(() => cleanCanonicalJson({ f: () => 1 })).toThrow();
    expect(() => cleanCanonicalJson({ n: Infinity })).toThrow();
    for (const e of chain(3)) {
      const { hash: _h, ...unhashed } = e;
      const { prevHash: _p, ...body } = unhashed;
      expect(hashedJson(unhashed)).toBe(canonicalJson(body));
      expect(hashedJson({ ...unhashed, reason: undefined as unknown as null })).toBe(canonicalJson({ ...body, reason: undefined }));
      expect(hashedJson({ ...unhashed, extra: 1 } as typeof unhashed)).toBe(canonicalJson({ ...body, extra: 1 }));
    }
  });
});

describe('the hash chain', () => {
  it('verifies an intact chain, and an empty one', () => {
    expect(verify(chain(5))).toMatchObject({ ok: true, entries: 5 });
    expect(verify([])).toMatchObject({ ok: true, entries: 0 });
  });

  it('finds an altered entry', () => {
    const rows = chain(5);
    rows[2] = { ...rows[2]!, patient: 'R999' };
    expect(verify(rows).problem).toMatchObject({ kind: 'altered', seq: 3 });
  });

  it('finds a removed entry, in the middle and at the end', () => {
    const rows = chain(5);
    expect(verify([...rows.slice(0, 2), ...rows.slice(3)]).problem).toMatchObject({ kind: 'removed', seq: 3 });
    const head = { count: 5, lastHash: rows[4]!.hash };
    expect(verify(rows.slice(0, 4), head).problem).toMatchObject({ kind: 'removed', seq: 5 });
  });

  it('finds an entry replaced by a well-formed forgery', () => {
    const rows = chain(5);
    rows[2] = buildEntry({ action: 'record.read', outcome: 'success' }, 3, new Date(), 'a'.repeat(64));
    expect(verify(rows).problem).toMatchObject({ kind: 'inserted', seq: 3 });
  });

  it('finds a rewritten tail through the head', () => {
    const rows = chain(5);
    const rewritten = [...rows.slice(0, 4), buildEntry({ action: 'x', outcome: 'success' }, 5, new Date(), rows[3]!.hash)];
    expect(verify(rewritten, { count: 5, lastHash: rows[4]!.hash }).problem).toMatchObject({ kind: 'head-mismatch' });
  });

  it('keeps hostile text storable and hashed as stored', () => {
    const e = buildEntry({ action: 'record.read', outcome: 'denied', endpoint: 'GET /x?q=\u0000' + 'a'.repeat(5000) }, 1, new Date(), GENESIS_HASH);
    expect(e.endpoint).not.toContain('\u0000');
    expect(e.endpoint!.length).toBeLessThan(2100);
    expect(verify([e])).toMatchObject({ ok: true });
  });
});

describe('FHIR AuditEvent export', () => {
  const validate = loadFhirValidator();
  it('produces valid R4 AuditEvents for logins, reads, refusals and break-glass', () => {
    const entries = [
      buildEntry({ action: 'auth.login', outcome: 'denied', reason: 'wrong password', actor: { username: 'alice', facilityId: 'F001' }, address: '10.0.0.1' }, 1, new Date(), GENESIS_HASH),
      buildEntry(
        {
          action: 'record.read',
          outcome: 'success',
          actor: { userId: 1, username: 'alice', facilityId: 'F001', role: 'physician' },
          deviceId: 'dev_x',
          patient: 'R1',
          purpose: 'treatment',
          detail: { categories: ['labs', 'prescriptions'], recordIds: [1, 2] },
        },
        2,
        new Date(),
        GENESIS_HASH,
      ),
      buildEntry({ action: 'break-glass.open', outcome: 'success', patient: 'R1', purpose: 'emergency', breakGlassReason: 'unconscious' }, 3, new Date(), GENESIS_HASH),
    ];
    const events = entries.map(toAuditEvent);
    for (const ev of events) expect(validate(ev)).toEqual([]);
    expect(events[0]).toMatchObject({ outcome: '4', outcomeDesc: 'wrong password', type: { code: '110114' } });
    expect(events[1]).toMatchObject({ action: 'R', outcome: '0', purposeOfEvent: [{ coding: [{ code: 'TREAT' }] }] });
    expect(JSON.stringify(events[2]!.purposeOfEvent)).toContain('BTG');
  });
});
