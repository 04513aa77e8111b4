/**
 * Typed clinical records read from SS-MIX2 messages: plain data, no behaviour. One stored file
 * (one HL7 message, or one extended-storage document) gives one record. Codes keep the coding
 * system name as the message wrote it (HOT9, JC10, MDCDX2, ...); FHIR mapping turns those into
 * URIs. Dates are ISO 8601 strings (see ingest/hl7/datetime.ts), care dates YYYY-MM-DD.
 */

/** SS-MIX2 condition flag (file name field 7): current, superseded (history), cancelled. */
export type ConditionFlag = '1' | '2' | '0';

export type Category =
  | 'patient'
  | 'encounter'
  | 'diagnosis'
  | 'allergy'
  | 'prescription'
  | 'injection'
  | 'lab'
  | 'radiology'
  | 'endoscopy'
  | 'physiology'
  | 'diet'
  | 'document';

/** Where a record came from: enough to find the exact stored bytes again. */
export interface RecordSource {
  facilityId: string;
  /** The facility's local patient ID (the storage path's). */
  patientId: string;
  dataType: string;
  /** YYYY-MM-DD, or null for the `-` folder. */
  careDate: string | null;
  orderNo: string;
  /** File-name timestamp YYYYMMDDHHMMSSFFF as written. */
  timestamp: string;
  department: string | null;
  condition: ConditionFlag;
  sha256: string;
  path: string;
}

export interface Coded {
  code: string;
  display?: string;
  /** HL7 table / coding system name as written (HOT9, JC10, HL70127, ...). */
  system?: string;
  /** The alternate coding of a CWE (components 4-6), e.g. the local code beside JLAC10. */
  alternate?: { code: string; display?: string; system?: string };
}

export interface Quantity {
  value: number;
  unit?: Coded;
}

export interface Person {
  id?: string;
  family?: string;
  given?: string;
}

export interface NamePair {
  family: string;
  given: string;
}

export interface PatientRecord {
  kind: 'patient';
  /** PID-3 as written. */
  identifier: string;
  /** PID-5 repetitions: `^^^^^L^I` is kanji (ideographic), `^^^^^L^P` kana (phonetic). */
  name: { kanji?: NamePair; kana?: NamePair; other?: NamePair };
  birthDate?: string;
  sex?: 'male' | 'female' | 'other' | 'unknown';
  address?: { postalCode?: string; country?: string; text?: string; use?: string };
  phones: { use?: string; number: string }[];
  insurance: {
    plan?: Coded;
    insurerNumber?: string;
    symbol?: string;
    number?: string;
    relationship?: Coded;
    start?: string;
    end?: string;
  }[];
  /** Height, weight, blood type and similar OBX of ADT-00. */
  observations: ObservationValue[];
  /** AL1 allergies carried by ADT-00. */
  allergies: AllergyEntry[];
  /** ADT^A23: the patient's data was deleted at the facility. */
  deleted: boolean;
  lastUpdated?: string;
}

export interface Location {
  ward?: string;
  room?: string;
  bed?: string;
}

export interface EncounterRecord {
  kind: 'encounter';
  /** MSH-9 trigger, e.g. A01. */
  trigger: string;
  event: 'visit' | 'admission-planned' | 'admission' | 'leave' | 'return' | 'transfer-planned' | 'transfer' | 'discharge-planned' | 'discharge' | 'attending-change';
  /** A cancel trigger (A11, A12, A13, A27, ...). */
  cancelled: boolean;
  patientClass?: 'inpatient' | 'outpatient' | 'emergency' | 'other';
  location?: Location;
  priorLocation?: Location;
  attending?: Person;
  department?: string;
  admittedAt?: string;
  dischargedAt?: string;
  occurredAt?: string;
}

export interface DiagnosisEntry {
  action?: string;
  recordedAt?: string;
  code: Coded;
  icd10?: Coded;
  problemId?: string;
  onset?: string;
  resolvedAt?: string;
  outcome?: Coded;
  primary?: boolean;
  /** Free text name of the problem as the doctor wrote it. */
  text?: string;
  /** ZPR: JAHIS modifier codes and the byomei exchange code. */
  modifiers: Coded[];
  setting?: string;
}

export interface DiagnosisRecord {
  kind: 'diagnosis';
  diagnoses: DiagnosisEntry[];
  orderer?: Person;
  department?: Coded;
}

export interface AllergyEntry {
  type?: Coded;
  allergen: Coded;
  severity?: Coded;
  reaction?: string;
  action?: string;
  onset?: string;
  onsetText?: string;
}

export interface AllergyRecord {
  kind: 'allergy';
  allergies: AllergyEntry[];
}

export interface OrderHeader {
  control?: string;
  orderNo?: string;
  fillerNo?: string;
  group?: string;
  orderedAt?: string;
  enterer?: Person;
  orderer?: Person;
  department?: Coded;
  patientClass?: string;
}

export interface MedicationOrderItem {
  order: OrderHeader;
  medication: Coded;
  /** Injection mixtures: RXC components (base and additives). */
  components: { role: string; medication: Coded; amount?: Quantity }[];
  doseMin?: number;
  doseMax?: number;
  doseUnit?: Coded;
  dosageForm?: Coded;
  instruction?: string;
  dispenseAmount?: number;
  dispenseUnit?: Coded;
  totalDailyDose?: Quantity;
  category: Coded[];
  rate?: Quantity;
  frequency?: Coded;
  days?: number;
  start?: string;
  end?: string;
  route?: Coded;
  site?: Coded;
  device?: Coded;
  prescriptionNo?: string;
}

export interface MedicationOrderRecord {
  kind: 'medication-order';
  form: 'prescription' | 'injection';
  items: MedicationOrderItem[];
}

export interface AdministrationItem {
  order: OrderHeader;
  startedAt?: string;
  endedAt?: string;
  medication: Coded;
  amount?: number;
  unit?: Coded;
  note?: string;
  performer?: Person;
  location?: Location;
  rate?: string;
  completion?: string;
  recordedAt?: string;
  route?: Coded;
  device?: Coded;
}

export interface MedicationAdministrationRecord {
  kind: 'medication-administration';
  form: 'prescription' | 'injection';
  items: AdministrationItem[];
}

export interface ObservationValue {
  setId?: string;
  valueType: string;
  code: Coded;
  subId?: string;
  /** OBX-5 as text (first repetition, escapes resolved). */
  text: string;
  /** For NM values: the number. */
  number?: number;
  /** For CWE/CE values. */
  coded?: Coded;
  unit?: Coded;
  referenceRange?: string;
  low?: number;
  high?: number;
  abnormalFlags: string[];
  status?: string;
  observedAt?: string;
}

export interface Specimen {
  id?: string;
  type?: Coded;
  collectedAt?: string;
}

export interface ServiceGroup {
  order: OrderHeader;
  service: Coded;
  observedAt?: string;
  reportedAt?: string;
  resultStatus?: string;
  parentOrderNo?: string;
  specimen?: Specimen;
  observations: ObservationValue[];
  /** DICOM study instance UIDs (IPC-3) for imaging. */
  studyUids: string[];
}

export interface LabRecord {
  kind: 'lab';
  phase: 'order' | 'result';
  groups: ServiceGroup[];
}

export interface ExamRecord {
  kind: 'exam';
  modality: 'radiology' | 'endoscopy' | 'physiology';
  phase: 'order' | 'result';
  groups: ServiceGroup[];
}

export interface DietRecord {
  kind: 'diet';
  order: OrderHeader;
  frequency?: Coded;
  start?: string;
  priority?: Coded;
  diets: { type?: string; code: Coded; instructions?: string }[];
}

export interface Attachment {
  name: string;
  contentType: string;
  size: number;
  sha256: string;
}

export interface DocumentRecord {
  kind: 'document';
  title?: string;
  /** LOINC document type: 18842-5 discharge summary, 57133-1 referral letter, ... */
  code?: Coded;
  author?: Person & { organization?: string };
  date?: string;
  patientIdentifier?: string;
  text: string;
  attachments: Attachment[];
}

export type ClinicalContent =
  | PatientRecord
  | EncounterRecord
  | DiagnosisRecord
  | AllergyRecord
  | MedicationOrderRecord
  | MedicationAdministrationRecord
  | LabRecord
  | ExamRecord
  | DietRecord
  | DocumentRecord;

export interface ClinicalRecord {
  source: RecordSource;
  category: Category;
  /** Patient demographics as the message's PID carried them (every HL7 message has one). */
  subject?: { identifier: string; name: PatientRecord['name']; birthDate?: string; sex?: PatientRecord['sex'] };
  content: ClinicalContent;
}
