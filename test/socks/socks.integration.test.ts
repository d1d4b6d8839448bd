/**
 * End-to-end dynamic forwarding: real curl (`--socks5-hostname`, `--proxy http://… -p`) through the
 * SocksServer, SessionKeepers and the emulator (real agent pace: 1 KiB messages 1 ms apart) to two HTTP
 * servers under two host names the emulated agent resolves. Bytes are checked by SHA-256; StartSession
 * calls are counted on the emulator.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startEchoServer } from '../helpers/net.js';
import type { SocksDestination } from '../../src/socks/socks5.js';
import {
  HOST_MAP,
  curl,
  rawExchange,
  refusingPort,
  sha256,
  socksConnectBytes,
  startBodyServer,
  startSocksRig,
  withTimeout,
} from './fixtures.js';
import { Reply } from '../../src/socks/socks5.js';
import { HANDSHAKE_TIMEOUT_MS } from '../../src/socks/server.js';
import { DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST } from '../../src/config/types.js';

/** 192 KiB: ~190 agent messages at 1 ms each, several smux windows of the paced agent. */
const BODY_BYTES = 192 * 1024;

test('curl --socks5-hostname reaches two hosts by name through one session each, reused by later connections', async (t) => {
  t.timeout(90_000);
  const alpha = await startBodyServer(BODY_BYTES);
  const beta = await startBodyServer(BODY_BYTES);
  const rig = await startSocksRig();
  try {
    const proxy = `127.0.0.1:${rig.port}`;
    const a = await curl(['--socks5-hostname', proxy, `http://alpha.test:${alpha.port}/`]);
    t.is(a.code, 0, a.stderr);
    t.is(sha256(a.stdout), alpha.sha256);
    const b = await curl(['--socks5-hostname', proxy, `http://beta.test:${beta.port}/`]);
    t.is(b.code, 0, b.stderr);
    t.is(sha256(b.stdout), beta.sha256);
    t.is(rig.emulator.sessions.size, 2, 'one StartSession per distinct destination');
    // Three more to alpha in parallel: the same session carries them (warm path).
    const again = await Promise.all(
      [1, 2, 3].map(() => curl(['--socks5-hostname', proxy, `http://alpha.test:${alpha.port}/`])),
    );
    for (const r of again) t.is(sha256(r.stdout), alpha.sha256, r.stderr);
    t.is(rig.emulator.sessions.size, 2, 'later connections to a destination share its session');
    t.is(alpha.requests, 4);
    const sessions = [...rig.emulator.sessions.values()];
    t.deepEqual(
      sessions.map((s) => [s.document, s.parameters['host']?.[0], s.parameters['portNumber']?.[0]]),
      [
        [DOCUMENT_REMOTE_HOST, 'alpha.test', String(alpha.port)],
        [DOCUMENT_REMOTE_HOST, 'beta.test', String(beta.port)],
      ],
      'the name goes to the agent unresolved (socks5h)',
    );
    const stats = rig.server.stats;
    t.is(stats.destinations.length, 2);
    t.like(stats.destinations[0], { host: 'alpha.test', port: alpha.port, connectionsTotal: 4 });
    t.is(stats.destinations[0]?.sessions.length, 1);
    t.true(stats.bytesDown >= 5 * BODY_BYTES);
  } finally {
    await rig.close();
    await alpha.close();
    await beta.close();
  }
});

test('curl --proxy http://… --proxytunnel (HTTP CONNECT) reaches both hosts with the bytes intact', async (t) => {
  t.timeout(90_000);
  const alpha = await startBodyServer(BODY_BYTES);
  const beta = await startBodyServer(BODY_BYTES);
  const rig = await startSocksRig();
  try {
    const proxy = `http://127.0.0.1:${rig.port}`;
    const [a, b] = await Promise.all([
      curl(['--proxy', proxy, '--proxytunnel', `http://alpha.test:${alpha.port}/`]),
      curl(['--proxy', proxy, '--proxytunnel', `http://beta.test:${beta.port}/`]),
    ]);
    t.is(a.code, 0, a.stderr);
    t.is(b.code, 0, b.stderr);
    t.is(sha256(a.stdout), alpha.sha256);
    t.is(sha256(b.stdout), beta.sha256);
    t.is(rig.emulator.sessions.size, 2);
    // Plain proxying is out of scope: a clear 405.
    const get = await curl(['--proxy', proxy, '--include', `http://alpha.test:${alpha.port}/`]);
    t.regex(get.stdout.toString(), /^HTTP\/1\.1 405 Method Not Allowed/);
    t.regex(get.stdout.toString(), /CONNECT-only proxy/);
    t.is(rig.emulator.sessions.size, 2, 'a refused GET starts no session');
  } finally {
    await rig.close();
    await alpha.close();
    await beta.close();
  }
});

test('a loopback destination uses the plain document with no host parameter', async (t) => {
  const alpha = await startBodyServer(16 * 1024);
  const rig = await startSocksRig();
  try {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${rig.port}`, `http://localhost:${alpha.port}/`]);
    t.is(r.code, 0, r.stderr);
    t.is(sha256(r.stdout), alpha.sha256);
    const [session] = [...rig.emulator.sessions.values()];
    t.is(session?.document, DOCUMENT_LOCAL);
    t.is(session?.parameters['host'], undefined);
    t.is(rig.server.stats.destinations[0]?.document, DOCUMENT_LOCAL);
  } finally {
    await rig.close();
    await alpha.close();
  }
});

test('the allow list refuses with 0x02 (SOCKS) and 403 (HTTP) and starts no session', async (t) => {
  const alpha = await startBodyServer(1024);
  const rig = await startSocksRig({ allow: [`alpha.test:${alpha.port}`] });
  try {
    const denied = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'beta.test', type: 'domain', port: alpha.port }),
    );
    t.is(denied.bytes.toString('hex'), '0500' + '05020001000000000000');
    t.true(denied.closed);
    const deniedPort = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'alpha.test', type: 'domain', port: alpha.port + 1 }),
    );
    t.is(deniedPort.bytes[3], Reply.NotAllowed);
    const http = await curl([
      '--proxy',
      `http://127.0.0.1:${rig.port}`,
      '-p',
      `http://beta.test:${alpha.port}/`,
    ]);
    t.not(http.code, 0);
    t.regex(http.stderr, /403/);
    t.is(rig.emulator.sessions.size, 0);
    t.is(rig.server.stats.notAllowed, 3);
    const ok = await curl(['--socks5-hostname', `127.0.0.1:${rig.port}`, `http://alpha.test:${alpha.port}/`]);
    t.is(sha256(ok.stdout), alpha.sha256, ok.stderr);
  } finally {
    await rig.close();
    await alpha.close();
  }
});

test('a refused destination answers 0x05 connection refused (SOCKS) and 502 (HTTP)', async (t) => {
  const closed = await refusingPort();
  const rig = await startSocksRig();
  try {
    const socks = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'alpha.test', type: 'domain', port: closed }),
    );
    t.is(socks.bytes.subarray(2).toString('hex'), '05050001000000000000', 'greeting 0500, then refused');
    t.true(socks.closed);
    const viaCurl = await curl([
      '--socks5-hostname',
      `127.0.0.1:${rig.port}`,
      `http://alpha.test:${closed}/`,
    ]);
    t.is(viaCurl.code, 97, 'curl: SOCKS proxy handshake failed');
    t.regex(viaCurl.stderr, /SOCKS5 connection to alpha\.test\. \(5\)/, 'curl names reply code 5');
    const http = await curl(['--proxy', `http://127.0.0.1:${rig.port}`, '-p', `http://beta.test:${closed}/`]);
    t.regex(http.stderr, /502/);
    t.is(rig.server.stats.refused, 3);
  } finally {
    await rig.close();
  }
});

test('username/password on loopback: curl with the right credentials gets through, wrong ones are refused', async (t) => {
  const alpha = await startBodyServer(8 * 1024);
  const rig = await startSocksRig({ username: 'alice', password: 'correct horse' });
  try {
    const good = await curl([
      '--proxy',
      `socks5h://alice:correct%20horse@127.0.0.1:${rig.port}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.is(good.code, 0, good.stderr);
    t.is(sha256(good.stdout), alpha.sha256);
    const bad = await curl([
      '--proxy',
      `socks5h://alice:wrong@127.0.0.1:${rig.port}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.not(bad.code, 0);
    const none = await curl([
      '--socks5-hostname',
      `127.0.0.1:${rig.port}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.not(none.code, 0, 'no credentials offered: method 0xFF');
    const httpGood = await curl([
      '--proxy',
      `http://alice:correct%20horse@127.0.0.1:${rig.port}`,
      '-p',
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.is(sha256(httpGood.stdout), alpha.sha256, httpGood.stderr);
    const httpBad = await curl([
      '--proxy',
      `http://127.0.0.1:${rig.port}`,
      '-p',
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.regex(httpBad.stderr, /407/);
    t.is(rig.server.stats.handshakeFailures, 3);
    t.is(alpha.requests, 2);
  } finally {
    await rig.close();
    await alpha.close();
  }
});

test('maxSessions bounds distinct destinations: a busy set refuses a new one (0x01, 503); an idle one makes room', async (t) => {
  t.timeout(60_000);
  const alpha = await startBodyServer(1024);
  const rig = await startSocksRig({ maxSessions: 1 });
  try {
    // Hold a connection to alpha open (a raw client that sends nothing after the CONNECT).
    const held = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'alpha.test', type: 'domain', port: alpha.port }),
      {
        untilBytes: 12,
      },
    );
    t.is(held.bytes.subarray(2, 4).toString('hex'), '0500', 'success');
    const busy = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'beta.test', type: 'domain', port: alpha.port }),
    );
    t.is(busy.bytes[3], Reply.GeneralFailure);
    const http = await curl([
      '--proxy',
      `http://127.0.0.1:${rig.port}`,
      '-p',
      `http://beta.test:${alpha.port}/`,
    ]);
    t.regex(http.stderr, /503/);
    t.is(rig.server.stats.limitReached, 2);
    // A second connection to the held destination is not a new destination.
    const same = await curl([
      '--socks5-hostname',
      `127.0.0.1:${rig.port}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.is(sha256(same.stdout), alpha.sha256, same.stderr);
    held.socket.destroy();
    await withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (rig.server.stats.destinations[0]?.connectionsActive === 0) resolve();
          else setImmediate(check);
        };
        check();
      }),
      10_000,
      'alpha to go idle',
    );
    const now = await curl(['--socks5-hostname', `127.0.0.1:${rig.port}`, `http://beta.test:${alpha.port}/`]);
    t.is(sha256(now.stdout), alpha.sha256, now.stderr);
    t.deepEqual(
      rig.server.stats.destinations.map((d) => d.host),
      ['beta.test'],
      'the idle destination was stopped to make room',
    );
    t.true(Object.keys(HOST_MAP).includes('beta.test'));
  } finally {
    await rig.close();
    await alpha.close();
  }
});

test('a 300 ms agent not-ready window: a first connection is answered success only once the agent took its SYN, and a refused one still hears 0x05', async (t) => {
  const silent = await startEchoServer();
  const closed = await refusingPort();
  const rig = await startSocksRig({}, { notReadyWindowMs: 300 });
  const agentStats = (): { streamsOpened: number; dialFailures: number } => {
    const agents = [...rig.emulator.sessions.values()].map((s) => s.agent?.stats);
    return {
      streamsOpened: agents.reduce((n, a) => n + (a?.streamsOpened ?? 0), 0),
      dialFailures: agents.reduce((n, a) => n + (a?.dialFailures ?? 0), 0),
    };
  };
  try {
    // The echo server says nothing first, so only the confirmation ends the wait.
    const socket = net.connect(rig.port, '127.0.0.1');
    socket.write(socksConnectBytes({ host: 'alpha.test', type: 'domain', port: silent.port }));
    const seen = await withTimeout(
      new Promise<{ bytes: Buffer; opened: number }>((resolve) => {
        let bytes = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          bytes = Buffer.concat([bytes, chunk]);
          // Read in the same process as the agent: what it had done when our reply arrived.
          if (bytes.length >= 12) resolve({ bytes, opened: agentStats().streamsOpened });
        });
      }),
      20_000,
      'the success reply',
    );
    socket.destroy();
    t.is(seen.bytes.subarray(2, 12).toString('hex'), '05000001000000000000');
    t.is(seen.opened, 1, 'the agent consumed the SYN (and dialed) before the reply said success');

    const refused = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'beta.test', type: 'domain', port: closed }),
    );
    t.is(refused.bytes.subarray(2).toString('hex'), '05050001000000000000', 'greeting 0500, then refused');
    t.is(agentStats().dialFailures, 1);
    t.is(rig.server.stats.refused, 1);
  } finally {
    await rig.close();
    await silent.close();
  }
});

test('bytes a client sends right after its CONNECT (before the reply) reach the destination', async (t) => {
  const alpha = await startBodyServer(32 * 1024);
  const rig = await startSocksRig();
  try {
    const request = Buffer.from('GET / HTTP/1.0\r\nHost: alpha.test\r\n\r\n');
    const socks = await rawExchange(
      rig.port,
      Buffer.concat([socksConnectBytes({ host: 'alpha.test', type: 'domain', port: alpha.port }), request]),
    );
    t.is(socks.bytes.subarray(0, 12).toString('hex'), '0500' + '05000001000000000000');
    const response = socks.bytes.subarray(12);
    t.is(sha256(response.subarray(response.indexOf('\r\n\r\n') + 4)), alpha.sha256);
    const http = await rawExchange(
      rig.port,
      Buffer.concat([Buffer.from(`CONNECT alpha.test:${alpha.port} HTTP/1.1\r\n\r\n`), request]),
    );
    const text = http.bytes.toString('latin1');
    t.true(text.startsWith('HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK'), text.slice(0, 80));
    const body = http.bytes.subarray(http.bytes.indexOf('\r\n\r\n', 40) + 4);
    t.is(sha256(body), alpha.sha256);
  } finally {
    await rig.close();
    await alpha.close();
  }
});

test('a destination that refuses after it was confirmed: that client is closed after its success reply, the next one hears 0x05', async (t) => {
  const alpha = await startBodyServer(4 * 1024);
  const rig = await startSocksRig();
  try {
    const first = await curl([
      '--socks5-hostname',
      `127.0.0.1:${rig.port}`,
      `http://alpha.test:${alpha.port}/`,
    ]);
    t.is(sha256(first.stdout), alpha.sha256, first.stderr);
    await alpha.close();
    // Confirmed destination: the reply is success at once (no wait), then the agent's refusal closes it.
    const optimistic = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'alpha.test', type: 'domain', port: alpha.port }),
    );
    t.is(optimistic.bytes.subarray(2).toString('hex'), '05000001000000000000');
    t.true(optimistic.closed);
    // That refusal cleared the confirmation: the next connection waits for the truth.
    const truthful = await rawExchange(
      rig.port,
      socksConnectBytes({ host: 'alpha.test', type: 'domain', port: alpha.port }),
    );
    t.is(truthful.bytes.subarray(2).toString('hex'), '05050001000000000000');
    t.is(rig.emulator.sessions.size, 1, 'one destination, one session throughout');
    t.is(rig.server.stats.refused, 2);
  } finally {
    await rig.close();
  }
});

test('a client that never completes its greeting is closed after the handshake timeout', async (t) => {
  t.timeout(30_000);
  const rig = await startSocksRig();
  try {
    const started = performance.now();
    const stalled = await rawExchange(rig.port, Buffer.from([0x05, 0x02, 0x00]), { timeoutMs: 20_000 });
    const ms = performance.now() - started;
    t.true(stalled.closed);
    t.is(stalled.bytes.length, 0);
    t.true(ms >= HANDSHAKE_TIMEOUT_MS - 50 && ms < HANDSHAKE_TIMEOUT_MS + 5_000, `${ms} ms`);
    t.is(rig.server.stats.handshakeFailures, 1);
  } finally {
    await rig.close();
  }
});

/** Connect through SOCKS5 to `destination`, send `bytes` random bytes and read them back; SHA-256 both. */
function socksEcho(
  proxyPort: number,
  destination: SocksDestination,
  bytes: number,
): Promise<{ sent: string; got: string }> {
  return new Promise((resolve, reject) => {
    const data = randomBytes(bytes);
    const socket = net.connect(proxyPort, '127.0.0.1');
    const chunks: Buffer[] = [];
    let length = 0;
    let replied = false;
    socket.on('error', reject);
    socket.on('connect', () => socket.write(socksConnectBytes(destination)));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (!replied && length >= 12) {
        const head = Buffer.concat(chunks);
        if (head[3] !== Reply.Succeeded)
          return reject(new Error(`reply ${head.subarray(0, 12).toString('hex')}`));
        replied = true;
        chunks.length = 0;
        chunks.push(head.subarray(12));
        length -= 12;
        socket.write(data);
      }
      if (replied && length >= bytes) {
        socket.destroy();
        resolve({ sent: sha256(data), got: sha256(Buffer.concat(chunks)) });
      }
    });
    socket.on('close', () => reject(new Error(`closed after ${length} bytes`)));
  });
}

test('IPv4 and IPv6 address destinations, and 100 concurrent connections × 64 KiB echoed intact through one paced session', async (t) => {
  t.timeout(90_000);
  const echo = await startEchoServer();
  const rig = await startSocksRig();
  try {
    const v4 = await socksEcho(rig.port, { host: '127.0.0.1', type: 'ipv4', port: echo.port }, 4096);
    t.is(v4.got, v4.sent);
    const v6 = await socksEcho(rig.port, { host: '::1', type: 'ipv6', port: echo.port }, 4096);
    t.is(v6.got, v6.sent);
    // 127.0.0.1 and ::1 are loopback: the plain document, two destinations (they are named differently).
    t.deepEqual(
      [...rig.emulator.sessions.values()].map((s) => [s.document, s.parameters['host']]),
      [
        [DOCUMENT_LOCAL, undefined],
        [DOCUMENT_LOCAL, undefined],
      ],
    );
    const results = await withTimeout(
      Promise.all(
        Array.from({ length: 100 }, () =>
          socksEcho(rig.port, { host: '127.0.0.1', type: 'ipv4', port: echo.port }, 64 * 1024),
        ),
      ),
      80_000,
      '100 echoes through SOCKS',
    );
    for (const r of results) t.is(r.got, r.sent);
    t.is(rig.emulator.sessions.size, 2, 'the 100 connections shared the 127.0.0.1 session');
    t.is(rig.server.stats.destinations.find((d) => d.host === '127.0.0.1')?.connectionsTotal, 101);
  } finally {
    await rig.close();
    await echo.close();
  }
});
