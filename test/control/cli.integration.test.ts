/**
 * The real `pf-daemon` process with `--metrics` and `--control-socket` against the emulator: the flags
 * reach the monitor, `pf-daemon status` (another process) reads the daemon's bytes, `/metrics` serves
 * them, SIGUSR1 writes the per-forward lines, and SIGTERM removes the socket.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../../src/emulator/index.js';
import type { DaemonStats } from '../../src/stats.js';
import { echoExchange, startEchoServer, withTimeout } from '../helpers/net.js';
import { parsePrometheusText, valueOf } from '../metrics/prom-parser.js';
import { credentials, TARGET } from '../forward/fixtures.js';
import { eventually } from './harness.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

test('pf-daemon --metrics --control-socket: status from another process and /metrics agree on the bytes', async (t) => {
  t.timeout(60_000);
  const echo = await startEchoServer();
  const emulator = await startEmulator();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pf-cli-'));
  const socketPath = path.join(dir, 'run', 'control.sock');
  const env = {
    PATH: process.env['PATH'] ?? '',
    HOME: dir,
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_REGION: 'us-east-1',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  const daemon = spawn(
    process.execPath,
    [
      CLI,
      '--endpoint',
      emulator.endpoint,
      '--forward',
      `0:${echo.port}@${TARGET}`,
      '--metrics',
      '127.0.0.1:0',
      '--control-socket',
      socketPath,
      '--log-format',
      'plain',
    ],
    { env },
  );
  let log = '';
  daemon.stderr.on('data', (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((resolve) => daemon.once('exit', resolve));
  try {
    await eventually(
      () => /metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/.test(log),
      20_000,
      'the metrics line',
    );
    const metricsPort = Number(/metrics on http:\/\/127\.0\.0\.1:(\d+)\//.exec(log)?.[1]);
    const localPort = Number(/listening on 127\.0\.0\.1:(\d+) /.exec(log)?.[1]);
    const size = 123_457;
    const r = await echoExchange(localPort, size);
    t.is(r.receivedSha256, r.sentSha256);
    const status = async (): Promise<DaemonStats> =>
      new Promise((resolve, reject) =>
        execFile(
          process.execPath,
          [CLI, 'status', '--json', '--control-socket', socketPath],
          { env },
          (err, out) => (err ? reject(err) : resolve(JSON.parse(out) as DaemonStats)),
        ),
      );
    let stats = await status();
    for (let i = 0; i < 50 && stats.forwards[0]?.connectionsActive !== 0; i++) stats = await status();
    t.is(stats.forwards[0]?.bytesUp, size);
    t.is(stats.forwards[0]?.bytesDown, size);
    t.is(stats.configFile, null, 'running from flags');
    const families = parsePrometheusText(
      await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
    );
    const name = stats.forwards[0]?.name ?? '';
    t.is(valueOf(families, 'pf_daemon_forward_bytes_total', { forward: name, direction: 'down' }), size);
    t.is(valueOf(families, 'pf_daemon_forward_connections_total', { forward: name, result: 'ok' }), 1);

    daemon.kill('SIGUSR1');
    await eventually(
      () => log.includes(`${name}: listening on 127.0.0.1:${localPort}, 1 session(s) open`),
      10_000,
      'the SIGUSR1 line',
    );
    daemon.kill('SIGTERM');
    t.is(await withTimeout(exited, 20_000, 'the daemon to exit'), 0);
    t.false(existsSync(socketPath), 'the socket is removed on stop');
  } finally {
    daemon.kill('SIGKILL');
    await emulator.close();
    await echo.close();
    await rm(dir, { recursive: true, force: true });
  }
});
