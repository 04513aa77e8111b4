import { describe, expect, it } from 'vitest';
import { DEFAULT_ROLE_POLICY, ROLES, readableCategories, roleMay, roleMayRead, rolePolicyFrom } from './roles.js';

describe('role matrix', () => {
  it('gives each profession its need to know', () => {
    const p = DEFAULT_ROLE_POLICY;
    expect(roleMayRead(p, 'physician', 'documents')).toBe(true);
    expect(readableCategories(p, 'pharmacist')).toEqual(['demographics', 'allergies', 'prescriptions', 'injections', 'labs']);
    expect(roleMayRead(p, 'pharmacist', 'diagnoses')).toBe(false);
    expect(roleMayRead(p, 'care_worker', 'labs')).toBe(false);
    expect(roleMay(p, 'physician', 'break-glass')).toBe(true);
    expect(roleMay(p, 'nurse', 'break-glass')).toBe(false);
    expect(roleMay(p, 'auditor', 'audit.export')).toBe(true);
  });

  it('keeps administrators, operators and auditors out of clinical categories', () => {
    for (const r of ['facility_admin', 'network_admin', 'dr_operator', 'auditor'] as const) {
      expect(readableCategories(DEFAULT_ROLE_POLICY, r)).toEqual([]);
      expect(roleMay(DEFAULT_ROLE_POLICY, r, 'record.read')).toBe(false);
    }
  });

  it('defines every role', () => {
    for (const r of ROLES) expect(DEFAULT_ROLE_POLICY[r]).toBeDefined();
  });

  it('takes overrides per role and refuses unknown names', () => {
    const p = rolePolicyFrom({ care_worker: { categories: ['demographics'], actions: ['record.read'] } });
    expect(readableCategories(p, 'care_worker')).toEqual(['demographics']);
    expect(roleMay(p, 'care_worker', 'patient.search')).toBe(false);
    expect(p.physician).toBe(DEFAULT_ROLE_POLICY.physician);
    expect(() => rolePolicyFrom({ janitor: { categories: [], actions: [] } })).toThrow(/invalid role policy/);
    expect(() => rolePolicyFrom({ nurse: { categories: ['gossip'], actions: [] } })).toThrow(/categories/);
    expect(() => rolePolicyFrom({ nurse: { categories: [], actions: ['delete.everything'] } })).toThrow(/actions/);
    expect(() => rolePolicyFrom({ nurse: { categories: [], actions: [], extra: 1 } })).toThrow();
    expect(() => rolePolicyFrom([1])).toThrow();
  });
});
