/**
 * The guards around calls to AI services: a circuit breaker and a token bucket per service, and
 * the retry schedule. Plain classes over an injected clock; one instance per process (the
 * composition root owns them), so behind several worker processes each keeps its own state.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitSettings {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** How long an open circuit refuses calls before it lets one trial call through. */
  coolDownMs: number;
}

export const DEFAULT_CIRCUIT: CircuitSettings = { failureThreshold: 5, coolDownMs: 30_000 };

/**
 * closed -> (N consecutive failures) -> open -> (cool-down elapsed) -> half-open: exactly one
 * trial call is let through; its success closes the circuit, its failure opens it again for
 * another cool-down. Calls refused while open never reach the service (that is the point: a
 * failing service is not hammered, and callers get an answer at once instead of a timeout).
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private opened = false;
  private trialInFlight = false;

  constructor(
    private readonly settings: CircuitSettings,
    private readonly clock: () => number,
  ) {}

  get state(): CircuitState {
    if (!this.opened) return 'closed';
    return this.clock() - this.openedAt >= this.settings.coolDownMs ? 'half-open' : 'open';
  }

  /** Milliseconds until an open circuit lets a trial call through (0 when not open). */
  retryInMs(): number {
    if (!this.opened) return 0;
    return Math.max(0, this.openedAt + this.settings.coolDownMs - this.clock());
  }

  /**
   * Asks to make one call. Returns false when the circuit refuses it. A true answer in the
   * half-open state reserves the single trial call: the caller must report its outcome.
   */
  tryAcquire(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open' || this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  onSuccess(): void {
    this.failures = 0;
    this.opened = false;
    this.trialInFlight = false;
  }

  onFailure(): void {
    this.trialInFlight = false;
    if (this.opened) {
      // The trial call failed: another full cool-down.
      this.openedAt = this.clock();
      return;
    }
    this.failures++;
    if (this.failures >= this.settings.failureThreshold) {
      this.opened = true;
      this.openedAt = this.clock();
    }
  }

  /** An outcome that says nothing about the service's health (a 4xx we caused, a cancelled call). */
  onNeutral(): void {
    this.trialInFlight = false;
  }
}

/**
 * A token bucket: `perMinute` tokens a minute, up to `burst` at once. Calls beyond it wait for
 * a token instead of failing (the queue, not the clinician, absorbs a burst).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perMinute: number,
    private readonly burst: number,
    private readonly clock: () => number,
  ) {
    if (!(perMinute > 0) || !(burst >= 1)) throw new Error('a rate limit needs a positive rate and a burst of at least 1');
    this.tokens = burst;
    this.last = clock();
  }

  private refill(): void {
    const now = this.clock();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perMinute) / 60_000);
    this.last = now;
  }

  /** Takes a token now if there is one; otherwise says how long until there will be. */
  take(): { ok: true } | { ok: false; waitMs: number } {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, waitMs: Math.ceil(((1 - this.tokens) * 60_000) / this.perMinute) };
  }
}

export interface RetrySettings {
  /** Attempts in all, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetrySettings = { attempts: 4, baseDelayMs: 500, maxDelayMs: 10_000 };

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): a uniform delay in [0, min(max, base * 2^n)], so that retries of many requests do
 * not arrive together. A server's Retry-After wins when it asks for longer.
 */
export function backoffDelay(retry: number, s: RetrySettings, random: () => number = Math.random, retryAfterMs?: number): number {
  const cap = Math.min(s.maxDelayMs, s.baseDelayMs * 2 ** retry);
  const jittered = Math.floor(random() * cap);
  return retryAfterMs !== undefined ? Math.max(jittered, Math.min(retryAfterMs, s.maxDelayMs)) : jittered;
}
