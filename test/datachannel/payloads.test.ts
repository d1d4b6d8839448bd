import test from 'ava';
import { FlagCode, MessageType } from '../../src/datachannel/constants.js';
import {
  FLAG_PAYLOAD_BYTES,
  acknowledgeJson,
  acknowledgedSequenceNumberOf,
  decodeAcknowledge,
  decodeCanonicalAcknowledge,
  decodeChannelClosed,
  decodeFlag,
  decodeHandshakeComplete,
  decodeHandshakeRequest,
  decodeHandshakeResponse,
  decodeOpenDataChannel,
  encodeAcknowledge,
  encodeAcknowledgeMessage,
  encodeChannelClosed,
  encodeFlag,
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  encodeHandshakeResponse,
  encodeOpenDataChannel,
  encodeOutputAcknowledgeMessage,
  sessionTypeAction,
  sessionTypeOf,
} from '../../src/datachannel/payloads.js';
import { decodeInbound, decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import { HEADER, HeaderFlags, PayloadType } from '../../src/datachannel/constants.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { ProtocolError } from '../../src/errors.js';
import { messageVector } from '../helpers/vectors.js';

const hex = (name: string): Buffer => Buffer.from(messageVector(name).fields.PayloadHex, 'hex');

test('ack vector payload decodes and re-encodes byte for byte (spec 4.8, 5)', (t) => {
  const payload = hex('acknowledge (spec 4.8)');
  const ack = decodeAcknowledge(payload);
  t.deepEqual(ack, {
    acknowledgedMessageType: MessageType.OutputStreamData,
    acknowledgedMessageId: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
    acknowledgedMessageSequenceNumber: 0,
    isSequentialMessage: true,
  });
  t.is(encodeAcknowledge(ack).toString('hex'), payload.toString('hex'));
  t.is(payload.length, 176);
});

test('ack decoder rejects bad input with PF_ERR_PAYLOAD', (t) => {
  const bad = [
    'not json',
    '[]',
    'null',
    '{"AcknowledgedMessageType":"x"}',
    '{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":-1}',
    '{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":1.5}',
    '{"AcknowledgedMessageType":7,"AcknowledgedMessageSequenceNumber":1}',
    '{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":"1"}',
  ];
  for (const text of bad) {
    const err = t.throws(() => decodeAcknowledge(Buffer.from(text)), { instanceOf: ProtocolError });
    t.is(err?.code, 'PF_ERR_PAYLOAD', text);
  }
});

test('flag codes encode as 4 bytes big-endian: 00000001, 00000002, 00000003 (spec 4.3)', (t) => {
  t.is(encodeFlag(FlagCode.DisconnectToPort).toString('hex'), '00000001');
  t.is(encodeFlag(FlagCode.TerminateSession).toString('hex'), '00000002');
  t.is(encodeFlag(FlagCode.ConnectToPortError).toString('hex'), '00000003');
  t.is(FLAG_PAYLOAD_BYTES, 4);
  for (const code of [1, 2, 3] as const) t.is(decodeFlag(encodeFlag(code)), code);
  t.is(decodeFlag(hex('flag DisconnectToPort (spec 4.8)')), FlagCode.DisconnectToPort);
  // Unknown codes decode as numbers for the caller to log.
  t.is(decodeFlag(Buffer.from('0000002a', 'hex')), 42);
  for (const len of [0, 3, 5]) {
    t.is(
      t.throws(() => decodeFlag(Buffer.alloc(len)), { instanceOf: ProtocolError })?.code,
      'PF_ERR_PAYLOAD',
    );
  }
});

test('channel_closed encodes every field and decodes SessionId and Output (spec 10.1)', (t) => {
  const payload = encodeChannelClosed({
    sessionId: 'alice-0a1b2c3d4e5f67890',
    output: 'Session terminated by user',
    messageId: '11111111-2222-3333-4444-555555555555',
    destinationId: 'c0a80101-0000-4000-8000-000000000001',
    createdDate: 1700000000000,
  });
  t.is(
    payload.toString(),
    '{"MessageType":"channel_closed","MessageId":"11111111-2222-3333-4444-555555555555",' +
      '"DestinationId":"c0a80101-0000-4000-8000-000000000001","SessionId":"alice-0a1b2c3d4e5f67890",' +
      '"SchemaVersion":1,"CreatedDate":"1700000000000","Output":"Session terminated by user"}',
  );
  t.deepEqual(decodeChannelClosed(payload), {
    sessionId: 'alice-0a1b2c3d4e5f67890',
    output: 'Session terminated by user',
  });
  t.deepEqual(decodeChannelClosed(Buffer.alloc(0)), { sessionId: '', output: '' });
  t.deepEqual(decodeChannelClosed(Buffer.from('{"Output":5}')), { sessionId: '', output: '' });
  // An unreadable payload still ends the session (spec 10.1); it just has no reason text.
  t.deepEqual(decodeChannelClosed(Buffer.from('{')), { sessionId: '', output: '' });
});

test('OpenDataChannel round-trips with the reference key order (spec 3.2)', (t) => {
  const input = {
    messageSchemaVersion: '1.0',
    requestId: '5b1f0c1e-7a61-4f5e-9a3e-0d7f4c1b2a39',
    tokenValue: 'AAEAAxyz',
    clientId: 'c0a80101-0000-4000-8000-000000000001',
    clientVersion: '1.2.694.0',
  };
  const text = encodeOpenDataChannel(input);
  t.is(
    text,
    '{"MessageSchemaVersion":"1.0","RequestId":"5b1f0c1e-7a61-4f5e-9a3e-0d7f4c1b2a39",' +
      '"TokenValue":"AAEAAxyz","ClientId":"c0a80101-0000-4000-8000-000000000001","ClientVersion":"1.2.694.0"}',
  );
  t.deepEqual(decodeOpenDataChannel(text), input);
  // The agent's frame has no ClientVersion.
  t.is(decodeOpenDataChannel('{"TokenValue":"x","ClientInstanceId":"i-1"}').clientVersion, '');
  t.is(t.throws(() => decodeOpenDataChannel('{}'), { instanceOf: ProtocolError })?.code, 'PF_ERR_PAYLOAD');
});

test('handshake vectors: request, response and complete decode and re-encode byte for byte', (t) => {
  const reqPayload = hex('handshake request from agent');
  const request = decodeHandshakeRequest(reqPayload);
  t.is(request.agentVersion, '3.3.987.0');
  t.is(request.requestedClientActions.length, 1);
  const action = request.requestedClientActions[0];
  if (!action) return t.fail('no action');
  t.deepEqual(sessionTypeOf(action), {
    sessionType: 'Port',
    properties: { portNumber: '5432', type: 'LocalPortForwarding', localPortNumber: '15432' },
  });
  t.is(encodeHandshakeRequest(request).toString('hex'), reqPayload.toString('hex'));

  const resPayload = hex('handshake response from client');
  const response = decodeHandshakeResponse(resPayload);
  t.deepEqual(response, {
    clientVersion: '1.2.694.0',
    processedClientActions: [{ actionType: 'SessionType', actionStatus: 1, actionResult: null, error: '' }],
    errors: null,
  });
  t.is(encodeHandshakeResponse(response).toString('hex'), resPayload.toString('hex'));

  const donePayload = hex('handshake complete from agent');
  const complete = decodeHandshakeComplete(donePayload);
  t.deepEqual(complete, { handshakeTimeToComplete: 1500000, customerMessage: '' });
  t.is(encodeHandshakeComplete(complete).toString('hex'), donePayload.toString('hex'));
});

test('sessionTypeAction/sessionTypeOf round-trip and non-string properties are dropped', (t) => {
  const action = sessionTypeAction({ sessionType: 'Port', properties: { portNumber: '1' } });
  t.deepEqual(sessionTypeOf(action), { sessionType: 'Port', properties: { portNumber: '1' } });
  const request = decodeHandshakeRequest(
    Buffer.from(
      '{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType",' +
        '"ActionParameters":{"SessionType":"Port","Properties":{"portNumber":22,"type":"LocalPortForwarding"}}}]}',
    ),
  );
  const first = request.requestedClientActions[0];
  if (!first) return t.fail('no action');
  t.deepEqual(sessionTypeOf(first).properties, { type: 'LocalPortForwarding' });
});

test('handshake decoders reject malformed input with PF_ERR_PAYLOAD only', (t) => {
  const bad = ['', '[', '"x"', '{"RequestedClientActions":[1]}', '{"RequestedClientActions":[{}]}'];
  for (const text of bad) {
    t.is(
      t.throws(() => decodeHandshakeRequest(Buffer.from(text)), { instanceOf: ProtocolError })?.code,
      'PF_ERR_PAYLOAD',
    );
  }
  t.is(
    t.throws(() => decodeHandshakeResponse(Buffer.from('{"ProcessedClientActions":[{"ActionType":"x"}]}')), {
      instanceOf: ProtocolError,
    })?.code,
    'PF_ERR_PAYLOAD',
  );
});

// Regression (found by fuzz.test.ts): assigning the key `__proto__` on a plain `{}` sets the prototype
// instead of an own property, so such a Properties key used to vanish.
test('sessionTypeOf keeps a property named __proto__', (t) => {
  const request = decodeHandshakeRequest(
    Buffer.from(
      '{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType",' +
        '"ActionParameters":{"SessionType":"Port","Properties":{"__proto__":"x","type":"LocalPortForwarding"}}}]}',
    ),
  );
  const first = request.requestedClientActions[0];
  if (!first) return t.fail('no action');
  t.deepEqual(Object.keys(sessionTypeOf(first).properties), ['__proto__', 'type']);
});

// ---------------------------------------------------------------------------------------------
// Canonical ack fast path (issue 7): equal to the JSON path on what it accepts, defers everything else.

/** The JSON path alone, as decodeAcknowledge did before the fast path. */
function jsonAck(payload: Buffer): unknown {
  const obj = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  return {
    acknowledgedMessageType: obj['AcknowledgedMessageType'],
    acknowledgedMessageId:
      typeof obj['AcknowledgedMessageId'] === 'string' ? obj['AcknowledgedMessageId'] : '',
    acknowledgedMessageSequenceNumber: obj['AcknowledgedMessageSequenceNumber'],
    isSequentialMessage: typeof obj['IsSequentialMessage'] === 'boolean' ? obj['IsSequentialMessage'] : true,
  };
}

test('canonical ack fast path: the spec vector and encoded acks parse without JSON.parse, equal to the JSON path', (t) => {
  const vector = hex('acknowledge (spec 4.8)');
  t.deepEqual(decodeCanonicalAcknowledge(vector), jsonAck(vector));
  for (const seq of [0, 1, 9, 10, 4096, 999_999_999_999_999]) {
    for (const isSequentialMessage of [true, false]) {
      const payload = encodeAcknowledge({
        acknowledgedMessageType: MessageType.InputStreamData,
        acknowledgedMessageId: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
        acknowledgedMessageSequenceNumber: seq,
        isSequentialMessage,
      });
      const fast = decodeCanonicalAcknowledge(payload);
      t.not(fast, undefined);
      t.deepEqual(fast, jsonAck(payload));
      t.deepEqual(decodeAcknowledge(payload), fast);
    }
  }
});

test('canonical ack fast path defers non-canonical input; decodeAcknowledge still accepts or rejects it as before', (t) => {
  const canonical =
    '{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":5,"IsSequentialMessage":true}';
  const deferredValid = [
    canonical.replace('{', '{ '),
    `${canonical}\n`,
    canonical.replace(':5,', ':5.0,'),
    canonical.replace(':5,', ':1234567890123456,'),
    canonical.replace('"x"', '"\\u0078"'),
    canonical.replace('"x"', '"é"'),
  ];
  for (const text of deferredValid) {
    const payload = Buffer.from(text, 'utf8');
    t.is(decodeCanonicalAcknowledge(payload), undefined, text);
    t.deepEqual(decodeAcknowledge(payload), jsonAck(payload) as never, text);
  }
  const invalid = [
    canonical.replace(':5,', ':-5,'),
    canonical.replace(':5,', ':05,'),
    canonical.replace(':5,', ':,'),
    canonical.replace('true}', 'tru}'),
    canonical.replace('true}', 'true}}'),
    canonical.slice(0, -1),
    canonical.replace('"x"', '"a\tb"'),
    canonical.replace(':5,', ':9007199254740993,'),
  ];
  for (const text of invalid) {
    const payload = Buffer.from(text, 'utf8');
    t.is(decodeCanonicalAcknowledge(payload), undefined, text);
    const err = t.throws(() => decodeAcknowledge(payload), { instanceOf: ProtocolError }, text);
    t.is(err?.code, 'PF_ERR_PAYLOAD');
  }
});

test('encodeAcknowledgeMessage: one frame equal to encodeMessage of the encoded ack payload', (t) => {
  const ack = {
    acknowledgedMessageType: MessageType.OutputStreamData,
    acknowledgedMessageId: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
    acknowledgedMessageSequenceNumber: 0,
    isSequentialMessage: true,
  };
  const frame = encodeAcknowledgeMessage(ack, 1_700_000_000_000);
  const decoded = decodeMessage(frame);
  t.is(decoded.messageType, MessageType.Acknowledge);
  t.is(decoded.flags, 3);
  t.is(decoded.sequenceNumber, 0);
  t.is(decoded.payloadType, 0);
  t.true(decoded.payload.equals(encodeAcknowledge(ack)));
  t.true(encodeMessage(decoded).equals(frame));
});

test('acknowledgeJson and encodeAcknowledgeMessage: the concatenation path writes exactly what JSON.stringify would, for plain and escaped strings', (t) => {
  // Oracle: the reference layout built with JSON.stringify, independent of the codec's fast path.
  const oracle = (type: string, id: string, seq: number, sequential: boolean): string =>
    `{"AcknowledgedMessageType":${JSON.stringify(type)},"AcknowledgedMessageId":${JSON.stringify(id)},` +
    `"AcknowledgedMessageSequenceNumber":${seq},"IsSequentialMessage":${sequential}}`;
  const alphabet = [
    'a',
    'Z',
    '0',
    '-',
    ' ',
    '"',
    '\\',
    '\n',
    '\u0001',
    '\u007f',
    'é',
    '\ud83d',
    '€',
    '~',
    '!',
    '#',
  ];
  let state = 0x9e3779b9;
  const rand = (n: number): number => {
    state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return state % n;
  };
  const word = (): string =>
    Array.from({ length: rand(40) }, () => alphabet[rand(alphabet.length)] as string).join('');
  const cases: Array<[string, string]> = [
    [MessageType.OutputStreamData, '7c9e6679-7425-40de-944b-e07fc1f90ae7'],
    [MessageType.InputStreamData, ''],
    ['output_stream_data"', 'x\\y'],
  ];
  for (let i = 0; i < 3000; i++) cases.push([rand(2) ? MessageType.OutputStreamData : word(), word()]);
  for (const [index, [type, id]] of cases.entries()) {
    const seq = index === 0 ? 0 : rand(2) ? index : Number.MAX_SAFE_INTEGER - index;
    const sequential = rand(4) !== 0;
    const ack = {
      acknowledgedMessageType: type,
      acknowledgedMessageId: id,
      acknowledgedMessageSequenceNumber: seq,
      isSequentialMessage: sequential,
    };
    const expected = oracle(type, id, seq, sequential);
    if (acknowledgeJson(ack) !== expected) {
      t.fail(`acknowledgeJson differs for ${JSON.stringify([type, id, seq, sequential])}`);
      return;
    }
    const payload = decodeMessage(encodeAcknowledgeMessage(ack, 1_700_000_000_000)).payload;
    if (!payload.equals(Buffer.from(expected, 'utf8'))) {
      t.fail(`encodeAcknowledgeMessage payload differs for ${JSON.stringify([type, id, seq, sequential])}`);
      return;
    }
  }
  t.pass();
});

test('encodeOutputAcknowledgeMessage (template ack) writes the bytes of encodeAcknowledgeMessage, only the fresh MessageId differs', (t) => {
  const seqs = [0, 1, 9, 10, 99, 100, 4095, 65_536, 999_999_999_999_999, Number.MAX_SAFE_INTEGER];
  for (let i = 0; i < 300; i++) seqs.push(Math.floor(Math.random() * 2 ** (1 + (i % 53))));
  for (const seq of seqs) {
    // Random MessageIds cover every hex digit in every position, upper case on the wire never occurs.
    const messageId = randomUUID();
    const received = decodeInbound(
      encodeMessage(
        newMessage({
          messageType: MessageType.OutputStreamData,
          sequenceNumber: seq,
          flags: HeaderFlags.Data,
          payloadType: PayloadType.Output,
          payload: randomBytes(1 + (seq % 1024)),
          messageId,
        }),
      ),
    );
    t.is(received.messageId, messageId);
    const createdDate = 1_700_000_000_000 + (seq % 1000);
    const template = encodeOutputAcknowledgeMessage(received, createdDate);
    const oracle = encodeAcknowledgeMessage(
      {
        acknowledgedMessageType: MessageType.OutputStreamData,
        acknowledgedMessageId: messageId,
        acknowledgedMessageSequenceNumber: seq,
        isSequentialMessage: true,
      },
      createdDate,
    );
    const idEnd = HEADER.MESSAGE_ID_OFFSET + HEADER.MESSAGE_ID_BYTES;
    t.is(template.length, oracle.length, `seq ${seq}`);
    t.true(
      template.subarray(0, HEADER.MESSAGE_ID_OFFSET).equals(oracle.subarray(0, HEADER.MESSAGE_ID_OFFSET)),
    );
    t.true(template.subarray(idEnd).equals(oracle.subarray(idEnd)), `seq ${seq}: digest, type, length, JSON`);
    const decoded = decodeMessage(template);
    t.deepEqual(decodeAcknowledge(decoded.payload), {
      acknowledgedMessageType: MessageType.OutputStreamData,
      acknowledgedMessageId: messageId,
      acknowledgedMessageSequenceNumber: seq,
      isSequentialMessage: true,
    });
  }
  // Two acks of one message still get two fresh MessageIds (spec 4.5).
  const one = decodeInbound(agentData(7));
  const first = encodeOutputAcknowledgeMessage(one, 1);
  const second = encodeOutputAcknowledgeMessage(one, 1);
  t.false(
    first
      .subarray(HEADER.MESSAGE_ID_OFFSET, HEADER.MESSAGE_ID_OFFSET + HEADER.MESSAGE_ID_BYTES)
      .equals(second.subarray(HEADER.MESSAGE_ID_OFFSET, HEADER.MESSAGE_ID_OFFSET + HEADER.MESSAGE_ID_BYTES)),
  );
});

/** An agent data frame with sequence number `seq`. */
function agentData(seq: number): Buffer {
  return encodeMessage(
    newMessage({
      messageType: MessageType.OutputStreamData,
      sequenceNumber: seq,
      flags: HeaderFlags.Data,
      payloadType: PayloadType.Output,
      payload: Buffer.from('x'),
    }),
  );
}

test('acknowledgedSequenceNumberOf accepts and rejects exactly what decodeAcknowledge does, on canonical, non-canonical and hostile payloads', (t) => {
  const canonical =
    '{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":5,"IsSequentialMessage":true}';
  const texts = [
    canonical,
    canonical.replace('true}', 'false}'),
    canonical.replace('{', '{ '),
    canonical.replace(':5,', ':5.0,'),
    canonical.replace(':5,', ':1234567890123456,'),
    canonical.replace(':5,', ':-5,'),
    canonical.replace(':5,', ':05,'),
    canonical.replace(':5,', ':,'),
    canonical.replace('true}', 'tru}'),
    canonical.slice(0, -1),
    canonical.replace(':5,', ':9007199254740993,'),
    '{"AcknowledgedMessageSequenceNumber":3}',
    '[]',
    '',
  ];
  for (let i = 0; i < 2000; i++) {
    const bytes = Buffer.from(canonical, 'latin1');
    bytes[Math.floor(Math.random() * bytes.length)] = Math.floor(Math.random() * 256);
    texts.push(bytes.toString('latin1'));
  }
  for (const text of texts) {
    const payload = Buffer.from(text, 'latin1');
    let expected: number | string;
    try {
      expected = decodeAcknowledge(payload).acknowledgedMessageSequenceNumber;
    } catch (err) {
      expected = (err as ProtocolError).code;
    }
    let actual: number | string;
    try {
      actual = acknowledgedSequenceNumberOf(payload);
    } catch (err) {
      t.true(err instanceof ProtocolError, text);
      actual = (err as ProtocolError).code;
    }
    t.is(actual, expected, text);
  }
});
