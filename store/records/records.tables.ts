/** Tables of the record index (clinical records and data quality). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RecordTables {}
