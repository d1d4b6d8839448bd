import test from 'ava';
import {
  HttpConnectParser,
  MAX_HEADER_BYTES,
  httpResponse,
  parseAuthority,
} from '../../src/socks/http-connect.js';

const auth = (user: string, pass: string): string =>
  `Proxy-Authorization: Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}\r\n`;

test('CONNECT host:port with headers in pieces; bytes after the blank line are kept', (t) => {
  const parser = new HttpConnectParser(undefined);
  const text =
    'CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\nUser-Agent: curl/8\r\n\r\nHELLO';
  let result;
  for (const ch of text) {
    result = parser.feed(Buffer.from(ch));
    if (result) break;
  }
  t.truthy(result && 'request' in result);
  if (result && 'request' in result) {
    t.deepEqual(result.request.destination, { host: 'db.internal', type: 'domain', port: 5432 });
    t.is(result.request.rest.toString(), '');
  }
  const whole = new HttpConnectParser(undefined).feed(Buffer.from(text));
  t.is(whole && 'request' in whole ? whole.request.rest.toString() : '', 'HELLO');
});

test('IPv6 and IPv4 authorities; bad ones are 400', (t) => {
  t.deepEqual(parseAuthority('[fd00::5]:443'), { host: 'fd00::5', type: 'ipv6', port: 443 });
  t.deepEqual(parseAuthority('10.0.0.1:80'), { host: '10.0.0.1', type: 'ipv4', port: 80 });
  for (const bad of ['db.internal', 'db:0', 'db:70000', '[nothex]:1', 'a b:1', ':80']) {
    t.is(parseAuthority(bad), undefined, bad);
  }
  const result = new HttpConnectParser(undefined).feed(Buffer.from('CONNECT nowhere HTTP/1.1\r\n\r\n'));
  t.regex(result && 'refuse' in result ? result.refuse.response.toString() : '', /^HTTP\/1\.1 400 /);
});

test('GET and other methods get 405 with Allow: CONNECT and a body that says why', (t) => {
  const result = new HttpConnectParser(undefined).feed(
    Buffer.from('GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n'),
  );
  const response = result && 'refuse' in result ? result.refuse.response.toString() : '';
  t.regex(response, /^HTTP\/1\.1 405 Method Not Allowed\r\n/);
  t.regex(response, /\r\nAllow: CONNECT\r\n/);
  t.regex(response, /CONNECT-only proxy/);
});

test('Proxy-Authorization Basic is required when configured: missing or wrong is 407', (t) => {
  const creds = { username: 'alice', password: 'pa:ss' };
  const head = 'CONNECT a.test:80 HTTP/1.1\r\n';
  const none = new HttpConnectParser(creds).feed(Buffer.from(`${head}\r\n`));
  const noneText = none && 'refuse' in none ? none.refuse.response.toString() : '';
  t.regex(noneText, /^HTTP\/1\.1 407 /);
  t.regex(noneText, /Proxy-Authenticate: Basic realm="pf-daemon"/);
  const wrong = new HttpConnectParser(creds).feed(Buffer.from(`${head}${auth('alice', 'nope')}\r\n`));
  t.truthy(wrong && 'refuse' in wrong);
  const good = new HttpConnectParser(creds).feed(Buffer.from(`${head}${auth('alice', 'pa:ss')}\r\n`));
  t.truthy(good && 'request' in good);
});

test(`a header block over ${MAX_HEADER_BYTES} bytes is 431 and is not held beyond the bound`, (t) => {
  const parser = new HttpConnectParser(undefined);
  t.is(parser.feed(Buffer.from('CONNECT a:1 HTTP/1.1\r\n')), undefined);
  let result;
  for (let i = 0; i < 100 && !result; i++) result = parser.feed(Buffer.from(`X-Pad: ${'a'.repeat(200)}\r\n`));
  t.regex(result && 'refuse' in result ? result.refuse.response.toString() : '', /^HTTP\/1\.1 431 /);
  t.true(parser.pendingBytes <= MAX_HEADER_BYTES + 300);
});

test('responses: 200 has no body; errors carry a length and close', (t) => {
  t.is(httpResponse(200).toString(), 'HTTP/1.1 200 Connection established\r\n\r\n');
  const text = httpResponse(502, 'refused').toString();
  t.regex(text, /Content-Length: 8\r\nConnection: close\r\n\r\nrefused\n$/);
});
