import { randomBytes } from 'node:crypto';
import { badRequest, conflict, notFound } from '../store/errors.js';
import {
  band,
  DEFAULT_MATCH_CONFIG,
  localKey,
  nameKeys,
  normaliseRecord,
  pairKey,
  planMatches,
  scorePair,
  validateMatchConfig,
  type Candidate,
  type IdentityRecord,
  type MatchConfig,
} from './match.js';
import * as repo from './identity.repository.js';
import { inlineSearch, type CandidateSearch, type SearchProgress } from './match-search.js';
import type { AuditEntry, Conn, LinkEvent, MatchRow } from './identity.repository.js';
import type { Link, LocalKey, RegionalPatient } from './model.js';

/**
 * Patient identity across facilities: enrolment links made by staff, links proposed by the
 * matcher, the review queue, unlink / merge / split. Every change is one transaction that writes
 * the new state, an append-only link event per local ID touched, and an audit entry.
 */

export interface IdentityServiceDeps {
  db: Conn;
  match?: MatchConfig;
  now?: () => number;
  newId?: () => string;
}

/** The actor recorded for what the matcher does on its own. */
export const MATCHER_ACTOR = 'matcher';

export interface PatientHistory {
  patient: RegionalPatient;
  links: Link[];
  events: LinkEvent[];
  audit: AuditEntry[];
}

export interface MatchRunSummary {
  localPatients: number;
  candidates: number;
  autoLinked: number;
  queued: number;
  skipped: number;
}

/** What a run of the matcher is doing: read, searched, applied so far. */
export interface MatchProgress {
  phase: 'reading' | 'searching' | 'applying';
  localPatients: number;
  search?: SearchProgress;
  candidates?: number;
  applied?: number;
}

export interface ObserveResult {
  autoLinked: Link[];
  queued: MatchRow[];
}

function requireText(name: string, v: unknown, max = 2000): string {
  if (typeof v !== 'string' || !v.trim()) throw badRequest(`${name} is required`);
  if (v.length > max) throw badRequest(`${name} is longer than ${max} characters`);
  return v.trim();
}

function requireKey(k: LocalKey): LocalKey {
  if (!k || typeof k.facilityId !== 'string' || typeof k.localId !== 'string' || !k.facilityId.trim() || !k.localId.trim()) {
    throw badRequest('a local patient needs a facility id and a local id');
  }
  if (k.facilityId.length > 64 || k.localId.length > 64) throw badRequest('facility and local ids are at most 64 characters');
  return { facilityId: k.facilityId, localId: k.localId };
}

const describe = (k: LocalKey) => `${k.facilityId}/${k.localId}`;

export function createIdentityService(deps: IdentityServiceDeps) {
  const db = deps.db;
  const config = validateMatchConfig(deps.match ?? DEFAULT_MATCH_CONFIG);
  const now = deps.now ?? Date.now;
  const newId = deps.newId ?? (() => `RP-${randomBytes(8).toString('hex').toUpperCase()}`);

  async function livePatient(trx: Conn, id: string): Promise<RegionalPatient> {
    const [p] = await repo.lockRegionalPatients(trx, [id]);
    if (!p) throw notFound(`regional patient ${id} not found`);
    if (p.mergedInto) throw conflict(`regional patient ${id} was merged into ${p.mergedInto}`, { mergedInto: p.mergedInto });
    return p;
  }

  async function newPatient(trx: Conn, actor: string, at: number, reason: string): Promise<RegionalPatient> {
    const p: RegionalPatient = { id: newId(), createdAt: at, createdBy: actor, mergedInto: null };
    await repo.insertRegionalPatient(trx, p);
    await repo.insertAudit(trx, { at, actor, action: 'patient.create', targetKind: 'regional-patient', targetId: p.id, reason, details: {} });
    return p;
  }

  async function addLink(
    trx: Conn,
    l: Link,
    operation: string,
    reason: string,
  ): Promise<Link> {
    await repo.insertLink(trx, l);
    await repo.insertLinkEvent(trx, {
      at: l.linkedAt,
      actor: l.linkedBy,
      action: 'link',
      operation,
      facilityId: l.facilityId,
      localId: l.localId,
      regionalId: l.regionalId,
      previousRegionalId: null,
      method: l.method,
      score: l.score,
      evidence: l.evidence,
      reason,
    });
    return l;
  }

  async function move(trx: Conn, l: Link, to: string, actor: string, at: number, operation: string, reason: string): Promise<void> {
    await repo.moveLink(trx, l, to);
    await repo.insertLinkEvent(trx, {
      at,
      actor,
      action: 'relink',
      operation,
      facilityId: l.facilityId,
      localId: l.localId,
      regionalId: to,
      previousRegionalId: l.regionalId,
      method: l.method,
      score: l.score,
      evidence: l.evidence,
      reason,
    });
  }

  /** Records that two local patients are different people: the matcher never proposes them again. */
  async function rejectPairIn(trx: Conn, a: LocalKey, b: LocalKey, actor: string, at: number, reason: string): Promise<void> {
    const existing = await repo.getMatchByPair(trx, a, b);
    const row = existing ?? (await repo.upsertMatch(trx, { a, b, score: 0, reasons: [], at }));
    if (row.status !== 'rejected') await repo.decideMatch(trx, row.id, { status: 'rejected', by: actor, at, reason });
  }

  /** Links an unlinked local ID to a patient (or a new one) on behalf of the matcher or a reviewer. */
  async function joinPair(trx: Conn, c: { a: LocalKey; b: LocalKey; score: number }, actor: string, method: Link['method'], at: number, operation: string, reason: string) {
    // Sequential, not Promise.all: the embedded database has one connection per transaction.
    const la = await repo.getLink(trx, c.a, { lock: true });
    const lb = await repo.getLink(trx, c.b, { lock: true });
    const made: Link[] = [];
    if (la && lb) {
      if (la.regionalId === lb.regionalId) return { made, mergedFrom: null as string | null, into: la.regionalId };
      return { made, mergedFrom: lb.regionalId, into: la.regionalId };
    }
    let target = la?.regionalId ?? lb?.regionalId;
    if (!target) target = (await newPatient(trx, actor, at, reason)).id;
    else await livePatient(trx, target);
    for (const k of [c.a, c.b]) {
      if ((k === c.a ? la : lb) === undefined) {
        made.push(await addLink(trx, { ...k, regionalId: target, method, score: c.score, linkedBy: actor, linkedAt: at, evidence: null }, operation, reason));
      }
    }
    return { made, mergedFrom: null as string | null, into: target };
  }

  async function mergeIn(trx: Conn, actor: string, from: string, into: string, at: number, reason: string): Promise<void> {
    if (from === into) throw badRequest('a patient cannot be merged into itself');
    const locked = await repo.lockRegionalPatients(trx, [from, into]);
    for (const id of [from, into]) {
      const p = locked.find((x) => x.id === id);
      if (!p) throw notFound(`regional patient ${id} not found`);
      if (p.mergedInto) throw conflict(`regional patient ${id} was merged into ${p.mergedInto}`, { mergedInto: p.mergedInto });
    }
    const moving = await repo.linksOfPatient(trx, from);
    for (const l of moving) await move(trx, l, into, actor, at, 'merge', reason);
    await repo.markMerged(trx, from, into, at);
    await repo.insertAudit(trx, {
      at,
      actor,
      action: 'patient.merge',
      targetKind: 'regional-patient',
      targetId: into,
      reason,
      details: { from, into, links: moving.map(describe) },
    });
  }

  /** Applies a match plan: auto-links (only unlinked local IDs move) and review rows. */
  async function applyPlan(trx: Conn, candidates: Candidate[], at: number): Promise<{ autoLinked: Link[]; queued: MatchRow[]; skipped: number }> {
    const keys = new Map<string, LocalKey>();
    for (const c of candidates) {
      keys.set(localKey(c.a), c.a);
      keys.set(localKey(c.b), c.b);
    }
    const all = [...keys.values()];
    const links = await repo.getLinks(trx, all);
    const rejected = await repo.rejectedPairsOf(trx, all);
    const plan = planMatches(
      candidates,
      new Map(links.map((l) => [localKey(l), l])),
      new Set(rejected.map((r) => pairKey(r.a, r.b))),
    );
    const autoLinked: Link[] = [];
    const queued: MatchRow[] = [];
    for (const c of plan.autoLinks) {
      // Re-read inside the loop: an earlier auto-link may have linked one side meanwhile.
      const r = await joinPair(trx, c, MATCHER_ACTOR, 'matcher', at, 'auto-link', `score ${c.score} at or above ${config.autoLinkAt}`);
      if (r.mergedFrom) {
        // Both sides became linked to different patients: never merged without a person.
        queued.push(await repo.upsertMatch(trx, { ...c, at }));
        continue;
      }
      const row = await repo.upsertMatch(trx, { ...c, at, status: 'accepted' });
      if (row.status === 'open') await repo.decideMatch(trx, row.id, { status: 'accepted', by: MATCHER_ACTOR, at, reason: 'auto-link' });
      for (const l of r.made) {
        autoLinked.push(l);
        await repo.insertAudit(trx, {
          at,
          actor: MATCHER_ACTOR,
          action: 'link.auto',
          targetKind: 'local-patient',
          targetId: describe(l),
          reason: `score ${c.score}`,
          details: { regionalId: l.regionalId, pair: [describe(c.a), describe(c.b)], reasons: c.reasons },
        });
      }
    }
    for (const c of plan.review) queued.push(await repo.upsertMatch(trx, { ...c, at }));
    return { autoLinked, queued, skipped: plan.skipped.length };
  }

  return {
    config,

    async createPatient(actor: string, reason: string): Promise<RegionalPatient> {
      requireText('actor', actor);
      requireText('reason', reason);
      return db.transaction().execute((trx) => newPatient(trx, actor, now(), reason));
    },

    async getPatient(id: string): Promise<RegionalPatient | undefined> {
      return repo.getRegionalPatient(db, id);
    },

    /** The link of a local ID, if any. */
    async linkOf(key: LocalKey): Promise<Link | undefined> {
      return repo.getLink(db, requireKey(key));
    },

    async linksOf(regionalId: string): Promise<Link[]> {
      return repo.linksOfPatient(db, regionalId);
    },

    /**
     * Staff link a local ID at enrolment, with the evidence they saw (e.g. "insurance card
     * checked", a consent form). Without regionalId a new regional patient is made.
     * Linking again to the same patient is a no-op; a local ID linked elsewhere is a conflict
     * (use relink, which says why the link moves).
     */
    async enrol(actor: string, key: LocalKey, opts: { regionalId?: string; evidence: string; reason?: string }): Promise<Link> {
      requireText('actor', actor);
      const k = requireKey(key);
      const evidence = requireText('evidence', opts.evidence);
      const reason = opts.reason?.trim() || 'enrolment';
      return db.transaction().execute(async (trx) => {
        const at = now();
        const existing = await repo.getLink(trx, k, { lock: true });
        if (existing) {
          if (opts.regionalId && existing.regionalId === opts.regionalId) return existing;
          throw conflict(`${describe(k)} is already linked to ${existing.regionalId}`, { regionalId: existing.regionalId });
        }
        const target = opts.regionalId ? await livePatient(trx, opts.regionalId) : await newPatient(trx, actor, at, reason);
        const link = await addLink(trx, { ...k, regionalId: target.id, method: 'manual', score: null, linkedBy: actor, linkedAt: at, evidence }, 'enrol', reason);
        await repo.insertAudit(trx, { at, actor, action: 'link.enrol', targetKind: 'local-patient', targetId: describe(k), reason, details: { regionalId: target.id, evidence } });
        return link;
      });
    },

    /** Moves a linked local ID to another patient (a person's correction). */
    async relink(actor: string, key: LocalKey, regionalId: string, reason: string): Promise<Link> {
      requireText('actor', actor);
      const k = requireKey(key);
      const why = requireText('reason', reason);
      return db.transaction().execute(async (trx) => {
        const at = now();
        const existing = await repo.getLink(trx, k, { lock: true });
        if (!existing) throw notFound(`${describe(k)} is not linked`);
        if (existing.regionalId === regionalId) return existing;
        await livePatient(trx, regionalId);
        await move(trx, existing, regionalId, actor, at, 'relink', why);
        await repo.insertAudit(trx, { at, actor, action: 'link.relink', targetKind: 'local-patient', targetId: describe(k), reason: why, details: { from: existing.regionalId, to: regionalId } });
        return { ...existing, regionalId };
      });
    },

    /**
     * Removes a link. The local ID is then shared with nobody, and the matcher will not propose
     * it again with the local IDs it was linked with (recorded as rejected pairs).
     */
    async unlink(actor: string, key: LocalKey, reason: string): Promise<void> {
      requireText('actor', actor);
      const k = requireKey(key);
      const why = requireText('reason', reason);
      await db.transaction().execute(async (trx) => {
        const at = now();
        const existing = await repo.getLink(trx, k, { lock: true });
        if (!existing) throw notFound(`${describe(k)} is not linked`);
        await repo.deleteLink(trx, k);
        await repo.insertLinkEvent(trx, {
          at,
          actor,
          action: 'unlink',
          operation: 'unlink',
          facilityId: k.facilityId,
          localId: k.localId,
          regionalId: null,
          previousRegionalId: existing.regionalId,
          method: existing.method,
          score: existing.score,
          evidence: existing.evidence,
          reason: why,
        });
        const others = await repo.linksOfPatient(trx, existing.regionalId);
        for (const o of others) await rejectPairIn(trx, k, o, actor, at, `unlinked: ${why}`);
        await repo.insertAudit(trx, { at, actor, action: 'link.unlink', targetKind: 'local-patient', targetId: describe(k), reason: why, details: { from: existing.regionalId } });
      });
    },

    /** Merges two regional patients found to be one person: `from`'s links move to `into`. */
    async merge(actor: string, from: string, into: string, reason: string): Promise<void> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      await db.transaction().execute((trx) => mergeIn(trx, actor, from, into, now(), why));
    },

    /**
     * Splits the listed local IDs off a regional patient into a new one (they were two people).
     * Consents stay with the original patient: the new patient has none until one is recorded.
     */
    async split(actor: string, regionalId: string, keys: LocalKey[], reason: string): Promise<RegionalPatient> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      if (!Array.isArray(keys) || !keys.length) throw badRequest('name the local IDs to split off');
      const moving = keys.map(requireKey);
      return db.transaction().execute(async (trx) => {
        const at = now();
        await livePatient(trx, regionalId);
        const links = await repo.linksOfPatient(trx, regionalId);
        const movingSet = new Set(moving.map(localKey));
        const leaving = links.filter((l) => movingSet.has(localKey(l)));
        if (leaving.length !== movingSet.size) throw badRequest(`every local ID to split off must be linked to ${regionalId}`);
        const staying = links.filter((l) => !movingSet.has(localKey(l)));
        if (!staying.length) throw badRequest('a split must leave at least one local ID with the patient');
        const created = await newPatient(trx, actor, at, `split from ${regionalId}: ${why}`);
        for (const l of leaving) await move(trx, l, created.id, actor, at, 'split', why);
        for (const a of leaving) for (const b of staying) await rejectPairIn(trx, a, b, actor, at, `split: ${why}`);
        await repo.insertAudit(trx, {
          at,
          actor,
          action: 'patient.split',
          targetKind: 'regional-patient',
          targetId: regionalId,
          reason: why,
          details: { into: created.id, moved: leaving.map(describe) },
        });
        return created;
      });
    },

    /** A person's statement that two local patients are not the same person. */
    async rejectPair(actor: string, a: LocalKey, b: LocalKey, reason: string): Promise<void> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      const [ka, kb] = [requireKey(a), requireKey(b)];
      if (localKey(ka) === localKey(kb)) throw badRequest('a pair needs two different local patients');
      await db.transaction().execute(async (trx) => {
        const at = now();
        const [la, lb] = await repo.getLinks(trx, [ka, kb]).then((ls) => [ls.find((l) => localKey(l) === localKey(ka)), ls.find((l) => localKey(l) === localKey(kb))]);
        if (la && lb && la.regionalId === lb.regionalId) throw conflict(`both are linked to ${la.regionalId}: split or unlink instead`);
        await rejectPairIn(trx, ka, kb, actor, at, why);
        await repo.insertAudit(trx, { at, actor, action: 'match.reject', targetKind: 'local-pair', targetId: `${describe(ka)}|${describe(kb)}`, reason: why, details: {} });
      });
    },

    async reviewQueue(opts: { limit?: number; afterId?: number } = {}): Promise<MatchRow[]> {
      const limit = Math.min(Math.max(opts.limit ?? 50, 1), 500);
      return repo.listMatches(db, { status: 'open', limit, afterId: opts.afterId });
    },

    async getMatch(id: number): Promise<MatchRow | undefined> {
      return repo.getMatch(db, id);
    },

    /** A reviewer confirms a proposed pair: they are linked (merging their patients if both are linked). */
    async acceptMatch(actor: string, id: number, reason: string): Promise<{ regionalId: string; links: Link[] }> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      return db.transaction().execute(async (trx) => {
        const at = now();
        const m = await repo.getMatch(trx, id, { lock: true });
        if (!m) throw notFound(`match ${id} not found`);
        if (m.status !== 'open') throw conflict(`match ${id} was already ${m.status}`, { status: m.status });
        const r = await joinPair(trx, m, actor, 'manual', at, 'match-accept', why);
        if (r.mergedFrom) await mergeIn(trx, actor, r.mergedFrom, r.into, at, `match ${id}: ${why}`);
        await repo.decideMatch(trx, id, { status: 'accepted', by: actor, at, reason: why });
        await repo.insertAudit(trx, {
          at,
          actor,
          action: 'match.accept',
          targetKind: 'match',
          targetId: String(id),
          reason: why,
          details: { regionalId: r.into, pair: [describe(m.a), describe(m.b)], score: m.score, merged: r.mergedFrom },
        });
        return { regionalId: r.into, links: r.made };
      });
    },

    async rejectMatch(actor: string, id: number, reason: string): Promise<void> {
      requireText('actor', actor);
      const why = requireText('reason', reason);
      await db.transaction().execute(async (trx) => {
        const at = now();
        const m = await repo.getMatch(trx, id, { lock: true });
        if (!m) throw notFound(`match ${id} not found`);
        if (m.status !== 'open') throw conflict(`match ${id} was already ${m.status}`, { status: m.status });
        await repo.decideMatch(trx, id, { status: 'rejected', by: actor, at, reason: why });
        await repo.insertAudit(trx, { at, actor, action: 'match.reject', targetKind: 'match', targetId: String(id), reason: why, details: { pair: [describe(m.a), describe(m.b)] } });
      });
    },

    /**
     * Takes in a facility's description of its patient (from ADT-00) and matches it against the
     * local patients sharing one of its blocks: auto-links when configured, else queues.
     */
    async observe(record: IdentityRecord): Promise<ObserveResult> {
      const k = requireKey(record);
      const n = normaliseRecord(record);
      return db.transaction().execute(async (trx) => {
        const at = now();
        const names = nameKeys(n);
        // Birth date and sex are stored normalised (YYYYMMDD, M/F/O/U): they are the block keys.
        await repo.upsertLocalPatient(trx, { ...record, birthDate: n.birth, sex: n.sex }, { kanaKey: names.kana, kanjiKey: names.kanji }, at);
        if (!n.birth) return { autoLinked: [], queued: [] };
        const mates = await repo.findBlockMates(
          trx,
          {
            birthDate: n.birth,
            sex: n.sex,
            kanaKey: names.kana,
            kanjiKey: names.kanji,
            except: k,
          },
          500,
        );
        const candidates: Candidate[] = [];
        for (const m of mates) {
          const s = scorePair(n, normaliseRecord(m));
          const b = band(s.score, config);
          if (b === 'none') continue;
          const [a, bb] = repo.orderPair(k, m);
          candidates.push({ a, b: bb, score: s.score, band: b, reasons: s.reasons });
        }
        candidates.sort((p, q) => q.score - p.score || (pairKey(p.a, p.b) < pairKey(q.a, q.b) ? -1 : 1));
        const r = await applyPlan(trx, candidates, at);
        return { autoLinked: r.autoLinked, queued: r.queued };
      });
    },

    /**
     * Takes in many local patients at once without matching them one by one (a first load of a
     * facility); run runMatching afterwards.
     */
    async recordLocalPatients(records: Iterable<IdentityRecord>): Promise<number> {
      let n = 0;
      await db.transaction().execute(async (trx) => {
        const at = now();
        for (const record of records) {
          requireKey(record);
          const norm = normaliseRecord(record);
          const names = nameKeys(norm);
          await repo.upsertLocalPatient(trx, { ...record, birthDate: norm.birth, sex: norm.sex }, { kanaKey: names.kana, kanjiKey: names.kanji }, at);
          n++;
        }
      });
      return n;
    },

    /**
     * Matches every local patient against every other (blocking keeps it near-linear). The
     * candidate search runs where `search` puts it (inline by default: the command line; the
     * exchange's job gives a worker thread); the plan is applied in slices of 500 pairs, one
     * transaction each. `progress` hears of each step (awaited: a slow listener slows the run).
     */
    async runMatching(opts: { search?: CandidateSearch; progress?: (p: MatchProgress) => Promise<void> } = {}): Promise<MatchRunSummary> {
      const search = opts.search ?? inlineSearch;
      const progress = opts.progress ?? (async () => {});
      let localPatients = 0;
      async function* pages(): AsyncGenerator<IdentityRecord[]> {
        let after: LocalKey | null = null;
        for (;;) {
          const page = await repo.pageLocalPatients(db, after, 5000);
          localPatients += page.length;
          await progress({ phase: 'reading', localPatients });
          if (page.length) yield page;
          if (page.length < 5000) break;
          after = page[page.length - 1];
        }
        await progress({ phase: 'searching', localPatients });
      }
      // Search progress arrives as events; each is written before the next one is heard of.
      let searching = Promise.resolve();
      const candidates = await search(
        pages(),
        config,
        opts.progress &&
          ((s) => {
            searching = searching.then(() => progress({ phase: 'searching', localPatients, search: s })).catch(() => undefined);
          }),
      );
      await searching;
      let autoLinked = 0;
      let queued = 0;
      let skipped = 0;
      await progress({ phase: 'applying', localPatients, candidates: candidates.length, applied: 0 });
      // In slices, so one transaction does not hold the whole region.
      for (let i = 0; i < candidates.length; i += 500) {
        const slice = candidates.slice(i, i + 500);
        const r = await db.transaction().execute((trx) => applyPlan(trx, slice, now()));
        autoLinked += r.autoLinked.length;
        queued += r.queued.length;
        skipped += r.skipped;
        await progress({ phase: 'applying', localPatients, candidates: candidates.length, applied: i + slice.length });
      }
      return { localPatients, candidates: candidates.length, autoLinked, queued, skipped };
    },

    /** Everything that happened to a patient's identity. */
    async history(regionalId: string): Promise<PatientHistory> {
      const patient = await repo.getRegionalPatient(db, regionalId);
      if (!patient) throw notFound(`regional patient ${regionalId} not found`);
      const [links, events, audit] = await Promise.all([
        repo.linksOfPatient(db, regionalId),
        repo.linkEventsOfPatient(db, regionalId),
        repo.listAudit(db, { targetKind: 'regional-patient', targetId: regionalId, limit: 1000 }),
      ]);
      return { patient, links, events, audit };
    },

    async localHistory(key: LocalKey): Promise<LinkEvent[]> {
      return repo.linkEventsOfLocal(db, requireKey(key));
    },

    async audit(filter: { targetKind?: string; targetId?: string; action?: string; limit?: number }): Promise<AuditEntry[]> {
      return repo.listAudit(db, { ...filter, limit: Math.min(Math.max(filter.limit ?? 100, 1), 1000) });
    },
  };
}

export type IdentityService = ReturnType<typeof createIdentityService>;
