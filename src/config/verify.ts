/**
 * Validate raw configuration (parsed YAML, or the CLI's flags mapped onto the same shape) once, at the edge
 * (see docs/architecture.md, Conventions). {@link verifyConfig} lists every problem with its field path and,
 * when a {@link ConfigSource} is given, where the value came from (`config.yaml:7:17`, `--port`), applies the
 * documented defaults of `types.ts`, and returns a deep-frozen {@link DaemonConfig}.
 *
 * Raw shape (see `config.example.yaml`):
 * ```yaml
 * defaults: { target, pick, region, profile, endpoint, ecsEndpoint, allowInsecureEndpoint, documentName, parameters, bind, reason, eager, idleStopMs, sessions, keepAlive, halfCloseLingerMs }
 * log: { level, format }
 * tuning: { <every TuningConfig key> }
 * forwards: [ { name, target, pick, remotePort, host, localPort, bind, region, profile, endpoint, ecsEndpoint, allowInsecureEndpoint, documentName, parameters, reason, eager, idleStopMs, sessions, keepAlive, halfCloseLingerMs } ]
 * controlSocket: /absolute/path.sock
 * metrics: { listen: "127.0.0.1:9464" }
 * ```
 */
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import type { LogFormat, LogLevel } from '../log.js';
import { isLoopbackHost } from '../targets/destination.js';
import { INSTANCE_ID_PATTERN, TARGET_FORMS, parseTarget } from '../targets/spec.js';
import { parseAllowRule } from '../socks/allow.js';
import {
  DOCUMENT_LOCAL,
  DOCUMENT_REMOTE_HOST,
  defaultForward,
  defaultLog,
  defaultSocks,
  defaultTuning,
} from './types.js';
import type {
  DaemonConfig,
  ForwardConfig,
  LogConfig,
  MetricsConfig,
  SocksConfig,
  TargetPick,
  TuningConfig,
} from './types.js';

/** A path into the raw configuration, e.g. `['forwards', 1, 'remotePort']`. */
export type ConfigPath = readonly (string | number)[];

/** Tells where a raw value came from, so problems can point at it. */
export interface ConfigSource {
  /**
   * Describe the origin of the value (or, with `what: 'key'`, of the mapping key) at `path`, e.g.
   * `at config.yaml:7:17` or `from --port`. Undefined when unknown. For a path that does not exist
   * (a missing field) the nearest existing parent may be described.
   */
  locate(path: ConfigPath, what: 'value' | 'key'): string | undefined;
}

/** A {@link ConfigError} (`PF_ERR_CONFIG`) carrying every problem found, one line each. */
export class ConfigProblemsError extends ConfigError {
  /** Each problem as `<path>: <what is wrong> (got <value>) <where>`. */
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    const head =
      problems.length === 1
        ? 'invalid configuration: '
        : `invalid configuration (${problems.length} problems): `;
    super('PF_ERR_CONFIG', head + problems.join('; '));
    this.problems = Object.freeze([...problems]);
  }
}

/**
 * Most sessions one forward may stripe across (our limit): each is a session worker on the instance and
 * a StartSession call, and 16 × the agent's ~1 MB/s already exceeds what one client machine usually needs.
 */
export const MAX_SESSIONS = 16;

/** Largest delay Node timers accept, ms (2^31 − 1; larger values fire immediately). */
export const MAX_TIMER_MS = 2_147_483_647;
/** Managed node ids: EC2 instances (`i-`) and hybrid managed nodes (`mi-`). */
export const TARGET_PATTERN = INSTANCE_ID_PATTERN;
/**
 * SSM document names: 3–128 letters, digits and `_ - .`, or a document ARN (SSM API reference,
 * `StartSession.DocumentName`: `^([\w\.\-:\/]{3,128})$`).
 */
export const DOCUMENT_NAME_PATTERN = /^[A-Za-z0-9_.:/-]{3,128}$/;
/** Names of document parameters (SSM document schema 1.0: letters, digits, `_ - .`), 1–128 characters. */
export const PARAMETER_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,128}$/;
/** Longest value of a custom document parameter, characters (our own bound). */
export const PARAMETER_VALUE_MAX_CHARS = 4096;
/** Parameters the forward itself sets; `parameters:` may not override them. */
const RESERVED_PARAMETERS: Readonly<Record<string, string>> = {
  portNumber: 'remotePort',
  localPortNumber: 'localPort',
  host: 'host',
};
const PICKS: readonly TargetPick[] = ['one', 'any'];
/** Bounds of StartSession `Reason`, characters (SSM API reference). */
export const REASON_MAX_CHARS = 256;
/** Upper bound of a forward name, characters (our own limit: it goes into every log line). */
export const NAME_MAX_CHARS = 100;

const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];
const LOG_FORMATS: readonly LogFormat[] = ['auto', 'text', 'plain', 'json'];

/** Render a path as `forwards[1].remotePort`. */
export function formatPath(path: ConfigPath): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(top level)';
}

/** Short rendering of an offending value for messages. */
function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (value !== null && typeof value === 'object') return 'a mapping';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Levenshtein distance, for did-you-mean hints. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] ?? 0;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(above + 1, (row[j - 1] ?? 0) + 1, diagonal + cost);
      diagonal = above;
    }
  }
  return row[b.length] ?? 0;
}

/** Aliases people reach for, mapped to the one accepted spelling. */
const KNOWN_MISSPELLINGS: Record<string, string> = {
  port: 'remotePort',
  remote: 'remotePort',
  instance: 'target',
  instanceid: 'target',
  address: 'bind',
  listen: 'bind',
  remotehost: 'host',
  document: 'documentName',
  doc: 'documentName',
  params: 'parameters',
  parameter: 'parameters',
  ecs: 'ecsEndpoint',
};

/** The closest known key to `key`, if close enough to be a likely typo. */
export function didYouMean(key: string, known: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');
  const wanted = norm(key);
  const alias = KNOWN_MISSPELLINGS[wanted];
  if (alias && known.includes(alias)) return alias;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = distance(wanted, norm(candidate));
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(wanted.length / 3)) ? best : undefined;
}

/** Checks one value; returns what is wrong (without path or origin) or undefined when fine. */
type Check = (value: unknown) => string | undefined;

function integer(min: number, max: number, unit = ''): Check {
  return (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
      ? undefined
      : `must be an integer ${min}-${max}${unit}`;
}

const boolean: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');

function text(min: number, max: number, pattern?: RegExp, hint = ''): Check {
  return (v) => {
    if (typeof v !== 'string' || v.length < min || v.length > max) {
      return `must be a string of ${min}-${max} characters${hint}`;
    }
    return pattern && !pattern.test(v) ? `is not valid${hint}` : undefined;
  };
}

const checkTarget: Check = (v) => {
  if (typeof v !== 'string') return `must be a target: ${TARGET_FORMS}`;
  const parsed = parseTarget(v);
  return typeof parsed === 'string' ? parsed : undefined;
};

const checkPick: Check = (v) =>
  PICKS.includes(v as TargetPick)
    ? undefined
    : 'must be one (several matches are an error) or any (pick one online match at random)';

const checkDocumentName: Check = (v) =>
  typeof v === 'string' && DOCUMENT_NAME_PATTERN.test(v)
    ? undefined
    : 'must be an SSM document name (3-128 letters, digits, _ - .) or ARN, e.g. Acme-PortForwardingToRemoteHost';

const checkParameters: Check = (v) => {
  if (!isMapping(v)) return 'must be a mapping of parameter name: string value, e.g. { team: payments }';
  for (const [key, value] of Object.entries(v)) {
    const reserved = RESERVED_PARAMETERS[key];
    if (reserved !== undefined)
      return `${key} is set from the forward's ${reserved}; set ${reserved} instead`;
    if (!PARAMETER_NAME_PATTERN.test(key))
      return `parameter name ${JSON.stringify(key)} is not valid (1-128 letters, digits, _ - .)`;
    if (typeof value !== 'string')
      return `parameter ${key} must be a string (quote it in YAML, e.g. ${key}: "${String(value)}")`;
    if (value.length > PARAMETER_VALUE_MAX_CHARS)
      return `parameter ${key} is longer than ${PARAMETER_VALUE_MAX_CHARS} characters`;
  }
  return undefined;
};

const checkBind: Check = (v) =>
  typeof v === 'string' && (isIP(v) !== 0 || v === 'localhost')
    ? undefined
    : 'must be an IP address such as 127.0.0.1, ::1 or 0.0.0.0';

const checkEndpoint: Check = (v) => {
  if (typeof v === 'string') {
    try {
      const url = new URL(v);
      if (url.protocol === 'http:' || url.protocol === 'https:') return undefined;
    } catch {
      // fall through to the message
    }
  }
  return 'must be an http(s) URL such as https://ssm.eu-west-1.amazonaws.com or http://127.0.0.1:8080';
};

/** Checks of the fields a forward (and, for most, `defaults`) may carry. */
const FORWARD_CHECKS = {
  name: text(1, NAME_MAX_CHARS, /^[A-Za-z0-9][A-Za-z0-9._:@/-]*$/, ' (letters, digits and . _ : @ / -)'),
  target: checkTarget,
  pick: checkPick,
  remotePort: integer(1, 65535),
  host: text(1, 253, /^[A-Za-z0-9._:%[\]-]+$/, ' (a DNS name or IP address)'),
  localPort: integer(0, 65535, ' (0 = any free port)'),
  bind: checkBind,
  region: text(1, 32, /^[a-z0-9]+(-[a-z0-9]+)*$/, ', a region name such as eu-west-1'),
  profile: text(1, 128, /^\S+$/, ' without spaces'),
  endpoint: checkEndpoint,
  ecsEndpoint: checkEndpoint,
  documentName: checkDocumentName,
  parameters: checkParameters,
  reason: text(1, REASON_MAX_CHARS),
  eager: boolean,
  idleStopMs: integer(0, MAX_TIMER_MS, ' ms (0 = never)'),
  sessions: integer(1, MAX_SESSIONS, ' (sessions to stripe connections across)'),
  keepAlive: boolean,
  halfCloseLingerMs: integer(0, MAX_TIMER_MS, ' ms (0 = FIN at once)'),
  allowInsecureEndpoint: boolean,
} satisfies Record<keyof ForwardConfig, Check>;

type ForwardKey = keyof typeof FORWARD_CHECKS;
const FORWARD_KEYS = Object.keys(FORWARD_CHECKS) as ForwardKey[];
/** Keys `defaults` may carry: every forward field that makes sense shared. */
const DEFAULT_KEYS: readonly ForwardKey[] = [
  'target',
  'pick',
  'region',
  'profile',
  'endpoint',
  'ecsEndpoint',
  'documentName',
  'parameters',
  'bind',
  'reason',
  'eager',
  'idleStopMs',
  'sessions',
  'keepAlive',
  'halfCloseLingerMs',
  'allowInsecureEndpoint',
];

/** Bounds of every tuning knob (our own limits unless a spec section is cited in types.ts). */
const TUNING_CHECKS = {
  clientVersion: text(5, 32, /^\d+(\.\d+){2,3}$/, ', a dotted version such as 1.2.694.0'),
  sendWindowMessages: integer(1, 10_000),
  reorderLimitMessages: integer(1, 100_000),
  streamReceiveBufferBytes: integer(64 * 1024, 1024 ** 3, ' bytes'),
  sessionReceiveBufferBytes: integer(64 * 1024, 16 * 1024 ** 3, ' bytes'),
  streamBacklogLimitBytes: integer(64 * 1024, 1024 ** 4, ' bytes'),
  spillLimitBytes: integer(0, 1024 ** 4, ' bytes'),
  pingIntervalMs: integer(1, MAX_TIMER_MS, ' ms'),
  livenessTimeoutMs: integer(1, MAX_TIMER_MS, ' ms'),
  connectTimeoutMs: integer(1, MAX_TIMER_MS, ' ms'),
  handshakeTimeoutMs: integer(1, MAX_TIMER_MS, ' ms'),
  resumeBudgetMs: integer(1, MAX_TIMER_MS, ' ms'),
  drainGraceMs: integer(0, MAX_TIMER_MS, ' ms'),
  giveUpMs: integer(1, MAX_TIMER_MS, ' ms'),
  keepAliveIntervalMs: integer(1, MAX_TIMER_MS, ' ms'),
} satisfies Record<keyof TuningConfig, Check>;

const LOG_CHECKS = {
  level: (v: unknown) =>
    LOG_LEVELS.includes(v as LogLevel) ? undefined : `must be one of ${LOG_LEVELS.join(', ')}`,
  format: (v: unknown) =>
    LOG_FORMATS.includes(v as LogFormat) ? undefined : `must be one of ${LOG_FORMATS.join(', ')}`,
} satisfies Record<keyof LogConfig, Check>;

/**
 * Longest control-socket path, bytes: `sun_path` holds 108 bytes on Linux and 104 on macOS/BSD, each
 * with a terminating NUL (protocol limit of AF_UNIX).
 */
export const CONTROL_SOCKET_MAX_BYTES = 103;

const checkControlSocket: Check = (v) => {
  if (typeof v !== 'string' || !v.startsWith('/')) {
    return 'must be an absolute path such as /run/user/1000/pf-daemon/control.sock';
  }
  if (Buffer.byteLength(v) > CONTROL_SOCKET_MAX_BYTES) {
    return `must be at most ${CONTROL_SOCKET_MAX_BYTES} bytes long (a unix socket path limit); pick a shorter path`;
  }
  return undefined;
};

/** A listen address `host:port` split, host without IPv6 brackets. */
export interface HostPort {
  host: string;
  port: number;
}

/** Parse `127.0.0.1:9464`, `[::1]:9464` or `localhost:9464`; undefined when it is not one. */
export function parseHostPort(text: string): HostPort | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const host = match[1] ?? match[2] ?? '';
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  if (match[1] !== undefined ? isIP(host) !== 6 : isIP(host) !== 4 && host !== 'localhost') return undefined;
  return { host, port };
}

const METRICS_CHECKS = {
  listen: (v: unknown) =>
    typeof v === 'string' && parseHostPort(v)
      ? undefined
      : 'must be host:port with an IP address, e.g. 127.0.0.1:9464 or [::1]:9464',
} satisfies Record<keyof MetricsConfig, Check>;

const TOP_KEYS = ['defaults', 'log', 'tuning', 'forwards', 'socks', 'controlSocket', 'metrics'] as const;

/** Most distinct destinations one `socks:` entry may hold sessions to at once (our limit). */
export const MAX_SOCKS_SESSIONS = 256;
/** Longest RFC 1929 username or password, bytes (one length byte, RFC 1929 §2). */
export const SOCKS_CREDENTIAL_MAX_BYTES = 255;

const checkCredential: Check = (v) =>
  typeof v === 'string' && v.length > 0 && Buffer.byteLength(v) <= SOCKS_CREDENTIAL_MAX_BYTES
    ? undefined
    : `must be a string of 1-${SOCKS_CREDENTIAL_MAX_BYTES} bytes (RFC 1929)`;

const checkAllow: Check = (v) => {
  if (!Array.isArray(v) || v.length === 0) {
    return `must be a non-empty list of rules, e.g. [${'"10.0.0.0/8:5432", "*.internal:80,443"'}] ("*" allows everything)`;
  }
  for (const item of v) {
    if (typeof item !== 'string') return 'every rule must be a string such as 10.0.0.0/8:5432 or *.internal';
    const rule = parseAllowRule(item);
    if (typeof rule === 'string') return `rule ${JSON.stringify(item)}: ${rule}`;
  }
  return undefined;
};

/** Checks of the fields a `socks:` entry may carry. */
const SOCKS_CHECKS = {
  name: FORWARD_CHECKS.name,
  target: FORWARD_CHECKS.target,
  pick: FORWARD_CHECKS.pick,
  bind: FORWARD_CHECKS.bind,
  localPort: FORWARD_CHECKS.localPort,
  region: FORWARD_CHECKS.region,
  profile: FORWARD_CHECKS.profile,
  endpoint: FORWARD_CHECKS.endpoint,
  ecsEndpoint: FORWARD_CHECKS.ecsEndpoint,
  allow: checkAllow,
  maxSessions: integer(1, MAX_SOCKS_SESSIONS, ' (distinct destinations at once)'),
  username: checkCredential,
  password: checkCredential,
  reason: FORWARD_CHECKS.reason,
  idleStopMs: FORWARD_CHECKS.idleStopMs,
  keepAlive: boolean,
  halfCloseLingerMs: FORWARD_CHECKS.halfCloseLingerMs,
  allowInsecureEndpoint: boolean,
} satisfies Record<keyof SocksConfig, Check>;
type SocksKey = keyof typeof SOCKS_CHECKS;
/** `defaults` keys a `socks:` entry inherits (the AWS context and session behaviour; bind is not inherited). */
const SOCKS_DEFAULT_KEYS = [
  'target',
  'pick',
  'region',
  'profile',
  'endpoint',
  'ecsEndpoint',
  'reason',
  'idleStopMs',
  'keepAlive',
  'halfCloseLingerMs',
  'allowInsecureEndpoint',
] as const satisfies readonly (SocksKey & ForwardKey)[];

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Collects problems while walking the raw config. */
class Problems {
  readonly list: string[] = [];
  constructor(private readonly source: ConfigSource | undefined) {}

  add(path: ConfigPath, message: string, options: { got?: unknown; key?: boolean } = {}): void {
    const got = 'got' in options ? ` (got ${show(options.got)})` : '';
    const where = this.source?.locate(path, options.key ? 'key' : 'value');
    this.list.push(`${formatPath(path)}: ${message}${got}${where ? ` ${where}` : ''}`);
  }

  /** Run `check` on `value`; record a problem and return false when it fails. */
  check(path: ConfigPath, value: unknown, check: Check): boolean {
    const problem = check(value);
    if (problem === undefined) return true;
    this.add(path, problem, { got: value });
    return false;
  }

  /** Reject keys of `value` not in `known`, with a did-you-mean. */
  unknownKeys(path: ConfigPath, value: Record<string, unknown>, known: readonly string[]): void {
    for (const key of Object.keys(value)) {
      if (known.includes(key)) continue;
      const hint = didYouMean(key, known);
      this.add(
        [...path, key],
        hint ? `unknown key; did you mean "${hint}"?` : `unknown key (allowed: ${known.join(', ')})`,
        {
          key: true,
        },
      );
    }
  }

  /** The value at `path` must be a mapping (or absent); returns it, or {} after recording a problem. */
  mapping(path: ConfigPath, value: unknown): Record<string, unknown> {
    if (value === undefined || value === null) return {};
    if (isMapping(value)) return value;
    this.add(path, 'must be a mapping of key: value', { got: value });
    return {};
  }
}

/** Check each present key of a section against its table; returns the valid values. */
function section<K extends string>(
  problems: Problems,
  path: ConfigPath,
  raw: Record<string, unknown>,
  checks: Record<K, Check>,
  keys: readonly K[] = Object.keys(checks) as K[],
): Partial<Record<K, unknown>> {
  problems.unknownKeys(path, raw, keys);
  const out: Partial<Record<K, unknown>> = {};
  for (const key of keys) {
    const value = raw[key];
    if (value === undefined || value === null) continue;
    if (problems.check([...path, key], value, checks[key])) out[key] = value;
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Whether two listeners on the same port collide: same address, or one is a wildcard. */
function bindsCollide(a: string, b: string): boolean {
  const wildcard = (s: string): boolean => s === '0.0.0.0' || s === '::';
  const family = (s: string): number => (s === 'localhost' ? 4 : isIP(s));
  if (a === b) return true;
  if (a === '::' || b === '::') return true;
  return (wildcard(a) || wildcard(b)) && family(a) === family(b);
}

/**
 * Cross-field rules of `documentName`, `parameters` and `host`; records problems and returns false when
 * the forward breaks one. The two AWS documents take no parameters but their own (SSM rejects others).
 */
function documentFits(
  problems: Problems,
  path: ConfigPath,
  forward: ForwardConfig,
  own: Partial<Record<ForwardKey, unknown>>,
): boolean {
  // Point at the forward's own key, else at the `defaults` key the value came from.
  const at = (key: ForwardKey): ConfigPath => (own[key] !== undefined ? [...path, key] : ['defaults', key]);
  const docKey = own.documentName !== undefined || own.host === undefined ? 'documentName' : 'host';
  const before = problems.list.length;
  const doc = forward.documentName;
  const custom = doc !== undefined && doc !== DOCUMENT_LOCAL && doc !== DOCUMENT_REMOTE_HOST;
  if (forward.parameters !== undefined && Object.keys(forward.parameters).length > 0 && !custom) {
    problems.add(
      at('parameters'),
      `parameters need a custom documentName: ${doc ?? 'the AWS port-forwarding documents'} take only remotePort, localPort and host`,
    );
  }
  const remoteHost = forward.host !== undefined && !isLoopbackHost(forward.host);
  if (doc === DOCUMENT_LOCAL && remoteHost) {
    problems.add(
      at(docKey),
      `${DOCUMENT_LOCAL} reaches only the instance's own ports; drop documentName (host ${forward.host} then uses ${DOCUMENT_REMOTE_HOST}) or drop host`,
    );
  }
  if (doc === DOCUMENT_REMOTE_HOST && forward.host === undefined) {
    problems.add(
      at('documentName'),
      `${DOCUMENT_REMOTE_HOST} needs host: set host (e.g. host: db.internal) or drop documentName`,
    );
  }
  return problems.list.length === before;
}

/**
 * Cross-field rule: a plain-http endpoint to a host that is not loopback carries the session token in
 * clear, so it needs `allowInsecureEndpoint: true`. Returns the problem, or undefined.
 */
function insecureEndpoint(f: Pick<ForwardConfig, 'endpoint' | 'allowInsecureEndpoint'>): string | undefined {
  if (!f.endpoint || f.allowInsecureEndpoint) return undefined;
  const url = new URL(f.endpoint);
  if (url.protocol !== 'http:' || isLoopbackHost(url.hostname)) return undefined;
  return `${f.endpoint} is plain http to a host that is not loopback: the session token would travel in clear; use https://, or set allowInsecureEndpoint: true if the path is protected otherwise`;
}

/** Name used when a forward has none: `<localPort>:<host|localhost>:<remotePort>@<target>`. */
export function defaultForwardName(
  f: Pick<ForwardConfig, 'localPort' | 'host' | 'remotePort' | 'target'>,
): string {
  return `${f.localPort}:${f.host ?? 'localhost'}:${f.remotePort}@${f.target}`;
}

/**
 * Validate a raw configuration and resolve it.
 *
 * @param raw - parsed YAML (or the CLI's equivalent object); `null`/`undefined` counts as empty
 * @param source - optional locator so problems name `file:line:column` or the flag
 * @returns a deep-frozen config with every default applied
 * @throws ConfigProblemsError (`PF_ERR_CONFIG`) listing every problem found
 */
export function verifyConfig(raw: unknown, source?: ConfigSource): DaemonConfig {
  const problems = new Problems(source);
  const top = problems.mapping([], raw);
  problems.unknownKeys([], top, TOP_KEYS);

  const defaultsRaw = problems.mapping(['defaults'], top['defaults']);
  const defaults = section(problems, ['defaults'], defaultsRaw, FORWARD_CHECKS, DEFAULT_KEYS);
  const logRaw = section(problems, ['log'], problems.mapping(['log'], top['log']), LOG_CHECKS);
  const tuningRaw = section(problems, ['tuning'], problems.mapping(['tuning'], top['tuning']), TUNING_CHECKS);

  const tuning: TuningConfig = { ...defaultTuning, ...(tuningRaw as Partial<TuningConfig>) };
  if (tuning.livenessTimeoutMs <= tuning.pingIntervalMs) {
    problems.add(
      ['tuning', tuningRaw.livenessTimeoutMs !== undefined ? 'livenessTimeoutMs' : 'pingIntervalMs'],
      `livenessTimeoutMs (${tuning.livenessTimeoutMs}) must be greater than pingIntervalMs (${tuning.pingIntervalMs})`,
    );
  }
  if (tuning.sessionReceiveBufferBytes < tuning.streamReceiveBufferBytes) {
    problems.add(
      [
        'tuning',
        tuningRaw.sessionReceiveBufferBytes !== undefined
          ? 'sessionReceiveBufferBytes'
          : 'streamReceiveBufferBytes',
      ],
      `sessionReceiveBufferBytes (${tuning.sessionReceiveBufferBytes}) must be at least streamReceiveBufferBytes (${tuning.streamReceiveBufferBytes})`,
    );
  }
  if (tuning.streamBacklogLimitBytes < tuning.streamReceiveBufferBytes) {
    problems.add(
      [
        'tuning',
        tuningRaw.streamBacklogLimitBytes !== undefined
          ? 'streamBacklogLimitBytes'
          : 'streamReceiveBufferBytes',
      ],
      `streamBacklogLimitBytes (${tuning.streamBacklogLimitBytes}) must be at least streamReceiveBufferBytes (${tuning.streamReceiveBufferBytes})`,
    );
  }
  const log: LogConfig = { ...defaultLog, ...(logRaw as Partial<LogConfig>) };
  const metricsRaw = section(
    problems,
    ['metrics'],
    problems.mapping(['metrics'], top['metrics']),
    METRICS_CHECKS,
  );
  const controlSocket = top['controlSocket'];
  const controlSocketOk =
    controlSocket !== undefined &&
    controlSocket !== null &&
    problems.check(['controlSocket'], controlSocket, checkControlSocket);

  const resolved: { forward: ForwardConfig; index: number; named: boolean }[] = [];
  const rawForwards = top['forwards'];
  const rawSocks = top['socks'];
  const hasSocks = Array.isArray(rawSocks) && rawSocks.length > 0;
  if (
    !hasSocks &&
    (rawForwards === undefined ||
      rawForwards === null ||
      (Array.isArray(rawForwards) && rawForwards.length === 0))
  ) {
    problems.add(
      ['forwards'],
      'no forwards configured: add at least one under forwards: (or socks:), or pass --target and --port (or --forward, or -D 1080)',
    );
  } else if (rawForwards === undefined || rawForwards === null) {
    // Only socks: entries.
  } else if (!Array.isArray(rawForwards)) {
    problems.add(['forwards'], 'must be a list of forwards (each item starting with "- ")', {
      got: rawForwards,
    });
  } else {
    rawForwards.forEach((item: unknown, index) => {
      const path = ['forwards', index] as const;
      if (!isMapping(item)) {
        problems.add(
          path,
          'must be a mapping with at least remotePort (and target unless defaults.target is set)',
          {
            got: item,
          },
        );
        return;
      }
      const before = problems.list.length;
      const own = section(problems, path, item, FORWARD_CHECKS, FORWARD_KEYS);
      const merged = { ...defaults, ...own };
      // A defaults.target that failed its own check was reported already: one problem, not two.
      const badDefaultTarget = defaultsRaw['target'] !== undefined && defaultsRaw['target'] !== null;
      if (
        merged.target === undefined &&
        !badDefaultTarget &&
        (item['target'] === undefined || item['target'] === null)
      ) {
        problems.add(
          [...path, 'target'],
          'required: set target here or defaults.target in the config file, pass --target i-0123456789abcdef0, or end --forward with @i-0123456789abcdef0',
        );
      }
      if (item['remotePort'] === undefined || item['remotePort'] === null) {
        problems.add(
          [...path, 'remotePort'],
          'required: the port on the instance (or on host), e.g. remotePort: 5432',
        );
      }
      // A forward with a bad field is not resolved, so cross-field rules do not repeat its problem.
      if (problems.list.length > before) return;
      const remotePort = merged.remotePort as number;
      const forward: ForwardConfig = {
        name: '',
        target: merged.target as string,
        remotePort,
        localPort: (merged.localPort as number | undefined) ?? remotePort,
        bind: (merged.bind as string | undefined) ?? defaultForward.bind,
        eager: (merged.eager as boolean | undefined) ?? defaultForward.eager,
        idleStopMs: (merged.idleStopMs as number | undefined) ?? defaultForward.idleStopMs,
        sessions: (merged.sessions as number | undefined) ?? defaultForward.sessions,
        keepAlive: (merged.keepAlive as boolean | undefined) ?? defaultForward.keepAlive,
        halfCloseLingerMs:
          (merged.halfCloseLingerMs as number | undefined) ?? defaultForward.halfCloseLingerMs,
        allowInsecureEndpoint:
          (merged.allowInsecureEndpoint as boolean | undefined) ?? defaultForward.allowInsecureEndpoint,
      };
      // The local document already dials localhost on the instance and needs fewer IAM permissions.
      if (merged.host !== undefined && (merged.host !== 'localhost' || merged.documentName !== undefined))
        forward.host = merged.host as string;
      for (const key of ['region', 'profile', 'endpoint', 'ecsEndpoint', 'documentName', 'reason'] as const) {
        const value = merged[key];
        if (typeof value === 'string') forward[key] = value;
      }
      if (merged.pick !== undefined) forward.pick = merged.pick as TargetPick;
      if (merged.parameters !== undefined)
        forward.parameters = { ...(merged.parameters as Record<string, string>) };
      if (!documentFits(problems, path, forward, own)) return;
      forward.name = (merged.name as string | undefined) ?? defaultForwardName(forward);
      resolved.push({ forward, index, named: own.name !== undefined });
    });
  }

  // Cross-field rules over the forwards that resolved.
  const seenNames = new Map<string, number>();
  const seenListeners: { forward: ForwardConfig; index: number }[] = [];
  let reportedDefaultEndpoint = false;
  for (const { forward: f, index, named } of resolved) {
    const earlier = seenNames.get(f.name);
    if (earlier !== undefined) {
      problems.add(
        ['forwards', index, named ? 'name' : 'remotePort'],
        named
          ? `name "${f.name}" is already used by forwards[${earlier}]; names must be unique`
          : `same forward as forwards[${earlier}] ("${f.name}"); remove one or give them distinct name: values`,
      );
      continue;
    }
    seenNames.set(f.name, index);
    const insecure = insecureEndpoint(f);
    if (insecure) {
      const item: unknown = Array.isArray(rawForwards) ? rawForwards[index] : undefined;
      const own = isMapping(item) && item['endpoint'] !== undefined && item['endpoint'] !== null;
      // One problem for a shared defaults.endpoint, however many forwards inherit it.
      if (own) problems.add(['forwards', index, 'endpoint'], insecure);
      else if (!reportedDefaultEndpoint) {
        reportedDefaultEndpoint = true;
        problems.add(['defaults', 'endpoint'], insecure);
      }
    }
    if (f.localPort === 0) continue;
    const clash = seenListeners.find(
      (s) => s.forward.localPort === f.localPort && bindsCollide(s.forward.bind, f.bind),
    );
    if (clash) {
      problems.add(
        ['forwards', index, 'localPort'],
        `${f.bind}:${f.localPort} is already used by forwards[${clash.index}] ("${clash.forward.name}" on ${clash.forward.bind}); pick another localPort or bind`,
      );
    }
    seenListeners.push({ forward: f, index });
  }

  const socks = verifySocks(problems, defaults, rawSocks, seenNames, seenListeners);

  if (problems.list.length > 0) throw new ConfigProblemsError(problems.list);
  const config: DaemonConfig = { forwards: resolved.map((r) => r.forward), socks, log, tuning };
  if (controlSocketOk) config.controlSocket = controlSocket as string;
  if (typeof metricsRaw.listen === 'string') config.metrics = { listen: metricsRaw.listen };
  return deepFreeze(config);
}

/**
 * The `socks:` entries: each field checked, `defaults` applied (AWS context and session behaviour), and the
 * cross-field rules of exposure: a listener reachable from other machines must have an `allow` list and
 * `username`/`password` (an open SOCKS proxy into a VPC is worse than an open port forward: it reaches every
 * host the instance can). Names share one namespace with forwards; listeners must not collide with theirs.
 */
function verifySocks(
  problems: Problems,
  defaults: Partial<Record<ForwardKey, unknown>>,
  raw: unknown,
  seenNames: Map<string, number>,
  seenListeners: { forward: Pick<ForwardConfig, 'bind' | 'localPort' | 'name'>; index: number }[],
): SocksConfig[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    problems.add(['socks'], 'must be a list of socks entries (each item starting with "- ")', { got: raw });
    return [];
  }
  const out: SocksConfig[] = [];
  const names = new Map<string, number>();
  const listeners: { entry: SocksConfig; index: number }[] = [];
  raw.forEach((item: unknown, index) => {
    const path = ['socks', index] as const;
    if (!isMapping(item)) {
      problems.add(path, 'must be a mapping with at least target (unless defaults.target is set)', {
        got: item,
      });
      return;
    }
    const before = problems.list.length;
    const own = section(problems, path, item, SOCKS_CHECKS);
    const inherited: Partial<Record<SocksKey, unknown>> = {};
    for (const key of SOCKS_DEFAULT_KEYS) if (defaults[key] !== undefined) inherited[key] = defaults[key];
    const merged = { ...inherited, ...own };
    if (merged.target === undefined && (item['target'] === undefined || item['target'] === null)) {
      problems.add(
        [...path, 'target'],
        'required: set target here or defaults.target, pass --target i-0123456789abcdef0, or write -D 1080@i-0123456789abcdef0',
      );
    }
    if (problems.list.length > before) return;
    const bind = (merged.bind as string | undefined) ?? defaultSocks.bind;
    const exposed = !isLoopbackHost(bind);
    if (exposed && merged.allow === undefined) {
      problems.add(
        [...path, 'allow'],
        `required when bind (${bind}) is not loopback: list the destinations clients may reach, e.g. allow: ["10.0.0.0/8:5432", "*.internal:443"]`,
      );
    }
    if ((merged.username === undefined) !== (merged.password === undefined)) {
      problems.add(
        [...path, merged.username === undefined ? 'username' : 'password'],
        'username and password go together: set both (RFC 1929 username/password authentication) or neither',
      );
    } else if (exposed && merged.username === undefined) {
      problems.add(
        [...path, 'username'],
        `required when bind (${bind}) is not loopback: set username and password, or bind 127.0.0.1`,
      );
    }
    if (problems.list.length > before) return;
    const target = merged.target as string;
    const localPort = (merged.localPort as number | undefined) ?? defaultSocks.localPort;
    const entry: SocksConfig = {
      name: (merged.name as string | undefined) ?? `socks:${localPort}@${target}`,
      target,
      bind,
      localPort,
      allow: [...((merged.allow as string[] | undefined) ?? defaultSocks.loopbackAllow)],
      maxSessions: (merged.maxSessions as number | undefined) ?? defaultSocks.maxSessions,
      idleStopMs: (merged.idleStopMs as number | undefined) ?? defaultSocks.idleStopMs,
      keepAlive: (merged.keepAlive as boolean | undefined) ?? defaultSocks.keepAlive,
      halfCloseLingerMs: (merged.halfCloseLingerMs as number | undefined) ?? defaultSocks.halfCloseLingerMs,
      allowInsecureEndpoint:
        (merged.allowInsecureEndpoint as boolean | undefined) ?? defaultSocks.allowInsecureEndpoint,
    };
    for (const key of [
      'region',
      'profile',
      'endpoint',
      'ecsEndpoint',
      'reason',
      'username',
      'password',
    ] as const) {
      const value = merged[key];
      if (typeof value === 'string') entry[key] = value;
    }
    if (merged.pick !== undefined) entry.pick = merged.pick as TargetPick;
    const insecure = insecureEndpoint(entry);
    if (insecure)
      problems.add([...path, own.endpoint !== undefined ? 'endpoint' : 'allowInsecureEndpoint'], insecure);
    const earlier = names.get(entry.name);
    const forwardIndex = seenNames.get(entry.name);
    if (earlier !== undefined || forwardIndex !== undefined) {
      problems.add(
        [...path, 'name'],
        `name "${entry.name}" is already used by ${earlier !== undefined ? `socks[${earlier}]` : `forwards[${forwardIndex}]`}; names must be unique (set name:)`,
      );
      return;
    }
    names.set(entry.name, index);
    if (entry.localPort !== 0) {
      const clash =
        listeners.find(
          (l) => l.entry.localPort === entry.localPort && bindsCollide(l.entry.bind, entry.bind),
        ) ?? undefined;
      const forwardClash = seenListeners.find(
        (s) => s.forward.localPort === entry.localPort && bindsCollide(s.forward.bind, entry.bind),
      );
      if (clash || forwardClash) {
        const who = clash
          ? `socks[${clash.index}] ("${clash.entry.name}")`
          : `forwards[${forwardClash?.index}] ("${forwardClash?.forward.name}")`;
        problems.add(
          [...path, 'localPort'],
          `${entry.bind}:${entry.localPort} is already used by ${who}; pick another localPort or bind`,
        );
        return;
      }
      listeners.push({ entry, index });
    }
    out.push(entry);
  });
  return out;
}
