#!/usr/bin/env node
/**
 * The `pf-daemon` command (docs/architecture.md, Conventions): one yargs options table, flags mapped onto
 * the config file's shape by `config/flags.ts`, validation by `config/verify.ts`. The CLI owns no defaults.
 *
 * Commands:
 * - `pf-daemon [flags]`: run the forwards until SIGTERM/SIGINT; SIGHUP reloads the config file;
 * - `pf-daemon check-config [FILE]`: validate and summarise, exit 0 (valid) or 2 (invalid);
 * - `pf-daemon status [--json] [--watch]`: ask the running daemon over its control socket, exit 0 or 1;
 * - `pf-daemon emulator …`: the local SSM emulator; its arguments go to the emulator's own entry point
 *   (`src/emulator/cli.ts`, also the `pf-emulator` binary), loaded at run time.
 *
 * Exit codes: 0 success, 1 fatal run-time error (start-up failed, stop failed), 2 bad flags or config.
 * Errors are one line on stderr: `pf-daemon: error: <message naming the fix>`.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Argv, Options } from 'yargs';
import {
  overlayFlags,
  DYNAMIC_SPEC_SYNTAX,
  FORWARD_SPEC_EXAMPLE,
  FORWARD_SPEC_SYNTAX,
} from './config/flags.js';
import type { FlagValues } from './config/flags.js';
import { CONFIG_ENV, readConfigFile, resolveConfigPath } from './config/load.js';
import type { DaemonConfig, ForwardConfig, SocksConfig } from './config/types.js';
import { didYouMean, verifyConfig } from './config/verify.js';
import { Daemon } from './daemon.js';
import type { DaemonDeps, SsmLocation } from './daemon.js';
import { defaultLedgerDir } from './ledger.js';
import { ConfigError, describeError, isPfError } from './errors.js';
import { createLogger } from './log.js';
import type { Logger } from './log.js';
import { createSdNotify } from './sd-notify.js';
import type { SdNotifier } from './sd-notify.js';
import { createSsmApi } from './ssm/client.js';
import { clientControlSocketPaths, defaultControlSocketPath } from './control/paths.js';
import { requestStatusAny } from './control/client.js';
import { renderStatus } from './control/render.js';
import { Monitor } from './monitor.js';
import type { DaemonStats } from './stats.js';
import type { SsmApi } from './ssm/types.js';
import { targetResolverFactory } from './targets/resolve.js';

/** Program name in help and error lines. */
export const PROGRAM = 'pf-daemon';
/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: fatal run-time error (start-up or shutdown failed). */
export const EXIT_FAILURE = 1;
/** Exit code: bad flags or configuration (nothing was started). */
export const EXIT_USAGE = 2;
/** After `main` returns, how long lingering handles may keep the process alive before exit, ms. */
export const EXIT_GRACE_MS = 2_000;

/**
 * yargs' factory, loaded through its CommonJS entry: the ESM build formats help with cliui's ESM fallback,
 * which cuts lines at the column count in the middle of words ("th e config file"); the CommonJS build
 * wraps on word boundaries (wrap-ansi).
 */
const yargs = createRequire(import.meta.url)('yargs/yargs') as () => Argv;
/** Help width when the output is not a terminal, columns. */
const HELP_DEFAULT_COLUMNS = 100;
/** Widest help, columns (long lines are hard to read even on wide terminals). */
const HELP_MAX_COLUMNS = 120;
/** The commands, for "unknown command" messages. */
const COMMANDS = ['check-config', 'emulator', 'status'] as const;

const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
const LOG_FORMATS = ['auto', 'text', 'plain', 'json'] as const;

/**
 * Every flag, once: description, type and alias (docs/architecture.md, Conventions). Flags that describe a
 * forward or its AWS context overlay `defaults:` in the config file; `--port`/`--forward` replace its
 * `forwards:`.
 */
export const OPTIONS = {
  config: {
    alias: 'c',
    type: 'string',
    requiresArg: true,
    description: `YAML config file (default: $${CONFIG_ENV}, else $XDG_CONFIG_HOME/pf-daemon/config.yaml if it exists)`,
  },
  target: {
    alias: 't',
    type: 'string',
    requiresArg: true,
    description:
      'Target: i-…/mi-…, name:web-1 (or web-1), tag:Key=Value, ecs:cluster/service[/container], ecs:cluster/taskId[/container]; sets defaults.target',
  },
  'pick-any': {
    type: 'boolean',
    description:
      'When a name/tag/ECS target matches several, pick one online match at random; sets defaults.pick',
  },
  'document-name': {
    type: 'string',
    requiresArg: true,
    description:
      "Custom port-forwarding session document (your organisation's copy); sets defaults.documentName",
  },
  parameter: {
    type: 'string',
    array: true,
    requiresArg: true,
    description:
      'Extra parameter key=value of a custom --document-name (repeatable); sets defaults.parameters',
  },
  'ecs-endpoint': {
    type: 'string',
    requiresArg: true,
    description:
      'ECS API endpoint URL for ecs: targets (AWS_ENDPOINT_URL_ECS also works); sets defaults.ecsEndpoint',
  },
  port: {
    alias: ['p', 'remote-port'],
    type: 'number',
    requiresArg: true,
    description: 'Remote port to forward: on the instance, or on --host as seen from it',
  },
  'local-port': {
    alias: 'l',
    type: 'number',
    requiresArg: true,
    description: 'Local port to listen on for --port (default: the remote port; 0 = any free port)',
  },
  host: {
    alias: ['H', 'remote-host'],
    type: 'string',
    requiresArg: true,
    description:
      'Remote host for --port as seen from the instance (AWS-StartPortForwardingSessionToRemoteHost)',
  },
  bind: {
    alias: ['b', 'address'],
    type: 'string',
    requiresArg: true,
    description: 'Local address to listen on (default 127.0.0.1); sets defaults.bind',
  },
  region: {
    alias: 'r',
    type: 'string',
    requiresArg: true,
    description: 'AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, or the profile); sets defaults.region',
  },
  profile: {
    alias: 'P',
    type: 'string',
    requiresArg: true,
    description: 'AWS named profile, SSO profiles included (default: AWS_PROFILE); sets defaults.profile',
  },
  endpoint: {
    alias: 'endpoint-url',
    type: 'string',
    requiresArg: true,
    description:
      'SSM API endpoint URL, e.g. the emulator (AWS_ENDPOINT_URL_SSM also works); sets defaults.endpoint',
  },
  reason: {
    alias: 'R',
    type: 'string',
    requiresArg: true,
    description: 'StartSession reason shown in session history (1-256 chars); sets defaults.reason',
  },
  forward: {
    alias: 'L',
    type: 'string',
    array: true,
    requiresArg: true,
    description: `Add a forward, ssh -L style: ${FORWARD_SPEC_SYNTAX} (repeatable; IPv6 in [brackets])`,
  },
  dynamic: {
    alias: 'D',
    type: 'string',
    array: true,
    requiresArg: true,
    description: `Add a SOCKS5 + HTTP CONNECT proxy, ssh -D style: ${DYNAMIC_SPEC_SYNTAX} (repeatable); each CONNECT reaches host:port as seen from the target`,
  },
  eager: {
    alias: 'E',
    type: 'boolean',
    description: 'Start sessions at start-up instead of on the first connection; sets defaults.eager',
  },
  'keep-alive': {
    alias: 'k',
    type: 'boolean',
    description: 'Send keep-alives so idle sessions are not closed by the service; sets defaults.keepAlive',
  },
  'idle-stop-ms': {
    alias: 'idle-stop',
    type: 'number',
    requiresArg: true,
    description: 'End a session after this many ms without local connections (0 = never; default 600000)',
  },
  sessions: {
    type: 'number',
    requiresArg: true,
    description:
      'Stripe each forward across up to N SSM sessions, 1-16 (default 1; each costs a session worker on the instance and a StartSession call); sets defaults.sessions',
  },
  'half-close-linger-ms': {
    type: 'number',
    requiresArg: true,
    description:
      'After a local EOF, keep the stream open this many ms of remote silence before FIN, so a reply can still arrive (0 = FIN at once; default 2000); sets defaults.halfCloseLingerMs',
  },
  'log-level': {
    alias: 'v',
    type: 'string',
    choices: LOG_LEVELS,
    requiresArg: true,
    description: 'Lowest log level written (default info)',
  },
  'log-format': {
    alias: 'f',
    type: 'string',
    choices: LOG_FORMATS,
    requiresArg: true,
    description: 'Log format: text (coloured), plain (journald), json; auto picks plain under systemd',
  },
  'control-socket': {
    alias: 'S',
    type: 'string',
    requiresArg: true,
    description:
      'Control socket for `status` (default $XDG_RUNTIME_DIR/pf-daemon/control.sock); sets controlSocket',
  },
  metrics: {
    alias: 'M',
    type: 'string',
    requiresArg: true,
    description: 'Serve /metrics, /healthz, /readyz on host:port, e.g. 127.0.0.1:9464; sets metrics.listen',
  },
} as const satisfies Record<string, Options>;

/** Options of `pf-daemon status` only. */
export const STATUS_OPTIONS = {
  json: { type: 'boolean', description: 'Print the stats tree as JSON (schema: docs/status.md)' },
  watch: {
    alias: 'w',
    type: 'boolean',
    description: 'Refresh every second with rates (MB/s, connections/s) until Ctrl-C',
  },
} as const satisfies Record<string, Options>;

/** Interval of `status --watch`, ms. */
export const STATUS_WATCH_INTERVAL_MS = 1_000;

/** The parts of a process `main` touches, injectable so tests run it in-process. */
export interface MainIo {
  /** Help and check-config output. */
  stdout: { write(text: string): unknown };
  /** The one error line. (Logs go through the logger, to stderr by default.) */
  stderr: { write(text: string): unknown };
  /** Environment for config discovery, logging and AWS. */
  env: NodeJS.ProcessEnv;
  /** Where SIGTERM/SIGINT/SIGHUP come from. Default `process`. */
  signals?: SignalSource;
  /** Replaces the logger built from the config (tests). */
  logger?: Logger;
  /** Builds the daemon. Default `new Daemon(config, deps)`. */
  createDaemon?: (config: DaemonConfig, deps: DaemonDeps) => DaemonControl;
  /** Replaces the sd_notify notifier (tests). */
  notifier?: SdNotifier;
  /** Terminal width for --help, columns. Default `process.stdout.columns`. */
  columns?: number;
}

/** The daemon surface the CLI drives; with `stats` and `readiness` it also gets the monitor. */
export type DaemonControl = Pick<Daemon, 'start' | 'stop' | 'reload'> &
  Partial<Pick<Daemon, 'stats' | 'readiness'>>;

/** The signals the CLI handles. */
export type HandledSignal = 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'SIGUSR1';

/** A process-like signal emitter. */
export interface SignalSource {
  on(signal: HandledSignal, listener: () => void): unknown;
  off(signal: HandledSignal, listener: () => void): unknown;
}

/** Parsed arguments, as yargs gives them. */
interface Args {
  _: (string | number)[];
  config?: string;
  file?: string;
  target?: string;
  port?: number | null;
  localPort?: number | null;
  host?: string;
  bind?: string;
  region?: string;
  profile?: string;
  endpoint?: string;
  ecsEndpoint?: string;
  documentName?: string;
  parameter?: string[];
  pickAny?: boolean;
  reason?: string;
  forward?: string[];
  dynamic?: string[];
  eager?: boolean;
  keepAlive?: boolean;
  idleStopMs?: number | null;
  sessions?: number | null;
  halfCloseLingerMs?: number | null;
  logLevel?: string;
  logFormat?: string;
  controlSocket?: string;
  metrics?: string;
  json?: boolean;
  watch?: boolean;
}

/** Our own version, from package.json; `unknown` if it cannot be read. */
function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    const parsed: unknown = JSON.parse(text);
    if (
      parsed !== null &&
      typeof parsed === 'object' &&
      'version' in parsed &&
      typeof parsed.version === 'string'
    ) {
      return parsed.version;
    }
  } catch {
    // Running from an unusual layout; the version is cosmetic.
  }
  return 'unknown';
}

/** Flag combinations yargs cannot express; messages carry an example (docs/architecture.md, Conventions). */
function checkCombinations(argv: Args): true {
  for (const [key, flag] of [
    ['port', '--port'],
    ['localPort', '--local-port'],
    ['idleStopMs', '--idle-stop-ms'],
    ['sessions', '--sessions'],
    ['halfCloseLingerMs', '--half-close-linger-ms'],
  ] as const) {
    const value = argv[key];
    if (value === null || (typeof value === 'number' && !Number.isFinite(value))) {
      const example =
        key === 'idleStopMs'
          ? '600000'
          : key === 'halfCloseLingerMs'
            ? '2000'
            : key === 'sessions'
              ? '4'
              : '5432';
      throw new Error(`${flag} must be a number, e.g. ${flag} ${example}`);
    }
  }
  if (argv.port === undefined) {
    if (argv.localPort !== undefined) {
      throw new Error(
        '--local-port needs --port, e.g. --target i-0123456789abcdef0 --port 5432 --local-port 15432',
      );
    }
    if (argv.host !== undefined) {
      throw new Error(
        '--host needs --port, e.g. --target i-0123456789abcdef0 --host db.internal --port 5432',
      );
    }
  }
  return true;
}

/** The daemon's flags and their combination check, for the commands that take them. */
function daemonOptions<T>(y: Argv<T>): Argv<T> {
  return y.options(OPTIONS).check(checkCombinations) as unknown as Argv<T>;
}

/**
 * Build the yargs parser (no process access: output comes back through the parse callback). The daemon's
 * flags belong to the default command and check-config only. `emulator …` never reaches this parser: main()
 * hands it to the emulator's own entry point, which lists only its options and names daemon flags as such.
 */
function buildParser(columns: number | undefined): Argv {
  const y = yargs()
    .scriptName(PROGRAM)
    .usage('$0 [options]\n\nForward local TCP ports to hosts behind AWS SSM Session Manager.')
    .command('$0', 'Run the configured forwards until SIGTERM/SIGINT (SIGHUP reloads the config file)', (c) =>
      daemonOptions(c),
    )
    .command(
      'check-config [file]',
      'Validate a config file and/or flags and print the forwards; exit 0 or 2',
      (c) =>
        daemonOptions(
          c.positional('file', { type: 'string', description: 'Config file (default: the discovered one)' }),
        ),
    )
    .command(
      'status',
      'Show forwards, sessions, bytes and reconnects of the running daemon; exit 1 if none runs',
      // The socket to ask, given directly or through the config file's controlSocket.
      (c) =>
        c.options({
          ...STATUS_OPTIONS,
          config: OPTIONS.config,
          'control-socket': OPTIONS['control-socket'],
        }),
    )
    .example(
      '$0 --target i-0123456789abcdef0 --port 5432',
      'localhost:5432 on the instance at 127.0.0.1:5432',
    )
    .example(
      '$0 -t i-0123456789abcdef0 -H db.internal -p 5432 -l 15432 -P dev -r eu-west-1',
      'db.internal:5432 (seen from the instance) at 127.0.0.1:15432, SSO profile dev',
    )
    .example(`$0 -L ${FORWARD_SPEC_EXAMPLE} -L 8080:80@i-0123456789abcdef0`, 'two forwards, ssh -L style')
    .example('$0 --port 5432', 'uses defaults.target (and region/profile) from the config file')
    .example('$0 --config /etc/pf-daemon/alice.yaml', 'run every forward in a config file')
    .example('$0 check-config ~/.config/pf-daemon/config.yaml', 'validate a config file')
    .example('$0 check-config --target i-0123456789abcdef0 --port 5432', 'validate flags alone')
    .example('$0 status --watch', 'what the running daemon is doing, refreshed every second')
    .epilog(
      [
        `Config file discovery: --config, then $${CONFIG_ENV}, then $XDG_CONFIG_HOME/pf-daemon/config.yaml (default ~/.config/pf-daemon/config.yaml) if it exists. Flags override the file: --target, --region, --profile, --endpoint, --bind, --reason, --eager, --keep-alive, --idle-stop-ms and --half-close-linger-ms set defaults:, --port and --forward replace forwards:. See config.example.yaml for every key.`,
        'AWS credentials, region and endpoint come from the AWS SDK chain (AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_SSM, ~/.aws/config incl. SSO: run `aws sso login --profile P` first).',
        'Exit codes: 0 ok, 1 run-time failure, 2 bad flags or config.',
      ].join('\n'),
    )
    .strict()
    .help()
    .alias('help', 'h')
    .version(packageVersion())
    .alias('version', 'V')
    .showHelpOnFail(false)
    .exitProcess(false)
    .wrap(Math.min(HELP_MAX_COLUMNS, columns || HELP_DEFAULT_COLUMNS));
  // Declared for --help and the list of commands only: main() hands `emulator …` over before parsing.
  return y.command('emulator', `Run the built-in SSM emulator on 127.0.0.1; see ${PROGRAM} emulator --help`);
}

/**
 * The emulator's entry module, relative to this file. A path resolved at run time, not an import: product code
 * has no import of the emulator (docs/architecture.md, import rules; `test/architecture.test.ts`).
 */
const EMULATOR_ENTRY = './emulator/cli.js';

/** What `pf-daemon emulator` needs from {@link EMULATOR_ENTRY} (its `emulatorMain`). */
interface EmulatorEntry {
  emulatorMain(
    argv: readonly string[],
    io: { stdout: MainIo['stdout']; stderr: MainIo['stderr']; columns?: number },
    options: {
      program: string;
      errorPrefix: string;
      version: string;
      foreignFlags: { names: readonly string[]; owner: string };
      suggest: (name: string, known: readonly string[]) => string | undefined;
    },
  ): Promise<number>;
}

function isEmulatorEntry(value: unknown): value is EmulatorEntry {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { emulatorMain?: unknown }).emulatorMain === 'function'
  );
}

/** `pf-daemon emulator …`: load the emulator's entry point and hand it the arguments after `emulator`. */
async function runEmulator(argv: readonly string[], io: MainIo): Promise<number> {
  const entry: unknown = await import(new URL(EMULATOR_ENTRY, import.meta.url).href);
  if (!isEmulatorEntry(entry)) {
    throw new TypeError(`${EMULATOR_ENTRY} does not export emulatorMain; reinstall pf-daemon`);
  }
  return entry.emulatorMain(
    argv,
    { stdout: io.stdout, stderr: io.stderr, columns: io.columns ?? process.stdout.columns },
    {
      program: `${PROGRAM} emulator`,
      errorPrefix: PROGRAM,
      version: packageVersion(),
      foreignFlags: { names: Object.keys(OPTIONS), owner: 'a daemon option' },
      suggest: didYouMean,
    },
  );
}

/** Turn yargs' error text into one line naming the fix; `positionals` tell a command from a flag. */
function usageMessage(message: string, positionals: readonly (string | number)[]): string {
  const unknown = /^Unknown arguments?: (.+)$/.exec(message);
  if (unknown?.[1]) {
    const names = unknown[1].split(', ');
    const word = positionals[0] === undefined ? undefined : String(positionals[0]);
    if (word !== undefined && names.includes(word)) {
      const hint = didYouMean(word, COMMANDS);
      return `unknown command "${word}"${hint ? ` (did you mean ${hint}?)` : ''}: the commands are ${COMMANDS.join(', ')}, or none to run the forwards; see ${PROGRAM} --help`;
    }
    const known = Object.keys(OPTIONS);
    const help = `${PROGRAM} --help`;
    const parts = names.map((name) => {
      const flag = name.length === 1 ? `-${name}` : `--${name}`;
      const hint = didYouMean(name, known);
      return hint ? `${flag} (did you mean --${hint}?)` : flag;
    });
    return `unknown option ${parts.join(', ')}: see ${help}`;
  }
  const missing = /^Not enough arguments following: (.+)$/.exec(message);
  if (missing?.[1]) return `--${missing[1]} needs a value: see ${PROGRAM} --help`;
  return `${message.replace(/\s+/g, ' ').trim()}: see ${PROGRAM} --help`;
}

function flagValues(argv: Args): FlagValues {
  const number = (v: number | null | undefined): number | undefined =>
    typeof v === 'number' ? v : undefined;
  return {
    target: argv.target,
    port: number(argv.port),
    localPort: number(argv.localPort),
    host: argv.host,
    bind: argv.bind,
    region: argv.region,
    profile: argv.profile,
    endpoint: argv.endpoint,
    ecsEndpoint: argv.ecsEndpoint,
    documentName: argv.documentName,
    parameter: argv.parameter,
    pickAny: argv.pickAny,
    reason: argv.reason,
    forward: argv.forward,
    dynamic: argv.dynamic,
    eager: argv.eager,
    keepAlive: argv.keepAlive,
    idleStopMs: number(argv.idleStopMs),
    sessions: number(argv.sessions),
    halfCloseLingerMs: number(argv.halfCloseLingerMs),
    logLevel: argv.logLevel,
    logFormat: argv.logFormat,
    controlSocket: argv.controlSocket,
    metrics: argv.metrics,
  };
}

/** Read the config file (if any), overlay flags and validate. */
async function buildConfig(path: string | undefined, flags: FlagValues): Promise<DaemonConfig> {
  const file = path === undefined ? undefined : await readConfigFile(path);
  const { raw, source } = overlayFlags(file, flags);
  return verifyConfig(raw, source);
}

/** One line per forward for check-config. */
export function describeForward(f: ForwardConfig): string {
  const listen = f.bind.includes(':') ? `[${f.bind}]:${f.localPort}` : `${f.bind}:${f.localPort}`;
  const aws = [
    f.region && `region ${f.region}`,
    f.profile && `profile ${f.profile}`,
    f.endpoint && `endpoint ${f.endpoint}`,
  ]
    .filter(Boolean)
    .join(', ');
  const mode = [
    f.eager ? 'eager' : 'on demand',
    // Eager forwards keep their session open whatever idleStopMs says (forward.ts scheduleIdleStop).
    f.eager ? '' : f.idleStopMs > 0 ? `idle stop ${f.idleStopMs} ms` : 'no idle stop',
    f.keepAlive ? 'keep-alive' : '',
    f.sessions > 1 ? `striped across up to ${f.sessions} sessions` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return `${f.name}: ${listen} -> ${f.host ?? 'localhost'}:${f.remotePort} via ${f.target}${aws ? ` (${aws})` : ''} [${mode}]`;
}

/** One line per `socks:` entry for check-config (never the password). */
export function describeSocks(e: SocksConfig): string {
  const listen = e.bind.includes(':') ? `[${e.bind}]:${e.localPort}` : `${e.bind}:${e.localPort}`;
  const auth = e.username !== undefined ? `user ${e.username}` : 'no auth';
  return `${e.name}: ${listen} SOCKS5/HTTP CONNECT -> any allowed host:port via ${e.target} [allow ${e.allow.join(' ')}; ${auth}; up to ${e.maxSessions} destinations]`;
}

/** A cache of SSM clients per region/profile/endpoint, so forwards sharing them share connections. */
function ssmFactory(logger: Logger, userAgent: string): (where: SsmLocation) => SsmApi {
  const clients = new Map<string, SsmApi>();
  return (f) => {
    const key = JSON.stringify([f.region, f.profile, f.endpoint]);
    let api = clients.get(key);
    if (!api) {
      api = createSsmApi({
        ...(f.region ? { region: f.region } : {}),
        ...(f.profile ? { profile: f.profile } : {}),
        ...(f.endpoint ? { endpoint: f.endpoint } : {}),
        logger,
        userAgent,
      });
      clients.set(key, api);
    }
    return api;
  };
}

/** Run forwards until a stop signal; returns the exit code. */
async function runDaemon(
  io: MainIo,
  configPath: string | undefined,
  flags: FlagValues,
  fail: (err: unknown) => number,
): Promise<number> {
  let config: DaemonConfig;
  try {
    config = await buildConfig(configPath, flags);
  } catch (err) {
    return fail(err);
  }
  const logger =
    io.logger ?? createLogger({ level: config.log.level, format: config.log.format, env: io.env });
  const log = logger.child('cli');
  const notify = io.notifier ?? createSdNotify({ env: io.env, logger });
  const version = packageVersion();
  const userAgent = `${PROGRAM}/${version}`;
  const metricsListen = config.metrics?.listen;
  // prom-client costs ~13 MB of RSS when loaded: only load it when metrics are asked for.
  const metrics =
    metricsListen === undefined
      ? undefined
      : (await import('./metrics/registry.js')).createDaemonMetrics(version);
  const deps: DaemonDeps = {
    logger,
    ssmFor: ssmFactory(logger, userAgent),
    targetsFor: targetResolverFactory({ logger, userAgent }),
    userAgent,
    ledgerDir: defaultLedgerDir(io.env),
    version,
    ...(configPath === undefined ? {} : { configFile: configPath }),
    ...(metrics ? { onReconnected: metrics.observeReconnect } : {}),
  };
  const daemon: DaemonControl = io.createDaemon ? io.createDaemon(config, deps) : new Daemon(config, deps);
  const signals: SignalSource = io.signals ?? process;

  try {
    await daemon.start();
  } catch (err) {
    log.debug('start-up failed', { error: describeError(err) });
    await daemon.stop().catch(() => undefined);
    io.stderr.write(`${PROGRAM}: error: ${describeError(err)}\n`);
    return EXIT_FAILURE;
  }
  let monitor: Monitor | undefined;
  if (daemon.stats && daemon.readiness) {
    const observed = { stats: daemon.stats.bind(daemon), readiness: daemon.readiness.bind(daemon) };
    try {
      monitor = await Monitor.start({
        daemon: observed,
        logger: logger.child('monitor'),
        controlSocket: config.controlSocket ?? defaultControlSocketPath(io.env),
        ...(metrics && metricsListen !== undefined
          ? { metrics: { registry: metrics, listen: metricsListen } }
          : {}),
        notifier: notify,
        signals,
      });
    } catch (err) {
      await daemon.stop().catch(() => undefined);
      io.stderr.write(`${PROGRAM}: error: ${describeError(err)}\n`);
      return EXIT_FAILURE;
    }
  }
  const socksNames = (config.socks ?? []).map((e) => e.name);
  const summary = `forwarding ${config.forwards.length} port(s): ${config.forwards.map((f) => f.name).join(', ')}${socksNames.length > 0 ? `; SOCKS on ${socksNames.join(', ')}` : ''}`;
  log.info(`started; ${summary}`);

  let listening = config.forwards.length;
  return new Promise<number>((resolve) => {
    let stopping = false;
    let reloads: Promise<void> = Promise.resolve();
    const cleanup = (): void => {
      signals.off('SIGTERM', onTerm);
      signals.off('SIGINT', onInt);
      signals.off('SIGHUP', onReload);
    };
    function onStop(signal: HandledSignal): void {
      if (stopping) {
        // A second Ctrl-C means "now"; repeated SIGTERMs (wrappers that signal the whole process group)
        // are ignored, and systemd escalates to SIGKILL after TimeoutStopSec anyway.
        if (signal !== 'SIGINT') return;
        log.warn('second SIGINT: exiting without waiting for the drain');
        cleanup();
        resolve(EXIT_FAILURE);
        return;
      }
      stopping = true;
      log.info('stopping: draining connections');
      void notify.stopping();
      const monitorStopped = monitor
        ?.stop()
        .catch((err: unknown) => log.warn(`monitor stop: ${describeError(err)}`));
      Promise.resolve(monitorStopped)
        .then(() => daemon.stop())
        .then(
          () => {
            log.info('stopped');
            cleanup();
            resolve(EXIT_OK);
          },
          (err: unknown) => {
            log.error(`stop failed: ${describeError(err)}`);
            cleanup();
            resolve(EXIT_FAILURE);
          },
        );
    }
    function onReload(): void {
      if (stopping) return;
      reloads = reloads.then(async () => {
        if (configPath === undefined) {
          log.warn('SIGHUP: running from flags only, nothing to reload (use --config FILE)');
          return;
        }
        log.info(`SIGHUP: reloading ${configPath}`);
        await notify.reloading();
        try {
          const next = await buildConfig(configPath, flags);
          if (
            next.controlSocket !== config.controlSocket ||
            next.metrics?.listen !== config.metrics?.listen
          ) {
            log.warn('reload: controlSocket and metrics changes take effect after a restart');
          }
          const summary = await daemon.reload(next);
          config = next;
          listening = summary.listening;
          const failed = summary.failed.length > 0 ? `; not listening: ${summary.failed.join(', ')}` : '';
          const line = `reloaded; ${summary.listening} of ${next.forwards.length} forward(s) listening${failed}`;
          if (failed) log.warn(line);
          else log.info(line);
        } catch (err) {
          log.error(`reload failed, keeping the running configuration: ${describeError(err)}`);
        }
        await notify.ready(`forwarding ${listening} port(s)`);
        monitor?.statusOverwritten();
      });
    }
    const onTerm = (): void => onStop('SIGTERM');
    const onInt = (): void => onStop('SIGINT');
    signals.on('SIGTERM', onTerm);
    signals.on('SIGINT', onInt);
    signals.on('SIGHUP', onReload);
    // READY only once the handlers are in place, so "ready" also means "stoppable and reloadable".
    void notify.ready(summary);
  });
}

/** The control socket paths `status` tries: the flag, else the config file's `controlSocket`, else defaults. */
async function statusPaths(io: MainIo, args: Args, configPath: string | undefined): Promise<string[]> {
  if (args.controlSocket !== undefined) return [args.controlSocket];
  if (configPath !== undefined) {
    // Only for its controlSocket: a config that does not verify must not stop status from working.
    const configured = await buildConfig(configPath, {}).then(
      (c) => c.controlSocket,
      () => undefined,
    );
    if (configured !== undefined) return [configured];
  }
  return clientControlSocketPaths(io.env);
}

/** `pf-daemon status [--json] [--watch]`; exit 0, or 1 when no daemon answers. */
async function statusCommand(io: MainIo, args: Args, configPath: string | undefined): Promise<number> {
  const paths = await statusPaths(io, args, configPath);
  const show = (stats: DaemonStats, before: DaemonStats | undefined): string =>
    args.json ? `${JSON.stringify(stats, null, args.watch ? undefined : 2)}\n` : renderStatus(stats, before);
  const first = await requestStatusAny(paths);
  if (!args.watch) {
    io.stdout.write(show(first, undefined));
    return EXIT_OK;
  }
  const signals: SignalSource = io.signals ?? process;
  // A terminal gets a redrawn screen; a pipe gets one snapshot after another (NDJSON with --json).
  const clear = !args.json && (io.stdout as { isTTY?: boolean }).isTTY === true ? '\x1b[H\x1b[2J' : '';
  io.stdout.write(clear + show(first, undefined));
  return new Promise<number>((resolve) => {
    let previous = first;
    let busy = false;
    const finish = (code: number): void => {
      clearInterval(timer);
      signals.off('SIGINT', stop);
      signals.off('SIGTERM', stop);
      resolve(code);
    };
    const stop = (): void => finish(EXIT_OK);
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      requestStatusAny(paths).then(
        (stats) => {
          busy = false;
          io.stdout.write(clear + show(stats, previous));
          previous = stats;
        },
        (err: unknown) => {
          io.stderr.write(`${PROGRAM}: error: ${describeError(err)}\n`);
          finish(EXIT_FAILURE);
        },
      );
    }, STATUS_WATCH_INTERVAL_MS);
    signals.on('SIGINT', stop);
    signals.on('SIGTERM', stop);
  });
}

/** check-config: validate the file and/or the flags and print a summary. */
async function checkConfig(io: MainIo, configPath: string | undefined, flags: FlagValues): Promise<number> {
  const flagsDefineForwards =
    flags.port !== undefined || (flags.forward?.length ?? 0) > 0 || (flags.dynamic?.length ?? 0) > 0;
  if (configPath === undefined && !flagsDefineForwards) {
    throw new ConfigError(
      'PF_ERR_CONFIG_FILE',
      `nothing to check: pass a file (${PROGRAM} check-config FILE), use --config, set $${CONFIG_ENV}, or give forwards as flags (--target i-0123456789abcdef0 --port 5432)`,
    );
  }
  const config = await buildConfig(configPath, flags);
  const what = configPath ?? 'flags';
  const lines = [
    `${what}: OK, ${config.forwards.length} forward(s); log ${config.log.level}/${config.log.format}`,
    ...config.forwards.map((f) => `  ${describeForward(f)}`),
    ...(config.socks ?? []).map((e) => `  ${describeSocks(e)}`),
  ];
  io.stdout.write(`${lines.join('\n')}\n`);
  return EXIT_OK;
}

/**
 * Run the CLI in-process.
 *
 * @param argv - arguments after the program name (`process.argv.slice(2)`)
 * @param io - streams, environment and test hooks; default the real process
 * @returns the exit code: 0 ok, 1 run-time failure, 2 bad flags or config
 */
export async function main(argv: readonly string[], io?: MainIo): Promise<number> {
  const ioReal: MainIo = io ?? { stdout: process.stdout, stderr: process.stderr, env: process.env };
  const fail = (err: unknown): number => {
    const text = isPfError(err) ? describeError(err) : err instanceof Error ? err.message : String(err);
    ioReal.stderr.write(`${PROGRAM}: error: ${text.replace(/\s*\n\s*/g, ' ')}\n`);
    return isPfError(err) && err.domain !== 'config' ? EXIT_FAILURE : EXIT_USAGE;
  };

  if (argv[0] === 'emulator') {
    try {
      return await runEmulator(argv.slice(1), ioReal);
    } catch (err) {
      return fail(err);
    }
  }
  let parsed: { err: Error | undefined; argv: Args; output: string } | undefined;
  try {
    const parser = buildParser(ioReal.columns ?? process.stdout.columns);
    await parser.parse([...argv], {}, (err: Error | undefined, args: unknown, output: string) => {
      parsed = { err: err ?? undefined, argv: args as Args, output };
    });
  } catch (err) {
    return fail(err);
  }
  if (!parsed) return EXIT_OK;
  if (parsed.err) {
    ioReal.stderr.write(`${PROGRAM}: error: ${usageMessage(parsed.err.message, parsed.argv?._ ?? [])}\n`);
    return EXIT_USAGE;
  }
  if (parsed.output) {
    // --help or --version.
    ioReal.stdout.write(`${parsed.output}\n`);
    return EXIT_OK;
  }
  const args = parsed.argv;
  const command = args._[0];
  const flags = flagValues(args);
  try {
    const discover = (flag: string | undefined): string | undefined =>
      resolveConfigPath({
        flag,
        env: ioReal.env[CONFIG_ENV],
        xdg: ioReal.env['XDG_CONFIG_HOME'],
        ...(ioReal.env['HOME'] ? { home: ioReal.env['HOME'] } : {}),
      })?.path;
    if (command === 'check-config')
      return await checkConfig(ioReal, discover(args.file ?? args.config), flags);
    if (command === 'status') return await statusCommand(ioReal, args, discover(args.config));
    return await runDaemon(ioReal, discover(args.config), flags, fail);
  } catch (err) {
    return fail(err);
  }
}

/** True when this module is the process entry point (also through an npm bin symlink). */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // The SDK prints a multi-line Node-version notice on its first call; under journald it would read as
  // several unrelated log lines. engines.node documents our support instead. The user can still set it.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
    // Lingering sockets (SDK keep-alive pools) must not keep a stopped daemon alive under systemd.
    setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
  });
}
