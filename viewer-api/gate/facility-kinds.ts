import type { FacilityKind } from '../../consent/model.js';

/**
 * The kind of the caller's facility, asked by the gate on every request. A facility's kind is
 * written once, when the facility is registered (the registry has no update of it), so a known
 * kind is kept in memory for `ttlMs`; an unknown facility is asked again every time, so that one
 * registered a moment ago is found at once.
 */
export function cachedFacilityKinds(
  lookup: (facilityId: string) => Promise<FacilityKind | undefined>,
  opts: { ttlMs: number; now: () => number },
): (facilityId: string) => Promise<FacilityKind | undefined> {
  const known = new Map<string, { kind: FacilityKind; at: number }>();
  return async (facilityId) => {
    const hit = known.get(facilityId);
    if (hit && opts.now() - hit.at < opts.ttlMs) return hit.kind;
    const kind = await lookup(facilityId);
    if (kind) known.set(facilityId, { kind, at: opts.now() });
    else known.delete(facilityId);
    return kind;
  };
}
