/**
 * Fuzz the live SOCKS listener: thousands of random and mutated SOCKS5 greetings, auth messages and
 * requests, and HTTP CONNECT heads, each sent in random pieces on its own connection and then half-closed.
 * Every one must end with an error reply (or nothing) and a closed socket within a bound, never a crash,
 * and the listener must still serve a valid client afterwards. Seeded, so a failure can be replayed.
 */
import test from 'ava';
import net from 'node:net';
import { AuthMethod, encodeGreeting, encodeRequest, encodeUserPass } from '../../src/socks/socks5.js';
import { startSocksRig, withTimeout } from './fixtures.js';

/** xorshift32: a small seeded generator so a failing case can be replayed from its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

const CASES = 4_000;
const CONCURRENCY = 64;

/** Valid messages to mutate. */
function seeds(): Buffer[] {
  const greet = encodeGreeting([AuthMethod.None, AuthMethod.UserPass]);
  const auth = encodeUserPass('alice', 'secret');
  const requests = [
    encodeRequest({ host: '10.0.0.1', type: 'ipv4', port: 80 }),
    encodeRequest({ host: 'fd00::1', type: 'ipv6', port: 443 }),
    encodeRequest({ host: 'db.internal', type: 'domain', port: 5432 }),
  ];
  return [
    ...requests.map((r) => Buffer.concat([greet, r])),
    ...requests.map((r) => Buffer.concat([greet, auth, r])),
    Buffer.from('CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n'),
    Buffer.from('CONNECT [fd00::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n'),
    Buffer.from('GET http://db.internal/ HTTP/1.1\r\n\r\n'),
  ];
}

function mutate(seed: Buffer, random: () => number): Buffer {
  const bytes = Buffer.from(seed);
  const pick = (n: number): number => Math.floor(random() * n);
  switch (pick(7)) {
    case 0: // flip a few bits
      for (let i = 0; i < 1 + pick(4); i++) {
        const at = pick(bytes.length);
        bytes[at] = (bytes[at] ?? 0) ^ (1 << pick(8));
      }
      return bytes;
    case 1: // set a length or type byte to an extreme
      bytes[pick(Math.min(8, bytes.length))] = [0, 1, 3, 4, 0x7f, 0xff][pick(6)] ?? 0;
      return bytes;
    case 2: // truncate
      return bytes.subarray(0, pick(bytes.length));
    case 3: // random bytes, any length up to 2 KiB
      return Buffer.from(Array.from({ length: pick(2048) }, () => pick(256)));
    case 4: // append garbage
      return Buffer.concat([bytes, Buffer.from(Array.from({ length: pick(600) }, () => pick(256)))]);
    case 5: // a SOCKS5 first byte then garbage
      return Buffer.concat([
        Buffer.from([5]),
        Buffer.from(Array.from({ length: pick(700) }, () => pick(256))),
      ]);
    default: // an over-long HTTP head
      return Buffer.from(`CONNECT a:1 HTTP/1.1\r\n${'X: y\r\n'.repeat(pick(3000))}`);
  }
}

/** One case: write `payload` in random pieces, half-close, collect the reply until the server closes. */
function runCase(port: number, payload: Buffer, random: () => number): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(Buffer.concat(chunks)));
      socket.on('connect', () => {
        let offset = 0;
        while (offset < payload.length) {
          const size = 1 + Math.floor(random() * 64);
          socket.write(payload.subarray(offset, offset + size));
          offset += size;
        }
        socket.end();
      });
    }),
    15_000,
    'the server to close a fuzzed connection',
  );
}

/** A reply the server may send: nothing, SOCKS5 method/reply bytes, an RFC 1929 status, or an HTTP error. */
function plausible(reply: Buffer): boolean {
  if (reply.length === 0) return true;
  if (reply[0] === 0x05 || reply[0] === 0x01) return reply.length <= 2 + 2 + 22;
  return /^HTTP\/1\.1 (4\d\d|5\d\d) /.test(reply.toString('latin1'));
}

for (const auth of [false, true]) {
  test(`${CASES} fuzzed handshakes (${auth ? 'username/password required' : 'no auth'}) each get an error reply or a close; the listener keeps serving`, async (t) => {
    t.timeout(100_000);
    // Every well-formed CONNECT is refused by the allow list, so the fuzz exercises the parsers, not SSM.
    const rig = await startSocksRig({
      allow: ['only.allowed.test:1'],
      ...(auth ? { username: 'alice', password: 'secret' } : {}),
    });
    try {
      const random = rng(auth ? 0x5eed : 0xf00d);
      const pool = seeds();
      let next = 0;
      let implausible = 0;
      const worker = async (): Promise<void> => {
        while (next < CASES) {
          next++;
          const seed = pool[Math.floor(random() * pool.length)] as Buffer;
          const reply = await runCase(rig.port, mutate(seed, random), random);
          if (!plausible(reply)) implausible++;
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      t.is(implausible, 0, 'every reply is an error reply or nothing');
      const stats = rig.server.stats;
      t.is(stats.connectionsAccepted, CASES);
      t.true(stats.handshakeFailures + stats.notAllowed >= CASES * 0.9, JSON.stringify(stats));
      t.is(rig.emulator.sessions.size, 0, 'no fuzzed case reached StartSession');
      // Still serving: a valid request gets its truthful reply.
      const valid = Buffer.concat([
        encodeGreeting([auth ? AuthMethod.UserPass : AuthMethod.None]),
        ...(auth ? [encodeUserPass('alice', 'secret')] : []),
        encodeRequest({ host: 'db.internal', type: 'domain', port: 5432 }),
      ]);
      const reply = await runCase(rig.port, valid, random);
      t.is(reply.subarray(auth ? 4 : 2).toString('hex'), '05020001000000000000', 'not allowed by ruleset');
      await withTimeout(
        new Promise<void>((resolve) => {
          const check = (): void =>
            rig.server.stats.connectionsActive === 0 ? resolve() : void setImmediate(check);
          check();
        }),
        10_000,
        'every fuzzed connection to be gone',
      );
      t.pass();
    } finally {
      await rig.close();
    }
  });
}
