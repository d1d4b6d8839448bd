/**
 * `pf-daemon status` and the metrics endpoint end to end (issue 13): a real Daemon with two forwards
 * against the emulator at the real agent's pace, its control socket and metrics server; the CLI run
 * in-process (`main`) and as a child process. Known byte counts must come out exactly, a WebSocket drop
 * must show as one reconnect in both, `/readyz` must be 503 while a forward's port is taken.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli.js';
import { STATUS_WIDTH, formatBytes } from '../../src/control/render.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { DaemonStats } from '../../src/stats.js';
import { StreamingEcho, forwardConfig, startPausableEcho, withTimeout } from '../forward/fixtures.js';
import { echoExchange, startEchoServer } from '../helpers/net.js';
import { parsePrometheusText, valueOf } from '../metrics/prom-parser.js';
import { daemonConfig, eventually, startObservedDaemon } from './harness.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

/** Run `pf-daemon status …` in-process; resolves with the exit code and what it wrote. */
async function statusInProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(['status', ...args], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: {},
  });
  return { code, stdout, stderr };
}

/** Run the real CLI as a child process. */
function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env['PATH'] ?? '', ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function scrape(url: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

test.serial(
  'status --json and /metrics report exactly the bytes and connections moved through two forwards',
  async (t) => {
    t.timeout(60_000);
    const echo = await startEchoServer();
    // The real agent's pace: one 1 KiB message per millisecond (emulator default).
    const emulator = await startEmulator();
    const observed = await startObservedDaemon(emulator, [
      forwardConfig({ name: 'db', remotePort: echo.port }),
      forwardConfig({ name: 'web', remotePort: echo.port }),
    ]);
    try {
      const dbSizes = [96 * 1024, 96 * 1024, 100_003];
      const webSizes = [50_000, 1];
      for (const size of dbSizes) {
        const r = await echoExchange(observed.port('db'), size);
        t.is(r.receivedSha256, r.sentSha256);
      }
      await Promise.all(webSizes.map((size) => echoExchange(observed.port('web'), size)));
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      // The local sockets close a moment after the clients end: wait for the figures to settle.
      await eventually(
        () => observed.daemon.stats().forwards.every((f) => f.connectionsActive === 0),
        10_000,
        'every local connection to close',
      );

      const run = await statusInProcess(['--json', '--control-socket', observed.socketPath]);
      t.is(run.code, 0, run.stderr);
      const status = JSON.parse(run.stdout) as DaemonStats;
      t.is(status.schema, 1);
      t.is(status.version, '9.9.9-test');
      t.is(status.pid, process.pid);
      t.is(status.configFile, '/etc/pf-daemon/test.yaml');
      const [db, web] = status.forwards;
      if (!db || !web) return t.fail('two forwards');
      t.is(db.name, 'db');
      t.is(db.state, 'listening');
      t.is(db.listen, `127.0.0.1:${observed.port('db')}`);
      t.is(db.document, 'AWS-StartPortForwardingSession');
      t.is(db.bytesUp, sum(dbSizes));
      t.is(db.bytesDown, sum(dbSizes));
      t.is(db.connectionsAccepted, 3);
      t.is(db.connectionsOk, 3);
      t.is(db.connectionsFailed, 0);
      t.is(db.connectionsActive, 0);
      t.is(db.sessionsStarted, 1);
      t.is(db.sessions.length, 1);
      t.is(db.sessions[0]?.mode, 'mux');
      t.is(db.sessions[0]?.state, 'open');
      t.is(db.sessions[0]?.reconnects, 0);
      t.is(db.sessions[0]?.lastError, null);
      t.is(web.bytesUp, sum(webSizes));
      t.is(web.bytesDown, sum(webSizes));
      t.is(web.connectionsOk, 2);

      const metrics = await scrape(`${observed.metricsUrl}/metrics`);
      t.is(metrics.status, 200);
      t.regex(metrics.type ?? '', /^text\/plain; version=0\.0\.4/);
      const families = parsePrometheusText(metrics.body);
      const v = (name: string, labels: Record<string, string> = {}): number =>
        valueOf(families, name, labels);
      t.is(v('pf_daemon_forward_bytes_total', { forward: 'db', direction: 'up' }), sum(dbSizes));
      t.is(v('pf_daemon_forward_bytes_total', { forward: 'db', direction: 'down' }), sum(dbSizes));
      t.is(v('pf_daemon_forward_bytes_total', { forward: 'web', direction: 'up' }), sum(webSizes));
      t.is(v('pf_daemon_forward_bytes_total', { forward: 'web', direction: 'down' }), sum(webSizes));
      t.is(v('pf_daemon_forward_connections_total', { forward: 'db', result: 'ok' }), 3);
      t.is(v('pf_daemon_forward_connections_total', { forward: 'db', result: 'failed' }), 0);
      t.is(v('pf_daemon_forward_connections_total', { forward: 'web', result: 'ok' }), 2);
      t.is(v('pf_daemon_forward_active_connections', { forward: 'db' }), 0);
      t.is(v('pf_daemon_sessions_started_total', { forward: 'db' }), 1);
      t.is(v('pf_daemon_sessions_open', { forward: 'web' }), 1);
      t.is(v('pf_daemon_session_reconnects_total', { forward: 'db' }), 0);
      t.is(v('pf_daemon_datachannel_resent_messages_total', { forward: 'db' }), db.resentMessages);
      t.is(v('pf_daemon_receive_buffered_bytes', { forward: 'db' }), 0);
      t.is(v('pf_daemon_build_info', { version: '9.9.9-test' }), 1);
      t.is(families.get('pf_daemon_session_reconnect_seconds')?.type, 'histogram');
      t.truthy(families.get('process_cpu_seconds_total'), 'process metrics');
      // Labels are forward names (and the fixed direction/result/version/le), never peer addresses.
      for (const family of families.values()) {
        if (!family.name.startsWith('pf_daemon_')) continue;
        for (const sample of family.samples) {
          for (const key of Object.keys(sample.labels)) {
            t.true(
              ['forward', 'direction', 'result', 'version', 'le'].includes(key),
              `${family.name} ${key}`,
            );
          }
        }
      }

      // The text view from a real child process: the table fits 100 columns.
      const text = await runCli(['status', '--control-socket', observed.socketPath]);
      t.is(text.code, 0, text.stderr);
      const lines = text.stdout.trimEnd().split('\n');
      for (const line of lines) t.true(line.length <= STATUS_WIDTH, `too wide: ${line}`);
      t.regex(lines[0] ?? '', /^pf-daemon 9\.9\.9-test · pid \d+ · up /);
      t.is(lines[1], '2 forwards · 2 sessions open · 0 connections · 0 reconnects');
      const shown = formatBytes(sum(dbSizes)).replace('.', '\\.');
      t.regex(
        text.stdout,
        new RegExp(`^db +127\\.0\\.0\\.1:\\d+ +listening +0 +3 +0 +${shown} +${shown}$`, 'm'),
      );
      t.regex(
        text.stdout,
        /^ {2}→ localhost:\d+ via i-0123456789abcdef0 \(AWS-StartPortForwardingSession\)$/m,
      );
      t.regex(text.stdout, /^ {2}session \S+ mux open: age /m);
    } finally {
      await observed.close();
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial(
  'a WebSocket drop shows one reconnect in status and in /metrics, and one resume log line',
  async (t) => {
    t.timeout(60_000);
    const echo = await startPausableEcho();
    const emulator = await startEmulator();
    const observed = await startObservedDaemon(emulator, [
      forwardConfig({ name: 'db', remotePort: echo.port }),
    ]);
    try {
      const transfer = new StreamingEcho(observed.port('db'), {
        totalBytes: 256 * 1024,
        windowBytes: 32 * 1024,
      });
      await withTimeout(transfer.receivedAtLeast(64 * 1024), 20_000, 'data to move before the drop');
      const session = observed.daemon.running.get('db')?.currentSession;
      if (!session?.sessionId) return t.fail('no session');
      const resumed = new Promise<number>((resolve) => session.once('reconnected', resolve));
      emulator.dropClient(session.sessionId, 'abrupt');
      await withTimeout(resumed, 20_000, 'the session to resume');
      const r = await withTimeout(transfer.done, 30_000, 'the transfer to finish');
      t.is(r.receivedSha256, r.sentSha256);

      const run = await statusInProcess(['--json', '--control-socket', observed.socketPath]);
      t.is(run.code, 0, run.stderr);
      const status = JSON.parse(run.stdout) as DaemonStats;
      const db = status.forwards[0];
      const s = db?.sessions[0];
      if (!db || !s) return t.fail('a forward with a session');
      t.is(db.reconnects, 1);
      t.is(s.reconnects, 1);
      t.is(s.state, 'open');
      t.true((s.lastReconnectMs ?? -1) >= 0, 'reconnect duration');
      t.truthy(s.lastReconnectAt);
      t.regex(s.lastError?.message ?? '', /^data channel down/);
      t.true(s.resentMessages >= 0);

      const families = parsePrometheusText((await scrape(`${observed.metricsUrl}/metrics`)).body);
      t.is(valueOf(families, 'pf_daemon_session_reconnects_total', { forward: 'db' }), 1);
      t.is(
        valueOf(
          families,
          'pf_daemon_session_reconnect_seconds',
          {},
          'pf_daemon_session_reconnect_seconds_count',
        ),
        1,
      );
      t.is(
        valueOf(families, 'pf_daemon_datachannel_resent_messages_total', { forward: 'db' }),
        s.resentMessages,
      );

      // Logs: one info line per session event (open, resume with its duration).
      const info = observed.logger.lines.filter((l) => l.level === 'info').map((l) => l.message);
      t.is(
        info.filter((m) => / open \(mux mode\) to localhost:\d+ via i-\w+ after \d+ ms$/.test(m)).length,
        1,
      );
      t.is(info.filter((m) => /^session \S+ resumed after \d+ ms/.test(m)).length, 1);
      await observed.daemon.stop();
      const ended = observed.logger.lines.filter(
        (l) => l.level === 'info' && / ended \(user\) after /.test(l.message),
      );
      t.is(ended.length, 1, 'one end line with its reason');
    } finally {
      await observed.close();
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial('/readyz is 503 naming the forward while its port is taken, 200 once it listens', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator();
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  const taken = (squatter.address() as AddressInfo).port;
  const a = forwardConfig({ name: 'a', remotePort: echo.port });
  const b = forwardConfig({ name: 'b', remotePort: echo.port, localPort: taken });
  const observed = await startObservedDaemon(emulator, [a]);
  try {
    t.is((await scrape(`${observed.metricsUrl}/readyz`)).status, 200);
    await observed.daemon.reload(daemonConfig([a, b]));
    const ready = await scrape(`${observed.metricsUrl}/readyz`);
    t.is(ready.status, 503);
    t.regex(
      ready.body,
      new RegExp(
        `^forward b is not listening: cannot listen on 127\\.0\\.0\\.1:${taken}: another process holds it`,
      ),
    );
    t.is((await scrape(`${observed.metricsUrl}/healthz`)).status, 200, 'alive while not ready');
    const families = parsePrometheusText((await scrape(`${observed.metricsUrl}/metrics`)).body);
    t.is(valueOf(families, 'pf_daemon_forward_listening', { forward: 'b' }), 0);
    t.is(valueOf(families, 'pf_daemon_forward_listening', { forward: 'a' }), 1);
    const run = await statusInProcess(['--json', '--control-socket', observed.socketPath]);
    const status = JSON.parse(run.stdout) as DaemonStats;
    t.is(status.forwards[1]?.state, 'failed');
    t.regex(status.forwards[1]?.error ?? '', /PF_ERR_LISTEN/);

    await new Promise<void>((resolve) => squatter.close(() => resolve()));
    await observed.daemon.reload(daemonConfig([a, b]));
    const after = await scrape(`${observed.metricsUrl}/readyz`);
    t.is(after.status, 200);
    t.is(after.body, 'ready\n');
    t.is((await scrape(`${observed.metricsUrl}/nothing`)).status, 404);
    t.is((await fetch(`${observed.metricsUrl}/metrics`, { method: 'POST' })).status, 405);
  } finally {
    squatter.close();
    await observed.close();
    await emulator.close();
    await echo.close();
  }
});

test('status with no daemon running exits 1 with one line naming the fix', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pf-nodaemon-'));
  try {
    // Neither the runtime directory nor the temporary-folder fallback holds a socket.
    const run = await runCli(['status'], {
      XDG_RUNTIME_DIR: path.join(dir, 'run'),
      TMPDIR: path.join(dir, 'tmp'),
    });
    t.is(run.code, 1);
    t.is(run.stdout, '');
    const lines = run.stderr.trimEnd().split('\n');
    t.is(lines.length, 1, run.stderr);
    t.regex(
      lines[0] ?? '',
      /^pf-daemon: error: no pf-daemon is running \(nothing answers on any of .*\/run\/pf-daemon\/control\.sock, .*\/tmp\/pf-daemon-\d+\/control\.sock\): start one .*or pass --control-socket PATH \[PF_ERR_CONTROL_SOCKET\]$/,
    );
    const explicit = await runCli(['status', '--json', '--control-socket', path.join(dir, 'none.sock')]);
    t.is(explicit.code, 1);
    t.regex(explicit.stderr, /nothing answers on .*none\.sock\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
