/**
 * `npm run demo`: the real daemon (the `pf-daemon` CLI, as a separate process) forwarding a local port
 * through the built-in SSM emulator to a small HTTP service, with real traffic, then a clean shutdown.
 * No AWS account is involved: the daemon talks to the emulator's endpoint with throwaway credentials.
 *
 * A harness, not product code: `src/harness/` is the one place outside `src/emulator/` allowed to import the
 * emulator (docs/architecture.md, import rules).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../emulator/index.js';

const TARGET = 'i-0123456789abcdef0';
/** The Name tag of {@link TARGET} in the emulator's inventory: the daemon finds the instance by it. */
const TARGET_NAME = 'web-1';
const STEP_TIMEOUT_MS = 30_000;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** A tiny destination service: GET / greets, POST /sha256 returns the digest of the body. */
async function startService(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }));
      });
      return;
    }
    res.setHeader('content-type', 'text/plain');
    res.end('hello from the host behind SSM\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function request(port: number, method: string, body?: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: method === 'POST' ? '/sha256' : '/' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.setTimeout(STEP_TIMEOUT_MS, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

async function main(): Promise<number> {
  const service = await startService();
  const servicePort = (service.address() as AddressInfo).port;
  const emulator = await startEmulator({
    inventory: { instances: [{ instanceId: TARGET, tags: { Name: TARGET_NAME } }] },
  });
  say(
    `1. SSM emulator at ${emulator.endpoint} with instance ${TARGET} (Name=${TARGET_NAME}); HTTP service on 127.0.0.1:${servicePort} (the "remote" port)`,
  );

  const cli = fileURLToPath(new URL('../cli.js', import.meta.url));
  const args = [cli, '--target', TARGET_NAME, '--port', String(servicePort), '--local-port', '0'];
  args.push('--endpoint', emulator.endpoint, '--region', 'us-east-1', '--log-format', 'plain', '--eager');
  say(`2. starting the daemon: pf-daemon ${args.slice(1).join(' ')}`);
  const daemon = spawn(process.execPath, args, {
    env: {
      ...process.env,
      AWS_ACCESS_KEY_ID: 'AKIDEMOEMULATOR00000',
      AWS_SECRET_ACCESS_KEY: 'demo',
      AWS_PROFILE: '',
    },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let log = '';
  const localPort = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`daemon did not listen within ${STEP_TIMEOUT_MS} ms:\n${log}`)),
      STEP_TIMEOUT_MS,
    );
    daemon.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      log += text;
      for (const line of text.split('\n').filter(Boolean)) say(`   daemon | ${line}`);
      const match = /listening on [\d.]+:(\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    daemon.once('exit', (code) => reject(new Error(`daemon exited early with code ${code}:\n${log}`)));
  });

  say(`3. GET http://127.0.0.1:${localPort}/ through the tunnel`);
  const greeting = await request(localPort, 'GET');
  say(`   ← ${greeting.status} ${greeting.text.trim()}`);

  const upload = randomBytes(4 * 1024 * 1024);
  const expected = createHash('sha256').update(upload).digest('hex');
  const started = performance.now();
  const digest = await request(localPort, 'POST', upload);
  const seconds = (performance.now() - started) / 1000;
  const answer = JSON.parse(digest.text) as { bytes: number; sha256: string };
  say(
    `4. POST of ${upload.length} random bytes: service saw ${answer.bytes} bytes, sha256 ${answer.sha256 === expected ? 'matches' : 'DIFFERS'} (${(upload.length / 1e6 / seconds).toFixed(1)} MB/s)`,
  );

  const session = [...emulator.sessions.values()][0];
  if (session) {
    say(
      `5. emulator saw session ${session.id}: mode ${session.agent?.mode}, ${session.counters.clientFramesIn} frames in, ${session.counters.clientFramesOut} frames out`,
    );
  }

  say('6. stopping the daemon with SIGTERM');
  const exitCode = await new Promise<number | null>((resolve) => {
    daemon.once('exit', (code) => resolve(code));
    daemon.kill('SIGTERM');
  });
  say(`   daemon exited with code ${exitCode}`);
  await emulator.close();
  await new Promise<void>((resolve) => service.close(() => resolve()));
  const ok = greeting.status === 200 && answer.sha256 === expected && exitCode === 0;
  say(ok ? 'demo finished: traffic flowed through the tunnel' : 'demo FAILED');
  return ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
