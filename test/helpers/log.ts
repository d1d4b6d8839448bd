/**
 * A Logger that records every line (level, namespace, message, fields) for assertions, and can wait for a
 * line to appear. Lines below `level` are not recorded, as with the real logger.
 */
import type { LogLevel, LogMeta, Logger } from '../../src/log.js';

/** One recorded line. */
export interface LoggedLine {
  level: LogLevel;
  namespace: string;
  message: string;
  meta: LogMeta;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** A recording logger and its lines. */
export interface CapturedLog {
  logger: Logger;
  lines: LoggedLine[];
  /** Lines at `level` whose message matches `pattern`. */
  matching(level: LogLevel | undefined, pattern: RegExp): LoggedLine[];
  /** Resolves with the first line (already recorded or future) matching, or rejects after `ms`. */
  waitFor(level: LogLevel | undefined, pattern: RegExp, ms: number): Promise<LoggedLine>;
}

/** Create a recording logger that keeps lines at `level` and above. */
export function captureLog(level: LogLevel = 'debug'): CapturedLog {
  const lines: LoggedLine[] = [];
  const waiters: { level: LogLevel | undefined; pattern: RegExp; resolve: (line: LoggedLine) => void }[] = [];
  const fits = (line: LoggedLine, lvl: LogLevel | undefined, pattern: RegExp): boolean =>
    (lvl === undefined || line.level === lvl) && pattern.test(line.message);
  const make = (namespace: string, context: LogMeta): Logger => {
    const write =
      (lvl: LogLevel) =>
      (message: string, meta?: LogMeta): void => {
        if (RANK[lvl] > RANK[level]) return;
        const line: LoggedLine = { level: lvl, namespace, message, meta: { ...context, ...meta } };
        lines.push(line);
        for (let i = waiters.length - 1; i >= 0; i--) {
          const w = waiters[i];
          if (w && fits(line, w.level, w.pattern)) {
            waiters.splice(i, 1);
            w.resolve(line);
          }
        }
      };
    return {
      error: write('error'),
      warn: write('warn'),
      info: write('info'),
      debug: write('debug'),
      debugEnabled: RANK[level] >= RANK.debug,
      child: (ns, meta) => make(namespace ? `${namespace}:${ns}` : ns, { ...context, ...meta }),
    };
  };
  return {
    logger: make('', {}),
    lines,
    matching: (lvl, pattern) => lines.filter((line) => fits(line, lvl, pattern)),
    waitFor: (lvl, pattern, ms) => {
      const found = lines.find((line) => fits(line, lvl, pattern));
      if (found) return Promise.resolve(found);
      return new Promise<LoggedLine>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`timed out after ${ms} ms waiting for a log line ${String(pattern)}`)),
          ms,
        );
        waiters.push({
          level: lvl,
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
  };
}
