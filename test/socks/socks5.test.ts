import { randomInt } from 'node:crypto';
import test from 'ava';
import {
  AuthMethod,
  Command,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  Reply,
  Socks5Handshake,
  describeReply,
  encodeGreeting,
  encodeReply,
  encodeRequest,
  encodeUserPass,
} from '../../src/socks/socks5.js';
import type { HandshakeStep, SocksDestination } from '../../src/socks/socks5.js';

const hex = (b: Buffer | undefined): string => (b ?? Buffer.alloc(0)).toString('hex');

/** Feed `bytes` split at random points; collect writes, and return the last step. */
function feedSplit(hs: Socks5Handshake, bytes: Buffer): { writes: string; last: HandshakeStep } {
  let writes = '';
  let last: HandshakeStep = {};
  let offset = 0;
  while (offset < bytes.length) {
    const size = 1 + randomInt(Math.min(8, bytes.length - offset));
    last = hs.feed(bytes.subarray(offset, offset + size));
    writes += hex(last.write);
    offset += size;
    if (last.request || last.fail) break;
  }
  return { writes, last };
}

test('golden: no-auth greeting and IPv4 CONNECT (RFC 1928 §3, §4)', (t) => {
  const hs = new Socks5Handshake(undefined);
  t.is(hex(hs.feed(Buffer.from('050100', 'hex')).write), '0500');
  const step = hs.feed(Buffer.from('050100010a000005' + '1538', 'hex'));
  t.deepEqual(step.request, { host: '10.0.0.5', type: 'ipv4', port: 5432 });
  t.is(step.rest?.length, 0);
  t.true(hs.done);
});

test('golden: domain and IPv6 requests decode; the name is passed unresolved', (t) => {
  const domain = new Socks5Handshake(undefined);
  domain.feed(encodeGreeting([AuthMethod.None]));
  const name = Buffer.from('db.internal');
  const req = Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([0x00, 0x50])]);
  t.deepEqual(domain.feed(req).request, { host: 'db.internal', type: 'domain', port: 80 });

  const v6 = new Socks5Handshake(undefined);
  v6.feed(encodeGreeting([AuthMethod.None]));
  const addr = Buffer.from('fd000000000000000000000000000005', 'hex');
  const step = v6.feed(Buffer.concat([Buffer.from([5, 1, 0, 4]), addr, Buffer.from([0x01, 0xbb])]));
  t.deepEqual(step.request, { host: 'fd00::5', type: 'ipv6', port: 443 });
});

test('round trip through random splits, with optimistic data kept as rest', (t) => {
  const cases: SocksDestination[] = [
    { host: '192.168.1.1', type: 'ipv4', port: 1 },
    { host: '::1', type: 'ipv6', port: 65535 },
    { host: 'a.b.example', type: 'domain', port: 8080 },
    { host: 'x'.repeat(255), type: 'domain', port: 22 },
  ];
  for (let i = 0; i < 200; i++) {
    const destination = cases[i % cases.length] as SocksDestination;
    const creds = i % 2 === 0 ? { username: 'alice', password: 's3cret' } : undefined;
    const hs = new Socks5Handshake(creds);
    const extra = Buffer.from('GET / HTTP/1.0\r\n\r\n');
    const bytes = Buffer.concat([
      encodeGreeting(creds ? [AuthMethod.None, AuthMethod.UserPass] : [AuthMethod.None]),
      ...(creds ? [encodeUserPass(creds.username, creds.password)] : []),
      encodeRequest(destination),
      extra,
    ]);
    let writes = '';
    let request: SocksDestination | undefined;
    let rest = Buffer.alloc(0);
    let offset = 0;
    while (offset < bytes.length && !request) {
      const size = 1 + randomInt(Math.min(16, bytes.length - offset));
      const step = hs.feed(bytes.subarray(offset, offset + size));
      offset += size;
      t.is(step.fail, undefined);
      writes += hex(step.write);
      if (step.request) {
        request = step.request;
        rest = Buffer.concat([step.rest ?? Buffer.alloc(0), bytes.subarray(offset)]);
      }
    }
    t.deepEqual(request, destination);
    t.is(writes, creds ? '05020100' : '0500');
    t.is(rest.toString(), extra.toString());
  }
});

test('username/password: wrong credentials fail with status 1 (RFC 1929 §2)', (t) => {
  const hs = new Socks5Handshake({ username: 'alice', password: 's3cret' });
  t.is(hex(hs.feed(encodeGreeting([AuthMethod.UserPass])).write), '0502');
  const step = hs.feed(encodeUserPass('alice', 'wrong'));
  t.is(hex(step.fail?.reply), '0101');
  t.regex(step.fail?.message ?? '', /authentication failed/);
  t.notRegex(step.fail?.message ?? '', /wrong|s3cret/);
});

test('a listener that requires auth refuses a no-auth-only greeting with 0xFF', (t) => {
  const hs = new Socks5Handshake({ username: 'u', password: 'p' });
  const step = hs.feed(encodeGreeting([AuthMethod.None]));
  t.is(hex(step.fail?.reply), '05ff');
});

test('BIND and UDP ASSOCIATE answer "command not supported"; bad address type 0x08', (t) => {
  for (const command of [Command.Bind, Command.UdpAssociate, 0x09]) {
    const hs = new Socks5Handshake(undefined);
    hs.feed(encodeGreeting([0]));
    const step = hs.feed(encodeRequest({ host: '1.2.3.4', type: 'ipv4', port: 80 }, command));
    t.is(step.fail?.reply?.[1], Reply.CommandNotSupported);
  }
  const hs = new Socks5Handshake(undefined);
  hs.feed(encodeGreeting([0]));
  t.is(hs.feed(Buffer.from('05010005', 'hex')).fail?.reply?.[1], Reply.AddressTypeNotSupported);
});

test('garbage is refused and never buffered beyond one message', (t) => {
  t.regex(
    new Socks5Handshake(undefined).feed(Buffer.from('04010050', 'hex')).fail?.message ?? '',
    /not SOCKS5/,
  );
  t.is(hex(new Socks5Handshake(undefined).feed(Buffer.from('0500', 'hex')).fail?.reply), '05ff');
  // A greeting announcing 255 methods, sent a byte at a time, is held until complete (257 bytes), no longer.
  const hs = new Socks5Handshake(undefined);
  const greeting = Buffer.concat([Buffer.from([5, 255]), Buffer.alloc(255, 1)]);
  const { last } = feedSplit(hs, greeting);
  t.is(hex(last.fail?.reply), '05ff');
  t.true(hs.pendingBytes <= MAX_HANDSHAKE_MESSAGE_BYTES);
  // Port 0 and an empty domain name are refused.
  const zero = new Socks5Handshake(undefined);
  zero.feed(encodeGreeting([0]));
  t.is(
    zero.feed(encodeRequest({ host: '1.2.3.4', type: 'ipv4', port: 0 })).fail?.reply?.[1],
    Reply.ConnectionRefused,
  );
  const empty = new Socks5Handshake(undefined);
  empty.feed(encodeGreeting([0]));
  t.truthy(empty.feed(Buffer.from('0501000300' + '0050', 'hex')).fail);
});

test('replies encode BND.ADDR for IPv4, IPv6 and the 0.0.0.0:0 default', (t) => {
  t.is(hex(encodeReply(Reply.Succeeded)), '05000001000000000000');
  t.is(hex(encodeReply(Reply.ConnectionRefused, { host: '127.0.0.1', port: 1080 })), '050500017f0000010438');
  t.is(
    hex(encodeReply(Reply.GeneralFailure, { host: '::1', port: 1 })),
    '0501000400000000000000000000000000000001' + '0001',
  );
  t.is(describeReply(Reply.NotAllowed), '0x02 not allowed by ruleset');
});
