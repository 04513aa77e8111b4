/** Tables of the backup store (facilities, blobs, packs, trees, snapshots, uploads). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface BackupTables {}
