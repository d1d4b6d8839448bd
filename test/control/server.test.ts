/**
 * The control socket against hostile input (issue 13): oversized, malformed, unknown and fuzzed
 * requests get one error line and a closed connection, never a crash; the socket is 0600 in a 0700
 * directory; another user cannot connect (when the test runs as root it drops to uid 65534 to try);
 * a stale socket of a killed daemon is replaced, a live one is not stolen.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { requestStatus } from '../../src/control/client.js';
import { CONTROL_REQUEST_MAX_BYTES, ControlServer, answerRequest } from '../../src/control/server.js';
import type { ControlReply } from '../../src/control/server.js';
import { Daemon } from '../../src/daemon.js';
import { isPfError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { SsmApi } from '../../src/ssm/types.js';
import { forwardConfig } from '../forward/fixtures.js';
import { daemonConfig } from './harness.js';

/** SSM calls must not happen here: the forward is lazy and nobody connects to it. */
const noSsm = new Proxy({} as SsmApi, {
  get: () => () => Promise.reject(new Error('no SSM in this test')),
});

async function withServer(
  run: (server: ControlServer, daemon: Daemon, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pf-control-'));
  const daemon = new Daemon(daemonConfig([forwardConfig({ name: 'only', remotePort: 5432 })]), {
    logger: silentLogger,
    ssmFor: () => noSsm,
    version: '1.2.3',
  });
  await daemon.start();
  const server = await ControlServer.start({
    path: path.join(dir, 'sock', 'control.sock'),
    stats: () => daemon.stats(),
    logger: silentLogger,
  });
  try {
    await run(server, daemon, dir);
  } finally {
    await server.close();
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Write `bytes` (optionally ending our side), collect the reply until the server closes. */
function exchange(socketPath: string, bytes: Buffer, end = true): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // The server may close while we still write an oversized request: that is a refusal too.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') resolve(Buffer.concat(chunks).toString());
      else reject(err);
    });
    socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('connect', () => {
      socket.write(bytes);
      if (end) socket.end();
    });
  });
}

function parseReply(text: string): ControlReply {
  const lines = text.split('\n');
  if (lines.length !== 2 || lines[1] !== '')
    throw new Error(`expected one reply line, got ${JSON.stringify(text)}`);
  return JSON.parse(lines[0] ?? '') as ControlReply;
}

test('a status request gets the stats tree; the socket is 0600 in a 0700 directory', async (t) => {
  await withServer(async (server) => {
    const reply = parseReply(await exchange(server.path, Buffer.from('{"request":"status"}\n')));
    t.true(reply.ok);
    if (reply.ok) {
      t.is(reply.status.version, '1.2.3');
      t.is(reply.status.forwards[0]?.name, 'only');
      t.is(reply.status.forwards[0]?.state, 'listening');
    }
    t.is((await stat(server.path)).mode & 0o777, 0o600);
    t.is((await stat(path.dirname(server.path))).mode & 0o777, 0o700);
    const stats = await requestStatus(server.path);
    t.is(stats.forwards.length, 1);
  });
});

test('oversized, malformed and unknown requests get one error line each, and the server keeps serving', async (t) => {
  await withServer(async (server) => {
    const refused = async (bytes: Buffer, end = true): Promise<string> => {
      const text = await exchange(server.path, bytes, end);
      const reply = parseReply(text);
      if (reply.ok) throw new Error(`accepted ${bytes.toString().slice(0, 40)}`);
      t.is(reply.error.code, 'PF_ERR_CONTROL_REQUEST');
      return reply.error.message;
    };
    t.regex(
      await refused(Buffer.alloc(CONTROL_REQUEST_MAX_BYTES + 1, 0x41), false),
      /longer than 1024 bytes/,
    );
    t.regex(await refused(Buffer.alloc(4 * 1024 * 1024, 0x41), false), /longer than 1024 bytes/);
    t.regex(
      await refused(Buffer.from(`{"request":"status","pad":"${'x'.repeat(CONTROL_REQUEST_MAX_BYTES)}"}\n`)),
      /longer than/,
    );
    t.regex(await refused(Buffer.from('status\n')), /not JSON/);
    t.regex(await refused(Buffer.from('{"request":"stop"}\n')), /unknown request "stop"/);
    t.regex(await refused(Buffer.from('{"request":"status","x":1}\n')), /must be \{"request":"status"\}/);
    t.regex(await refused(Buffer.from('[]\n')), /must be/);
    t.regex(await refused(Buffer.from('null\n')), /must be/);
    t.regex(await refused(Buffer.from('{"request":"status"}')), /end with a newline/);
    t.regex(await refused(Buffer.from('\xff\xfe\n', 'latin1')), /not JSON/);
    // Still serving after all of that.
    t.true(parseReply(await exchange(server.path, Buffer.from('{"request":"status"}\n'))).ok);
  });
});

test('fuzz: random and mutated requests through the socket never crash it and are answered in one line', async (t) => {
  t.timeout(60_000);
  await withServer(async (server) => {
    const valid = Buffer.from('{"request":"status"}\n');
    const inputs: Buffer[] = [];
    for (let i = 0; i < 150; i++) inputs.push(randomBytes(1 + Math.floor(Math.random() * 2048)));
    for (let i = 0; i < 150; i++) {
      const m = Buffer.from(valid);
      m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
      inputs.push(m);
    }
    for (const input of inputs) {
      const text = await exchange(server.path, input);
      // A newline-free prefix within the bound may still be waiting for its newline: the end answers it.
      const reply = parseReply(text);
      if (reply.ok) t.true(input.toString().startsWith('{') || input.includes(0x0a));
      else t.is(reply.error.code, 'PF_ERR_CONTROL_REQUEST');
    }
    t.true(parseReply(await exchange(server.path, valid)).ok);
  });
  // The request decision alone, over arbitrary JSON and strings.
  fc.assert(
    fc.property(fc.oneof(fc.json(), fc.string()), (line) => {
      const reply = answerRequest(line, () => {
        throw new Error('only a status request may read the tree');
      });
      return !reply.ok && reply.error.code === 'PF_ERR_CONTROL_REQUEST';
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});

test('another user cannot connect (kernel-enforced 0700 directory and 0600 socket)', async (t) => {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    t.pass('not root: cannot act as another user here');
    return;
  }
  await withServer(async (server) => {
    // A child running as nobody (uid 65534) tries the same path.
    const script = `require('net').connect(${JSON.stringify(server.path)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534 });
      let text = '';
      child.stdout.on('data', (c: Buffer) => (text += c.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(text.trim()));
    });
    t.is(out, 'EACCES');
  });
});

test('a stale socket left by a killed daemon is replaced; a live one is not taken over', async (t) => {
  await withServer(async (server, daemon, dir) => {
    await t.throwsAsync(
      ControlServer.start({ path: server.path, stats: () => daemon.stats(), logger: silentLogger }),
      { message: /another pf-daemon already answers on/ },
    );
    // A socket file nobody listens on any more: the daemon that made it was killed.
    const stalePath = path.join(dir, 'sock', 'stale.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stalePath)},()=>console.log('up'))`,
    ]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise<void>((resolve) => child.once('close', () => resolve()));
    const second = await ControlServer.start({
      path: stalePath,
      stats: () => daemon.stats(),
      logger: silentLogger,
    });
    t.true((await requestStatus(stalePath)).forwards.length === 1);
    await second.close();
  });
});

test('a socket directory open to others is refused with a line naming the fix', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pf-control-'));
  try {
    const open = path.join(dir, 'open');
    await mkdir(open);
    await chmod(open, 0o755);
    const err = await t.throwsAsync(
      ControlServer.start({
        path: path.join(open, 'control.sock'),
        stats: () => {
          throw new Error('unused');
        },
        logger: silentLogger,
      }),
    );
    t.true(isPfError(err, 'PF_ERR_CONTROL_SOCKET'));
    t.regex(err?.message ?? '', /is open to other users \(mode 755\); run chmod 700 on it/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
