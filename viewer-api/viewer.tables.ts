/** Tables of users, devices, sessions and the audit trail. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ViewerTables {}
