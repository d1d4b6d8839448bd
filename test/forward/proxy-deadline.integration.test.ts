/**
 * A proxy that accepts TCP and never answers CONNECT (issue 10 item 5, spec §3.1, §10.3): the data-channel dial
 * through it must fail within `connectTimeoutMs` (one deadline over proxy CONNECT, TLS, upgrade and
 * OpenDataChannel), on start and on resume; a stop during a hung start must finish promptly and terminate the
 * granted session; the ledger must hold the SessionId while the dial hangs.
 *
 * The SSM API stays direct (`NO_PROXY=127.0.0.1`); the data channel is sent through the proxy by rewriting its
 * StreamUrl to `wss://localhost:<port>` — `HTTPS_PROXY` then applies, and as the proxy never answers no TLS
 * peer is needed.
 */
import test from 'ava';
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../../src/config/types.js';
import { defaultLog } from '../../src/config/types.js';
import { Daemon } from '../../src/daemon.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import { TunnelSession } from '../../src/forward/session.js';
import { isPfError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { emulatorSsm, forwardConfig, startForward, tuningWith, withTimeout } from './fixtures.js';

/** A TCP server that accepts and never writes a byte; tracks its open sockets. */
interface SilentProxy {
  url: string;
  accepted: number;
  open: number;
  /** Resolves on the next accepted connection. */
  nextAccept(): Promise<void>;
  /** Resolves once no accepted socket is open. */
  allClosed(): Promise<void>;
  close(): Promise<void>;
}

async function startSilentProxy(): Promise<SilentProxy> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const acceptWaiters: (() => void)[] = [];
  const closeWaiters: (() => void)[] = [];
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      if (sockets.size === 0) for (const w of closeWaiters.splice(0)) w();
    });
    // Read (so the client's CONNECT is consumed) and never answer.
    socket.resume();
    for (const w of acceptWaiters.splice(0)) w();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return sockets.size;
    },
    nextAccept: () => new Promise((resolve) => acceptWaiters.push(resolve)),
    allClosed: () =>
      sockets.size === 0 ? Promise.resolve() : new Promise((resolve) => closeWaiters.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Set the proxy variables for the duration of one test; returns the restore function. */
function useProxy(proxyUrl: string): () => void {
  const saved = new Map<string, string | undefined>();
  for (const [k, v] of Object.entries({
    HTTPS_PROXY: proxyUrl,
    https_proxy: proxyUrl,
    NO_PROXY: '127.0.0.1',
  })) {
    saved.set(k, process.env[k]);
    process.env[k] = v;
  }
  for (const k of ['HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy', 'no_proxy']) {
    saved.set(k, process.env[k]);
    delete process.env[k];
  }
  return () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

/** The StreamUrl rewritten to wss://localhost (same port and path): reached through HTTPS_PROXY. */
function viaProxy(url: string): string {
  const parsed = new URL(url);
  parsed.protocol = 'wss:';
  parsed.hostname = 'localhost';
  return parsed.toString();
}

const CONNECT_TIMEOUT_MS = 2_000;
/** Timers, a TerminateSession round trip and a loaded CI machine. */
const SLACK_MS = 1_500;

test.serial(
  'start through a silent proxy fails within connectTimeoutMs with a clear error; the session is terminated',
  async (t) => {
    const proxy = await startSilentProxy();
    const restore = useProxy(proxy.url);
    const emulator = await startEmulator({});
    try {
      const session = new TunnelSession(
        forwardConfig({ remotePort: 1 }),
        tuningWith({ connectTimeoutMs: CONNECT_TIMEOUT_MS }),
        0,
        { ssm: emulatorSsm(emulator, viaProxy), logger: silentLogger, userAgent: 'pf-daemon-test' },
      );
      const startedAt = performance.now();
      const err = await t.throwsAsync(withTimeout(session.start(), 30_000, 'start() to settle'));
      const took = Math.round(performance.now() - startedAt);
      t.true(isPfError(err, 'PF_ERR_CONNECT'), `PF_ERR_CONNECT, got ${String(err)}`);
      t.regex(
        err?.message ?? '',
        /through proxy http:\/\/127\.0\.0\.1:\d+.*within \d+ ms \(connectTimeoutMs\)/,
      );
      t.true(
        took >= CONNECT_TIMEOUT_MS - 50 && took <= CONNECT_TIMEOUT_MS + SLACK_MS,
        `failed after ${took} ms`,
      );
      t.true(proxy.accepted >= 1, 'the dial went through the proxy');
      await withTimeout(proxy.allClosed(), 2_000, 'our socket to the proxy to be closed (no leak)');
      const [info] = [...emulator.sessions.values()];
      t.is(info?.state, 'terminated', 'TerminateSession for the granted session');
      t.log(`start through a silent proxy failed after ${took} ms (connectTimeoutMs ${CONNECT_TIMEOUT_MS})`);
    } finally {
      restore();
      await emulator.close();
      await proxy.close();
    }
  },
);

test.serial(
  'resume through a silent proxy: the attempt fails within connectTimeoutMs and the next one resumes',
  async (t) => {
    const proxy = await startSilentProxy();
    const restore = useProxy(proxy.url);
    const emulator = await startEmulator({});
    // Direct at start; the first resume goes through the silent proxy, later ones direct again.
    let proxiedResumes = 0;
    const base = emulatorSsm(emulator);
    const ssm = {
      ...base,
      resumeSession: async (sessionId: string) => {
        const grant = await base.resumeSession(sessionId);
        if (proxiedResumes > 0) return grant;
        proxiedResumes++;
        return { ...grant, streamUrl: viaProxy(grant.streamUrl) };
      },
    };
    const { forward, port } = await startForward(
      emulator,
      { remotePort: 1 },
      tuningWith({ connectTimeoutMs: CONNECT_TIMEOUT_MS, resumeBudgetMs: 30_000 }),
      { ssm },
    );
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    try {
      const session = await withTimeout(
        new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
        10_000,
        'the session',
      );
      const reconnected = withTimeout(
        new Promise<number>((resolve) => session.once('reconnected', resolve)),
        CONNECT_TIMEOUT_MS + 10_000,
        'the session to resume',
      );
      const hung = proxy.nextAccept();
      emulator.dropClient(session.sessionId as string, 'bye');
      await withTimeout(hung, 5_000, 'the resume dial to reach the proxy');
      const dialAt = performance.now();
      const took = await reconnected;
      const afterDial = Math.round(performance.now() - dialAt);
      t.is(proxiedResumes, 1);
      // The proxied dial ends at the deadline; one backoff (≤ 250 ms) and a direct dial follow.
      t.true(afterDial >= CONNECT_TIMEOUT_MS - 100, `resumed ${afterDial} ms after the hung dial began`);
      t.true(afterDial <= CONNECT_TIMEOUT_MS + SLACK_MS, `resumed ${afterDial} ms after the hung dial began`);
      t.is(session.state, 'open');
      await withTimeout(proxy.allClosed(), 2_000, 'our socket to the proxy to be closed');
      t.log(`resume: the proxied dial was abandoned at the deadline; link up ${took} ms after the drop`);
    } finally {
      client.destroy();
      restore();
      await forward.stop(0);
      await emulator.close();
      await proxy.close();
    }
  },
);

test.serial(
  'stop during a start hung in the proxy finishes promptly and terminates the granted session',
  async (t) => {
    const proxy = await startSilentProxy();
    const restore = useProxy(proxy.url);
    const emulator = await startEmulator({});
    // A deadline far beyond the test: only the abort can end the dial.
    const { forward, port } = await startForward(
      emulator,
      { remotePort: 1 },
      tuningWith({ connectTimeoutMs: 600_000 }),
      { ssm: emulatorSsm(emulator, viaProxy) },
    );
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    try {
      await withTimeout(proxy.nextAccept(), 10_000, 'the dial to reach the proxy');
      const [info] = [...emulator.sessions.values()];
      const terminated = waitFor(emulator, 'sessionTerminated', (id) => id === info?.id, 10_000);
      const graceMs = 500;
      const stopAt = performance.now();
      await withTimeout(forward.stop(graceMs), graceMs + 5_000, 'forward.stop() during a hung start');
      const took = Math.round(performance.now() - stopAt);
      await terminated;
      await withTimeout(clientClosed, 2_000, 'the waiting local connection to be closed');
      await withTimeout(proxy.allClosed(), 2_000, 'our socket to the proxy to be closed');
      t.is(info?.state, 'terminated');
      t.true(took <= graceMs + 2_000, `stop took ${took} ms`);
      t.log(
        `stop during a hung start took ${took} ms (grace ${graceMs} ms); the granted session was terminated`,
      );
    } finally {
      client.destroy();
      restore();
      await emulator.close();
      await proxy.close();
    }
  },
);

test.serial(
  'the ledger holds the SessionId while the dial hangs in the proxy; the daemon stops promptly',
  async (t) => {
    const proxy = await startSilentProxy();
    const restore = useProxy(proxy.url);
    const emulator = await startEmulator({});
    const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
    const config: DaemonConfig = {
      forwards: [forwardConfig({ name: 'db', remotePort: 1, eager: true, endpoint: emulator.endpoint })],
      log: { ...defaultLog },
      tuning: tuningWith({ connectTimeoutMs: 600_000, drainGraceMs: 500 }),
    };
    const daemon = new Daemon(config, {
      logger: silentLogger,
      ssmFor: () => emulatorSsm(emulator, viaProxy),
      ledgerDir: dir,
    });
    const hung = proxy.nextAccept();
    await daemon.start();
    try {
      await withTimeout(hung, 10_000, 'the eager dial to reach the proxy');
      const [info] = [...emulator.sessions.values()];
      // The ledger write is asynchronous (temp file + rename) into `<pid>-<instance>.json`: wait for it, bounded.
      const readLedger = async (): Promise<string> => {
        const names = (await readdir(dir).catch(() => [])).filter((name) => name.endsWith('.json'));
        const texts = await Promise.all(
          names.map((name) => readFile(join(dir, name), 'utf8').catch(() => '')),
        );
        return texts.join('\n');
      };
      const recorded = async (): Promise<string> => {
        for (;;) {
          const text = await readLedger();
          if (info && text.includes(info.id)) return text;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      const text = await withTimeout(recorded(), 5_000, 'the SessionId in the ledger');
      t.true(text.includes(info?.id ?? '?'), 'the ledger names the session while its dial hangs');
      t.is(info?.state, 'waiting', 'no data channel ever reached the service');
    } finally {
      const stopAt = performance.now();
      await withTimeout(daemon.stop(), 5_000, 'daemon.stop() during a hung dial');
      t.true(performance.now() - stopAt <= 2_500, 'stopped within the grace period plus a little');
      restore();
      await emulator.close();
      await proxy.close();
    }
    const after = await readFile(join(dir, `${process.pid}.json`), 'utf8').catch(() => '[]');
    t.deepEqual(JSON.parse(after), [], 'forgotten once terminated');
  },
);
