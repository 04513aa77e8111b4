import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Fixed-window counters per key (a source address): in this process's memory, or in Redis shared
 * by every exchange process (`hakobune serve --workers N`, or several machines), so that the
 * limit holds for the exchange as a whole and not once per process. Windows are fixed, so a burst
 * at a window's edge may reach twice the limit within one window length.
 */
export interface RateDecision {
  allowed: boolean;
  /** Seconds until the window ends (for Retry-After). */
  retryAfterSeconds: number;
  /** True for the first refusal of a window: worth one audit entry, the rest are not. */
  firstRefusal: boolean;
}

export interface RateLimit {
  take(key: string): Promise<RateDecision>;
}

function decision(count: number, limit: number, msLeft: number): RateDecision {
  return { allowed: count <= limit, retryAfterSeconds: Math.max(1, Math.ceil(msLeft / 1000)), firstRefusal: count === limit + 1 };
}

/** Counts in this process's memory: enough for the embedded mode and for one API process. */
export class RateLimiter implements RateLimit {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly clock: () => number,
    /** Keys kept at most; old windows are dropped first (memory bound against address floods). */
    private readonly maxKeys = 100_000,
  ) {}

  takeNow(key: string): RateDecision {
    const now = this.clock();
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) {
      if (!w && this.windows.size >= this.maxKeys) this.sweep(now);
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count++;
    return decision(w.count, this.limit, w.start + this.windowMs - now);
  }

  async take(key: string): Promise<RateDecision> {
    return this.takeNow(key);
  }

  private sweep(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
    // Still full of live windows: drop the oldest (Map keeps insertion order).
    while (this.windows.size >= this.maxKeys) {
      const oldest = this.windows.keys().next().value as string;
      this.windows.delete(oldest);
    }
  }
}

/** INCR the window's counter, start its expiry on the first hit; answers [count, ms left]. */
const TAKE_SCRIPT = `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); t = tonumber(ARGV[1]) end
return {c, t}`;

/**
 * Counts in Redis (one key per limiter and source address, expiring with its window), shared by
 * every process of the exchange. When Redis cannot be reached the process falls back to its own
 * count for that call (logged): the limit then holds per process, as without Redis, rather than
 * refusing every login or letting every attempt through.
 */
export class SharedRateLimiter implements RateLimit {
  private readonly local: RateLimiter;

  constructor(
    private readonly redis: Redis,
    /** Key prefix, e.g. `hakobune:rate:login`. */
    private readonly prefix: string,
    private readonly limit: number,
    private readonly windowMs: number,
    clock: () => number,
    private readonly log?: Logger,
  ) {
    this.local = new RateLimiter(limit, windowMs, clock);
  }

  async take(key: string): Promise<RateDecision> {
    try {
      const [count, msLeft] = (await this.redis.eval(TAKE_SCRIPT, 1, `${this.prefix}:${key}`, String(this.windowMs))) as [number, number];
      return decision(Number(count), this.limit, Number(msLeft));
    } catch (err) {
      this.log?.warn({ err }, 'rate limit store unreachable; counting in this process');
      return this.local.takeNow(key);
    }
  }
}
