/**
 * The processes under test: the servers process, three emulators and the daemon, each a separate child
 * of the benchmark, all on 127.0.0.1. The daemon gets one forward per (emulator × server) pair plus a
 * dedicated echo forward that nothing touches before the cold first-byte measurement.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { LOOPBACK } from './clients.js';
import { Child, atExit } from './processes.js';
import { SERVERS_READY_PREFIX } from './servers.js';
import type { ServerPorts } from './servers.js';

/** The built daemon CLI (`dist/src/cli.js`). */
export const CLI_PATH = fileURLToPath(new URL('../src/cli.js', import.meta.url));
/** The built servers process (`dist/bench/servers.js`). */
const SERVERS_PATH = fileURLToPath(new URL('./servers.js', import.meta.url));
/** Managed node id of every forward; the emulator accepts any well-formed id. */
const TARGET = 'i-0be9c0ffee0000001';
/** Added latency of the `latency` emulator, per relayed frame and direction, ms (issue 7). */
export const INJECTED_LATENCY_MS = 20;
/** Time a child has to print its ready line, ms. */
const START_TIMEOUT_MS = 30_000;
/** How often the daemon's listeners are checked while it starts, ms. */
const LISTEN_POLL_MS = 100;

/** The emulators: how each one is configured. */
export const EMULATORS = {
  /** Agent pump unpaced: what the daemon itself costs. */
  unpaced: ['--pacing-ms', '0'],
  /** Default pacing, like the real agent: 1024-byte Output messages, 1 ms sleep after each. */
  paced: [],
  /** Default pacing plus {@link INJECTED_LATENCY_MS} on every relayed frame, both ways. */
  latency: ['--delay-ms', String(INJECTED_LATENCY_MS)],
} as const satisfies Record<string, readonly string[]>;

/** Name of an emulator in {@link EMULATORS}. */
export type EmulatorName = keyof typeof EMULATORS;
/** Name of a server in {@link ServerPorts}. */
export type ServerName = keyof ServerPorts;
/** A daemon forward: `<emulator>-<server>`, or the cold-start echo forward. */
export type ForwardName = `${EmulatorName}-${ServerName}` | 'cold-echo';

/** Options of {@link startStack}. */
export interface StackOptions {
  /** Run the daemon under `node --cpu-prof`, writing profiles into this directory. */
  cpuProfileDir: string | undefined;
  /** `tuning.sendWindowMessages` for the daemon; undefined = the daemon's default. */
  sendWindowMessages: number | undefined;
  /** Forwards beyond the standard set (a step's own, e.g. bench/striping.ts), lazy like the others. */
  extraForwards?: readonly ExtraForward[];
}

/** A forward a step asks for: through which emulator to which server, striped across how many sessions. */
export interface ExtraForward {
  /** Forward name, unique in the daemon config. */
  name: string;
  emulator: EmulatorName;
  server: ServerName;
  /** The forward's `sessions` (1–16). */
  sessions: number;
}

/** Everything started, with the ports to measure against. */
export interface Stack {
  servers: Child;
  serverPorts: ServerPorts;
  emulators: Record<EmulatorName, Child>;
  daemon: Child;
  /** Local listener port of each forward. */
  forwardPorts: Record<ForwardName, number>;
  /** Local listener port of each {@link StackOptions.extraForwards} entry, by name. */
  extraPorts: Record<string, number>;
  /** The daemon's control socket (`pf-daemon status`; `requestStatus` in src/control/client.ts). */
  controlSocket: string;
  /** Stop every process (daemon first, so it can write its profile). */
  stop(): Promise<void>;
}

/** Ports free right now on 127.0.0.1 (held together while chosen, so they are distinct). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once('error', reject);
          server.listen(0, LOOPBACK, () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/** True when something listens on the port (our own bind fails with EADDRINUSE); never connects. */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE'));
    probe.listen(port, LOOPBACK, () => probe.close(() => resolve(false)));
  });
}

/**
 * Wait until the daemon listens on every port. Readiness is probed by binding, not connecting, because a
 * connection would start the session of a lazy forward and spoil the cold measurement.
 */
async function waitForListeners(daemon: Child, ports: readonly number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (daemon.hasExited) throw new Error(`daemon exited during start-up:\n${daemon.recentOutput()}`);
    const used = await Promise.all(ports.map(portInUse));
    if (used.every(Boolean)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `daemon did not listen on all forwards within ${timeoutMs} ms:\n${daemon.recentOutput()}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, LISTEN_POLL_MS));
  }
}

/** Environment of the children: fake credentials, and no AWS settings leaking in from the caller. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('AWS_') || key === 'PF_DAEMON_CONFIG' || key === 'NOTIFY_SOCKET') delete env[key];
  }
  return { ...env, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'us-east-1' };
}

/** Start servers, emulators and the daemon; on failure everything started so far is stopped. */
export async function startStack(options: StackOptions): Promise<Stack> {
  const started: Child[] = [];
  const workDir = mkdtempSync(join(tmpdir(), 'pf-bench-'));
  const removeWorkDir = (): void => rmSync(workDir, { recursive: true, force: true });
  const forgetWorkDir = atExit(removeWorkDir);
  const env = childEnv();
  const stopAll = async (): Promise<void> => {
    // Reverse start order: the daemon goes first, so it drains and writes its CPU profile.
    for (const child of [...started].reverse()) await child.stop();
    removeWorkDir();
    forgetWorkDir();
  };
  try {
    const servers = new Child('servers', process.execPath, [SERVERS_PATH], env);
    started.push(servers);
    const names = Object.keys(EMULATORS) as EmulatorName[];
    const emulatorChildren = names.map((name) => {
      const child = new Child(
        `emulator ${name}`,
        process.execPath,
        [CLI_PATH, 'emulator', '--port', '0', '--log-level', 'warn', ...EMULATORS[name]],
        env,
      );
      started.push(child);
      return child;
    });
    const serverLine = await servers.waitForLine(
      new RegExp(`^${SERVERS_READY_PREFIX}(\\{.*\\})$`),
      START_TIMEOUT_MS,
    );
    const serverPorts = JSON.parse(serverLine[1] ?? '{}') as ServerPorts;
    const endpoints = await Promise.all(
      emulatorChildren.map(async (child) => {
        const match = await child.waitForLine(/endpoint (http:\/\/127\.0\.0\.1:\d+)/, START_TIMEOUT_MS);
        return match[1] ?? '';
      }),
    );

    const forwardNames: ForwardName[] = ['cold-echo'];
    for (const emulator of names) {
      for (const server of Object.keys(serverPorts) as ServerName[])
        forwardNames.push(`${emulator}-${server}`);
    }
    const extras = options.extraForwards ?? [];
    const localPorts = await freePorts(forwardNames.length + extras.length);
    const forwardPorts = {} as Record<ForwardName, number>;
    const forwards: Record<string, unknown>[] = forwardNames.map((name, i) => {
      const [emulator, server] = name === 'cold-echo' ? ['unpaced', 'echo'] : name.split('-');
      forwardPorts[name] = localPorts[i] ?? 0;
      return {
        name,
        target: TARGET,
        remotePort: serverPorts[server as ServerName],
        localPort: localPorts[i],
        endpoint: endpoints[names.indexOf(emulator as EmulatorName)],
        region: 'us-east-1',
      };
    });
    const extraPorts: Record<string, number> = {};
    extras.forEach((extra, i) => {
      const localPort = localPorts[forwardNames.length + i] ?? 0;
      extraPorts[extra.name] = localPort;
      forwards.push({
        name: extra.name,
        target: TARGET,
        remotePort: serverPorts[extra.server],
        localPort,
        endpoint: endpoints[names.indexOf(extra.emulator)],
        region: 'us-east-1',
        sessions: extra.sessions,
      });
    });
    // Our own socket in the work directory: never the caller's default one, nor another bench run's.
    const controlSocket = join(workDir, 'control.sock');
    const config: Record<string, unknown> = {
      forwards,
      controlSocket,
      log: { level: 'warn', format: 'plain' },
    };
    if (options.sendWindowMessages !== undefined) {
      config['tuning'] = { sendWindowMessages: options.sendWindowMessages };
    }
    const configPath = join(workDir, 'bench.yaml');
    writeFileSync(configPath, stringify(config));

    const nodeFlags = options.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfileDir] : [];
    const daemon = new Child(
      'daemon',
      process.execPath,
      [...nodeFlags, CLI_PATH, '--config', configPath, '--log-format', 'plain', '--log-level', 'warn'],
      env,
    );
    started.push(daemon);
    await waitForListeners(daemon, localPorts, START_TIMEOUT_MS);

    const emulators = Object.fromEntries(names.map((name, i) => [name, emulatorChildren[i]])) as Record<
      EmulatorName,
      Child
    >;
    return {
      servers,
      serverPorts,
      emulators,
      daemon,
      forwardPorts,
      extraPorts,
      controlSocket,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
