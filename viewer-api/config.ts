import path from 'node:path';
import { z } from 'zod';

/**
 * The exchange's configuration, read once from the environment at start and passed down.
 * Nothing else in the code reads process.env.
 */
export interface Config {
  /** Folder of the embedded mode: PGlite database, local packs, demo data. */
  dataDir: string;
  /** PostgreSQL URL; when absent the embedded PGlite database in dataDir is used. */
  databaseUrl: string | undefined;
  /** Redis URL; when absent jobs run in-process. */
  redisUrl: string | undefined;
  /** Folder that holds the pack objects of the local pack store. */
  packDir: string;
  host: string;
  port: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

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
  REDIS_URL: urlOf(['redis:', 'rediss:']).optional(),
  HOST: z.string().trim().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
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
    redisUrl: e.REDIS_URL,
    packDir: path.resolve(e.HAKOBUNE_PACK_DIR ?? path.join(dataDir, 'packs')),
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
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
    ...overrides,
  };
}
