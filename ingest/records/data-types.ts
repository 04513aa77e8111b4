import type { Category } from './types.js';

/**
 * The SS-MIX2 data types (standardized storage spec Ver.1.2 table 1-1), the HL7 message each
 * may carry (MSH-9 code^trigger) and the fields its care date comes from, in order of preference.
 * Which field sets the care date is not confirmed for every type (docs/ssmix2.md); the first
 * field is the one the spec names where known (RDE: ORC-9, OUL: SPM-17, RAS: RXA-3), the others
 * are what real exports use instead, so a folder date matching any of them is not a finding.
 */
export interface DataTypeSpec {
  category: Category;
  messages: readonly string[];
  careDateFields: readonly string[];
  /** Data kept in the `-` date folder (no care date). */
  undated?: boolean;
  /** Carries an order number (ORC-2 / OBR-2) that should match the file name's. */
  ordered?: boolean;
}

const ADT_EVENT = ['EVN-6', 'EVN-2'];

export const DATA_TYPES: Readonly<Record<string, DataTypeSpec>> = {
  'ADT-00': { category: 'patient', messages: ['ADT^A08', 'ADT^A23'], careDateFields: [], undated: true },
  'ADT-01': { category: 'encounter', messages: ['ADT^A54', 'ADT^A55'], careDateFields: ADT_EVENT },
  'ADT-12': { category: 'encounter', messages: ['ADT^A04'], careDateFields: ['PV1-44', ...ADT_EVENT] },
  'ADT-21': { category: 'encounter', messages: ['ADT^A14', 'ADT^A27'], careDateFields: ['PV2-8', 'PV1-44', ...ADT_EVENT] },
  'ADT-22': { category: 'encounter', messages: ['ADT^A01', 'ADT^A11'], careDateFields: ['PV1-44', ...ADT_EVENT] },
  'ADT-31': { category: 'encounter', messages: ['ADT^A21', 'ADT^A52'], careDateFields: ADT_EVENT },
  'ADT-32': { category: 'encounter', messages: ['ADT^A22', 'ADT^A53'], careDateFields: ADT_EVENT },
  'ADT-41': { category: 'encounter', messages: ['ADT^A15', 'ADT^A26'], careDateFields: ADT_EVENT },
  'ADT-42': { category: 'encounter', messages: ['ADT^A02', 'ADT^A12'], careDateFields: ADT_EVENT },
  'ADT-51': { category: 'encounter', messages: ['ADT^A16', 'ADT^A25'], careDateFields: ['PV2-9', ...ADT_EVENT] },
  'ADT-52': { category: 'encounter', messages: ['ADT^A03', 'ADT^A13'], careDateFields: ['PV1-45', ...ADT_EVENT] },
  'ADT-61': { category: 'allergy', messages: ['ADT^A60'], careDateFields: [], undated: true },
  'PPR-01': { category: 'diagnosis', messages: ['PPR^ZD1'], careDateFields: [], undated: true },
  OMD: { category: 'diet', messages: ['OMD^O03'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMP-01': { category: 'prescription', messages: ['RDE^O11'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMP-02': { category: 'injection', messages: ['RDE^O11'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMP-11': { category: 'prescription', messages: ['RAS^O17'], careDateFields: ['RXA-3', 'ORC-9'], ordered: true },
  'OMP-12': { category: 'injection', messages: ['RAS^O17'], careDateFields: ['RXA-3', 'ORC-9'], ordered: true },
  'OML-01': { category: 'lab', messages: ['OML^O33'], careDateFields: ['ORC-9', 'SPM-17'], ordered: true },
  'OML-11': { category: 'lab', messages: ['OUL^R22'], careDateFields: ['SPM-17', 'OBR-7', 'ORC-9'], ordered: true },
  'OMG-01': { category: 'radiology', messages: ['OMG^O19'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMG-02': { category: 'endoscopy', messages: ['OMG^O19'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMG-03': { category: 'physiology', messages: ['OMG^O19'], careDateFields: ['ORC-9', 'TQ1-7'], ordered: true },
  'OMG-11': { category: 'radiology', messages: ['OMI^Z23'], careDateFields: ['OBR-7', 'ORC-9'], ordered: true },
  'OMG-12': { category: 'endoscopy', messages: ['OMI^Z23'], careDateFields: ['OBR-7', 'ORC-9'], ordered: true },
  'OMG-13': { category: 'physiology', messages: ['ORU^R01'], careDateFields: ['OBR-7', 'OBR-22'], ordered: true },
};

/** The category of a data type; extended-storage folders (anything else) hold documents. */
export function categoryOf(dataType: string): Category {
  return DATA_TYPES[dataType]?.category ?? 'document';
}

/** Extended-storage data-type folders such as `L-OBSERVATIONS^OBSERVATIONS^99ZL01`. */
export function isStandardDataType(dataType: string): boolean {
  return dataType in DATA_TYPES;
}
