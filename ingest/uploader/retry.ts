import { UploadHttpError, UploadNetworkError } from './transport.js';

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  maxAttempts: number;
  /** First delay; each retry doubles it, up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** No new attempt starts once this much time has passed since the first. */
  maxTotalMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 500, maxDelayMs: 30_000, maxTotalMs: 10 * 60_000 };

export interface RetryDeps {
  sleep(ms: number): Promise<void>;
  now(): number;
  random(): number;
  onRetry?(info: { step: string; attempt: number; delayMs: number; error: Error }): void;
}

/** Network errors, 5xx and 429 are transient (PROTOCOL.md: "4xx are final"). */
export function isTransient(e: unknown): boolean {
  if (e instanceof UploadNetworkError) return true;
  if (e instanceof UploadHttpError) return e.status >= 500 || e.status === 429;
  return false;
}

/** Thrown when a transient failure outlasted the policy; `cause` is the last error. */
export class RetriesExhaustedError extends Error {
  override name = 'RetriesExhaustedError';
  constructor(
    readonly step: string,
    readonly attempts: number,
    readonly last: Error,
  ) {
    super(`${last.message} (gave up after ${attempts} attempt${attempts === 1 ? '' : 's'})`);
  }
}

/**
 * Runs `fn` until it succeeds, a final (non-transient) error is thrown, or the policy is spent.
 * Delays grow exponentially with full jitter (a random delay up to the cap), so a thousand
 * facilities that lost the exchange at once do not all come back in the same second. A
 * server's Retry-After is honoured when it asks for longer.
 * `beforeRetry` may settle the outcome after a lost answer (e.g. the batch did arrive).
 */
export async function withRetry<T>(
  step: string,
  fn: () => Promise<T>,
  policy: RetryPolicy,
  deps: RetryDeps,
  beforeRetry?: () => Promise<{ settled: T } | null>,
): Promise<T> {
  const start = deps.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!isTransient(e)) throw e;
      const err = e as Error;
      const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      let delay = Math.round(deps.random() * cap);
      if (e instanceof UploadHttpError && e.retryAfterMs !== null) delay = Math.max(delay, Math.min(e.retryAfterMs, policy.maxDelayMs));
      if (attempt >= policy.maxAttempts || deps.now() - start + delay > policy.maxTotalMs) {
        throw new RetriesExhaustedError(step, attempt, err);
      }
      deps.onRetry?.({ step, attempt, delayMs: delay, error: err });
      await deps.sleep(delay);
      if (beforeRetry) {
        try {
          const s = await beforeRetry();
          if (s) return s.settled;
        } catch (probe) {
          if (!isTransient(probe)) throw probe;
          // The probe failed the same way: go round again.
        }
      }
    }
  }
}
