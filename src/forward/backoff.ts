/**
 * Exponential backoff with full jitter (spec §2.4, §10.3), and a retry loop bounded in time.
 */

/** Backoff parameters. */
export interface BackoffPolicy {
  /** First delay ceiling, ms. */
  initialMs: number;
  /** Largest delay ceiling, ms. */
  maxMs: number;
  /** Growth factor per attempt. */
  factor: number;
}

/** ResumeSession reconnects (spec §10.3): 250 ms, ×2, capped at 10 s. */
export const RECONNECT_BACKOFF: BackoffPolicy = { initialMs: 250, maxMs: 10_000, factor: 2 };
/**
 * A resumed data channel must stay up this long before the resume episode ends, ms (our default): until
 * then a new loss continues the same backoff and `resumeBudgetMs`, so a link that is accepted and closed
 * again and again (a rejected token, a flapping path) backs off to {@link RECONNECT_BACKOFF}'s ceiling and
 * gives up when the budget is spent, instead of restarting at full speed after each brief success.
 * Matches `SESSION_HEALTHY_AFTER_MS` of the forward's restart backoff.
 */
export const LINK_STABLE_AFTER_MS = 10_000;

/** Throttling / 5xx on the SSM API (spec §2.4): ~200 ms, ×2, capped at 5 s. */
export const API_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 5_000, factor: 2 };

/** Delay before retry number `attempt` (0-based): uniform in [0, min(max, initial·factor^attempt)]. */
export function backoffDelayMs(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * policy.factor ** attempt);
  return Math.floor(random() * ceiling);
}

/** A promise that resolves after `ms` unless `signal` aborts first (then it rejects with the abort reason). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Settle like `promise`, or reject with `onTimeout()` after `ms` (or with the abort reason when `signal`
 * aborts), whichever comes first. The underlying operation is not cancelled; its late result is ignored.
 */
export function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => finish(() => reject(onTimeout())), ms);
    const onAbort = (): void => finish(() => reject(signal?.reason));
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    if (signal?.aborted) {
      finish(() => reject(signal.reason));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => finish(() => resolve(value)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}

/**
 * Settle like `promise`, or reject with the abort reason as soon as `signal` aborts. The underlying
 * operation is not cancelled; the caller decides what to do with its late result.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

/**
 * `promise`, or undefined once `ms` pass or `signal` aborts, whichever comes first; never rejects because of
 * the wait itself. The stops of forwards, keepers and SOCKS listeners bound each of their waits with it.
 */
export async function boundedWait<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  ms = Infinity,
): Promise<T | undefined> {
  if (signal.aborted) return undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        onAbort = () => resolve(undefined);
        signal.addEventListener('abort', onAbort, { once: true });
        if (Number.isFinite(ms)) timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
