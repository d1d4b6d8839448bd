/**
 * Config and flags of the observability features (issue 13): `controlSocket`, `metrics.listen`,
 * `--control-socket`, `--metrics`; and the text view's 100-column bound with long values.
 */
import test from 'ava';
import { overlayFlags } from '../../src/config/flags.js';
import { parseHostPort, verifyConfig } from '../../src/config/verify.js';
import { renderStatus, STATUS_WIDTH } from '../../src/control/render.js';
import { defaultControlSocketPath, clientControlSocketPaths } from '../../src/control/paths.js';
import { failedForwardStats, summaryLine } from '../../src/stats.js';
import type { DaemonStats } from '../../src/stats.js';
import { isPfError } from '../../src/errors.js';

const T = 'i-0123456789abcdef0';
const base = { forwards: [{ target: T, remotePort: 5432 }] };

test('controlSocket and metrics.listen are validated, optional, and set by their flags', (t) => {
  const plain = verifyConfig(base);
  t.is(plain.controlSocket, undefined);
  t.is(plain.metrics, undefined);
  const set = verifyConfig({ ...base, controlSocket: '/run/pf/c.sock', metrics: { listen: '[::1]:9464' } });
  t.is(set.controlSocket, '/run/pf/c.sock');
  t.deepEqual(set.metrics, { listen: '[::1]:9464' });
  const err = t.throws(() =>
    verifyConfig({
      ...base,
      controlSocket: 'relative.sock',
      metrics: { listen: 'example.com:9464', port: 1 },
    }),
  );
  t.true(isPfError(err, 'PF_ERR_CONFIG'));
  t.regex(err?.message ?? '', /controlSocket: must be an absolute path/);
  t.regex(err?.message ?? '', /metrics\.listen: must be host:port with an IP address/);
  t.regex(err?.message ?? '', /metrics\.port: unknown key/);
  t.throws(() => verifyConfig({ ...base, controlSocket: `/${'x'.repeat(110)}` }), {
    message: /at most 103 bytes/,
  });

  const { raw, source } = overlayFlags(undefined, {
    target: T,
    port: 5432,
    controlSocket: 'nope',
    metrics: '127.0.0.1:99999',
  });
  const flagErr = t.throws(() => verifyConfig(raw, source));
  t.regex(flagErr?.message ?? '', /controlSocket: .* from --control-socket/);
  t.regex(flagErr?.message ?? '', /metrics\.listen: .* from --metrics/);
  const ok = overlayFlags(undefined, {
    target: T,
    port: 5432,
    controlSocket: '/tmp/x/c.sock',
    metrics: '127.0.0.1:0',
  });
  const config = verifyConfig(ok.raw, ok.source);
  t.is(config.controlSocket, '/tmp/x/c.sock');
  t.is(config.metrics?.listen, '127.0.0.1:0');
});

test('parseHostPort takes IPv4, bracketed IPv6 and localhost, nothing else', (t) => {
  t.deepEqual(parseHostPort('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  t.deepEqual(parseHostPort('[::1]:9464'), { host: '::1', port: 9464 });
  t.deepEqual(parseHostPort('localhost:1'), { host: 'localhost', port: 1 });
  for (const bad of [
    '::1:9464',
    '127.0.0.1',
    ':9464',
    '127.0.0.1:65536',
    'host:80',
    '[127.0.0.1]:80',
    '1.2.3.4:-1',
  ]) {
    t.is(parseHostPort(bad), undefined, bad);
  }
});

test('default control socket: RUNTIME_DIRECTORY, else XDG_RUNTIME_DIR, else a per-user folder in tmp', (t) => {
  t.is(
    defaultControlSocketPath({ RUNTIME_DIRECTORY: '/run/pf-daemon', XDG_RUNTIME_DIR: '/run/user/1' }),
    '/run/pf-daemon/control.sock',
  );
  t.is(defaultControlSocketPath({ XDG_RUNTIME_DIR: '/run/user/1' }), '/run/user/1/pf-daemon/control.sock');
  t.regex(defaultControlSocketPath({}), /\/pf-daemon-\d+\/control\.sock$/);
  t.deepEqual(
    clientControlSocketPaths({ XDG_RUNTIME_DIR: '/run/user/1' })[0],
    '/run/user/1/pf-daemon/control.sock',
  );
});

test('the text view stays within 100 columns with long names, addresses and errors', (t) => {
  const long = failedForwardStats(
    {
      name: `n${'x'.repeat(99)}`,
      target: 'mi-0123456789abcdef01',
      remotePort: 65535,
      host: `h${'y'.repeat(200)}`,
      localPort: 65535,
      bind: 'fe80::1234:5678:9abc:def0',
      eager: false,
      idleStopMs: 0,
      sessions: 1,
      keepAlive: false,
      halfCloseLingerMs: 0,
      allowInsecureEndpoint: false,
    },
    `cannot listen: ${'z'.repeat(300)}`,
  );
  const stats: DaemonStats = {
    schema: 1,
    version: '0.1.0',
    pid: 1,
    startedAt: new Date(0).toISOString(),
    uptimeMs: 123_456_789,
    configFile: `/${'c'.repeat(200)}.yaml`,
    forwards: [
      {
        ...long,
        state: 'listening',
        error: null,
        listen: '[fe80::1234:5678:9abc:def0]:65535',
        bytesUp: 9.9e15,
        bytesDown: 1,
        connectionsAccepted: 9_999_999,
        sessions: [
          {
            id: `s-${'q'.repeat(120)}`,
            mode: 'mux',
            state: 'reconnecting',
            connections: 99_999,
            startedAt: new Date(0).toISOString(),
            ageMs: 99_999_999,
            reconnects: 12,
            lastReconnectAt: new Date(0).toISOString(),
            lastReconnectMs: 1234,
            resentMessages: 99_999,
            unackedMessages: 256,
            bufferedUpBytes: 123_456,
            bufferedDownBytes: 4_194_304,
            reorderBufferedMessages: 0,
            lastError: { message: 'e'.repeat(300), at: new Date(0).toISOString() },
            channel: {} as DaemonStats['forwards'][number]['sessions'][number]['channel'],
            mux: null,
            basic: null,
            input: {} as DaemonStats['forwards'][number]['sessions'][number]['input'],
          },
        ],
      },
      long,
    ],
  };
  const text = renderStatus(stats, { ...stats, uptimeMs: stats.uptimeMs - 1000 });
  for (const line of text.trimEnd().split('\n'))
    t.true(line.length <= STATUS_WIDTH, `${line.length}: ${line}`);
  t.is(summaryLine(stats), '2 forwards · 1 session open · 0 connections · 0 reconnects · 1 not listening');
  t.regex(text, /not listening: cannot listen: z+…/);
  t.regex(text, /rate up 0\.00 MB\/s/);
});
