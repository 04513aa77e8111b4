/** The kinds of facility a region registers: one vocabulary for the backup registry, consent and the generator. */
export const FACILITY_KINDS = ['hospital', 'clinic', 'pharmacy', 'care_home'] as const;
export type FacilityKind = (typeof FACILITY_KINDS)[number];
