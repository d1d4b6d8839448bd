/**
 * Map command-line flags onto the raw configuration shape that {@link verifyConfig} checks (the CLI
 * owns no defaults: docs/architecture.md, Conventions). Flags overlay the config file:
 * - `--target --region --profile --endpoint --ecs-endpoint --document-name --bind --reason --eager
 *   --keep-alive --idle-stop-ms --half-close-linger-ms` set the matching `defaults.*` key, so they apply to
 *   every forward that does not set its own value; `--pick-any` sets `defaults.pick: any` and each
 *   `--parameter key=value` adds to `defaults.parameters`;
 * - `--port` (with `--local-port`, `--host`) and each `--forward SPEC` define forwards that **replace** the
 *   file's `forwards:` list; each `-D SPEC` defines a SOCKS listener, and they replace the file's `socks:`;
 * - `--log-level`, `--log-format` set `log.*`;
 * - `--control-socket` sets `controlSocket`, `--metrics` sets `metrics.listen`.
 * Problems in flag-provided values are reported `from --flag` instead of with a file position.
 */
import { ConfigError } from '../errors.js';
import type { RawConfigFile } from './load.js';
import type { ConfigPath, ConfigSource } from './verify.js';

/** Flag values after yargs parsing; undefined means "not given". */
export interface FlagValues {
  target?: string | undefined;
  /** `--port`: remote port. */
  port?: number | undefined;
  localPort?: number | undefined;
  host?: string | undefined;
  bind?: string | undefined;
  region?: string | undefined;
  profile?: string | undefined;
  endpoint?: string | undefined;
  /** `--ecs-endpoint`: ECS API endpoint for `ecs:` targets. */
  ecsEndpoint?: string | undefined;
  /** `--document-name`: custom session document. */
  documentName?: string | undefined;
  /** `--parameter key=value` entries, in order. */
  parameter?: readonly string[] | undefined;
  /** `--pick-any`: several matching targets ⇒ pick one at random instead of failing. */
  pickAny?: boolean | undefined;
  reason?: string | undefined;
  /** `--forward` specs, in order. */
  forward?: readonly string[] | undefined;
  /** `-D`/`--dynamic` specs (SOCKS5/HTTP CONNECT listeners), in order. */
  dynamic?: readonly string[] | undefined;
  eager?: boolean | undefined;
  keepAlive?: boolean | undefined;
  idleStopMs?: number | undefined;
  /** `--sessions N`: sessions per forward (striping). */
  sessions?: number | undefined;
  /** `--half-close-linger-ms`. */
  halfCloseLingerMs?: number | undefined;
  logLevel?: string | undefined;
  logFormat?: string | undefined;
  /** `--control-socket PATH`: sets `controlSocket`. */
  controlSocket?: string | undefined;
  /** `--metrics ADDR`: sets `metrics.listen`. */
  metrics?: string | undefined;
}

/** Example used in `--forward` messages and help. */
export const FORWARD_SPEC_EXAMPLE = '15432:db.internal:5432@i-0123456789abcdef0';
/** Grammar of `--forward`, for messages and help. */
export const FORWARD_SPEC_SYNTAX =
  '[bind:]localPort:host:remotePort[@target] or localPort:remotePort[@target]';

/** Split `a:[::1]:b` on colons, keeping bracketed IPv6 literals whole (brackets removed). */
function splitColons(text: string): string[] | undefined {
  const parts: string[] = [];
  let i = 0;
  while (i <= text.length) {
    if (text[i] === '[') {
      const close = text.indexOf(']', i);
      if (close < 0) return undefined;
      parts.push(text.slice(i + 1, close));
      i = close + 1;
      if (i < text.length && text[i] !== ':') return undefined;
      i++;
      continue;
    }
    const next = text.indexOf(':', i);
    const end = next < 0 ? text.length : next;
    parts.push(text.slice(i, end));
    i = end + 1;
  }
  return parts;
}

/**
 * Parse an ssh `-L`-style forward spec into a raw forward: `[bind:]localPort:host:remotePort[@target]`
 * or `localPort:remotePort[@target]` (no host ⇒ `localhost` on the instance). IPv6 addresses go in
 * brackets: `[::1]:15432:db:5432@i-…`. Without `@target`, `defaults.target` / `--target` applies.
 *
 * Only the shape and the digits are checked here; ranges and the target pattern are
 * {@link verifyConfig}'s job so all problems are reported together.
 *
 * @throws ConfigError `PF_ERR_CONFIG` naming the spec and the accepted forms
 */
export function parseForwardSpec(spec: string): Record<string, unknown> {
  const fail = (why: string): ConfigError =>
    new ConfigError(
      'PF_ERR_CONFIG',
      `--forward ${JSON.stringify(spec)}: ${why}; expected ${FORWARD_SPEC_SYNTAX}, e.g. ${FORWARD_SPEC_EXAMPLE}`,
    );
  // The first `@`: the listener part never holds one, a target may (`tag:Owner=ops@example.com`).
  const at = spec.indexOf('@');
  const left = at < 0 ? spec : spec.slice(0, at);
  const target = at < 0 ? undefined : spec.slice(at + 1);
  if (target !== undefined && target === '') throw fail('empty target after @');
  const parts = splitColons(left);
  if (!parts || parts.some((p) => p === '')) throw fail('empty or unbalanced field');
  let bind: string | undefined;
  let localPort: string | undefined;
  let host: string | undefined;
  let remotePort: string | undefined;
  if (parts.length === 2) [localPort, remotePort] = parts;
  else if (parts.length === 3) [localPort, host, remotePort] = parts;
  else if (parts.length === 4) [bind, localPort, host, remotePort] = parts;
  else throw fail(`${parts.length} colon-separated fields`);
  const port = (value: string | undefined, what: string): number => {
    if (value === undefined || !/^\d{1,5}$/.test(value))
      throw fail(`${what} ${JSON.stringify(value)} is not a port number`);
    return Number(value);
  };
  const forward: Record<string, unknown> = {
    localPort: port(localPort, 'localPort'),
    remotePort: port(remotePort, 'remotePort'),
  };
  if (host !== undefined) forward['host'] = host;
  if (bind !== undefined) forward['bind'] = bind;
  if (target !== undefined) forward['target'] = target;
  return forward;
}

/** Example used in `-D` messages and help. */
export const DYNAMIC_SPEC_EXAMPLE = '1080@i-0123456789abcdef0';
/** Grammar of `-D`, for messages and help. */
export const DYNAMIC_SPEC_SYNTAX = '[bind:]localPort[@target]';

/**
 * Parse an ssh `-D`-style spec into a raw `socks:` entry: `[bind:]localPort[@target]` (IPv6 bind in
 * brackets: `[::1]:1080@i-…`). Without `@target`, `defaults.target` / `--target` applies. Ranges and the
 * exposure rules are {@link verifyConfig}'s job.
 *
 * @throws ConfigError `PF_ERR_CONFIG` naming the spec and the accepted form
 */
export function parseDynamicSpec(spec: string): Record<string, unknown> {
  const fail = (why: string): ConfigError =>
    new ConfigError(
      'PF_ERR_CONFIG',
      `-D ${JSON.stringify(spec)}: ${why}; expected ${DYNAMIC_SPEC_SYNTAX}, e.g. -D ${DYNAMIC_SPEC_EXAMPLE}`,
    );
  const at = spec.indexOf('@');
  const left = at < 0 ? spec : spec.slice(0, at);
  const target = at < 0 ? undefined : spec.slice(at + 1);
  if (target !== undefined && target === '') throw fail('empty target after @');
  const parts = splitColons(left);
  if (!parts || parts.some((p) => p === '')) throw fail('empty or unbalanced field');
  if (parts.length > 2) throw fail(`${parts.length} colon-separated fields`);
  const portText = parts[parts.length - 1] ?? '';
  if (!/^\d{1,5}$/.test(portText)) throw fail(`localPort ${JSON.stringify(portText)} is not a port number`);
  const entry: Record<string, unknown> = { localPort: Number(portText) };
  if (parts.length === 2) entry['bind'] = parts[0];
  if (target !== undefined) entry['target'] = target;
  return entry;
}

/** `defaults.*` keys each flag sets, with the flag's spelling for messages. */
const DEFAULT_FLAGS = [
  ['target', 'target'],
  ['region', 'region'],
  ['profile', 'profile'],
  ['endpoint', 'endpoint'],
  ['ecsEndpoint', 'ecs-endpoint'],
  ['documentName', 'document-name'],
  ['bind', 'bind'],
  ['reason', 'reason'],
  ['eager', 'eager'],
  ['keepAlive', 'keep-alive'],
  ['idleStopMs', 'idle-stop-ms'],
  ['sessions', 'sessions'],
  ['halfCloseLingerMs', 'half-close-linger-ms'],
] as const satisfies readonly (readonly [keyof FlagValues, string])[];

/** Example used in `--parameter` messages and help. */
export const PARAMETER_FLAG_EXAMPLE = '--parameter team=payments';

/**
 * Parse repeated `--parameter key=value` flags into a mapping (names and values are checked by
 * {@link verifyConfig}).
 * @throws ConfigError `PF_ERR_CONFIG` for an entry without `=` or a name given twice
 */
export function parseParameterFlags(entries: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--parameter ${JSON.stringify(entry)}: expected key=value, e.g. ${PARAMETER_FLAG_EXAMPLE}`,
      );
    }
    const key = entry.slice(0, eq);
    if (Object.hasOwn(out, key)) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--parameter ${key} given twice: pass each document parameter once`,
      );
    }
    out[key] = entry.slice(eq + 1);
  }
  return out;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Overlay flags on a parsed config file (or on nothing).
 *
 * @param file - the parsed file, if any
 * @param flags - flag values; undefined entries are ignored
 * @returns the raw config for {@link verifyConfig} and a source that names the flag or file position
 * @throws ConfigError from {@link parseForwardSpec}
 */
export function overlayFlags(
  file: RawConfigFile | undefined,
  flags: FlagValues,
): { raw: unknown; source: ConfigSource } {
  const base = file?.raw ?? {};
  if (!isMapping(base)) return { raw: base, source: file?.source ?? { locate: () => undefined } };
  const raw: Record<string, unknown> = { ...base };
  const fromFlag = new Map<string, string>();

  const defaults: Record<string, unknown> = isMapping(base['defaults']) ? { ...base['defaults'] } : {};
  let touchedDefaults = false;
  for (const [key, flag] of DEFAULT_FLAGS) {
    const value = flags[key];
    if (value === undefined) continue;
    defaults[key] = value;
    fromFlag.set(`defaults.${key}`, `--${flag}`);
    touchedDefaults = true;
  }
  if (flags.pickAny !== undefined) {
    defaults['pick'] = flags.pickAny ? 'any' : 'one';
    fromFlag.set('defaults.pick', '--pick-any');
    touchedDefaults = true;
  }
  if (flags.parameter !== undefined && flags.parameter.length > 0) {
    defaults['parameters'] = parseParameterFlags(flags.parameter);
    fromFlag.set('defaults.parameters', '--parameter');
    touchedDefaults = true;
  }
  if (touchedDefaults) raw['defaults'] = defaults;

  const log: Record<string, unknown> = isMapping(base['log']) ? { ...base['log'] } : {};
  if (flags.logLevel !== undefined) {
    log['level'] = flags.logLevel;
    fromFlag.set('log.level', '--log-level');
  }
  if (flags.logFormat !== undefined) {
    log['format'] = flags.logFormat;
    fromFlag.set('log.format', '--log-format');
  }
  if (flags.logLevel !== undefined || flags.logFormat !== undefined) raw['log'] = log;

  if (flags.controlSocket !== undefined) {
    raw['controlSocket'] = flags.controlSocket;
    fromFlag.set('controlSocket', '--control-socket');
  }
  if (flags.metrics !== undefined) {
    raw['metrics'] = { ...(isMapping(base['metrics']) ? base['metrics'] : {}), listen: flags.metrics };
    fromFlag.set('metrics.listen', '--metrics');
  }

  const forwards: Record<string, unknown>[] = [];
  const forwardOrigins: string[] = [];
  if (flags.port !== undefined) {
    const forward: Record<string, unknown> = { remotePort: flags.port };
    if (flags.localPort !== undefined) forward['localPort'] = flags.localPort;
    if (flags.host !== undefined) forward['host'] = flags.host;
    forwards.push(forward);
    forwardOrigins.push('--port');
  }
  for (const spec of flags.forward ?? []) {
    forwards.push(parseForwardSpec(spec));
    forwardOrigins.push(`--forward ${spec}`);
  }
  if (forwards.length > 0) raw['forwards'] = forwards;
  const dynamic = (flags.dynamic ?? []).map(parseDynamicSpec);
  // -D replaces the file's socks: list, as --forward replaces forwards:.
  if (dynamic.length > 0) raw['socks'] = dynamic;

  const source: ConfigSource = {
    locate(path: ConfigPath, what: 'value' | 'key'): string | undefined {
      const [first, second] = path;
      if (typeof first === 'string' && second === undefined && fromFlag.has(first)) {
        return `from ${fromFlag.get(first)}`;
      }
      if (typeof first === 'string' && typeof second === 'string') {
        const flag = fromFlag.get(`${first}.${second}`);
        if (flag) return `from ${flag}`;
      }
      if (first === 'socks' && dynamic.length > 0) {
        const spec = typeof second === 'number' ? flags.dynamic?.[second] : undefined;
        return spec !== undefined ? `from -D ${spec}` : 'from the command line';
      }
      if (first === 'forwards' && forwards.length > 0) {
        return typeof second === 'number' && forwardOrigins[second]
          ? `from ${forwardOrigins[second]}`
          : 'from the command line';
      }
      return file?.source.locate(path, what);
    },
  };
  return { raw, source };
}
