#!/usr/bin/env node
/**
 * The emulator's own entry point (`pf-emulator`, and `pf-daemon emulator`, which hands its arguments to
 * {@link emulatorMain} through a run-time import so the daemon has no import of the emulator): run the
 * built-in SSM emulator (API + message gateway + agent) on loopback until SIGINT/SIGTERM. One yargs options
 * table (docs/architecture.md, Conventions); the flags map onto {@link EmulatorOptions} and the initial
 * {@link FaultConfig}, and the CLI owns no defaults: unset flags leave the emulator's defaults.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { ConfigError, describeError, isPfError } from '../errors.js';
import { createLogger } from '../log.js';
import type { LogLevel } from '../log.js';
import type { CustomDocument } from './api.js';
import type { FaultConfig } from './faults.js';
import { parseInventory } from './inventory.js';
import type { InventoryData, InventoryInstance, PingStatus } from './inventory.js';
import { startEmulator } from './index.js';
import type { Emulator, EmulatorOptions } from './index.js';

/** The `emulator` command's flags, as yargs parses them. */
export interface EmulatorArgs {
  port?: number;
  'agent-version'?: string;
  'chunk-size'?: number;
  'pacing-ms'?: number;
  'not-ready-window-ms'?: number;
  'handshake-timeout-ms'?: number;
  'idle-timeout-ms'?: number;
  'max-duration-ms'?: number;
  'host-map'?: string[];
  'unknown-target'?: string[];
  inventory?: string;
  instance?: string[];
  document?: string[];
  seed?: number;
  'drop-rate'?: number;
  'dup-rate'?: number;
  'reorder-window'?: number;
  'delay-ms'?: number;
  'jitter-ms'?: number;
  'drop-websocket-every-ms'?: number;
  'drop-websocket-after'?: number;
  'drop-websocket-mode'?: string;
  'terminate-after-ms'?: number;
  'throttle-start'?: number;
  'dial-fail-count'?: number;
  'dial-delay-ms'?: number;
  'smux-keep-alive'?: boolean;
  'log-level'?: string;
}

/** The one options table of the `emulator` command. */
export const EMULATOR_OPTIONS = {
  port: { type: 'number', alias: 'p', description: 'TCP port on 127.0.0.1 (0 = any free port)' },
  'agent-version': {
    type: 'string',
    description: 'AgentVersion in the handshake, e.g. 3.0.196.0 for basic mode',
  },
  'chunk-size': { type: 'number', description: 'agent Output payload size, bytes' },
  'pacing-ms': { type: 'number', description: 'agent sleep after each Output message, ms (0 = unpaced)' },
  'not-ready-window-ms': { type: 'number', description: 'post-handshake not-ready window of the agent, ms' },
  'handshake-timeout-ms': { type: 'number', description: "agent's HandshakeResponse timeout, ms" },
  'idle-timeout-ms': { type: 'number', description: 'service idle timeout, ms (0 = off)' },
  'max-duration-ms': { type: 'number', description: 'service maximum session duration, ms (0 = off)' },
  'host-map': {
    type: 'string',
    array: true,
    description: 'destination host=address for ToRemoteHost, e.g. --host-map db.internal=127.0.0.1',
  },
  'unknown-target': { type: 'string', array: true, description: 'target answered with TargetNotConnected' },
  inventory: {
    type: 'string',
    description:
      'JSON file of instances (instanceId, tags, pingStatus) and ECS tasks (cluster, service, taskId, containers) for name:/tag:/ecs: targets',
  },
  document: {
    type: 'string',
    array: true,
    description:
      'accept a custom port-forwarding document: NAME=local|remoteHost[:param,param...], e.g. --document Acme-PF=remoteHost:team',
  },
  instance: {
    type: 'string',
    array: true,
    description:
      'add an inventory instance: id[,Key=Value...][,PingStatus=ConnectionLost], e.g. --instance i-0123456789abcdef0,Name=web-1',
  },
  seed: { type: 'number', description: 'seed of the fault PRNG (reproducible runs)' },
  'drop-rate': {
    type: 'number',
    description: 'probability 0-1 of dropping a relayed message or ack, both ways',
  },
  'dup-rate': {
    type: 'number',
    description: 'probability 0-1 of duplicating a relayed message or ack, both ways',
  },
  'reorder-window': { type: 'number', description: 'hold and shuffle up to N relayed frames, both ways' },
  'delay-ms': { type: 'number', description: 'added latency per relayed frame, ms, both ways' },
  'jitter-ms': { type: 'number', description: 'extra random latency per relayed frame, 0..N ms, both ways' },
  'drop-websocket-every-ms': {
    type: 'number',
    description: 'close every client WebSocket N ms after connect',
  },
  'drop-websocket-after': {
    type: 'number',
    description: 'close the client WebSocket after N relayed frames',
  },
  'drop-websocket-mode': {
    type: 'string',
    choices: ['bye', 'abrupt'],
    description: 'how WebSocket drops close: bye (close frame 1000 "Bye") or abrupt (TCP reset)',
  },
  'terminate-after-ms': { type: 'number', description: 'end every session N ms after its first connect' },
  'throttle-start': {
    type: 'number',
    description: 'answer the next N StartSession calls with ThrottlingException',
  },
  'dial-fail-count': { type: 'number', description: 'the next N destination dials of each agent fail' },
  'dial-delay-ms': { type: 'number', description: 'delay of every destination dial, ms' },
  'smux-keep-alive': {
    type: 'boolean',
    description: 'force smux keep-alive on/off regardless of ClientVersion',
  },
  'log-level': {
    type: 'string',
    choices: ['error', 'warn', 'info', 'debug'],
    description: 'emulator log level (logs go to stderr)',
  },
} as const;

/** Example values for the "needs a number" message, by flag. */
const NUMBER_EXAMPLES: Record<string, string> = {
  port: '4566',
  'chunk-size': '1024',
  'drop-rate': '0.05',
  'dup-rate': '0.05',
  seed: '7',
};

function parseHostMap(entries: readonly string[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0 || eq === entry.length - 1) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--host-map ${entry}: expected host=address, e.g. db.internal=127.0.0.1`,
      );
    }
    map[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return map;
}

/** Example of `--instance`, for messages. */
const INSTANCE_FLAG_EXAMPLE = '--instance i-0123456789abcdef0,Name=web-1,Role=db';

function parseInstanceFlag(entry: string): InventoryInstance {
  const [id = '', ...pairs] = entry.split(',');
  if (!/^(i|mi)-[0-9a-f]{8,17}$/.test(id)) {
    throw new ConfigError(
      'PF_ERR_CONFIG',
      `--instance ${entry}: ${JSON.stringify(id)} is not an instance id, e.g. ${INSTANCE_FLAG_EXAMPLE}`,
    );
  }
  const instance: InventoryInstance = { instanceId: id, tags: {} };
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--instance ${entry}: ${JSON.stringify(pair)} is not Key=Value, e.g. ${INSTANCE_FLAG_EXAMPLE}`,
      );
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (key === 'PingStatus') {
      if (value !== 'Online' && value !== 'ConnectionLost' && value !== 'Inactive')
        throw new ConfigError(
          'PF_ERR_CONFIG',
          `--instance ${entry}: PingStatus must be Online, ConnectionLost or Inactive`,
        );
      instance.pingStatus = value as PingStatus;
    } else {
      instance.tags[key] = value;
    }
  }
  return instance;
}

/** Example of `--document`, for messages. */
const DOCUMENT_FLAG_EXAMPLE = '--document Acme-PortForwarding=remoteHost:team,ticket';

function parseDocumentFlags(entries: readonly string[]): Record<string, CustomDocument> {
  const out: Record<string, CustomDocument> = {};
  for (const entry of entries) {
    const match = /^([A-Za-z0-9_.:/-]{3,128})=(local|remoteHost)(?::([A-Za-z0-9_.,-]+))?$/.exec(entry);
    if (!match) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--document ${entry}: expected NAME=local|remoteHost[:param,...], e.g. ${DOCUMENT_FLAG_EXAMPLE}`,
      );
    }
    const [, name = '', base, params] = match;
    out[name] = {
      base: base === 'local' ? 'local' : 'remoteHost',
      parameters: params ? params.split(',').filter(Boolean) : [],
    };
  }
  return out;
}

function loadInventory(path: string | undefined, instances: readonly string[]): InventoryData {
  let data: InventoryData = {};
  if (path !== undefined) {
    try {
      data = parseInventory(JSON.parse(readFileSync(path, 'utf8')));
    } catch (err) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--inventory ${path}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
  return { ...data, instances: [...(data.instances ?? []), ...instances.map(parseInstanceFlag)] };
}

function checkRate(flag: string, value: number | undefined): void {
  if (value !== undefined && !(value >= 0 && value <= 1)) {
    throw new ConfigError(
      'PF_ERR_CONFIG',
      `--${flag} ${value}: expected a probability from 0 to 1, e.g. 0.05`,
    );
  }
}

/**
 * Map parsed flags onto emulator options (only the flags given).
 * @throws ConfigError `PF_ERR_CONFIG` with an example for malformed values
 */
export function emulatorOptionsFromArgs(args: EmulatorArgs): Partial<EmulatorOptions> {
  for (const [flag, option] of Object.entries(EMULATOR_OPTIONS)) {
    const value: unknown = (args as Record<string, unknown>)[flag];
    // yargs turns a number flag's non-numeric value into NaN; name the flag, not the option field.
    if (option.type === 'number' && typeof value === 'number' && !Number.isFinite(value)) {
      throw new ConfigError(
        'PF_ERR_CONFIG',
        `--${flag} needs a number, e.g. --${flag} ${NUMBER_EXAMPLES[flag] ?? '1'}`,
      );
    }
  }
  checkRate('drop-rate', args['drop-rate']);
  checkRate('dup-rate', args['dup-rate']);
  const options: Partial<EmulatorOptions> = {};
  if (args.port !== undefined) options.port = args.port;
  if (args['agent-version'] !== undefined) options.agentVersion = args['agent-version'];
  if (args['chunk-size'] !== undefined) options.chunkSize = args['chunk-size'];
  if (args['pacing-ms'] !== undefined) options.agentPacingMs = args['pacing-ms'];
  if (args['not-ready-window-ms'] !== undefined) options.notReadyWindowMs = args['not-ready-window-ms'];
  if (args['handshake-timeout-ms'] !== undefined) options.handshakeTimeoutMs = args['handshake-timeout-ms'];
  if (args['idle-timeout-ms'] !== undefined) options.idleTimeoutMs = args['idle-timeout-ms'];
  if (args['max-duration-ms'] !== undefined) options.maxDurationMs = args['max-duration-ms'];
  if (args['host-map'] !== undefined) options.hostMap = parseHostMap(args['host-map']);
  if (args['unknown-target'] !== undefined) options.unknownTargets = args['unknown-target'];
  if (args.document !== undefined) options.documents = parseDocumentFlags(args.document);
  if (args.inventory !== undefined || args.instance !== undefined)
    options.inventory = loadInventory(args.inventory, args.instance ?? []);
  if (args['log-level'] !== undefined)
    options.logger = createLogger({ level: args['log-level'] as LogLevel });

  const faults: Partial<FaultConfig> = {};
  const both = <T>(value: T): { toAgent: T; toClient: T } => ({ toAgent: value, toClient: value });
  if (args.seed !== undefined) faults.seed = args.seed;
  if (args['drop-rate'] !== undefined) faults.dropRate = both(args['drop-rate']);
  if (args['dup-rate'] !== undefined) faults.dupRate = both(args['dup-rate']);
  if (args['reorder-window'] !== undefined) faults.reorderWindow = both(args['reorder-window']);
  if (args['delay-ms'] !== undefined || args['jitter-ms'] !== undefined) {
    faults.delay = { toAgent: { ms: 0, jitterMs: 0 }, toClient: { ms: 0, jitterMs: 0 } };
    faults.delay.toAgent = { ms: args['delay-ms'] ?? 0, jitterMs: args['jitter-ms'] ?? 0 };
    faults.delay.toClient = { ...faults.delay.toAgent };
  }
  if (args['drop-websocket-every-ms'] !== undefined || args['drop-websocket-after'] !== undefined) {
    faults.dropWebSocket = { mode: args['drop-websocket-mode'] === 'abrupt' ? 'abrupt' : 'bye' };
    if (args['drop-websocket-every-ms'] !== undefined)
      faults.dropWebSocket.everyMs = args['drop-websocket-every-ms'];
    if (args['drop-websocket-after'] !== undefined)
      faults.dropWebSocket.afterMessages = args['drop-websocket-after'];
  }
  if (args['terminate-after-ms'] !== undefined) faults.terminateAfterMs = args['terminate-after-ms'];
  if (args['throttle-start'] !== undefined && args['throttle-start'] > 0) {
    faults.apiErrors = [
      {
        op: 'StartSession',
        code: 'ThrottlingException',
        count: args['throttle-start'],
        message: 'Rate exceeded',
      },
    ];
  }
  const agent: FaultConfig['agent'] = {};
  if (args['dial-fail-count'] !== undefined) agent.dialFailCount = args['dial-fail-count'];
  if (args['dial-delay-ms'] !== undefined) agent.dialDelayMs = args['dial-delay-ms'];
  if (args['smux-keep-alive'] !== undefined) agent.smuxKeepAlive = args['smux-keep-alive'];
  if (Object.keys(agent).length > 0) faults.agent = agent;
  if (Object.keys(faults).length > 0) options.faults = faults;
  return options;
}

/** The line printed to stdout once the emulator listens. */
export function endpointLine(endpoint: string): string {
  return `SSM emulator listening: endpoint ${endpoint} (use --endpoint ${endpoint} or AWS_ENDPOINT_URL_SSM=${endpoint})`;
}

/** I/O the command uses (injected for tests). */
export interface EmulatorCommandIo {
  /** Receives the endpoint line. */
  write(line: string): void;
  /** Resolves when the process is asked to stop. */
  stopSignal: Promise<string>;
}

/** Resolves on the first SIGINT or SIGTERM. */
export function processStopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/** Start the emulator, print the endpoint line, run until the stop signal, close. */
export async function runEmulatorCommand(args: EmulatorArgs, io: EmulatorCommandIo): Promise<Emulator> {
  const emulator = await startEmulator(emulatorOptionsFromArgs(args));
  io.write(`${endpointLine(emulator.endpoint)}\n`);
  await io.stopSignal;
  await emulator.close();
  return emulator;
}

/** Declare the emulator's options and examples on a yargs instance. */
export function emulatorCommandBuilder<T>(y: Argv<T>): Argv<T> {
  return y
    .options(EMULATOR_OPTIONS)
    .example('$0 --port 4566 --host-map db.internal=127.0.0.1', 'fixed port, ToRemoteHost mapping')
    .example(
      '$0 --instance i-0123456789abcdef0,Name=web-1',
      'an instance the target web-1 finds (by its Name tag)',
    )
    .example(
      '$0 --drop-rate 0.02 --drop-websocket-every-ms 30000 --seed 7',
      'lossy, flaky link',
    ) as unknown as Argv<T>;
}

/** Exit codes of {@link emulatorMain}, the same as the daemon's (`src/cli.ts`). */
export const EmulatorExit = {
  /** Ran and stopped on a signal, or printed help. */
  Ok: 0,
  /** Failed at run time (the port was taken, …). */
  Failure: 1,
  /** Bad flags. */
  Usage: 2,
} as const;

/** Streams and hooks of {@link emulatorMain} (injected for tests). */
export interface EmulatorMainIo {
  /** The endpoint line and help. */
  stdout: { write(text: string): unknown };
  /** The one error line. */
  stderr: { write(text: string): unknown };
  /** Terminal width for --help, columns. */
  columns?: number;
  /** Resolves when the emulator should stop. Default: the first SIGINT or SIGTERM. */
  stopSignal?: Promise<string>;
}

/** How {@link emulatorMain} presents itself. */
export interface EmulatorMainOptions {
  /** The command as the user typed it, for usage and `see … --help`: `pf-emulator` or `pf-daemon emulator`. */
  program: string;
  /** Prefix of the error line, e.g. `pf-daemon` (`pf-daemon: error: …`). Default {@link program}. */
  errorPrefix?: string;
  /** `--version` output; without it `--version` is an unknown option. */
  version?: string;
  /**
   * Flags of the program that handed over to the emulator, so a misplaced one is named as such, e.g.
   * `{ names: ['target', …], owner: 'a daemon option' }` → `--target (a daemon option, not the emulator's)`.
   */
  foreignFlags?: { names: readonly string[]; owner: string };
  /** Closest known flag to a misspelt one, for "did you mean"; none without it. */
  suggest?: (name: string, known: readonly string[]) => string | undefined;
}

/** yargs' error text as one line naming the fix. */
function emulatorUsageMessage(message: string, options: EmulatorMainOptions): string {
  const help = `${options.program} --help`;
  const unknown = /^Unknown arguments?: (.+)$/.exec(message);
  if (unknown?.[1]) {
    const known = Object.keys(EMULATOR_OPTIONS);
    const foreign = new Set((options.foreignFlags?.names ?? []).filter((name) => !known.includes(name)));
    const parts = unknown[1].split(', ').map((name) => {
      const flag = name.length === 1 ? `-${name}` : `--${name}`;
      if (foreign.has(name)) return `${flag} (${options.foreignFlags?.owner}, not the emulator's)`;
      const hint = options.suggest?.(name, known);
      return hint ? `${flag} (did you mean --${hint}?)` : flag;
    });
    return `unknown option ${parts.join(', ')}: see ${help}`;
  }
  const missing = /^Not enough arguments following: (.+)$/.exec(message);
  if (missing?.[1]) return `--${missing[1]} needs a value: see ${help}`;
  return `${message.replace(/\s+/g, ' ').trim()}: see ${help}`;
}

/**
 * Run the emulator command line: parse `argv` (the arguments after the program, or after `pf-daemon
 * emulator`), start the emulator, print the endpoint line and serve until the stop signal.
 *
 * @returns the exit code ({@link EmulatorExit}): 0 after a clean stop or help, 1 on a run-time failure, 2 on
 *   bad flags (one error line naming the fix)
 */
export async function emulatorMain(
  argv: readonly string[],
  io: EmulatorMainIo,
  options: EmulatorMainOptions,
): Promise<number> {
  const prefix = options.errorPrefix ?? options.program;
  const fail = (code: number, text: string): number => {
    io.stderr.write(`${prefix}: error: ${text.replace(/\s*\n\s*/g, ' ')}\n`);
    return code;
  };
  const parser = emulatorCommandBuilder(
    yargs()
      .scriptName(options.program)
      .usage('$0 [options]\n\nRun the built-in SSM emulator (API, message gateway and agent) on 127.0.0.1.'),
  )
    .strict()
    .help()
    .alias('help', 'h')
    .showHelpOnFail(false)
    .exitProcess(false)
    .wrap(Math.min(EMULATOR_HELP_MAX_COLUMNS, io.columns || EMULATOR_HELP_DEFAULT_COLUMNS));
  if (options.version === undefined) parser.version(false);
  else parser.version(options.version);
  let parsed: { err: Error | undefined; args: EmulatorArgs; output: string } | undefined;
  await parser.parse([...argv], {}, (err: Error | undefined, args: unknown, output: string) => {
    parsed = { err: err ?? undefined, args: args as EmulatorArgs, output };
  });
  if (!parsed) return EmulatorExit.Ok;
  if (parsed.err) return fail(EmulatorExit.Usage, emulatorUsageMessage(parsed.err.message, options));
  if (parsed.output) {
    io.stdout.write(`${parsed.output}\n`);
    return EmulatorExit.Ok;
  }
  try {
    await runEmulatorCommand(parsed.args, {
      write: (line) => io.stdout.write(line),
      stopSignal: io.stopSignal ?? processStopSignal(),
    });
    return EmulatorExit.Ok;
  } catch (err) {
    const text = isPfError(err) ? describeError(err) : err instanceof Error ? err.message : String(err);
    return fail(isPfError(err) && err.domain === 'config' ? EmulatorExit.Usage : EmulatorExit.Failure, text);
  }
}

/** Help is wrapped at the terminal width, but never wider than this, columns. */
const EMULATOR_HELP_MAX_COLUMNS = 120;
/** Help width when the output is not a terminal, columns. */
const EMULATOR_HELP_DEFAULT_COLUMNS = 100;

/** True when this module is the process entry point (`pf-emulator`, also through an npm bin symlink). */
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
  emulatorMain(
    process.argv.slice(2),
    { stdout: process.stdout, stderr: process.stderr, columns: process.stdout.columns },
    {
      program: 'pf-emulator',
    },
  ).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`pf-emulator: error: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = EmulatorExit.Failure;
    },
  );
}
