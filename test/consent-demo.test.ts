import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type DatabaseHandle } from '../store/db.js';
import { migrateToLatest } from '../store/migrate.js';
import { createConsentModule, type ConsentModule } from '../consent/consent.module.js';
import { decide } from '../consent/decide.js';
import { DEMO_SHAPES, seedDemoIdentityAndConsent, type DemoFacility, type DemoSeedResult } from '../consent/demo.js';
import { generatePopulation, planFacilities } from '../fixtures/population.js';
import { tempDir } from './support/tmp.js';

describe('demo identities and consents', () => {
  const tmp = tempDir();
  let handle: DatabaseHandle;
  let m: ConsentModule;
  let seeded: DemoSeedResult;
  let facilities: DemoFacility[];
  const now = Date.UTC(2026, 5, 1);

  beforeAll(async () => {
    handle = await openDatabase({ dataDir: tmp.dir, databaseUrl: undefined });
    await migrateToLatest(handle.db);
    m = createConsentModule({ db: handle.db, evidence: { put: async (b) => createHash('sha256').update(b).digest('hex') } });
    const plans = planFacilities({ seed: 'demo', facilities: 8 });
    facilities = plans.map((p) => ({ facilityId: p.facilityId, kind: p.kind }));
    seeded = await seedDemoIdentityAndConsent(m, { facilities, localPatients: generatePopulation({ seed: 'demo', facilities: plans, patients: 60 }), people: DEMO_SHAPES.length, now });
  }, 180_000);
  afterAll(async () => {
    await handle?.close();
    tmp.remove();
  });

  it('links people across facilities and gives their consents every shape', async () => {
    expect(seeded.patients).toHaveLength(DEMO_SHAPES.length);
    expect(new Set(seeded.patients.map((p) => p.shape))).toEqual(new Set(DEMO_SHAPES));
    for (const p of seeded.patients) {
      const links = await m.identity.linksOf(p.regionalId);
      expect(links.map((l) => `${l.facilityId}/${l.localId}`).sort()).toEqual(p.links.map((l) => `${l.facilityId}/${l.localId}`).sort());
      expect(links.length).toBeGreaterThanOrEqual(2);
    }
    const withdrawn = seeded.patients.find((p) => p.shape === 'withdrawn')!;
    expect((await m.consent.versions(withdrawn.regionalId)).map((v) => v.status)).toEqual(['opted-in', 'withdrawn']);
  });

  it('the exclusion holds against the excluded facility only', async () => {
    const p = seeded.patients.find((x) => x.shape === 'all-except-one-facility')!;
    const viewer = facilities.find((f) => f.facilityId !== p.excluded && !p.links.some((l) => l.facilityId === f.facilityId))!;
    const excluded = facilities.find((f) => f.facilityId === p.excluded)!;
    const at = Date.now();
    const ask = async (f: DemoFacility) => {
      const loaded = (await m.contexts.load(p.regionalId, { userId: 'u' }, at))!;
      return decide(
        { user: { id: 'u', facilityId: f.facilityId, facilityKind: f.kind, role: 'physician' }, purpose: 'treatment', regionalId: p.regionalId, source: p.links[0], category: 'prescriptions', at },
        loaded.context,
      );
    };
    expect((await ask(viewer)).effect).toBe('permit');
    const denied = await ask(excluded);
    expect(denied.effect).toBe('deny');
    expect(denied.reasons.map((r) => r.code)).toContain('receiver-excluded');
  });
});
