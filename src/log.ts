/**
 * The one logging module (docs/architecture.md, Conventions): a winston wrapper that hands out child loggers
 * by namespace (`forward:db`, `session:abc`). Three output formats:
 * - `text`: human-readable, coloured when stdout is a TTY, with timestamps;
 * - `plain`: one line per event, no colours and no timestamps (journald adds its own);
 * - `json`: one JSON object per line.
 * `auto` picks `plain` under systemd (`JOURNAL_STREAM` or `INVOCATION_ID` set), `text` otherwise.
 *
 * Every message and metadata value passes through {@link redact}, so a TokenValue, credential or signed
 * URL query string can never reach a log line even if a caller forgets.
 */
import winston from 'winston';
import type Transport from 'winston-transport';

/** Severity levels, most severe first (winston npm levels subset). */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
/** Output format; see the module comment. */
export type LogFormat = 'auto' | 'text' | 'plain' | 'json';

/** Structured context attached to a log line. Values are redacted before output. */
export type LogMeta = Record<string, unknown>;

/** The logger interface every module receives (injected, never imported as a global). */
export interface Logger {
  error(message: string, meta?: LogMeta): void;
  warn(message: string, meta?: LogMeta): void;
  info(message: string, meta?: LogMeta): void;
  debug(message: string, meta?: LogMeta): void;
  /** True when `debug` lines are written; guard expensive debug formatting with it. */
  readonly debugEnabled: boolean;
  /** A logger whose lines carry `namespace` (joined with `:` to the parent's) and extra context. */
  child(namespace: string, meta?: LogMeta): Logger;
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default `info`. */
  level?: LogLevel;
  /** Output format. Default `auto`. */
  format?: LogFormat;
  /** Where lines go. Default: stderr (stdout stays free for command output such as the demo). */
  transports?: Transport[];
  /** Environment used by `auto` detection. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Whether the output is a TTY (colours for `text`). Default `process.stderr.isTTY`. */
  isTTY?: boolean;
}

const SECRET_KEY = /token|secret|password|credential|authorization|signature|session-?token/i;
const SECRET_IN_TEXT: [RegExp, string][] = [
  // JSON or key=value forms of the bearer token and AWS credentials.
  [
    /("?(?:TokenValue|tokenValue|SecretAccessKey|secretAccessKey|SessionToken|sessionToken)"?\s*[:=]\s*"?)[^",\s}]+/g,
    '$1[REDACTED]',
  ],
  // Query strings of ws(s)/http(s) URLs may carry presigned parameters: keep only scheme, host and path.
  [/((?:wss?|https?):\/\/[^\s?"']+)\?[^\s"']*/g, '$1?[REDACTED]'],
  // AWS access key ids.
  [/\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g, '[REDACTED-KEY-ID]'],
  // SigV4 headers and query parameters, and credentials-file lines, in free text.
  [
    /((?:X-Amz-Security-Token|X-Amz-Signature|X-Amz-Credential|aws_secret_access_key|aws_session_token|Signature)"?\s*[:=]\s*"?)[^",\s&}]+/gi,
    '$1[REDACTED]',
  ],
];

/** Nesting depth below which {@link redact} stops descending and drops the value. */
const REDACT_MAX_DEPTH = 4;

/** Remove secrets from a log string (tokens, credentials, URL query strings). */
export function redactText(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_IN_TEXT) out = out.replace(pattern, replacement);
  return out;
}

/** Deep-redact a metadata value: secret-named keys are replaced, strings are scrubbed. */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (value === null || typeof value !== 'object') return value;
  // Deeper values are dropped rather than passed through unscrubbed.
  if (depth > REDACT_MAX_DEPTH) return '[TRUNCATED]';
  if (value instanceof Error) return redactText(value.message);
  if (Buffer.isBuffer(value)) return `<${value.length} bytes>`;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) ? '[REDACTED]' : redact(v, depth + 1);
  }
  return out;
}

/** Pick the concrete format for `auto`. */
export function resolveLogFormat(format: LogFormat, env: NodeJS.ProcessEnv): Exclude<LogFormat, 'auto'> {
  if (format !== 'auto') return format;
  return env['JOURNAL_STREAM'] || env['INVOCATION_ID'] ? 'plain' : 'text';
}

/** Fields left out of text/plain lines (kept in JSON). */
const TEXT_HIDDEN_FIELDS = new Set(['timestamp', 'forward', 'session']);

function lineFormat(kind: Exclude<LogFormat, 'auto'>, colours: boolean): winston.Logform.Format {
  const { combine, timestamp, printf, colorize, json } = winston.format;
  const describe = (info: winston.Logform.TransformableInfo): string => {
    const { level, message, namespace, ...rest } = info;
    const extra = Object.entries(rest)
      // forward/session are JSON fields; text lines already name them in the namespace and message.
      .filter(([k]) => typeof k === 'string' && !TEXT_HIDDEN_FIELDS.has(k))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    const ns = typeof namespace === 'string' && namespace ? `[${namespace}] ` : '';
    return `${level}: ${ns}${String(message)}${extra ? ` ${extra}` : ''}`;
  };
  if (kind === 'json') return combine(timestamp(), json());
  if (kind === 'plain') return printf(describe);
  const base = colours ? [colorize({ level: true })] : [];
  return combine(
    ...base,
    timestamp({ format: 'HH:mm:ss.SSS' }),
    printf((info) => `${String(info['timestamp'])} ${describe(info)}`),
  );
}

class WinstonLogger implements Logger {
  constructor(
    private readonly target: winston.Logger,
    private readonly namespace: string,
    private readonly context: LogMeta,
  ) {}

  get debugEnabled(): boolean {
    return this.target.isDebugEnabled();
  }

  private write(level: LogLevel, message: string, meta?: LogMeta): void {
    if (!this.target.isLevelEnabled(level)) return;
    const fields = redact({ ...this.context, ...meta }) as LogMeta;
    this.target.log({ level, message: redactText(message), namespace: this.namespace, ...fields });
  }

  error(message: string, meta?: LogMeta): void {
    this.write('error', message, meta);
  }
  warn(message: string, meta?: LogMeta): void {
    this.write('warn', message, meta);
  }
  info(message: string, meta?: LogMeta): void {
    this.write('info', message, meta);
  }
  debug(message: string, meta?: LogMeta): void {
    this.write('debug', message, meta);
  }
  child(namespace: string, meta?: LogMeta): Logger {
    const ns = this.namespace ? `${this.namespace}:${namespace}` : namespace;
    return new WinstonLogger(this.target, ns, { ...this.context, ...meta });
  }
}

/** Create the root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const env = options.env ?? process.env;
  const kind = resolveLogFormat(options.format ?? 'auto', env);
  const colours = kind === 'text' && (options.isTTY ?? Boolean(process.stderr.isTTY));
  const target = winston.createLogger({
    level: options.level ?? 'info',
    format: lineFormat(kind, colours),
    transports: options.transports ?? [
      new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] }),
    ],
  });
  return new WinstonLogger(target, '', {});
}

/** A logger that writes nothing (tests, library use). */
export const silentLogger: Logger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  debugEnabled: false,
  child: () => silentLogger,
};

/** Most distinct failure texts a {@link RepeatFilter} remembers before it starts over (a bound, our own). */
export const REPEAT_FILTER_MAX_ENTRIES = 256;

/**
 * Remembers failure texts already written at warn/error, so the same failure (an expired SSO login seen
 * at start and again by every connection) is written once; repeats go to debug. Bounded: past
 * {@link REPEAT_FILTER_MAX_ENTRIES} distinct texts it forgets them all and starts over.
 */
export class RepeatFilter {
  private readonly seen = new Set<string>();

  /** True the first time `text` is offered (write it at warn/error), false for repeats. */
  first(text: string): boolean {
    if (this.seen.has(text)) return false;
    if (this.seen.size >= REPEAT_FILTER_MAX_ENTRIES) this.seen.clear();
    this.seen.add(text);
    return true;
  }

  /** Forget everything: after a success, the next failure is news again. */
  clear(): void {
    this.seen.clear();
  }
}

/**
 * A logger whose every line (its children's too) carries `key: value()` as a field, read when the line is
 * written: a session's logger is created before StartSession names it, yet its lines carry the SessionId.
 * An undefined value adds nothing.
 */
export function withLateField(logger: Logger, key: string, value: () => string | undefined): Logger {
  const meta = (extra?: LogMeta): LogMeta | undefined => {
    const v = value();
    return v === undefined ? extra : { [key]: v, ...extra };
  };
  return {
    error: (message, extra) => logger.error(message, meta(extra)),
    warn: (message, extra) => logger.warn(message, meta(extra)),
    info: (message, extra) => logger.info(message, meta(extra)),
    debug: (message, extra) => logger.debug(message, meta(extra)),
    get debugEnabled() {
      return logger.debugEnabled;
    },
    child: (namespace, extra) => withLateField(logger.child(namespace, extra), key, value),
  };
}
