/**
 * A change bus for the agent tests: every observable change pokes it, and waiters re-check their
 * condition on each poke (with a deadline), so tests wait on events rather than sleeps.
 */
import { EventEmitter } from 'node:events';

const bus = new EventEmitter();
bus.setMaxListeners(0);

/** Signal that something observable changed. */
export const poke = (): void => void bus.emit('change');

/** Resolve with `check()`'s value once it is neither undefined nor false; reject after `ms`. */
export function waitFor<T>(check: () => T | undefined | false, what: string, ms = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const attempt = (): boolean => {
      const value = check();
      if (value === undefined || value === false) return false;
      bus.off('change', attempt);
      clearTimeout(timer);
      resolve(value);
      return true;
    };
    const timer = setTimeout(() => {
      bus.off('change', attempt);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    if (!attempt()) bus.on('change', attempt);
  });
}
