/**
 * SigV4 on the data-channel upgrade (spec §3.1): the headers are a valid signature of the GET for
 * `ssmmessages`, presigned URLs are left alone, and a real forward's upgrade carries them.
 */
import test from 'ava';
import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { DataChannelConnection } from '../../src/datachannel/connection.js';
import { silentLogger } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';
import { signStreamUrl } from '../../src/ssm/sign.js';

const credentials = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const URL_ =
  'wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/alice-0123456789abcdef0?role=publish_subscribe&cell-number=AAEAAQ';

test('headers are an AWS4-HMAC-SHA256 signature of GET for ssmmessages that an independent check reproduces', async (t) => {
  const date = new Date(Date.UTC(2026, 10, 23, 12, 0, 0));
  const headers = await signStreamUrl(
    URL_,
    { ...credentials, sessionToken: 'session-token-value' },
    'eu-west-1',
    date,
  );
  t.is(headers['x-amz-date'], '20261123T120000Z');
  t.is(headers['x-amz-security-token'], 'session-token-value');
  t.is(
    headers['x-amz-content-sha256'],
    createHash('sha256').update('').digest('hex'),
    'every signed header is sent',
  );
  const auth = headers['authorization'] ?? '';
  t.regex(
    auth,
    /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/20261123\/eu-west-1\/ssmmessages\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}$/,
  );
  // Recompute the signature by hand (SigV4 spec), so a wrong canonical request cannot hide in one library.
  const canonical = [
    'GET',
    '/v1/data-channel/alice-0123456789abcdef0',
    'cell-number=AAEAAQ&role=publish_subscribe',
    'host:ssmmessages.eu-west-1.amazonaws.com',
    `x-amz-content-sha256:${createHash('sha256').update('').digest('hex')}`,
    'x-amz-date:20261123T120000Z',
    'x-amz-security-token:session-token-value',
    '',
    'host;x-amz-content-sha256;x-amz-date;x-amz-security-token',
    createHash('sha256').update('').digest('hex'),
  ].join('\n');
  const scope = '20261123/eu-west-1/ssmmessages/aws4_request';
  const toSign = [
    'AWS4-HMAC-SHA256',
    '20261123T120000Z',
    scope,
    createHash('sha256').update(canonical).digest('hex'),
  ].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${credentials.secretAccessKey}`).update('20261123').digest();
  for (const part of ['eu-west-1', 'ssmmessages', 'aws4_request'])
    key = createHmac('sha256', key).update(part).digest();
  const expected = createHmac('sha256', key).update(toSign).digest('hex');
  t.true(auth.endsWith(`Signature=${expected}`));
});

test('presigned StreamUrls get no headers', async (t) => {
  t.deepEqual(
    await signStreamUrl(`${URL_}&X-Amz-Signature=abc&X-Amz-Credential=x`, credentials, 'eu-west-1'),
    {},
  );
});

test('the WebSocket upgrade carries the signature from the SSM client, and User-Agent is kept', async (t) => {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  const seen = new Promise<http.IncomingHttpHeaders>((resolve) =>
    wss.on('connection', (_ws, req) => resolve(req.headers)),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const streamUrl = `ws://127.0.0.1:${port}/v1/data-channel/s-1?role=publish_subscribe&cell-number=1`;
  const ssm = createSsmApi({
    region: 'us-east-1',
    credentials,
    endpoint: `http://127.0.0.1:${port}`,
    logger: silentLogger,
  });
  const headers = (await ssm.signStreamUrl?.(streamUrl)) ?? {};
  const connection = new DataChannelConnection(
    {
      streamUrl,
      tokenValue: 'token',
      clientId: 'c',
      clientVersion: '1.2.694.0',
      connectTimeoutMs: 5000,
      pingIntervalMs: 30_000,
      livenessTimeoutMs: 60_000,
      userAgent: 'pf-daemon-test',
      headers,
    },
    silentLogger,
  );
  try {
    await connection.open();
    const got = await seen;
    t.regex(
      String(got['authorization']),
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/us-east-1\/ssmmessages\/aws4_request/,
    );
    t.regex(String(got['x-amz-date']), /^\d{8}T\d{6}Z$/);
    t.is(got['user-agent'], 'pf-daemon-test');
  } finally {
    connection.close();
    wss.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
