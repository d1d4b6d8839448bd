/**
 * The daemon owns SOCKS listeners like forwards: started with the daemon, shown in the stats tree and
 * `status`, their destination sessions recorded in the session ledger, changed or removed by a reload,
 * and stopped (sessions terminated) by stop().
 */
import test from 'ava';
import { mkdtempSync, readdirSync, watch } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig, SocksConfig } from '../../src/config/types.js';
import { renderStatus } from '../../src/control/render.js';
import { Daemon } from '../../src/daemon.js';
import { summaryLine } from '../../src/stats.js';
import { emulatorSsm, tuningWith } from '../forward/fixtures.js';
import { captureLog } from '../helpers/log.js';
import { freePort } from '../helpers/net.js';
import { HOST_MAP, curl, sha256, socksConfig, startBodyServer, withTimeout } from './fixtures.js';
import { startEmulator } from '../../src/emulator/index.js';

function config(socks: SocksConfig[]): DaemonConfig {
  return {
    forwards: [],
    socks,
    log: { level: 'debug', format: 'plain' },
    tuning: tuningWith({ drainGraceMs: 2_000 }),
  };
}

function socksPort(daemon: Daemon, name: string): number {
  const listen = daemon.stats().socks?.find((s) => s.name === name)?.listen;
  if (!listen) throw new Error(`socks ${name} is not listening`);
  return Number(listen.slice(listen.lastIndexOf(':') + 1));
}

/** Resolves once the ledger folder holds an entry file (checked on every change event). */
function ledgerHasEntry(dir: string): Promise<void> {
  const entries = (): number =>
    readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.json')).length;
  return withTimeout(
    new Promise<void>((resolve) => {
      const watcher = watch(dir, { recursive: true }, () => check());
      const check = (): void => {
        if (entries() === 0) return;
        watcher.close();
        resolve();
      };
      check();
    }),
    5_000,
    'the ledger to record the destination session',
  );
}

function connectRefused(port: number): Promise<boolean> {
  return withTimeout(
    new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(true));
    }),
    5_000,
    'a connect attempt',
  );
}

test('a socks entry runs with the daemon: status shows it and its destinations, the ledger records its sessions, reload and stop end them', async (t) => {
  t.timeout(60_000);
  const alpha = await startBodyServer(64 * 1024);
  const emulator = await startEmulator({ hostMap: HOST_MAP });
  const ssm = emulatorSsm(emulator);
  const ledgerDir = mkdtempSync(join(tmpdir(), 'pf-ledger-socks-'));
  const log = captureLog();
  const entry = socksConfig({ name: 'proxy' });
  const daemon = new Daemon(config([entry]), { logger: log.logger, ssmFor: () => ssm, ledgerDir });
  try {
    await daemon.start();
    const port = socksPort(daemon, 'proxy');
    const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://alpha.test:${alpha.port}/`]);
    t.is(r.code, 0, r.stderr);
    t.is(sha256(r.stdout), alpha.sha256);
    t.true(daemon.readiness().ready);
    const stats = daemon.stats();
    t.is(stats.socks?.[0]?.destinations[0]?.host, 'alpha.test');
    t.regex(summaryLine(stats), /^0 forwards · 1 session open/);
    const screen = renderStatus(stats);
    t.regex(screen, /^proxy +127\.0\.0\.1:\d+ +listening +[01] +1 +0 /m);
    t.regex(screen, /^ {2}→ SOCKS5\/HTTP CONNECT via i-0123456789abcdef0: no auth, 1\/16 destinations,$/m);
    t.regex(screen, /^ {4}refused: 0 by allow list, 0 by the agent, 0 at maxSessions, 0 bad handshakes$/m);
    t.regex(
      screen,
      new RegExp(`^  alpha\\.test:${alpha.port}: [01] open, 1 total; session emulator-\\w+ open$`, 'm'),
    );
    for (const line of screen.split('\n')) t.true(line.length <= 100, line);
    await ledgerHasEntry(ledgerDir);
    // Changed entry: a new listener; the old one stops and its destination session is terminated.
    const summary = await daemon.reload(config([{ ...entry, maxSessions: 4 }]));
    t.is(summary.listening, 0, 'forwards only');
    const [first] = [...emulator.sessions.values()];
    t.is(first?.state, 'terminated', 'the old listener stopped its destination session');
    const next = socksPort(daemon, 'proxy');
    t.is(daemon.stats().socks?.[0]?.maxSessions, 4);
    const again = await curl(['--socks5-hostname', `127.0.0.1:${next}`, `http://alpha.test:${alpha.port}/`]);
    t.is(sha256(again.stdout), alpha.sha256, again.stderr);
    // Removed: the port closes and the stats tree drops it.
    await daemon.reload(config([]));
    t.true(await connectRefused(next));
    t.is(daemon.stats().socks, undefined);
    t.true([...emulator.sessions.values()].every((s) => s.state === 'terminated'));
    t.true(log.lines.some((l) => /SOCKS5\/HTTP CONNECT on 127\.0\.0\.1:\d+/.test(l.message)));
  } finally {
    await daemon.stop();
    await emulator.close();
    await alpha.close();
  }
});

/** One SOCKS5 greeting (no auth) on a new connection: 'served' when the method reply comes, or 'refused'. */
function greet(port: number): Promise<'served' | 'refused'> {
  return withTimeout(
    new Promise<'served' | 'refused'>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => socket.write(Buffer.from([0x05, 0x01, 0x00])));
      socket.once('data', (reply) => {
        socket.destroy();
        resolve(reply[0] === 0x05 && reply[1] === 0x00 ? 'served' : 'refused');
      });
      socket.once('error', () => resolve('refused'));
    }),
    5_000,
    'a SOCKS5 greeting',
  );
}

test('a changed socks entry on the same port hands its listener over: greetings during the reload are never refused', async (t) => {
  t.timeout(60_000);
  const alpha = await startBodyServer(16 * 1024);
  const emulator = await startEmulator({ hostMap: HOST_MAP });
  const log = captureLog();
  const entry = socksConfig({ name: 'proxy', localPort: await freePort() });
  const daemon = new Daemon(config([entry]), { logger: log.logger, ssmFor: () => emulatorSsm(emulator) });
  try {
    await daemon.start();
    const outcomes: string[] = [];
    let reloading = true;
    const greetings = (async () => {
      // Back-to-back greetings for as long as the reload runs (and at least a few).
      while (reloading || outcomes.length < 5) outcomes.push(await greet(entry.localPort));
    })();
    await withTimeout(daemon.reload(config([{ ...entry, maxSessions: 4 }])), 10_000, 'the reload');
    reloading = false;
    await greetings;
    t.deepEqual(
      outcomes.filter((o) => o === 'refused'),
      [],
      `${outcomes.length} greetings, none refused`,
    );
    t.is(daemon.stats().socks?.[0]?.maxSessions, 4, 'the new entry serves the port');
    t.true(
      log.lines.some((l) =>
        /SOCKS5\/HTTP CONNECT on .*\(listener taken over from the previous configuration\)/.test(l.message),
      ),
      'the log says the listener was taken over',
    );
    const r = await curl([
      '--socks5-hostname',
      `127.0.0.1:${entry.localPort}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.is(sha256(r.stdout), alpha.sha256, r.stderr);
  } finally {
    await daemon.stop();
    await emulator.close();
    await alpha.close();
  }
});

test('a socks listener that cannot bind fails the start like a forward (PF_ERR_LISTEN), and its port is named', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const taken = (blocker.address() as net.AddressInfo).port;
  const emulator = await startEmulator();
  const daemon = new Daemon(config([socksConfig({ name: 'proxy', localPort: taken })]), {
    logger: captureLog().logger,
    ssmFor: () => emulatorSsm(emulator),
  });
  try {
    await t.throwsAsync(daemon.start(), {
      message: new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken}: another process holds it`),
    });
  } finally {
    await daemon.stop();
    await emulator.close();
    await new Promise((resolve) => blocker.close(resolve));
  }
});
