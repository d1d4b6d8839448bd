/**
 * The real SDK client against a tiny AWS JSON 1.1 server on 127.0.0.1 (spec §2): request shape,
 * grants, and every error code of spec §2.4 through the SDK's own error parsing.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPfError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';

// Keep the SDK's credential chain away from the real ~/.aws and from instance metadata.
const awsDir = mkdtempSync(join(tmpdir(), 'pf-ssm-'));
writeFileSync(join(awsDir, 'config'), '[profile other]\nregion = us-east-1\n');
writeFileSync(join(awsDir, 'credentials'), '');
process.env['AWS_CONFIG_FILE'] = join(awsDir, 'config');
process.env['AWS_SHARED_CREDENTIALS_FILE'] = join(awsDir, 'credentials');
process.env['AWS_EC2_METADATA_DISABLED'] = 'true';
for (const key of [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_ENDPOINT_URL',
  'AWS_ENDPOINT_URL_SSM',
]) {
  delete process.env[key];
}

interface Seen {
  target: string | undefined;
  body: Record<string, unknown>;
  headers: IncomingHttpHeaders;
}

type Reply = { status: number; type?: string; body?: unknown; raw?: string };

/** Start a server that answers each `AmazonSSM.<Op>` with `reply(op)` and records requests. */
async function fakeSsm(reply: (op: string) => Reply): Promise<{ url: string; seen: Seen[]; server: Server }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = req.headers['x-amz-target'];
      const op = typeof target === 'string' ? target.replace('AmazonSSM.', '') : '';
      seen.push({
        target: typeof target === 'string' ? target : undefined,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>,
        headers: req.headers,
      });
      const r = reply(op);
      const headers: Record<string, string> = { 'content-type': 'application/x-amz-json-1.1' };
      if (r.type) headers['x-amzn-ErrorType'] = r.type;
      res.writeHead(r.status, headers);
      res.end(r.raw ?? (r.body === undefined ? '' : JSON.stringify(r.body)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, seen, server };
}

const credentials = { accessKeyId: 'AKIDEXAMPLEFAKE', secretAccessKey: 'fake-secret-key' };

function api(endpoint: string, extra: { profile?: string; withCredentials?: boolean } = {}) {
  return createSsmApi({
    region: 'us-east-1',
    endpoint,
    logger: silentLogger,
    userAgent: 'pf-daemon/test',
    maxAttempts: 1,
    ...(extra.withCredentials === false ? {} : { credentials }),
    ...(extra.profile ? { profile: extra.profile } : {}),
  });
}

const startRequest = {
  target: 'i-0abc12345678',
  documentName: 'AWS-StartPortForwardingSessionToRemoteHost',
  parameters: { host: ['db.internal'], portNumber: ['5432'], localPortNumber: ['15432'] },
  reason: 'testing',
};

test('StartSession sends a signed JSON 1.1 request and returns the grant', async (t) => {
  const grant = {
    SessionId: 'alice-0a1b2c3d4e5f67890',
    TokenValue: 'AAEAA-token',
    StreamUrl: 'ws://127.0.0.1:1/v1/data-channel/alice-0a1b2c3d4e5f67890?role=publish_subscribe',
  };
  const fake = await fakeSsm(() => ({ status: 200, body: grant }));
  t.teardown(() => fake.server.close());
  const result = await api(fake.url).startSession(startRequest);
  t.deepEqual(result, {
    sessionId: grant.SessionId,
    tokenValue: grant.TokenValue,
    streamUrl: grant.StreamUrl,
  });
  const [req] = fake.seen;
  t.is(req?.target, 'AmazonSSM.StartSession');
  t.deepEqual(req?.body, {
    Target: 'i-0abc12345678',
    DocumentName: 'AWS-StartPortForwardingSessionToRemoteHost',
    Parameters: { host: ['db.internal'], portNumber: ['5432'], localPortNumber: ['15432'] },
    Reason: 'testing',
  });
  t.regex(
    String(req?.headers.authorization),
    /AWS4-HMAC-SHA256 Credential=AKIDEXAMPLEFAKE\/\d+\/us-east-1\/ssm\//,
  );
  t.regex(String(req?.headers['user-agent']) + String(req?.headers['x-amz-user-agent']), /pf-daemon\/test/);
});

test('ResumeSession returns the new StreamUrl', async (t) => {
  const fake = await fakeSsm(() => ({
    status: 200,
    body: {
      SessionId: 's-1',
      TokenValue: 't2',
      StreamUrl: 'ws://127.0.0.1:1/v1/data-channel/s-1?cell-number=2',
    },
  }));
  t.teardown(() => fake.server.close());
  const grant = await api(fake.url).resumeSession('s-1');
  t.is(grant.streamUrl, 'ws://127.0.0.1:1/v1/data-channel/s-1?cell-number=2');
  t.deepEqual(fake.seen[0]?.body, { SessionId: 's-1' });
});

test('ResumeSession without TokenValue is PF_ERR_SESSION_GONE', async (t) => {
  const fake = await fakeSsm(() => ({ status: 200, body: { SessionId: 's-1', StreamUrl: 'ws://x/y' } }));
  t.teardown(() => fake.server.close());
  const err = await t.throwsAsync(api(fake.url).resumeSession('s-1'));
  t.true(isPfError(err, 'PF_ERR_SESSION_GONE'));
});

test('TerminateSession of a session that is already gone resolves', async (t) => {
  const fake = await fakeSsm(() => ({
    status: 400,
    type: 'DoesNotExistException',
    body: { __type: 'DoesNotExistException', message: 'no such session' },
  }));
  t.teardown(() => fake.server.close());
  await t.notThrowsAsync(api(fake.url).terminateSession('s-1'));
  t.is(fake.seen[0]?.target, 'AmazonSSM.TerminateSession');
});

const errorCases: [string, 'start' | 'resume', Reply, string, boolean, RegExp][] = [
  [
    'TargetNotConnected',
    'start',
    {
      status: 400,
      type: 'TargetNotConnected',
      body: { __type: 'TargetNotConnected', message: 'i-0abc12345678 is not connected.' },
    },
    'PF_ERR_TARGET_NOT_CONNECTED',
    false,
    /^target i-0abc12345678 is not connected to SSM in us-east-1: check the SSM agent is running and the instance role allows SSM, or use the right --region\/--profile$/,
  ],
  [
    'InvalidDocument',
    'start',
    {
      status: 400,
      type: 'InvalidDocument',
      body: { __type: 'InvalidDocument', message: 'Document not found' },
    },
    'PF_ERR_INVALID_DOCUMENT',
    false,
    /AWS-StartPortForwardingSessionToRemoteHost in us-east-1 \(Document not found\)/,
  ],
  [
    'InvalidParameters (namespaced, no header)',
    'start',
    { status: 400, body: { __type: 'com.amazonaws.ssm#InvalidParameters', message: 'bad host' } },
    'PF_ERR_INVALID_PARAMETERS',
    false,
    /bad host/,
  ],
  [
    'AccessDeniedException',
    'start',
    {
      status: 400,
      type: 'AccessDeniedException',
      body: { __type: 'AccessDeniedException', Message: 'not authorized' },
    },
    'PF_ERR_ACCESS_DENIED',
    false,
    /^IAM denied ssm:StartSession on i-0abc12345678/,
  ],
  [
    'ThrottlingException',
    'start',
    {
      status: 400,
      type: 'ThrottlingException',
      body: { __type: 'ThrottlingException', message: 'Rate exceeded' },
    },
    'PF_ERR_THROTTLED',
    true,
    /throttled StartSession/,
  ],
  [
    'InternalServerError',
    'start',
    { status: 500, type: 'InternalServerError', body: { __type: 'InternalServerError', message: 'oops' } },
    'PF_ERR_AWS_INTERNAL',
    true,
    /HTTP 500/,
  ],
  ['502 without body', 'start', { status: 502, raw: '' }, 'PF_ERR_AWS_INTERNAL', true, /HTTP 502/],
  [
    'DoesNotExistException on resume',
    'resume',
    {
      status: 400,
      type: 'DoesNotExistException',
      body: { __type: 'DoesNotExistException', message: 'gone' },
    },
    'PF_ERR_SESSION_GONE',
    false,
    /^session s-1 no longer exists/,
  ],
  [
    'ExpiredTokenException',
    'start',
    {
      status: 400,
      type: 'ExpiredTokenException',
      body: { __type: 'ExpiredTokenException', message: 'expired' },
    },
    'PF_ERR_CREDENTIALS',
    false,
    /^AWS credentials expired: run `aws sso login`/,
  ],
  [
    'UnrecognizedClientException',
    'start',
    {
      status: 400,
      type: 'UnrecognizedClientException',
      body: { __type: 'UnrecognizedClientException', message: 'bad key' },
    },
    'PF_ERR_CREDENTIALS',
    false,
    /does not recognise the access key/,
  ],
  [
    'InvalidSignatureException',
    'start',
    {
      status: 400,
      type: 'InvalidSignatureException',
      body: { __type: 'InvalidSignatureException', message: 'sig' },
    },
    'PF_ERR_CREDENTIALS',
    false,
    /system clock/,
  ],
  [
    'an error message carrying secrets',
    'start',
    {
      status: 400,
      type: 'SomethingNew',
      body: {
        __type: 'SomethingNew',
        message:
          'TokenValue=AAEAsecret url wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/s?X-Amz-Signature=abc',
      },
    },
    'PF_ERR_AWS',
    false,
    /^SSM StartSession failed in us-east-1: HTTP 400 SomethingNew: TokenValue=\[REDACTED\] url wss:\/\/ssmmessages\.us-east-1\.amazonaws\.com\/v1\/data-channel\/s\?\[REDACTED\]$/,
  ],
];

for (const [title, op, reply, code, retryable, pattern] of errorCases) {
  test(`maps ${title} from the wire`, async (t) => {
    const fake = await fakeSsm(() => reply);
    t.teardown(() => fake.server.close());
    const client = api(fake.url);
    const err = await t.throwsAsync(
      op === 'start' ? client.startSession(startRequest) : client.resumeSession('s-1'),
    );
    t.true(isPfError(err), String(err));
    t.is((err as { code?: string }).code, code, err?.message);
    t.is((err as { retryable?: boolean }).retryable, retryable);
    t.regex(err?.message ?? '', pattern);
  });
}

test('a refused connection is a retryable network error', async (t) => {
  const fake = await fakeSsm(() => ({ status: 200 }));
  const url = fake.url;
  await new Promise<void>((resolve) => fake.server.close(() => resolve()));
  const err = await t.throwsAsync(api(url).startSession(startRequest));
  t.true(isPfError(err, 'PF_ERR_AWS'), String(err));
  t.true((err as { retryable?: boolean }).retryable);
  t.regex(err?.message ?? '', /cannot reach the SSM endpoint.*ECONNREFUSED/);
});

test('an unknown profile fails with PF_ERR_CREDENTIALS naming the profile', async (t) => {
  const fake = await fakeSsm(() => ({ status: 200 }));
  t.teardown(() => fake.server.close());
  const err = await t.throwsAsync(
    api(fake.url, { profile: 'nosuchprofile', withCredentials: false }).startSession(startRequest),
  );
  t.true(isPfError(err, 'PF_ERR_CREDENTIALS'), String(err));
  t.regex(err?.message ?? '', /profile nosuchprofile/);
  t.is(fake.seen.length, 0);
});

test('a request that gets no answer times out as a retryable network error', async (t) => {
  const held: ServerResponse[] = [];
  const server = createServer((_req, res) => void held.push(res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const res of held) res.destroy();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  const client = createSsmApi({
    region: 'us-east-1',
    endpoint: `http://127.0.0.1:${port}`,
    logger: silentLogger,
    credentials,
    maxAttempts: 1,
    requestTimeoutMs: 300,
  });
  const err = await t.throwsAsync(client.startSession(startRequest));
  t.true(isPfError(err, 'PF_ERR_AWS'), String(err));
  t.true((err as { retryable?: boolean }).retryable);
  t.regex(err?.message ?? '', /cannot reach the SSM endpoint for StartSession in us-east-1 \(ETIMEDOUT\)/);
});
