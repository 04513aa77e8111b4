import path from 'node:path';
import { z } from 'zod';
import { parseMasterKeys, type MasterKey } from '../store/dr/key-provider.js';
import { DEFAULT_RETENTION, parseRetentionPolicy, type RetentionPolicy } from '../store/retention/retention-policy.js';

/**
 * The exchange's configuration, read once from the environment at start and passed down.
 * Nothing else in the code reads process.env.
 */
export interface Config {
  /** Folder of the embedded mode: PGlite database, local packs, demo data. */
  dataDir: string;
  /** PostgreSQL URL; when absent the embedded PGlite database in dataDir is used. */
  databaseUrl: string | undefined;
  /** Most PostgreSQL connections the exchange's main pool opens (DATABASE_POOL_SIZE); default in store/db.ts. */
  databasePoolSize?: number;
  /** Redis URL; when absent jobs run in-process. */
  redisUrl: string | undefined;
  /** Folder that holds the pack objects of the local pack store. */
  packDir: string;
  /** The only folder under which restores may be written on the exchange (HAKOBUNE_RESTORE_ROOT); none = path restores refused. */
  restoreRoot?: string;
  host: string;
  port: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** PEM certificate and key; when set the server speaks HTTPS only, TLS 1.2 or later. */
  tls: { certFile: string; keyFile: string } | undefined;
  /** Login, session and lockout settings of the viewer API. */
  auth: AuthSettings;
  /** S3-compatible bucket for pack objects; when set, packs go there instead of packDir. */
  s3: S3Settings | undefined;
  /** Master keys for encryption at rest of pack objects (the first is current); unset: packs are stored in clear. */
  masterKeys: MasterKey[] | undefined;
  /** Generations kept, the delete lock and the keys of the delete privilege. */
  retention: RetentionSettings;
  /** Scheduled restore drills and sampled verification of the store. */
  drills: DrillSettings;
  /**
   * Heap limit (MB) of the matcher's worker thread (HAKOBUNE_MATCH_HEAP_MB): a region too big
   * for it fails the run with a clear message instead of growing the process. Unset: Node's default.
   */
  matchHeapMb?: number;
}

export interface RetentionSettings {
  policy: RetentionPolicy;
  /** Nothing younger than this many days is deleted, by anyone. */
  lockDays: number;
  /** Ed25519 public key (PEM) that verifies signed delete requests; unset: nothing can be deleted. */
  deletePublicKeyFile: string | undefined;
  /** The operator's Ed25519 private key (PEM) the command line signs deletes with. */
  deleteKeyFile: string | undefined;
}

export interface DrillSettings {
  /** Minutes between restore drills; 0: no scheduled drill. */
  intervalMinutes: number;
  /** Minutes between sampled verifications of the store; 0: none scheduled. */
  verifyIntervalMinutes: number;
  /** Fraction of the packs a scheduled verification reads back (0..1]. */
  verifySubset: number;
  /** Scratch folder drills restore into (emptied after each drill). */
  scratchDir: string;
}

export const DEFAULT_DELETE_LOCK_DAYS = 30;

export interface S3Settings {
  /** Endpoint of an S3-compatible service; unset: AWS S3 of the region. */
  endpoint: string | undefined;
  bucket: string;
  region: string;
  /** Static credentials; unset: the AWS SDK's default chain. */
  credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** Key prefix inside the bucket. */
  prefix: string;
  /** Object Lock retention given to every new pack (bucket created with Object Lock). */
  objectLock: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number } | undefined;
}

export interface AuthSettings {
  /** Absolute lifetime of a session. */
  sessionMaxMinutes: number;
  /** A session unused for this long ends. */
  sessionIdleMinutes: number;
  /** Failed logins in a row after which an account is locked. */
  maxFailedLogins: number;
  /** How long a locked account stays locked. */
  lockoutMinutes: number;
  /** Login attempts allowed per source address per minute. */
  loginAttemptsPerMinute: number;
  /** File of the 32-byte key that encrypts TOTP secrets at rest (created on first use). */
  secretKeyFile: string;
  /** JSON file overriding the role matrix; unset: the built-in matrix. */
  rolePolicyFile: string | undefined;
}

export const DEFAULT_AUTH: Omit<AuthSettings, 'secretKeyFile' | 'rolePolicyFile'> = {
  sessionMaxMinutes: 8 * 60,
  sessionIdleMinutes: 15,
  maxFailedLogins: 5,
  lockoutMinutes: 15,
  loginAttemptsPerMinute: 30,
};

const urlOf = (protocols: string[]) =>
  z
    .string()
    .trim()
    .min(1)
    .refine((v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    }, `must be a URL starting with ${protocols.map((p) => p + '//').join(' or ')}`);

const EnvSchema = z.object({
  HAKOBUNE_DATA_DIR: z.string().trim().min(1).default('./data'),
  HAKOBUNE_PACK_DIR: z.string().trim().min(1).optional(),
  DATABASE_URL: urlOf(['postgres:', 'postgresql:']).optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(1000).optional(),
  REDIS_URL: urlOf(['redis:', 'rediss:']).optional(),
  HAKOBUNE_RESTORE_ROOT: z.string().min(1).optional(),
  HAKOBUNE_MATCH_HEAP_MB: z.coerce.number().int().min(16).max(1024 * 1024).optional(),
  HOST: z.string().trim().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TLS_CERT_FILE: z.string().trim().min(1).optional(),
  TLS_KEY_FILE: z.string().trim().min(1).optional(),
  SESSION_MAX_MINUTES: z.coerce.number().int().min(1).max(24 * 60).default(DEFAULT_AUTH.sessionMaxMinutes),
  SESSION_IDLE_MINUTES: z.coerce.number().int().min(1).max(24 * 60).default(DEFAULT_AUTH.sessionIdleMinutes),
  LOGIN_MAX_FAILURES: z.coerce.number().int().min(1).max(100).default(DEFAULT_AUTH.maxFailedLogins),
  LOGIN_LOCKOUT_MINUTES: z.coerce.number().int().min(1).max(24 * 60).default(DEFAULT_AUTH.lockoutMinutes),
  LOGIN_RATE_PER_MINUTE: z.coerce.number().int().min(1).max(100_000).default(DEFAULT_AUTH.loginAttemptsPerMinute),
  HAKOBUNE_SECRET_KEY_FILE: z.string().trim().min(1).optional(),
  ROLE_POLICY_FILE: z.string().trim().min(1).optional(),
  HAKOBUNE_S3_ENDPOINT: urlOf(['http:', 'https:']).optional(),
  HAKOBUNE_S3_BUCKET: z.string().trim().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name (3-63 lower-case letters, digits, "." or "-")').optional(),
  HAKOBUNE_S3_REGION: z.string().trim().min(1).default('us-east-1'),
  HAKOBUNE_S3_ACCESS_KEY_ID: z.string().trim().min(1).optional(),
  HAKOBUNE_S3_SECRET_ACCESS_KEY: z.string().trim().min(1).optional(),
  HAKOBUNE_S3_PREFIX: z.string().trim().regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_.-]+)*$/, 'must be a key prefix like site-a/packs').optional(),
  HAKOBUNE_S3_LOCK_MODE: z.enum(['GOVERNANCE', 'COMPLIANCE']).optional(),
  HAKOBUNE_S3_LOCK_DAYS: z.coerce.number().int().min(1).max(36_500).optional(),
  HAKOBUNE_MASTER_KEYS: z.string().optional().transform((v, ctx) => {
    if (v === undefined) return undefined;
    try {
      return parseMasterKeys(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  }),
  HAKOBUNE_RETENTION: z.string().default(DEFAULT_RETENTION).transform((v, ctx) => {
    try {
      return parseRetentionPolicy(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  }),
  HAKOBUNE_DELETE_LOCK_DAYS: z.coerce.number().int().min(1).max(36_500).default(DEFAULT_DELETE_LOCK_DAYS),
  HAKOBUNE_DELETE_PUBLIC_KEY_FILE: z.string().trim().min(1).optional(),
  HAKOBUNE_DELETE_KEY_FILE: z.string().trim().min(1).optional(),
  HAKOBUNE_DRILL_INTERVAL_MINUTES: z.coerce.number().int().min(0).max(525_600).default(0),
  HAKOBUNE_VERIFY_INTERVAL_MINUTES: z.coerce.number().int().min(0).max(525_600).default(0),
  HAKOBUNE_VERIFY_SUBSET: z.string().trim().regex(/^(100|[1-9]?[0-9](\.[0-9]+)?)%$/, 'must be a percentage like 5%').default('5%'),
  HAKOBUNE_DRILL_DIR: z.string().trim().min(1).optional(),
}).refine((e) => (e.TLS_CERT_FILE === undefined) === (e.TLS_KEY_FILE === undefined), {
  path: ['TLS_CERT_FILE'],
  message: 'TLS_CERT_FILE and TLS_KEY_FILE must be set together',
}).refine((e) => (e.HAKOBUNE_S3_ACCESS_KEY_ID === undefined) === (e.HAKOBUNE_S3_SECRET_ACCESS_KEY === undefined), {
  path: ['HAKOBUNE_S3_ACCESS_KEY_ID'],
  message: 'HAKOBUNE_S3_ACCESS_KEY_ID and HAKOBUNE_S3_SECRET_ACCESS_KEY must be set together',
}).refine((e) => e.HAKOBUNE_S3_BUCKET !== undefined || (e.HAKOBUNE_S3_ENDPOINT === undefined && e.HAKOBUNE_S3_PREFIX === undefined && e.HAKOBUNE_S3_LOCK_MODE === undefined), {
  path: ['HAKOBUNE_S3_BUCKET'],
  message: 'the S3 settings need HAKOBUNE_S3_BUCKET',
}).refine((e) => (e.HAKOBUNE_S3_LOCK_MODE === undefined) === (e.HAKOBUNE_S3_LOCK_DAYS === undefined), {
  path: ['HAKOBUNE_S3_LOCK_MODE'],
  message: 'HAKOBUNE_S3_LOCK_MODE and HAKOBUNE_S3_LOCK_DAYS must be set together',
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings count as unset, so `DATABASE_URL= npm start` means "embedded".
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.HAKOBUNE_DATA_DIR);
  return {
    dataDir,
    databaseUrl: e.DATABASE_URL,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    redisUrl: e.REDIS_URL,
    packDir: path.resolve(e.HAKOBUNE_PACK_DIR ?? path.join(dataDir, 'packs')),
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
    tls: e.TLS_CERT_FILE && e.TLS_KEY_FILE
      ? { certFile: path.resolve(e.TLS_CERT_FILE), keyFile: path.resolve(e.TLS_KEY_FILE) }
      : undefined,
    auth: {
      sessionMaxMinutes: e.SESSION_MAX_MINUTES,
      sessionIdleMinutes: e.SESSION_IDLE_MINUTES,
      maxFailedLogins: e.LOGIN_MAX_FAILURES,
      lockoutMinutes: e.LOGIN_LOCKOUT_MINUTES,
      loginAttemptsPerMinute: e.LOGIN_RATE_PER_MINUTE,
      secretKeyFile: path.resolve(e.HAKOBUNE_SECRET_KEY_FILE ?? path.join(dataDir, 'secret.key')),
      rolePolicyFile: e.ROLE_POLICY_FILE ? path.resolve(e.ROLE_POLICY_FILE) : undefined,
    },
    s3: e.HAKOBUNE_S3_BUCKET
      ? {
          endpoint: e.HAKOBUNE_S3_ENDPOINT,
          bucket: e.HAKOBUNE_S3_BUCKET,
          region: e.HAKOBUNE_S3_REGION,
          credentials:
            e.HAKOBUNE_S3_ACCESS_KEY_ID && e.HAKOBUNE_S3_SECRET_ACCESS_KEY
              ? { accessKeyId: e.HAKOBUNE_S3_ACCESS_KEY_ID, secretAccessKey: e.HAKOBUNE_S3_SECRET_ACCESS_KEY }
              : undefined,
          prefix: e.HAKOBUNE_S3_PREFIX ?? '',
          objectLock: e.HAKOBUNE_S3_LOCK_MODE && e.HAKOBUNE_S3_LOCK_DAYS ? { mode: e.HAKOBUNE_S3_LOCK_MODE, days: e.HAKOBUNE_S3_LOCK_DAYS } : undefined,
        }
      : undefined,
    masterKeys: e.HAKOBUNE_MASTER_KEYS,
    restoreRoot: e.HAKOBUNE_RESTORE_ROOT ? path.resolve(e.HAKOBUNE_RESTORE_ROOT) : undefined,
    matchHeapMb: e.HAKOBUNE_MATCH_HEAP_MB,
    retention: {
      policy: e.HAKOBUNE_RETENTION,
      lockDays: e.HAKOBUNE_DELETE_LOCK_DAYS,
      deletePublicKeyFile: e.HAKOBUNE_DELETE_PUBLIC_KEY_FILE ? path.resolve(e.HAKOBUNE_DELETE_PUBLIC_KEY_FILE) : undefined,
      deleteKeyFile: e.HAKOBUNE_DELETE_KEY_FILE ? path.resolve(e.HAKOBUNE_DELETE_KEY_FILE) : undefined,
    },
    drills: {
      intervalMinutes: e.HAKOBUNE_DRILL_INTERVAL_MINUTES,
      verifyIntervalMinutes: e.HAKOBUNE_VERIFY_INTERVAL_MINUTES,
      verifySubset: Math.max(Number(e.HAKOBUNE_VERIFY_SUBSET.slice(0, -1)) / 100, 0.0001),
      scratchDir: path.resolve(e.HAKOBUNE_DRILL_DIR ?? path.join(dataDir, 'drills')),
    },
  };
}

/** A configuration for tests: a private data folder, port 0, quiet logs. */
export function testConfig(dataDir: string, overrides: Partial<Config> = {}): Config {
  return {
    dataDir,
    databaseUrl: undefined,
    redisUrl: undefined,
    packDir: path.join(dataDir, 'packs'),
    host: '127.0.0.1',
    port: 0,
    logLevel: 'silent',
    tls: undefined,
    auth: { ...DEFAULT_AUTH, secretKeyFile: path.join(dataDir, 'secret.key'), rolePolicyFile: undefined },
    s3: undefined,
    masterKeys: undefined,
    retention: { policy: parseRetentionPolicy(DEFAULT_RETENTION), lockDays: DEFAULT_DELETE_LOCK_DAYS, deletePublicKeyFile: undefined, deleteKeyFile: undefined },
    drills: { intervalMinutes: 0, verifyIntervalMinutes: 0, verifySubset: 0.05, scratchDir: path.join(dataDir, 'drills') },
    ...overrides,
  };
}
