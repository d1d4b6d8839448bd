import test from 'ava';
import { ActionStatus, DEFAULT_CLIENT_VERSION } from '../../src/datachannel/constants.js';
import { answerHandshake } from '../../src/datachannel/handshake.js';
import {
  decodeHandshakeRequest,
  decodeHandshakeResponse,
  encodeHandshakeResponse,
  sessionTypeAction,
} from '../../src/datachannel/payloads.js';
import type { HandshakeRequest } from '../../src/datachannel/payloads.js';
import { ProtocolError } from '../../src/errors.js';
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
