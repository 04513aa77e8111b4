/**
 * The record categories the whole exchange speaks of: consents name them, the role matrix of the
 * viewer names them, and the indexer files every SS-MIX2 item under one of them.
 */
export const CATEGORIES = [
  'demographics',
  'encounters',
  'diagnoses',
  'allergies',
  'prescriptions',
  'injections',
  'labs',
  'imaging',
  'diet',
  'documents',
] as const;

export type Category = (typeof CATEGORIES)[number];

const CATEGORY_SET: ReadonlySet<string> = new Set(CATEGORIES);

export function isCategory(value: unknown): value is Category {
  return typeof value === 'string' && CATEGORY_SET.has(value);
}

/**
 * The category of an SS-MIX2 data type (Ver.1.2 table 1-1; see docs/ssmix2.md).
 * Extended storage (拡張ストレージ) holds documents (CDA, PDF, images, ...) whatever its data-type
 * folder is called, so `storage: 'extended'` always answers `documents`.
 * An unknown standardized data type answers undefined: the caller must not guess a category for
 * data it does not understand, because the category decides who may read it.
 */
export function categoryOfDataType(dataType: string, storage: 'standard' | 'extended' = 'standard'): Category | undefined {
  if (storage === 'extended') return 'documents';
  const t = dataType.trim().toUpperCase();
  if (t === 'ADT-00') return 'demographics';
  if (t === 'ADT-61') return 'allergies';
  // ADT-01 attending doctor, ADT-12 outpatient visit, ADT-2x admission, ADT-3x leave,
  // ADT-4x transfer, ADT-5x discharge.
  if (/^ADT-(01|12|21|22|31|32|41|42|51|52)$/.test(t)) return 'encounters';
  if (t === 'PPR-01') return 'diagnoses';
  if (t === 'OMP-01' || t === 'OMP-11') return 'prescriptions';
  if (t === 'OMP-02' || t === 'OMP-12') return 'injections';
  if (/^OML-\d{2}$/.test(t)) return 'labs';
  if (/^OMG-\d{2}$/.test(t)) return 'imaging';
  if (t === 'OMD' || /^OMD-\d{2}$/.test(t)) return 'diet';
  return undefined;
}
