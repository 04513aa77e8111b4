/**
 * Consent and matching benchmark.
 *
 *   npx tsx bench/consent.bench.ts                       # decisions + matching at 10k and 1M
 *   npx tsx bench/consent.bench.ts --sizes 10000 --decisions 500000 --explain 20
 *   npx tsx bench/consent.bench.ts --sizes 100000 --twins 0.02        # with hard negatives
 *
 * 1. Decision throughput: the pure decide() on one core over a mix of requests (permits,
 *    withdrawals, exclusions, break-glass, disaster) against a realistic context.
 * 2. Matching quality against the generator's ground truth (fixtures/population.ts): every pair
 *    of local patients of one person is a true pair. Auto-link precision = true pairs among pairs
 *    scoring in the auto band; review recall = true pairs scoring in the review band or above,
 *    over all true pairs.
 */
import { performance } from 'node:perf_hooks';
import { generatePopulation, type LocalPatient } from '../fixtures/population.js';
import { decide, type AccessRequest, type DecisionContext } from '../consent/decide.js';
import { comparePairs, normaliseRecord, scorePair, type MatchConfig, type NormalisedRecord } from '../consent/match.js';
import type { ConsentVersion, Link, Participation } from '../consent/model.js';
import { defaultPolicy } from '../consent/policy.js';
import { CATEGORIES } from '../consent/categories.js';

interface Args {
  sizes: number[];
  decisions: number;
  explain: number;
  autoLinkAt: number;
  reviewAt: number;
  seed: string;
  /** Fraction of persons given a twin (same family, birth date, address, phone; another given name). */
  twins: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { sizes: [10_000, 1_000_000], decisions: 2_000_000, explain: 0, autoLinkAt: 24, reviewAt: 10, seed: 'bench', twins: 0 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--sizes':
        a.sizes = (v ?? '').split(',').map(Number);
        i++;
        break;
      case '--decisions':
        a.decisions = Number(v);
        i++;
        break;
      case '--explain':
        a.explain = Number(v);
        i++;
        break;
      case '--auto':
        a.autoLinkAt = Number(v);
        i++;
        break;
      case '--review':
        a.reviewAt = Number(v);
        i++;
        break;
      case '--twins':
        a.twins = Number(v);
        i++;
        break;
      case '--seed':
        a.seed = v ?? a.seed;
        i++;
        break;
      default:
        throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (a.sizes.some((n) => !Number.isInteger(n) || n < 2) || !(a.decisions > 0)) throw new Error('bad --sizes or --decisions');
  return a;
}

// ------------------------------------------------------------------------------------------
// 1. decisions

function decisionBench(count: number): { perSecond: number; permits: number; denies: number; seconds: number } {
  const DAY = 86_400_000;
  const t0 = Date.UTC(2026, 0, 1);
  const facilities = Array.from({ length: 50 }, (_, i) => `F${String(i + 1).padStart(3, '0')}`);
  const kinds: Participation['kind'][] = ['hospital', 'clinic', 'pharmacy', 'care_home'];
  const participation = new Map<string, Participation>(
    facilities.map((f, i) => [f, { facilityId: f, kind: kinds[i % 4], discloses: i % 17 !== 5, views: i % 13 !== 7 }]),
  );
  const links: Link[] = facilities.slice(0, 6).map((f, i) => ({
    facilityId: f, localId: `L${i}`, regionalId: 'RP1', method: 'manual', linkedBy: 'c', linkedAt: t0, evidence: null, score: null,
  }));
  const base: ConsentVersion = {
    id: 'v1', regionalId: 'RP1', version: 1, recordedAt: t0, recordedBy: 'c', evidenceSha256: null, evidenceMediaType: null, note: null,
    status: 'opted-in', disclosing: { mode: 'all-except', facilities: ['F003'] },
    receiving: { kinds: ['hospital', 'pharmacy'], facilities: ['F004'], exclude: ['F009'] },
    categories: { mode: 'all-except', categories: ['documents'] },
    purposes: { treatment: true, emergency: 'unspecified', aiServices: ['ai-1'], research: false },
    validFrom: t0, validTo: t0 + 365 * DAY,
  };
  const contexts: DecisionContext[] = [
    { consents: [base], links, participation, policy: defaultPolicy(), breakGlass: [], disasters: [] },
    { consents: [base, { ...base, id: 'v2', version: 2, status: 'withdrawn', recordedAt: t0 + 10 * DAY }], links, participation, policy: defaultPolicy(), breakGlass: [], disasters: [] },
    { consents: [], links, participation, policy: defaultPolicy(), breakGlass: [{ id: 'g', userId: 'u7', facilityId: 'F005', regionalId: 'RP1', reason: 'ER', grantedAt: t0, expiresAt: t0 + 400 * DAY, revokedAt: null }], disasters: [] },
    { consents: [base], links, participation, policy: defaultPolicy(), breakGlass: [], disasters: [{ id: 'd', facilities: ['F001', 'F002'], from: t0, to: t0 + 400 * DAY, declaredBy: 'op', reason: 'quake', endedAt: null }] },
  ];
  const purposes: AccessRequest['purpose'][] = ['treatment', 'treatment', 'treatment', 'emergency', 'ai-analysis', 'research'];
  const requests: AccessRequest[] = [];
  for (let i = 0; i < 4096; i++) {
    const f = facilities[(i * 7) % facilities.length];
    const src = links[i % links.length];
    const purpose = purposes[i % purposes.length];
    requests.push({
      user: { id: `u${i % 11}`, facilityId: f, facilityKind: participation.get(f)!.kind, role: i % 5 === 0 ? 'nurse' : 'physician' },
      purpose,
      aiServiceId: purpose === 'ai-analysis' ? (i % 2 ? 'ai-1' : 'ai-2') : undefined,
      regionalId: 'RP1',
      source: i % 97 === 0 ? { facilityId: src.facilityId, localId: 'unlinked' } : { facilityId: src.facilityId, localId: src.localId },
      category: CATEGORIES[i % CATEGORIES.length],
      at: t0 + ((i * 37) % 380) * DAY,
    });
  }
  let permits = 0;
  // Warm up, then measure.
  for (let i = 0; i < 200_000; i++) decide(requests[i & 4095], contexts[i & 3]);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    if (decide(requests[i & 4095], contexts[(i >> 12) & 3]).effect === 'permit') permits++;
  }
  const seconds = (performance.now() - start) / 1000;
  return { perSecond: Math.round(count / seconds), permits, denies: count - permits, seconds };
}

// ------------------------------------------------------------------------------------------
// 2. matching quality

interface Quality {
  localPatients: number;
  persons: number;
  truePairs: number;
  pairsCompared: number;
  blocks: number;
  oversizedBlocks: number;
  autoPairs: number;
  autoTrue: number;
  reviewPairs: number;
  reviewTrue: number;
  precisionAuto: number;
  recallReview: number;
  recallAuto: number;
  seconds: { generate: number; normalise: number; match: number };
  heapMiB: number;
  sweep: { autoLinkAt: number; precision: number; recall: number; falsePairs: number }[];
}

function matchingBench(target: number, cfg: MatchConfig & { autoLinkAt: number }, seed: string, explain: number, twins: number): Quality {
  const t0 = performance.now();
  const locals: LocalPatient[] = [];
  // About 1.5 local identities per person: ask for enough persons, stop at the target.
  for (const lp of generatePopulation({ seed, facilities: Math.max(10, Math.round(target / 2000)), patients: Math.ceil(target / 1.2) })) {
    locals.push(lp);
    if (locals.length >= target) break;
  }
  // Hard negatives the generator does not make: a twin registered at the same facility, with
  // everything but the given name (and sometimes the sex) in common.
  if (twins > 0) {
    const step = Math.max(1, Math.round(1 / twins));
    const n = locals.length;
    for (let i = 0; i < n; i += step) {
      const lp = locals[i];
      const donor = locals[(i * 7919 + 13) % n];
      if (donor.givenKanji === lp.givenKanji) continue;
      locals.push({ ...lp, personId: `${lp.personId}-twin`, localId: `${lp.localId}T`, givenKanji: donor.givenKanji, givenKana: donor.givenKana, sex: donor.sex });
    }
  }
  const t1 = performance.now();
  const personOf = new Int32Array(locals.length);
  const records: NormalisedRecord[] = new Array(locals.length);
  const perPerson = new Map<string, number>();
  const ids = new Map<string, number>();
  for (let i = 0; i < locals.length; i++) {
    const lp = locals[i];
    let p = ids.get(lp.personId);
    if (p === undefined) ids.set(lp.personId, (p = ids.size));
    personOf[i] = p;
    perPerson.set(lp.personId, (perPerson.get(lp.personId) ?? 0) + 1);
    records[i] = normaliseRecord(lp);
  }
  let truePairs = 0;
  for (const k of perPerson.values()) truePairs += (k * (k - 1)) / 2;
  const t2 = performance.now();
  let autoPairs = 0;
  let autoTrue = 0;
  let reviewPairs = 0;
  let reviewTrue = 0;
  const falseAuto: string[] = [];
  // Pairs and true pairs by (integer) score, for the threshold sweep.
  const hist = new Map<number, { pairs: number; true: number }>();
  const stats = comparePairs(records, cfg.reviewAt, (i, j, s) => {
    const same = personOf[i] === personOf[j];
    const h = hist.get(s.score) ?? { pairs: 0, true: 0 };
    h.pairs++;
    if (same) h.true++;
    hist.set(s.score, h);
    if (s.score >= cfg.autoLinkAt) {
      autoPairs++;
      if (same) autoTrue++;
      else if (falseAuto.length < explain) falseAuto.push(`${s.score} ${s.reasons.join(',')}\n   ${show(locals[i])}\n   ${show(locals[j])}`);
    } else {
      reviewPairs++;
      if (same) reviewTrue++;
    }
  });
  const t3 = performance.now();
  if (explain) {
    console.log(`-- false auto-links (first ${explain}):\n${falseAuto.join('\n')}`);
    explainMissed(locals, records, personOf, cfg.reviewAt, explain);
  }
  const found = autoTrue + reviewTrue;
  const sweep: Quality['sweep'] = [];
  for (const t of [18, 20, 22, 24, 26, 28, 30]) {
    let pairs = 0;
    let good = 0;
    for (const [score, h] of hist) {
      if (score >= t) {
        pairs += h.pairs;
        good += h.true;
      }
    }
    sweep.push({ autoLinkAt: t, precision: pairs ? good / pairs : 1, recall: truePairs ? good / truePairs : 1, falsePairs: pairs - good });
  }
  return {
    sweep,
    localPatients: locals.length,
    persons: ids.size,
    truePairs,
    pairsCompared: stats.pairsCompared,
    blocks: stats.blocks,
    oversizedBlocks: stats.oversizedBlocks,
    autoPairs,
    autoTrue,
    reviewPairs,
    reviewTrue,
    precisionAuto: autoPairs ? autoTrue / autoPairs : 1,
    recallReview: truePairs ? found / truePairs : 1,
    recallAuto: truePairs ? autoTrue / truePairs : 1,
    seconds: { generate: (t1 - t0) / 1000, normalise: (t2 - t1) / 1000, match: (t3 - t2) / 1000 },
    heapMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
  };
}

function show(lp: LocalPatient): string {
  return `${lp.facilityId}/${lp.localId} ${lp.familyKanji} ${lp.givenKanji} ${lp.familyKana} ${lp.givenKana} ${lp.birthDate} ${lp.sex} ${lp.postalCode} ${lp.address} ${lp.phone}`;
}

/** Prints true pairs that scored below the review band (the recall losses), with their reasons. */
function explainMissed(locals: LocalPatient[], records: NormalisedRecord[], personOf: Int32Array, reviewAt: number, n: number): void {
  const byPerson = new Map<number, number[]>();
  for (let i = 0; i < locals.length; i++) {
    const l = byPerson.get(personOf[i]) ?? [];
    l.push(i);
    byPerson.set(personOf[i], l);
  }
  const out: string[] = [];
  for (const list of byPerson.values()) {
    for (let x = 0; x < list.length && out.length < n; x++) {
      for (let y = x + 1; y < list.length && out.length < n; y++) {
        const s = scorePair(records[list[x]], records[list[y]]);
        if (s.score < reviewAt) out.push(`${s.score} ${s.reasons.join(',')}\n   ${show(locals[list[x]])}\n   ${show(locals[list[y]])}`);
      }
    }
  }
  console.log(`-- true pairs below review (first ${n}):\n${out.join('\n')}`);
}

// ------------------------------------------------------------------------------------------

const args = parseArgs(process.argv.slice(2));
console.log(`node ${process.version}, ${new Date().toISOString()}`);
const d = decisionBench(args.decisions);
console.log(`decide(): ${d.perSecond.toLocaleString('en')} decisions/s on one core (${args.decisions.toLocaleString('en')} in ${d.seconds.toFixed(2)} s; ${d.permits} permits, ${d.denies} denies)`);
for (const size of args.sizes) {
  const q = matchingBench(size, { autoLinkAt: args.autoLinkAt, reviewAt: args.reviewAt }, args.seed, args.explain, args.twins);
  console.log(
    [
      `matching ${q.localPatients.toLocaleString('en')} local patients${args.twins ? ` incl. twins (rate ${args.twins})` : ''} (${q.persons.toLocaleString('en')} persons, ${q.truePairs.toLocaleString('en')} true pairs), auto >= ${args.autoLinkAt}, review >= ${args.reviewAt}:`,
      `  auto-link precision ${(100 * q.precisionAuto).toFixed(3)}% (${q.autoTrue}/${q.autoPairs}), auto-link recall ${(100 * q.recallAuto).toFixed(2)}%`,
      `  review-queue recall ${(100 * q.recallReview).toFixed(3)}% (${q.autoTrue + q.reviewTrue}/${q.truePairs}); review band holds ${q.reviewPairs} pairs, ${q.reviewTrue} true`,
      `  ${q.pairsCompared.toLocaleString('en')} pairs compared in ${q.blocks.toLocaleString('en')} blocks (${q.oversizedBlocks} oversized skipped)`,
      `  time: generate ${q.seconds.generate.toFixed(1)} s, normalise ${q.seconds.normalise.toFixed(1)} s, block+score ${q.seconds.match.toFixed(1)} s; heap ${q.heapMiB} MiB`,
      `  auto-link threshold sweep: ${q.sweep.map((w) => `>=${w.autoLinkAt}: precision ${(100 * w.precision).toFixed(3)}% recall ${(100 * w.recall).toFixed(1)}% (${w.falsePairs} false)`).join('; ')}`,
    ].join('\n'),
  );
}
