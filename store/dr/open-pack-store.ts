import type { Db } from '../db.js';
import { LocalPackStore, type PackStore } from '../backup/pack-store.js';
import { S3PackStore } from './s3-pack-store.js';
import { DbPackKeys, EncryptedPackStore } from './encrypted-pack-store.js';
import { ConfiguredKeyProvider, type MasterKey } from './key-provider.js';

/** What choosing a pack store needs from the configuration. */
export interface PackStoreSettings {
  packDir: string;
  s3:
    | {
        endpoint: string | undefined;
        bucket: string;
        region: string;
        credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
        prefix: string;
        objectLock: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number } | undefined;
      }
    | undefined;
  masterKeys: MasterKey[] | undefined;
}

/**
 * The exchange's pack store: an S3-compatible bucket when one is configured, else the local
 * folder; wrapped in encryption at rest when master keys are configured (the data keys are
 * kept in this database's pack_key table).
 */
export function openPackStore(settings: PackStoreSettings, db: Db): PackStore {
  const base: PackStore = settings.s3
    ? new S3PackStore({
        endpoint: settings.s3.endpoint,
        bucket: settings.s3.bucket,
        region: settings.s3.region,
        credentials: settings.s3.credentials,
        prefix: settings.s3.prefix,
        objectLock: settings.s3.objectLock,
      })
    : new LocalPackStore(settings.packDir);
  if (!settings.masterKeys?.length) return base;
  return new EncryptedPackStore(base, new DbPackKeys(db), new ConfiguredKeyProvider(settings.masterKeys));
}
