import { forbidden, badRequest } from '../../store/errors.js';
import { decide, type Decision } from '../../consent/decide.js';
import type { DecisionContextLoader } from '../../consent/decision-context.js';
import { CATEGORIES, type Category } from '../../consent/categories.js';
import type { FacilityKind } from '../../consent/model.js';
import type { DecisionBasis } from '../../consent/policy.js';
import type { AuditLog } from '../audit/audit.service.js';
import type { Principal } from '../auth/auth.service.js';
import type { PreloadedContext } from './session-context.js';
import { readableCategories, roleMay, type RolePolicy } from '../roles/roles.js';

/**
 * The one gate of clinical reads (architecture principle 5). A handler asks it for a patient and
 * gets back a PatientView: a handle that can only ever return the records for which the role
 * permits the category AND the consent decision permits the (source facility, local ID,
 * category) AND that local ID is linked to the patient now. The handle holds no database and no
 * repository a handler could use to read around it. Each read through it, and each refusal,
 * leaves an audit entry.
 */

/** The purposes a person reading in the viewer may state (AI and research go other ways). */
export const VIEWER_PURPOSES = ['treatment', 'emergency'] as const;
export type ViewerPurpose = (typeof VIEWER_PURPOSES)[number];

/** A record as the index returns it (the fields the gate needs from store/records). */
export interface GateRecord {
  id: number;
  facilityId: string;
  patientId: string;
  dataType: string;
  category: Category;
  careDate: string | null;
  orderNo: string;
  timestamp: string;
  department: string | null;
  condition: '0' | '1' | '2';
  sha256: string;
  path: string;
  /** The content, parsed on first use. */
  readonly record: unknown;
  /**
   * The content as JSON text, as the index keeps it: a string, or its UTF-8 bytes (the timeline's
   * reader hands them over as bytes: see records.reader.ts).
   */
  contentJson: string | Uint8Array;
}

export interface GateCursor {
  careDate: string | null;
  id: number;
}

export interface GateQuery {
  patients: { facilityId: string; patientId: string }[];
  categories: Category[];
  from?: string;
  to?: string;
  currentOnly: boolean;
  limit: number;
  after?: GateCursor;
}

/** What the gate needs from the record index. */
export interface RecordReader {
  query(q: GateQuery): Promise<{ records: GateRecord[]; next: GateCursor | undefined }>;
}

export interface GateDeps {
  contexts: DecisionContextLoader;
  roles: RolePolicy;
  records: RecordReader;
  /** The kind of a facility as the registry says (hospital, pharmacy, ...). */
  facilityKind(facilityId: string): Promise<FacilityKind | undefined>;
  audit: AuditLog;
  clock: () => number;
}

export interface OpenRequest {
  regionalId: string;
  purpose: ViewerPurpose;
  /** `METHOD /path` of the request, for the audit trail. */
  endpoint: string;
  /**
   * The decision context read in the same statement as this request's session
   * (session-context.ts); used only when it was read for this patient and this user.
   */
  preloaded?: PreloadedContext;
}

export interface TimelineFilter {
  categories?: Category[];
  facilityId?: string;
  from?: string;
  to?: string;
  /** Include superseded and cancelled versions (history); default: current only. */
  history?: boolean;
  limit: number;
  cursor?: string;
}

/** A record the caller may see, with where it comes from. */
export interface VisibleRecord {
  id: number;
  sourceFacilityId: string;
  localPatientId: string;
  category: Category;
  dataType: string;
  careDate: string | null;
  timestamp: string;
  orderNo: string;
  department: string | null;
  condition: '0' | '1' | '2';
  basis: DecisionBasis;
  /** The content (parsed from the stored JSON text on first use). */
  readonly content: unknown;
  /** The content as JSON text or its UTF-8 bytes (see recordsJson); a symbol key, so JSON.stringify leaves it out. */
  readonly [CONTENT_JSON]: string | Uint8Array;
}

export const CONTENT_JSON: unique symbol = Symbol('contentJson');

/** An indexed record as a handler sees it: its source and the basis it was let through on. */
export function visibleRecord(r: GateRecord, basis: DecisionBasis): VisibleRecord {
  return {
    id: r.id,
    sourceFacilityId: r.facilityId,
    localPatientId: r.patientId,
    category: r.category,
    dataType: r.dataType,
    careDate: r.careDate,
    timestamp: r.timestamp,
    orderNo: r.orderNo,
    department: r.department,
    condition: r.condition,
    basis,
    get content() {
      return r.record;
    },
    [CONTENT_JSON]: r.contentJson,
  };
}

/** What a record is and where it came from, in the order every answer about records carries them. */
export function recordHead(r: VisibleRecord) {
  return {
    id: r.id,
    sourceFacilityId: r.sourceFacilityId,
    localPatientId: r.localPatientId,
    category: r.category,
    dataType: r.dataType,
    careDate: r.careDate,
    timestamp: r.timestamp,
    orderNo: r.orderNo,
    department: r.department,
    condition: r.condition,
  };
}

/**
 * The JSON array of visible records, exactly as JSON.stringify(records) would give it (but for
 * white space and key order inside the content), with each content spliced in as the text the
 * index stored: a timeline page is not parsed and serialised again record by record.
 */
export function recordsJson(records: readonly VisibleRecord[]): string {
  return recordsJsonParts(records, [])
    .map((p) => (typeof p === 'string' ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('utf8')))
    .join('');
}

/**
 * recordsJson as pieces appended to `out` (returned): each content text is a piece of its own, so
 * that a response can encode the pieces straight into its bytes (utf8Bytes) without first joining
 * them into one large string.
 */
export function recordsJsonParts(records: readonly VisibleRecord[], out: Array<string | Uint8Array>): Array<string | Uint8Array> {
  out.push('[');
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    // recordHead, then the basis and the content (no intermediate object spread to add them).
    const head = JSON.stringify(recordHead(r));
    out.push(`${i ? ',' : ''}${head.slice(0, -1)},"basis":${JSON.stringify(r.basis)},"content":`, r[CONTENT_JSON], '}');
  }
  out.push(']');
  return out;
}

/**
 * Scratch space of utf8Bytes, grown as needed and reused (it is written and copied out within one
 * synchronous call, so no two callers share it).
 */
let scratch = Buffer.allocUnsafe(256 * 1024);

/**
 * Encodes text pieces (and copies byte pieces) back to back into the scratch space, which is made
 * at least 3 bytes per UTF-16 unit long (no code unit takes more; a surrogate pair takes 4 for its
 * two): one pass, where measuring each piece first (Buffer.byteLength) would read it twice.
 * Returns where each piece ends.
 */
function encodeIntoScratch(parts: ReadonlyArray<string | Uint8Array>): number[] {
  let bound = 0;
  for (const p of parts) bound += typeof p === 'string' ? p.length * 3 : p.length;
  if (scratch.length < bound) scratch = Buffer.allocUnsafe(Math.max(bound, scratch.length * 2));
  const ends: number[] = [];
  let at = 0;
  for (const p of parts) {
    if (typeof p === 'string') at += scratch.write(p, at, 'utf8');
    else {
      scratch.set(p, at);
      at += p.length;
    }
    ends.push(at);
  }
  return ends;
}

/** The UTF-8 bytes of text (and byte) pieces, in one Buffer of their exact size (no joined string in between). */
export function utf8Bytes(parts: ReadonlyArray<string | Uint8Array>): Buffer {
  const ends = encodeIntoScratch(parts);
  return copyOut(ends.length ? ends[ends.length - 1]! : 0);
}

function copyOut(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  scratch.copy(out, 0, 0, size);
  return out;
}

/** One page of a patient's timeline, as the gate let it through. */
export interface TimelinePage {
  records: VisibleRecord[];
  nextCursor: string | undefined;
}

/** The limited handle: everything in it has passed the gate. */
export interface PatientView {
  readonly regionalId: string;
  readonly purpose: ViewerPurpose;
  /** Facilities with at least one visible category for this patient. */
  readonly facilities: readonly string[];
  /** Categories visible at one facility at least. */
  readonly categories: readonly Category[];
  timeline(filter: TimelineFilter): Promise<TimelinePage>;
  /**
   * The page made into the answer by `answer`, which runs as soon as the page is read and its
   * audit entry is on its way, and whose result is handed back only once that entry is committed
   * (as the page itself would be). The page's records can then die at once, while the request
   * waits for the commit: a timeline page (10-50 records and their content) otherwise stays alive
   * through that wait, a large share of the request's time under load, and every scavenge in
   * between copies it or promotes it to the old space.
   */
  timeline<T>(filter: TimelineFilter, answer: (page: TimelinePage) => T): Promise<T>;
  /**
   * Whether one (source facility, local ID, category) passed the gate for this request, and on
   * what basis: the record-by-id reads (record-gate.ts) ask this before showing a record.
   */
  permits(facilityId: string, localId: string, category: Category): PermittedRead | undefined;
}

export interface PermittedRead {
  basis: DecisionBasis;
  grantId: string | null;
  /** The stated reason of the break-glass grant the permit rests on, if any. */
  breakGlassReason: string | null;
}

/** The one text a refused read gets: the same whether the patient exists, is hidden or is unknown. */
export const NOT_PERMITTED = 'Access to this information is not permitted.';
const MAX_PAGE = 200;

interface Permitted {
  facilityId: string;
  localId: string;
  categories: Map<Category, { basis: DecisionBasis; grantId: string | null }>;
}

export interface Gate {
  open(principal: Principal, req: OpenRequest): Promise<PatientView>;
  /**
   * Whether the caller may see anything of the patient (for search results, which list only
   * visible patients). Reads no records and writes no audit entry: the search that asks does.
   */
  canSee(principal: Principal, regionalId: string, purpose: ViewerPurpose): Promise<boolean>;
}

type Evaluation =
  | { ok: true; regionalId: string; permitted: Permitted[]; grantReasons: Map<string, string> }
  | { ok: false; reason: string; publicText: string };

export function createGate(deps: GateDeps): Gate {
  const { audit, clock } = deps;

  async function evaluate(p: Principal, regionalId: string, purpose: ViewerPurpose, at: number, pre?: PreloadedContext): Promise<Evaluation> {
    const refuse = (reason: string, publicText = NOT_PERMITTED): Evaluation => ({ ok: false, reason, publicText });

    const roleCategories = readableCategories(deps.roles, p.role);
    if (!roleMay(deps.roles, p.role, 'record.read') || roleCategories.length === 0) {
      return refuse(`role ${p.role} may not read clinical records`, 'Your role may not read clinical records.');
    }
    const kind = await deps.facilityKind(p.facilityId);
    if (!kind) return refuse(`facility ${p.facilityId} is not registered`);
    const loaded =
      pre && pre.regionalId === regionalId && pre.userId === p.userId ? pre.context : await deps.contexts.load(regionalId, { userId: String(p.userId) }, at);
    if (!loaded) return refuse('unknown regional patient');
    const { context } = loaded;

    // Every (linked local ID, category the role may read) pair is decided; only permits count.
    const permitted: Permitted[] = [];
    const refusals = new Set<string>();
    let publicText = NOT_PERMITTED;
    const grantReasons = new Map(context.breakGlass.map((g) => [g.id, g.reason]));
    for (const link of context.links) {
      if (link.regionalId !== loaded.regionalId) continue;
      const entry: Permitted = { facilityId: link.facilityId, localId: link.localId, categories: new Map() };
      for (const category of roleCategories) {
        const d: Decision = decide(
          {
            user: { id: String(p.userId), facilityId: p.facilityId, facilityKind: kind, role: p.role },
            purpose,
            regionalId: loaded.regionalId,
            source: { facilityId: link.facilityId, localId: link.localId },
            category,
            at,
          },
          context,
        );
        if (d.effect === 'permit') {
          // The viewer cannot honour masking duties (they serve AI de-identification): a permit
          // that requires masking is treated as a refusal rather than shown unmasked.
          if (d.obligations.some((o) => o.kind === 'mask')) {
            refusals.add('mask obligation the viewer cannot honour');
            continue;
          }
          entry.categories.set(category, { basis: d.basis!, grantId: d.grantId });
        } else {
          for (const r of d.reasons) refusals.add(r.code);
          if (d.publicReason.code !== 'access-denied' && d.publicReason.code !== 'invalid-request') publicText = d.publicReason.text;
        }
      }
      if (entry.categories.size) permitted.push(entry);
    }
    if (permitted.length === 0) return refuse(`nothing permitted: ${[...refusals].sort().join(', ') || 'no linked records'}`, publicText);
    return { ok: true, regionalId: loaded.regionalId, permitted, grantReasons };
  }

  async function open(p: Principal, req: OpenRequest): Promise<PatientView> {
    const pre = req.preloaded;
    const at = pre ? pre.at : clock();
    const who = { userId: p.userId, username: p.username, facilityId: p.facilityId, role: p.role };
    const trail = { actor: who, address: p.address, deviceId: p.deviceId, endpoint: req.endpoint, patient: req.regionalId, purpose: req.purpose };
    const ev = await evaluate(p, req.regionalId, req.purpose, at, pre);
    if (!ev.ok) {
      await audit.record({ ...trail, action: 'record.read', outcome: 'denied', reason: ev.reason });
      throw forbidden(ev.publicText);
    }
    const { permitted, grantReasons } = ev;

    const facilities = [...new Set(permitted.map((e) => e.facilityId))].sort();
    const categories = CATEGORIES.filter((c) => permitted.some((e) => e.categories.has(c)));

    async function timeline<T>(f: TimelineFilter, answer?: (page: TimelinePage) => T): Promise<TimelinePage | T> {
      const { recorded, out } = await readPage<TimelinePage | T>(f, answer ?? ((page) => page));
      // Nothing of the page leaves before its audit entry is committed. Only the answer waits:
      // readPage's frame, which held the page, has ended.
      await recorded;
      if (!out.ok) throw out.error;
      return out.value;
    }

    /** Reads a page, starts its audit entry (not awaited) and makes the page into the answer. */
    async function readPage<T>(
      f: TimelineFilter,
      answer: (page: TimelinePage) => T,
    ): Promise<{ recorded: Promise<void>; out: { ok: true; value: T } | { ok: false; error: unknown } }> {
      const limit = Math.min(Math.max(1, f.limit), MAX_PAGE);
      const after = f.cursor === undefined ? undefined : parseCursor(f.cursor);
      // Group the permitted local IDs by their set of visible categories: one index query per group.
      const groups = new Map<string, { patients: GateQuery['patients']; categories: Category[] }>();
      for (const e of permitted) {
        if (f.facilityId !== undefined && e.facilityId !== f.facilityId) continue;
        const cats = [...e.categories.keys()].filter((c) => !f.categories || f.categories.includes(c)).sort();
        if (!cats.length) continue;
        const key = cats.join(',');
        const g = groups.get(key) ?? { patients: [], categories: cats };
        g.patients.push({ facilityId: e.facilityId, patientId: e.localId });
        groups.set(key, g);
      }
      const pages = await Promise.all(
        [...groups.values()].map((g) =>
          deps.records.query({ ...g, from: f.from, to: f.to, currentOnly: !f.history, limit, after }),
        ),
      );
      const merged = pages.flatMap((pg) => pg.records).sort(byTimeline);
      const page = merged.slice(0, limit);
      const more = merged.length > limit || pages.some((pg) => pg.next !== undefined);
      const records: VisibleRecord[] = [];
      for (const r of page) {
        const owner = permitted.find((e) => e.facilityId === r.facilityId && e.localId === r.patientId);
        const grant = owner?.categories.get(r.category);
        // Defence in depth: the index was asked only for permitted pairs; anything else is dropped.
        if (!grant) continue;
        records.push(visibleRecord(r, grant.basis));
      }
      const last = page[page.length - 1];
      const bases = [...new Set(records.map((r) => r.basis))].sort();
      const grants = [...new Set(permitted.flatMap((e) => [...e.categories.values()].map((v) => v.grantId)).filter((g): g is string => !!g))];
      const recorded = audit.record({
        ...trail,
        action: 'record.read',
        outcome: 'success',
        breakGlassReason: bases.includes('break-glass') ? grants.map((g) => grantReasons.get(g) ?? g).join('; ') : null,
        detail: {
          categories: [...new Set(records.map((r) => r.category))].sort(),
          facilities: [...new Set(records.map((r) => r.sourceFacilityId))].sort(),
          recordIds: records.map((r) => r.id),
          bases,
          ...(grants.length ? { grantIds: grants } : {}),
          filter: { categories: f.categories, facilityId: f.facilityId, from: f.from, to: f.to, history: f.history ?? false },
        },
      });
      const read: TimelinePage = { records, nextCursor: more && last ? formatCursor({ careDate: last.careDate, id: last.id }) : undefined };
      try {
        return { recorded, out: { ok: true, value: answer(read) } };
      } catch (error) {
        // The read happened and is being recorded: the caller waits for its entry all the same.
        return { recorded, out: { ok: false, error } };
      }
    }

    function permits(facilityId: string, localId: string, category: Category): PermittedRead | undefined {
      const g = permitted.find((e) => e.facilityId === facilityId && e.localId === localId)?.categories.get(category);
      return g && { basis: g.basis, grantId: g.grantId, breakGlassReason: g.grantId ? (grantReasons.get(g.grantId) ?? g.grantId) : null };
    }

    return { regionalId: ev.regionalId, purpose: req.purpose, facilities, categories, timeline: timeline as PatientView['timeline'], permits };
  }

  async function canSee(p: Principal, regionalId: string, purpose: ViewerPurpose): Promise<boolean> {
    return (await evaluate(p, regionalId, purpose, clock())).ok;
  }

  return { open, canSee };
}

/** Newest care date first, undated last, then by id descending (the index's keyset order). */
function byTimeline(a: GateRecord, b: GateRecord): number {
  if (a.careDate !== b.careDate) {
    if (a.careDate === null) return 1;
    if (b.careDate === null) return -1;
    return a.careDate < b.careDate ? 1 : -1;
  }
  return b.id - a.id;
}

export function formatCursor(c: GateCursor): string {
  return Buffer.from(JSON.stringify([c.careDate, c.id]), 'utf8').toString('base64url');
}

export function parseCursor(s: string): GateCursor {
  try {
    const v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    if (
      Array.isArray(v) &&
      v.length === 2 &&
      (v[0] === null || (typeof v[0] === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(v[0]))) &&
      Number.isSafeInteger(v[1])
    ) {
      return { careDate: v[0] as string | null, id: v[1] as number };
    }
  } catch {
    /* fall through */
  }
  throw badRequest('the cursor is not one this exchange issued');
}
