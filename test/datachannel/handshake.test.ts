import test from 'ava';
import { ActionStatus, DEFAULT_CLIENT_VERSION, PayloadType } from '../../src/datachannel/constants.js';
import { HandshakeMachine, HandshakeState, answerHandshake } from '../../src/datachannel/handshake.js';
import type { HandshakeInputKind, HandshakeTimer } from '../../src/datachannel/handshake.js';
import {
  decodeHandshakeRequest,
  decodeHandshakeResponse,
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  encodeHandshakeResponse,
  sessionTypeAction,
} from '../../src/datachannel/payloads.js';
import type { HandshakeComplete, HandshakeRequest } from '../../src/datachannel/payloads.js';
import type { ClientModeDecision } from '../../src/datachannel/version.js';
import { ProtocolError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { messageVector } from '../helpers/vectors.js';

const requestVector = messageVector('handshake request from agent');
const responseVector = messageVector('handshake response from client');

function portRequest(agentVersion: string, properties: Record<string, string>): HandshakeRequest {
  return {
    agentVersion,
    requestedClientActions: [sessionTypeAction({ sessionType: 'Port', properties })],
  };
}

test('the spec vector request is answered with exactly the vector response payload', (t) => {
  const request = decodeHandshakeRequest(Buffer.from(requestVector.fields.PayloadHex, 'hex'));
  const outcome = answerHandshake(request, DEFAULT_CLIENT_VERSION);
  t.is(outcome.failure, undefined);
  t.is(encodeHandshakeResponse(outcome.response).toString('hex'), responseVector.fields.PayloadHex);
  t.deepEqual(outcome.properties, {
    portNumber: '5432',
    type: 'LocalPortForwarding',
    localPortNumber: '15432',
  });
  // AgentVersion 3.3.987.0: mux on, keep-alive off, TerminateSession flag understood (spec 3.3).
  t.deepEqual(outcome.decision, { mux: true, smuxKeepAlive: false, terminateFlag: true });
});

test('ToRemoteHost properties (host, unknown keys) are accepted and kept', (t) => {
  const outcome = answerHandshake(
    portRequest('3.3.987.0', {
      portNumber: '5432',
      type: 'LocalPortForwarding',
      host: 'db.internal',
      localConnectionType: 'tcp',
    }),
    DEFAULT_CLIENT_VERSION,
  );
  t.is(outcome.failure, undefined);
  t.is(outcome.properties['host'], 'db.internal');
  t.is(outcome.response.processedClientActions[0]?.actionStatus, ActionStatus.Success);
});

test('KMSEncryption is answered 3 Unsupported and fails the session', (t) => {
  const request = portRequest('3.3.987.0', { portNumber: '22', type: 'LocalPortForwarding' });
  request.requestedClientActions.push({
    actionType: 'KMSEncryption',
    actionParameters: { KMSKeyId: 'arn:aws:kms:eu-west-1:1:key/x', Challenge: 'abc' },
  });
  const outcome = answerHandshake(request, DEFAULT_CLIENT_VERSION);
  const actions = outcome.response.processedClientActions;
  t.is(actions.length, 2);
  t.is(actions[0]?.actionStatus, ActionStatus.Success);
  t.is(actions[1]?.actionType, 'KMSEncryption');
  t.is(actions[1]?.actionStatus, ActionStatus.Unsupported);
  t.is(actions[1]?.actionResult, null);
  t.not(actions[1]?.error, '');
  t.true(outcome.failure instanceof ProtocolError);
  t.is(outcome.failure?.code, 'PF_ERR_HANDSHAKE');
  t.is(outcome.response.errors, null);
  // The wire form carries status 3 for the agent.
  const wire = decodeHandshakeResponse(encodeHandshakeResponse(outcome.response));
  t.is(wire.processedClientActions[1]?.actionStatus, 3);
});

test('an unknown action type is answered 3 Unsupported (never 0, weakness #15)', (t) => {
  const request = portRequest('3.3.987.0', { portNumber: '22', type: 'LocalPortForwarding' });
  request.requestedClientActions.unshift({ actionType: 'FutureThing', actionParameters: {} });
  const outcome = answerHandshake(request, DEFAULT_CLIENT_VERSION);
  t.is(outcome.response.processedClientActions[0]?.actionStatus, ActionStatus.Unsupported);
  t.is(outcome.response.processedClientActions[1]?.actionStatus, ActionStatus.Success);
  t.is(outcome.failure?.code, 'PF_ERR_HANDSHAKE');
});

test('a shell session (Standard_Stream) is answered 2 Failed with an error text', (t) => {
  const request: HandshakeRequest = {
    agentVersion: '3.3.987.0',
    requestedClientActions: [sessionTypeAction({ sessionType: 'Standard_Stream', properties: {} })],
  };
  const outcome = answerHandshake(request, DEFAULT_CLIENT_VERSION);
  const action = outcome.response.processedClientActions[0];
  t.is(action?.actionStatus, ActionStatus.Failed);
  t.is(action?.actionResult, null);
  t.regex(action?.error ?? '', /Standard_Stream/);
  t.is(outcome.failure?.code, 'PF_ERR_HANDSHAKE');
  t.false(outcome.decision.mux);
});

test('Port with a type other than LocalPortForwarding is answered 2 Failed', (t) => {
  const outcome = answerHandshake(
    portRequest('3.3.987.0', { portNumber: '22', type: 'InteractiveCommands' }),
    DEFAULT_CLIENT_VERSION,
  );
  t.is(outcome.response.processedClientActions[0]?.actionStatus, ActionStatus.Failed);
  t.is(outcome.failure?.code, 'PF_ERR_HANDSHAKE');
});

test('no SessionType action at all is a failure with an empty processed list', (t) => {
  const outcome = answerHandshake({ agentVersion: '3.3.987.0', requestedClientActions: [] }, '1.2.694.0');
  t.deepEqual(outcome.response, {
    clientVersion: '1.2.694.0',
    processedClientActions: [],
    errors: null,
  });
  t.deepEqual(outcome.properties, {});
  t.is(outcome.failure?.code, 'PF_ERR_HANDSHAKE');
  t.regex(outcome.failure?.message ?? '', /no SessionType/);
});

test('decision follows the client rule of spec 3.3 at the version thresholds', (t) => {
  const props = { portNumber: '80', type: 'LocalPortForwarding' };
  const at = (v: string) => answerHandshake(portRequest(v, props), DEFAULT_CLIENT_VERSION).decision;
  t.deepEqual(at('3.0.196.0'), { mux: false, smuxKeepAlive: true, terminateFlag: true });
  t.deepEqual(at('3.0.196.1'), { mux: true, smuxKeepAlive: true, terminateFlag: true });
  t.deepEqual(at('3.1.1511.0'), { mux: true, smuxKeepAlive: true, terminateFlag: true });
  t.deepEqual(at('3.1.1512.0'), { mux: true, smuxKeepAlive: false, terminateFlag: true });
  t.deepEqual(at('2.3.722.0'), { mux: false, smuxKeepAlive: true, terminateFlag: false });
  t.is(answerHandshake(portRequest('3.3.987.0', props), '').response.clientVersion, '');
});

// ---- HandshakeMachine: order rules, deadlines on a fake clock, late and malformed input ----------------

/** A timer driven by `advance()`, so the deadlines are tested without real time. */
class FakeTimer implements HandshakeTimer {
  now = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  private nextId = 1;
  set(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  }
  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  get armed(): number {
    return this.pending.size;
  }
  /** Move the clock on by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.pending.entries()]
        .filter(([, timer]) => timer.at <= until)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.pending.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
}

const TIMEOUT_MS = 30_000;

/** A machine wired to recorders; `feed` mirrors the session's dispatch of handshake payload types. */
function machine(clientVersion = DEFAULT_CLIENT_VERSION) {
  const timer = new FakeTimer();
  const sent: { payloadType: number; payload: Buffer }[] = [];
  const opened: { decision: ClientModeDecision; complete: HandshakeComplete }[] = [];
  const failures: ProtocolError[] = [];
  const input: { kind: HandshakeInputKind; text: string }[] = [];
  const m = new HandshakeMachine({
    clientVersion,
    timeoutMs: TIMEOUT_MS,
    send: (payloadType, payload) => sent.push({ payloadType, payload }),
    onOpen: (decision, complete) => opened.push({ decision, complete }),
    onFailed: (error) => failures.push(error),
    onInput: (kind, text) => input.push({ kind, text }),
    timer,
    logger: silentLogger,
  });
  return { m, timer, sent, opened, failures, input };
}

const goodRequest = (agentVersion = '3.3.987.0'): Buffer =>
  encodeHandshakeRequest(portRequest(agentVersion, { portNumber: '22', type: 'LocalPortForwarding' }));
const goodComplete = (customerMessage = ''): Buffer =>
  encodeHandshakeComplete({ handshakeTimeToComplete: 1234, customerMessage });

test('machine: request → response → complete opens once with the decision and the complete', (t) => {
  const h = machine();
  h.m.start();
  t.is(h.m.state, HandshakeState.AwaitingRequest);
  h.m.onRequest(goodRequest());
  t.is(h.m.state, HandshakeState.AwaitingComplete);
  t.is(h.sent.length, 1);
  t.is(h.sent[0]?.payloadType, PayloadType.HandshakeResponse);
  const response = decodeHandshakeResponse(h.sent[0]?.payload ?? Buffer.alloc(0));
  t.is(response.clientVersion, DEFAULT_CLIENT_VERSION);
  t.is(response.processedClientActions[0]?.actionStatus, ActionStatus.Success);
  t.deepEqual(h.m.decision, { mux: true, smuxKeepAlive: false, terminateFlag: true });
  t.deepEqual(h.opened, []);
  h.m.onComplete(goodComplete('hello from the agent'));
  t.is(h.m.state, HandshakeState.Open);
  t.is(h.opened.length, 1);
  t.deepEqual(h.opened[0]?.decision, { mux: true, smuxKeepAlive: false, terminateFlag: true });
  t.is(h.opened[0]?.complete.customerMessage, 'hello from the agent');
  t.is(h.opened[0]?.complete.handshakeTimeToComplete, 1234);
  t.deepEqual(h.failures, []);
  t.deepEqual(h.input, []);
  t.is(h.timer.armed, 0, 'no deadline left once open');
  h.timer.advance(10 * TIMEOUT_MS);
  t.deepEqual(h.failures, []);
});

test('machine: an old agent (3.0.196.0) opens in basic mode', (t) => {
  const h = machine();
  h.m.start();
  h.m.onRequest(goodRequest('3.0.196.0'));
  h.m.onComplete(goodComplete());
  t.deepEqual(h.opened[0]?.decision, { mux: false, smuxKeepAlive: true, terminateFlag: true });
});

test('machine: HandshakeComplete before HandshakeRequest fails, and nothing after it counts', (t) => {
  const h = machine();
  h.m.start();
  h.m.onComplete(goodComplete());
  t.is(h.failures.length, 1);
  t.is(h.failures[0]?.code, 'PF_ERR_HANDSHAKE');
  t.regex(h.failures[0]?.message ?? '', /HandshakeComplete before HandshakeRequest/);
  t.is(h.m.state, HandshakeState.Done);
  t.is(h.timer.armed, 0);
  h.m.onRequest(goodRequest());
  h.m.onComplete(goodComplete());
  h.timer.advance(10 * TIMEOUT_MS);
  t.is(h.sent.length, 0, 'a request after the failure is not answered');
  t.is(h.failures.length, 1, 'onFailed is called once');
  t.deepEqual(h.opened, []);
});

test('machine: a second HandshakeRequest is dropped and counted, before and after open; the mode stays', (t) => {
  const h = machine();
  h.m.start();
  h.m.onRequest(goodRequest('3.3.987.0'));
  h.m.onRequest(goodRequest('3.0.196.0'));
  t.is(h.sent.length, 1, 'answered once');
  t.deepEqual(h.m.decision, { mux: true, smuxKeepAlive: false, terminateFlag: true });
  h.m.onComplete(goodComplete());
  h.m.onRequest(goodRequest('3.0.196.0'));
  h.m.onComplete(goodComplete());
  t.is(h.sent.length, 1);
  t.is(h.opened.length, 1, 'a second HandshakeComplete does not open again');
  t.deepEqual(
    h.input.map((i) => i.kind),
    ['lateHandshakes', 'lateHandshakes', 'lateHandshakes'],
  );
  t.regex(h.input[2]?.text ?? '', /HandshakeComplete after the session was open/);
  t.deepEqual(h.failures, []);
  t.is(h.m.state, HandshakeState.Open);
});

test('machine: no HandshakeRequest within the timeout fails at the deadline, not before', (t) => {
  const h = machine();
  h.m.start();
  h.timer.advance(TIMEOUT_MS - 1);
  t.deepEqual(h.failures, []);
  h.timer.advance(1);
  t.is(h.failures.length, 1);
  t.is(h.failures[0]?.code, 'PF_ERR_HANDSHAKE');
  t.is(h.failures[0]?.message, `no handshake from the agent within ${TIMEOUT_MS} ms`);
  h.m.onRequest(goodRequest());
  t.is(h.sent.length, 0, 'a request after the deadline is not answered');
  t.is(h.failures.length, 1);
});

test('machine: the wait for HandshakeComplete is bounded from the request, not from start()', (t) => {
  const h = machine();
  h.m.start();
  h.timer.advance(TIMEOUT_MS - 10);
  h.m.onRequest(goodRequest());
  // The request's own deadline would have passed here; it was cancelled by the request.
  h.timer.advance(TIMEOUT_MS - 1);
  t.deepEqual(h.failures, []);
  t.is(h.timer.armed, 1, 'exactly one deadline runs');
  h.timer.advance(1);
  t.is(h.failures.length, 1);
  t.is(h.failures[0]?.message, 'the agent never completed the handshake');
  h.m.onComplete(goodComplete());
  t.deepEqual(h.opened, [], 'a HandshakeComplete after the deadline does not open');
});

test('machine: a request delivered before start() is answered and start() then arms nothing', (t) => {
  const h = machine();
  h.m.onRequest(goodRequest());
  h.m.start();
  t.is(h.m.state, HandshakeState.AwaitingComplete);
  t.is(h.timer.armed, 1);
  h.m.onComplete(goodComplete());
  t.is(h.opened.length, 1);
  t.is(h.timer.armed, 0);
});

test('machine: stop() cancels the deadline and every later input is ignored', (t) => {
  const h = machine();
  h.m.start();
  h.m.stop();
  t.is(h.timer.armed, 0);
  h.timer.advance(10 * TIMEOUT_MS);
  h.m.onRequest(goodRequest());
  h.m.onComplete(goodComplete());
  t.deepEqual(h.failures, []);
  t.deepEqual(h.opened, []);
  t.is(h.sent.length, 0);
  t.is(h.m.state, HandshakeState.Done);
});

for (const [what, payload] of [
  ['not JSON', Buffer.from('{"AgentVersion": "3.3')],
  ['a JSON array', Buffer.from('[]')],
  ['a JSON string', Buffer.from('"HandshakeRequest"')],
  ['empty', Buffer.alloc(0)],
] as const) {
  test(`machine: a malformed HandshakeRequest (${what}) fails with the decoder's error and sends nothing`, (t) => {
    const h = machine();
    h.m.start();
    h.m.onRequest(payload);
    t.is(h.sent.length, 0);
    t.is(h.failures.length, 1);
    t.is(h.failures[0]?.code, 'PF_ERR_HANDSHAKE');
    t.regex(h.failures[0]?.message ?? '', /^malformed HandshakeRequest: /);
    t.truthy(h.failures[0]?.cause, 'the decoder error is kept as the cause');
    t.deepEqual(
      h.input.map((i) => i.kind),
      ['malformedHandshakes'],
    );
    t.is(h.timer.armed, 0);
  });
}

test('machine: a malformed HandshakeComplete fails the handshake and does not open', (t) => {
  const h = machine();
  h.m.start();
  h.m.onRequest(goodRequest());
  h.m.onComplete(Buffer.from('{"HandshakeTimeToComplete": 12'));
  t.deepEqual(h.opened, []);
  t.is(h.failures.length, 1);
  t.regex(h.failures[0]?.message ?? '', /^malformed HandshakeComplete: /);
  t.deepEqual(
    h.input.map((i) => i.kind),
    ['malformedHandshakes'],
  );
  t.is(h.timer.armed, 0);
  h.m.onComplete(goodComplete());
  t.deepEqual(h.opened, [], 'a good one after the failure does not open either');
});

test('machine: an unsupported request is still answered (so the agent cancels at once), then fails', (t) => {
  const h = machine();
  h.m.start();
  h.m.onRequest(
    encodeHandshakeRequest({
      agentVersion: '3.3.987.0',
      requestedClientActions: [
        sessionTypeAction({ sessionType: 'Port', properties: { type: 'LocalPortForwarding' } }),
        { actionType: 'KMSEncryption', actionParameters: { KMSKeyId: 'k' } },
      ],
    }),
  );
  t.is(h.sent.length, 1);
  const response = decodeHandshakeResponse(h.sent[0]?.payload ?? Buffer.alloc(0));
  t.is(response.processedClientActions[1]?.actionStatus, ActionStatus.Unsupported);
  t.is(h.failures.length, 1);
  t.regex(h.failures[0]?.message ?? '', /KMSEncryption/);
  t.is(h.m.decision, undefined);
  h.m.onComplete(goodComplete());
  t.deepEqual(h.opened, []);
  t.is(h.failures.length, 1);
});
