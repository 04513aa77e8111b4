/** Tables of patient identity links and consent. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ConsentTables {}
