/**
 * A fixed-window counter per key (a source address), kept in this process's memory.
 *
 * Enough for the embedded mode and for one API process. Behind several API processes each keeps
 * its own count, so the effective limit is multiplied by the number of processes: a shared store
 * (Redis INCR with EXPIRE) would be the next step there. Windows are fixed, so a burst at a
 * window's edge may reach twice the limit within one window length.
 */
export interface RateDecision {
  allowed: boolean;
  /** Seconds until the window ends (for Retry-After). */
  retryAfterSeconds: number;
  /** True for the first refusal of a window: worth one audit entry, the rest are not. */
  firstRefusal: boolean;
}

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly clock: () => number,
    /** Keys kept at most; old windows are dropped first (memory bound against address floods). */
    private readonly maxKeys = 100_000,
  ) {}

  take(key: string): RateDecision {
    const now = this.clock();
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) {
      if (!w && this.windows.size >= this.maxKeys) this.sweep(now);
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count++;
    const retryAfterSeconds = Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
    return { allowed: w.count <= this.limit, retryAfterSeconds, firstRefusal: w.count === this.limit + 1 };
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
