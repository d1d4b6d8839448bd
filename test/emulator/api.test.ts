import test from 'ava';
import {
  AccessDeniedException,
  DoesNotExistException,
  InternalServerError,
  InvalidDocument,
  InvalidParameters,
  ResumeSessionCommand,
  SSMClient,
  StartSessionCommand,
  TargetNotConnected,
  TerminateSessionCommand,
  ThrottlingException,
  ValidationException,
} from '@aws-sdk/client-ssm';
import type { StartSessionCommandInput } from '@aws-sdk/client-ssm';
import { request } from 'node:http';
import { DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST } from '../../src/config/types.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import type { ApiErrorCode, ApiOperation } from '../../src/emulator/faults.js';
import { fakeAgentFactory } from './service.helpers.js';

const TARGET = 'i-0123456789abcdef0';

async function withEmulator(
  options: Partial<EmulatorOptions>,
  run: (emulator: Emulator, ssm: SSMClient) => Promise<void>,
): Promise<void> {
  const emulator = await startEmulator({ agentFactory: fakeAgentFactory(), ...options });
  const ssm = new SSMClient({
    endpoint: emulator.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    maxAttempts: 1,
  });
  try {
    await run(emulator, ssm);
  } finally {
    ssm.destroy();
    await emulator.close();
  }
}

const local = (port = '5432', extra: Record<string, string[]> = {}): StartSessionCommandInput => ({
  Target: TARGET,
  DocumentName: DOCUMENT_LOCAL,
  Parameters: { portNumber: [port], ...extra },
});

test('StartSession answers SessionId, TokenValue and a loopback StreamUrl', async (t) => {
  await withEmulator({ user: 'alice' }, async (emulator, ssm) => {
    const started = waitFor(emulator, 'sessionStarted');
    const out = await ssm.send(
      new StartSessionCommand({ ...local('5432', { localPortNumber: ['15432'] }), Reason: 'test' }),
    );
    t.regex(out.SessionId ?? '', /^alice-[0-9a-f]{17}$/);
    t.true((out.TokenValue ?? '').length > 20);
    t.is(
      out.StreamUrl,
      `ws://127.0.0.1:${emulator.port}/v1/data-channel/${out.SessionId}?role=publish_subscribe&cell-number=1`,
    );
    const [id] = await started;
    t.is(id, out.SessionId);
    const info = emulator.session(out.SessionId ?? '');
    t.is(info.state, 'waiting');
    t.is(info.target, TARGET);
    t.is(info.document, DOCUMENT_LOCAL);
    t.deepEqual(info.parameters, { portNumber: ['5432'], localPortNumber: ['15432'] });
    t.is(info.reason, 'test');
  });
});

test('StartSession accepts ToRemoteHost with host and mi- targets', async (t) => {
  await withEmulator({}, async (_emulator, ssm) => {
    const out = await ssm.send(
      new StartSessionCommand({
        Target: 'mi-0123456789abcdef0',
        DocumentName: DOCUMENT_REMOTE_HOST,
        Parameters: { host: ['db.internal'], portNumber: ['5432'], localPortNumber: [''] },
      }),
    );
    t.truthy(out.SessionId);
  });
});

interface ErrorCase {
  name: string;
  input: StartSessionCommandInput;
  type: new (...args: never[]) => Error;
  code: string;
  options?: Partial<EmulatorOptions>;
}

const errorCases: ErrorCase[] = [
  {
    name: 'unknown target',
    input: { ...local(), Target: 'i-0000000000000000z' },
    type: TargetNotConnected,
    code: 'TargetNotConnected',
  },
  {
    name: 'malformed target',
    input: { ...local(), Target: 'web-1' },
    type: TargetNotConnected,
    code: 'TargetNotConnected',
  },
  {
    name: 'target in unknownTargets',
    input: local(),
    type: TargetNotConnected,
    code: 'TargetNotConnected',
    options: { unknownTargets: [TARGET] },
  },
  {
    name: 'target not in knownTargets list',
    input: local(),
    type: TargetNotConnected,
    code: 'TargetNotConnected',
    options: { knownTargets: ['i-99999999'] },
  },
  {
    name: 'empty target',
    input: { ...local(), Target: '' },
    type: ValidationException,
    code: 'ValidationException',
  },
  {
    name: 'unknown document',
    input: { ...local(), DocumentName: 'AWS-StartSSHSession' },
    type: InvalidDocument,
    code: 'InvalidDocument',
  },
  {
    name: 'missing document',
    input: { Target: TARGET, Parameters: { portNumber: ['1'] } },
    type: InvalidDocument,
    code: 'InvalidDocument',
  },
  {
    name: 'missing portNumber',
    input: { Target: TARGET, DocumentName: DOCUMENT_LOCAL, Parameters: {} },
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  { name: 'portNumber 0', input: local('0'), type: InvalidParameters, code: 'InvalidParameters' },
  { name: 'portNumber 65536', input: local('65536'), type: InvalidParameters, code: 'InvalidParameters' },
  {
    name: 'portNumber not numeric',
    input: local('http'),
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'two portNumber values',
    input: { ...local(), Parameters: { portNumber: ['1', '2'] } },
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'bad localPortNumber',
    input: local('80', { localPortNumber: ['99999'] }),
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'unknown parameter',
    input: local('80', { command: ['ls'] }),
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'host on the local document',
    input: local('80', { host: ['db'] }),
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'ToRemoteHost without host',
    input: { Target: TARGET, DocumentName: DOCUMENT_REMOTE_HOST, Parameters: { portNumber: ['80'] } },
    type: InvalidParameters,
    code: 'InvalidParameters',
  },
  {
    name: 'empty Reason',
    input: { ...local(), Reason: '' },
    type: ValidationException,
    code: 'ValidationException',
  },
  {
    name: 'Reason of 257 chars',
    input: { ...local(), Reason: 'x'.repeat(257) },
    type: ValidationException,
    code: 'ValidationException',
  },
];

for (const c of errorCases) {
  test(`StartSession rejects ${c.name} with ${c.code}`, async (t) => {
    await withEmulator(c.options ?? {}, async (emulator, ssm) => {
      const err = await t.throwsAsync(ssm.send(new StartSessionCommand(c.input)));
      t.true(err instanceof c.type, `${err?.name}: ${err?.message}`);
      t.is(err?.name, c.code);
      t.is((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 400);
      t.is(emulator.sessions.size, 0);
    });
  });
}

test('Reason of exactly 256 chars is accepted', async (t) => {
  await withEmulator({}, async (_emulator, ssm) => {
    const out = await ssm.send(new StartSessionCommand({ ...local(), Reason: 'x'.repeat(256) }));
    t.truthy(out.TokenValue);
  });
});

test('ResumeSession issues a new token and a new cell-number every time', async (t) => {
  await withEmulator({}, async (emulator, ssm) => {
    const start = await ssm.send(new StartSessionCommand(local()));
    const id = start.SessionId ?? '';
    const resumed = waitFor(emulator, 'resumed', (sid) => sid === id);
    const r1 = await ssm.send(new ResumeSessionCommand({ SessionId: id }));
    await resumed;
    const r2 = await ssm.send(new ResumeSessionCommand({ SessionId: id }));
    t.is(r1.SessionId, id);
    t.not(r1.TokenValue, start.TokenValue);
    t.not(r2.TokenValue, r1.TokenValue);
    t.regex(r1.StreamUrl ?? '', /cell-number=2$/);
    t.regex(r2.StreamUrl ?? '', /cell-number=3$/);
    t.is(emulator.session(id).counters.resumes, 2);
    t.is(emulator.session(id).cellNumber, 3);
  });
});

test('ResumeSession of an unknown session is DoesNotExistException', async (t) => {
  await withEmulator({}, async (_emulator, ssm) => {
    const err = await t.throwsAsync(
      ssm.send(new ResumeSessionCommand({ SessionId: 'emulator-00000000000000000' })),
    );
    t.true(err instanceof DoesNotExistException);
  });
});

test('ResumeSession of a terminated session answers without TokenValue; TerminateSession is idempotent', async (t) => {
  await withEmulator({}, async (emulator, ssm) => {
    const start = await ssm.send(new StartSessionCommand(local()));
    const id = start.SessionId ?? '';
    const ended = waitFor(emulator, 'sessionTerminated', (sid) => sid === id);
    const term = await ssm.send(new TerminateSessionCommand({ SessionId: id }));
    t.is(term.SessionId, id);
    t.deepEqual((await ended)[1], 'terminated');
    t.is(emulator.session(id).state, 'terminated');
    t.is(emulator.session(id).closeReason, 'terminated');
    const again = await ssm.send(new TerminateSessionCommand({ SessionId: id }));
    t.is(again.SessionId, id);
    const unknown = await ssm.send(new TerminateSessionCommand({ SessionId: 'emulator-nope' }));
    t.is(unknown.SessionId, 'emulator-nope');
    const resumed = await ssm.send(new ResumeSessionCommand({ SessionId: id }));
    t.is(resumed.SessionId, id);
    t.falsy(resumed.TokenValue);
  });
});

interface FaultCase {
  op: ApiOperation;
  code: ApiErrorCode;
  type: new (...args: never[]) => Error;
  status: number;
}

const faultCases: FaultCase[] = [
  { op: 'StartSession', code: 'ThrottlingException', type: ThrottlingException, status: 400 },
  { op: 'StartSession', code: 'InternalServerError', type: InternalServerError, status: 500 },
  { op: 'StartSession', code: 'AccessDeniedException', type: AccessDeniedException, status: 400 },
  { op: 'StartSession', code: 'TargetNotConnected', type: TargetNotConnected, status: 400 },
  { op: 'StartSession', code: 'InvalidDocument', type: InvalidDocument, status: 400 },
  { op: 'StartSession', code: 'InvalidParameters', type: InvalidParameters, status: 400 },
  { op: 'ResumeSession', code: 'DoesNotExistException', type: DoesNotExistException, status: 400 },
  { op: 'ResumeSession', code: 'ThrottlingException', type: ThrottlingException, status: 400 },
  { op: 'ResumeSession', code: 'InternalServerError', type: InternalServerError, status: 500 },
  { op: 'ResumeSession', code: 'AccessDeniedException', type: AccessDeniedException, status: 400 },
  { op: 'TerminateSession', code: 'ThrottlingException', type: ThrottlingException, status: 400 },
  { op: 'TerminateSession', code: 'InternalServerError', type: InternalServerError, status: 500 },
  { op: 'TerminateSession', code: 'AccessDeniedException', type: AccessDeniedException, status: 400 },
];

for (const c of faultCases) {
  test(`injected ${c.code} on ${c.op} surfaces as the SDK's typed exception (HTTP ${c.status})`, async (t) => {
    await withEmulator({}, async (emulator, ssm) => {
      const start = await ssm.send(new StartSessionCommand(local()));
      const id = start.SessionId ?? '';
      emulator.faults.failApi(c.op, c.code, 2);
      const call = (): Promise<unknown> =>
        c.op === 'StartSession'
          ? ssm.send(new StartSessionCommand(local()))
          : c.op === 'ResumeSession'
            ? ssm.send(new ResumeSessionCommand({ SessionId: id }))
            : ssm.send(new TerminateSessionCommand({ SessionId: id }));
      for (let i = 0; i < 2; i++) {
        const err = await t.throwsAsync(call());
        t.true(err instanceof c.type, `${err?.name}`);
        t.is(err?.name, c.code);
        t.is((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, c.status);
      }
      await t.notThrowsAsync(call());
      t.is(emulator.faults.apiErrors.length, 0);
    });
  });
}

test('throttleStartSession(N) is absorbed by SDK retries when N < maxAttempts', async (t) => {
  await withEmulator({}, async (emulator) => {
    const ssm = new SSMClient({
      endpoint: emulator.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
      maxAttempts: 3,
    });
    const calls: unknown[] = [];
    emulator.on('apiCall', (op) => calls.push(op));
    emulator.faults.throttleStartSession(2);
    const out = await ssm.send(new StartSessionCommand(local()));
    ssm.destroy();
    t.truthy(out.SessionId);
    t.deepEqual(calls, ['StartSession', 'StartSession', 'StartSession']);
  });
});

test('resumeBehavior noToken / doesNotExist', async (t) => {
  await withEmulator({}, async (emulator, ssm) => {
    const start = await ssm.send(new StartSessionCommand(local()));
    const id = start.SessionId ?? '';
    emulator.faults.resumeBehavior = 'noToken';
    const r = await ssm.send(new ResumeSessionCommand({ SessionId: id }));
    t.falsy(r.TokenValue);
    emulator.faults.resumeBehavior = 'doesNotExist';
    const err = await t.throwsAsync(ssm.send(new ResumeSessionCommand({ SessionId: id })));
    t.true(err instanceof DoesNotExistException);
  });
});

function rawPost(
  port: number,
  headers: Record<string, string>,
  body: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('wire format: error body has __type and message plus x-amzn-ErrorType; unknown target header', async (t) => {
  await withEmulator({}, async (emulator) => {
    const unknown = await rawPost(
      emulator.port,
      { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': 'AmazonSSM.SendCommand' },
      '{}',
    );
    t.is(unknown.status, 400);
    t.is(unknown.headers['x-amzn-errortype'], 'UnknownOperationException');
    t.is(JSON.parse(unknown.body).__type, 'UnknownOperationException');
    const bad = await rawPost(
      emulator.port,
      { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': 'AmazonSSM.StartSession' },
      JSON.stringify({ Target: TARGET, DocumentName: 'nope' }),
    );
    t.is(bad.status, 400);
    t.is(bad.headers['content-type'], 'application/x-amz-json-1.1');
    t.deepEqual(Object.keys(JSON.parse(bad.body)), ['__type', 'message']);
    t.is(JSON.parse(bad.body).__type, 'InvalidDocument');
    const notJson = await rawPost(
      emulator.port,
      { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': 'AmazonSSM.StartSession' },
      '{',
    );
    t.is(notJson.status, 400);
    t.is(JSON.parse(notJson.body).__type, 'SerializationException');
  });
});
