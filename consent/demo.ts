import type { ConsentModule } from './consent.module.js';
import type { IdentityRecord } from './match.js';
import type { ConsentTerms, FacilityKind, LocalKey } from './model.js';
import { pairKey } from './match.js';

/**
 * Demo identities and consents for `npm start`: facilities join the network, every local patient
 * is matched (proposals go to the review queue), some people are linked by staff, and their
 * consents take the shapes a region sees, including a withdrawal and a facility exclusion.
 */

export interface DemoFacility {
  facilityId: string;
  kind: FacilityKind;
  discloses?: boolean;
  views?: boolean;
}

export interface DemoLocalPatient extends IdentityRecord {
  /** The generator's ground truth: which person this local ID belongs to. */
  personId: string;
}

export type DemoShape =
  | 'hospitals-and-pharmacies'
  | 'all-except-one-facility'
  | 'withdrawn'
  | 'listed-categories'
  | 'ai-and-research'
  | 'emergency-refused'
  | 'expired'
  | 'no-consent';

export const DEMO_SHAPES: readonly DemoShape[] = [
  'hospitals-and-pharmacies',
  'all-except-one-facility',
  'withdrawn',
  'listed-categories',
  'ai-and-research',
  'emergency-refused',
  'expired',
  'no-consent',
];

export interface DemoSeedResult {
  patients: { regionalId: string; personId: string; shape: DemoShape; links: LocalKey[]; excluded?: string }[];
  queued: number;
}

const DAY = 86_400_000;

function termsFor(shape: DemoShape, now: number, excluded: string, aiServiceId: string): ConsentTerms {
  const base: ConsentTerms = {
    status: 'opted-in',
    disclosing: { mode: 'all' },
    receiving: { kinds: ['hospital', 'clinic', 'pharmacy'], facilities: [], exclude: [] },
    categories: { mode: 'all' },
    purposes: { treatment: true, emergency: 'unspecified', aiServices: [], research: false },
    validFrom: now - 30 * DAY,
    validTo: now + 5 * 365 * DAY,
  };
  switch (shape) {
    case 'hospitals-and-pharmacies':
      return { ...base, receiving: { kinds: ['hospital', 'pharmacy'], facilities: [], exclude: [] } };
    case 'all-except-one-facility':
      return { ...base, receiving: { kinds: 'all', facilities: [], exclude: [excluded] }, disclosing: { mode: 'all-except', facilities: [excluded] } };
    case 'listed-categories':
      return { ...base, categories: { mode: 'listed', categories: ['allergies', 'prescriptions', 'labs'] } };
    case 'ai-and-research':
      return { ...base, purposes: { treatment: true, emergency: 'permit', aiServices: [aiServiceId], research: true } };
    case 'emergency-refused':
      return { ...base, purposes: { treatment: true, emergency: 'refuse', aiServices: [], research: false } };
    case 'expired':
      return { ...base, validFrom: now - 400 * DAY, validTo: now - DAY };
    default:
      return base;
  }
}

export async function seedDemoIdentityAndConsent(
  m: ConsentModule,
  opts: { facilities: DemoFacility[]; localPatients: Iterable<DemoLocalPatient>; people?: number; actor?: string; aiServiceId?: string; now: number },
): Promise<DemoSeedResult> {
  const actor = opts.actor ?? 'demo-clerk';
  for (const f of opts.facilities) {
    await m.consent.setParticipation(actor, { facilityId: f.facilityId, kind: f.kind, discloses: f.discloses ?? true, views: f.views ?? true }, 'demo: joined the network');
  }
  const byPerson = new Map<string, DemoLocalPatient[]>();
  const all: DemoLocalPatient[] = [];
  for (const lp of opts.localPatients) {
    const list = byPerson.get(lp.personId) ?? [];
    list.push(lp);
    byPerson.set(lp.personId, list);
    all.push(lp);
  }
  await m.identity.recordLocalPatients(all);
  await m.identity.runMatching();
  const open = new Map((await m.identity.reviewQueue({ limit: 500 })).map((r) => [pairKey(r.a, r.b), r]));
  const people = [...byPerson.entries()].filter(([, l]) => l.length >= 2).slice(0, opts.people ?? DEMO_SHAPES.length * 2);
  const result: DemoSeedResult = { patients: [], queued: 0 };
  for (const [i, [personId, locals]] of people.entries()) {
    // Staff confirm the proposals for this person (or enrol by hand where nothing was proposed).
    let regionalId: string | undefined;
    for (const other of locals.slice(1)) {
      const proposal = open.get(pairKey(locals[0], other));
      if (proposal) {
        regionalId = (await m.identity.acceptMatch(actor, proposal.id, 'demo: insurance card checked at the counter')).regionalId;
        open.delete(pairKey(locals[0], other));
      }
    }
    for (const lp of locals) {
      const link = await m.identity.linkOf(lp);
      if (link) regionalId ??= link.regionalId;
      else regionalId = (await m.identity.enrol(actor, lp, { regionalId, evidence: 'demo: insurance card checked at the counter' })).regionalId;
    }
    const shape = DEMO_SHAPES[i % DEMO_SHAPES.length];
    // The facility this patient excludes: one where the patient has no record of their own.
    const excluded = (opts.facilities.find((f) => !locals.some((l) => l.facilityId === f.facilityId)) ?? opts.facilities[opts.facilities.length - 1]).facilityId;
    if (shape !== 'no-consent') {
      await m.consent.record(actor, regionalId as string, { terms: termsFor(shape, opts.now, excluded, opts.aiServiceId ?? 'demo-ai'), note: `demo: ${shape}` });
      if (shape === 'withdrawn') await m.consent.withdraw(actor, regionalId as string, 'demo: the patient withdrew at the pharmacy counter');
    }
    result.patients.push({ regionalId: regionalId as string, personId, shape, links: locals.map((l) => ({ facilityId: l.facilityId, localId: l.localId })), ...(shape === 'all-except-one-facility' ? { excluded } : {}) });
  }
  result.queued = (await m.identity.reviewQueue({ limit: 500 })).length;
  return result;
}
