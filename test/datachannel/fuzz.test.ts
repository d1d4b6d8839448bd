import test from 'ava';
import { createHash, randomFillSync } from 'node:crypto';
import fc from 'fast-check';
import type { FlagCode } from '../../src/datachannel/constants.js';
import { MessageType } from '../../src/datachannel/constants.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import { decodeMessage, encodeMessage } from '../../src/datachannel/message.js';
import {
  decodeAcknowledge,
  decodeChannelClosed,
  decodeFlag,
  decodeHandshakeComplete,
  decodeHandshakeRequest,
  decodeHandshakeResponse,
  decodeOpenDataChannel,
  encodeAcknowledge,
  encodeChannelClosed,
  encodeFlag,
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  encodeHandshakeResponse,
  encodeOpenDataChannel,
  sessionTypeOf,
} from '../../src/datachannel/payloads.js';
import { ReliableChannel } from '../../src/datachannel/reliable.js';
import { ERROR_CODES, ProtocolError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { vectors } from '../helpers/vectors.js';

// Case counts (the titles carry them; the total is well over 100,000).
const RANDOM_FRAMES = 25_000;
const MUTATED_FRAMES = 25_000;
const PAYLOAD_CASES = 25_000;
const RECEIVE_SEQUENCES = 12_000;
const MESSAGE_ROUND_TRIPS = 15_000;
const PAYLOAD_ROUND_TRIPS = 3_000; // per payload kind, five kinds

const validFrames = [
  ...vectors.messages.map((v) => v.hex),
  ...vectors.invalid_messages.map((v) => v.hex),
].map((hex) => Buffer.from(hex, 'hex'));
const validPayloads = vectors.messages.map((v) => Buffer.from(v.fields.PayloadHex, 'hex'));

/** Run `fn`; true when it returns or throws a ProtocolError with a protocol-domain code. */
function onlyProtocolErrors(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    return err instanceof ProtocolError && ERROR_CODES[err.code].domain === 'protocol';
  }
}

/** A structural mutation of a byte string: flips, overwrites, truncation, extension, splices. */
type Mutation =
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'u32'; at: number; value: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  // Field-aligned u32 overwrites hit HeaderLength, SchemaVersion, PayloadType and PayloadLength.
  fc.record({
    kind: fc.constant('u32' as const),
    at: fc.constantFrom(0, 36, 112, 116),
    value: fc.oneof(fc.constantFrom(0, 1, 115, 116, 117, 0xffffffff), fc.nat({ max: 0xffffffff })),
  }),
);

function mutate(source: Buffer, mutations: Mutation[]): Buffer {
  let buf = Buffer.from(source);
  for (const m of mutations) {
    if (buf.length === 0 && m.kind !== 'extend') continue;
    switch (m.kind) {
      case 'flip': {
        const i = m.at % buf.length;
        buf.writeUInt8((buf.readUInt8(i) ^ m.mask) & 0xff, i);
        break;
      }
      case 'set':
        buf.writeUInt8(m.value, m.at % buf.length);
        break;
      case 'truncate':
        buf = buf.subarray(0, m.at % (buf.length + 1));
        break;
      case 'extend':
        buf = Buffer.concat([buf, m.bytes]);
        break;
      case 'u32':
        if (buf.length >= m.at + 4) buf.writeUInt32BE(m.value, m.at);
        break;
    }
  }
  return buf;
}

/** Make the digest of a (possibly mutated) frame right again, so mutations reach past the digest check. */
function withDigest(frame: Buffer): Buffer {
  if (frame.length < 120) return frame;
  const start = frame.readUInt32BE(0) + 4;
  const payloadLength = frame.readUInt32BE(116);
  if (start < 120 || start + payloadLength > frame.length) return frame;
  const fixed = Buffer.from(frame);
  createHash('sha256')
    .update(fixed.subarray(start, start + payloadLength))
    .digest()
    .copy(fixed, 80);
  return fixed;
}

// ---------------------------------------------------------------------------------------------
// decodeMessage

test(`decodeMessage: ${RANDOM_FRAMES} random byte strings throw only ProtocolError`, (t) => {
  fc.assert(
    fc.property(
      fc.oneof(fc.uint8Array({ maxLength: 160 }), fc.uint8Array({ minLength: 120, maxLength: 400 })),
      fc.boolean(),
      (bytes, verifyDigest) => onlyProtocolErrors(() => decodeMessage(Buffer.from(bytes), { verifyDigest })),
    ),
    { numRuns: RANDOM_FRAMES },
  );
  t.pass();
});

test(`decodeMessage: ${MUTATED_FRAMES} mutated spec-vector frames throw only ProtocolError and stay in bounds`, (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(...validFrames),
      fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
      fc.boolean(),
      fc.boolean(),
      (frame, mutations, fix, verifyDigest) => {
        const input = fix ? withDigest(mutate(frame, mutations)) : mutate(frame, mutations);
        let decoded: ClientMessage | undefined;
        const ok = onlyProtocolErrors(() => {
          decoded = decodeMessage(input, { verifyDigest });
        });
        if (!ok) return false;
        if (decoded === undefined) return true;
        // Whatever decodes respects the header's own lengths and the sequence-number range.
        return (
          decoded.payload.length <= input.length - 120 &&
          Number.isSafeInteger(decoded.sequenceNumber) &&
          decoded.sequenceNumber >= 0
        );
      },
    ),
    { numRuns: MUTATED_FRAMES },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Payload decoders

const payloadDecoders: [string, (payload: Buffer) => unknown][] = [
  ['acknowledge', decodeAcknowledge],
  ['handshake request', (p) => decodeHandshakeRequest(p).requestedClientActions.map((a) => sessionTypeOf(a))],
  ['handshake response', decodeHandshakeResponse],
  ['handshake complete', decodeHandshakeComplete],
  ['flag', decodeFlag],
  ['channel_closed', decodeChannelClosed],
  ['OpenDataChannel', (p) => decodeOpenDataChannel(p.toString('utf8'))],
];

/** Byte inputs for payload decoders: random bytes, random JSON, JSON-ish objects with the real keys. */
const payloadArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
  fc
    .dictionary(
      fc.constantFrom(
        'AcknowledgedMessageType',
        'AcknowledgedMessageId',
        'AcknowledgedMessageSequenceNumber',
        'IsSequentialMessage',
        'AgentVersion',
        'RequestedClientActions',
        'ActionType',
        'ActionParameters',
        'SessionType',
        'Properties',
        'ClientVersion',
        'ProcessedClientActions',
        'ActionStatus',
        'Errors',
        'HandshakeTimeToComplete',
        'CustomerMessage',
        'SessionId',
        'Output',
        'TokenValue',
      ),
      fc.jsonValue({ maxDepth: 3 }),
      { maxKeys: 6 },
    )
    .map((o) => Buffer.from(JSON.stringify(o))),
  fc
    .tuple(fc.constantFrom(...validPayloads), fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
    .map(([p, m]) => mutate(p, m)),
);

test(`payload decoders: ${PAYLOAD_CASES} random/JSON/mutated payloads x 7 decoders throw only ProtocolError`, (t) => {
  fc.assert(
    fc.property(payloadArb, (payload) =>
      payloadDecoders.every(([, decode]) => onlyProtocolErrors(() => decode(payload))),
    ),
    { numRuns: PAYLOAD_CASES },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// ReliableChannel.receive

const messageTypes = [...Object.values(MessageType), 'bogus_type', 'acknowledge\u0000', ' acknowledge'];

/** Frames that decode (digest right) but carry arbitrary header values and payloads. */
const forgedFrameArb: fc.Arbitrary<Buffer> = fc
  .record({
    messageType: fc.constantFrom(...messageTypes),
    seq: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constantFrom(2 ** 53 - 1, 2 ** 40)),
    payloadType: fc.integer({ min: 0, max: 13 }),
    payload: payloadArb,
  })
  .map((f) => {
    const frame = Buffer.alloc(120 + f.payload.length);
    frame.writeUInt32BE(116, 0);
    frame.fill(0x20, 4, 36);
    frame.write(f.messageType.slice(0, 32), 4, 'latin1');
    frame.writeUInt32BE(1, 36);
    frame.writeBigUInt64BE(1_700_000_000_000n, 40);
    frame.writeBigInt64BE(BigInt(f.seq), 48);
    randomFillSync(frame, 64, 16);
    frame.writeUInt32BE(f.payloadType, 112);
    frame.writeUInt32BE(f.payload.length, 116);
    f.payload.copy(frame, 120);
    return withDigest(frame);
  });

const receiveInputArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
  fc
    .tuple(
      fc.constantFrom(...validFrames),
      fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
      fc.boolean(),
    )
    .map(([f, m, fix]) => (fix ? withDigest(mutate(f, m)) : mutate(f, m))),
  forgedFrameArb,
  fc.constantFrom(...validFrames),
);

test(`ReliableChannel.receive: ${RECEIVE_SEQUENCES} sequences of up to 8 hostile frames never throw`, (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(receiveInputArb, fc.boolean(), fc.integer({ min: 0, max: 400 })), {
        minLength: 1,
        maxLength: 8,
      }),
      fc.integer({ min: 1, max: 4 }),
      (steps, limit) => {
        let now = 0;
        let refuse = false;
        const ch = new ReliableChannel(
          { sendWindowMessages: 2, reorderLimitMessages: limit, giveUpMs: 1_000 },
          { now: () => now, deliver: () => !refuse, logger: silentLogger },
        );
        ch.on('protocolError', (e) => {
          if (!(e instanceof ProtocolError)) throw new Error('non-protocol error emitted');
        });
        ch.attach(() => undefined);
        ch.send(1, Buffer.from('x'));
        ch.send(1, Buffer.from('y'));
        ch.send(1, Buffer.from('z'));
        for (const [frame, flip, advance] of steps) {
          refuse = flip;
          ch.receive(frame);
          now += advance;
          ch.tick();
          ch.retryDelivery();
        }
        return (
          ch.reorderBuffered <= limit &&
          ch.unacked >= 0 &&
          ch.unacked <= 3 &&
          ch.expectedReceiveSequence >= 0 &&
          ch.stats.framesReceived === steps.length
        );
      },
    ),
    { numRuns: RECEIVE_SEQUENCES },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Round trips

const uuidArb = fc.uuid().map((u) => u.toLowerCase());

test(`encodeMessage → decodeMessage: ${MESSAGE_ROUND_TRIPS} round trips over arbitrary header fields`, (t) => {
  fc.assert(
    fc.property(
      fc.record({
        messageType: fc
          .stringMatching(/^[\x21-\x7e]{1,32}$/)
          .filter((s) => s !== MessageType.PausePublication && s !== MessageType.StartPublication),
        schemaVersion: fc.nat({ max: 0xffffffff }),
        createdDate: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        sequenceNumber: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        flags: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        messageId: uuidArb,
        payloadType: fc.nat({ max: 0xffffffff }),
        payload: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      }),
      (message) => {
        const frame = encodeMessage(message);
        const decoded = decodeMessage(frame);
        return (
          frame.length === 120 + message.payload.length &&
          decoded.messageType === message.messageType &&
          decoded.schemaVersion === message.schemaVersion &&
          decoded.createdDate === message.createdDate &&
          decoded.sequenceNumber === message.sequenceNumber &&
          decoded.flags === message.flags &&
          decoded.messageId === message.messageId &&
          decoded.payloadType === message.payloadType &&
          decoded.payload.equals(message.payload) &&
          encodeMessage(decoded).equals(frame)
        );
      },
    ),
    { numRuns: MESSAGE_ROUND_TRIPS },
  );
  t.pass();
});

test(`payload codecs: ${PAYLOAD_ROUND_TRIPS} round trips each for ack, flag, handshake, channel_closed, OpenDataChannel`, (t) => {
  const text = fc.string({ unit: 'binary', maxLength: 40 });
  fc.assert(
    fc.property(
      fc.record({
        acknowledgedMessageType: text,
        acknowledgedMessageId: text,
        acknowledgedMessageSequenceNumber: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        isSequentialMessage: fc.boolean(),
      }),
      (ack) => {
        const payload = encodeAcknowledge(ack);
        const back = decodeAcknowledge(payload);
        return JSON.stringify(back) === JSON.stringify(ack) && encodeAcknowledge(back).equals(payload);
      },
    ),
    { numRuns: PAYLOAD_ROUND_TRIPS },
  );
  fc.assert(
    fc.property(fc.nat({ max: 0xffffffff }), (code) => decodeFlag(encodeFlag(code as FlagCode)) === code),
    { numRuns: PAYLOAD_ROUND_TRIPS },
  );
  fc.assert(
    fc.property(
      fc.record({
        clientVersion: text,
        processedClientActions: fc.array(
          fc.record({
            actionType: text,
            actionStatus: fc.constantFrom(1 as const, 2 as const, 3 as const),
            actionResult: fc.constant(null),
            error: text,
          }),
          { maxLength: 3 },
        ),
        errors: fc.option(fc.array(text, { maxLength: 3 })),
      }),
      fc.record({
        agentVersion: text,
        // `__proto__` is excluded here: sessionTypeOf drops it (known payloads.ts bug, see payloads.test.ts).
        properties: fc.dictionary(
          fc.string({ minLength: 1, maxLength: 10 }).filter((k) => k !== '__proto__'),
          text,
          { maxKeys: 4 },
        ),
      }),
      (response, req) => {
        const payload = encodeHandshakeResponse(response);
        const back = decodeHandshakeResponse(payload);
        const request = {
          agentVersion: req.agentVersion,
          requestedClientActions: [
            {
              actionType: 'SessionType',
              actionParameters: { SessionType: 'Port', Properties: req.properties },
            },
          ],
        };
        const reqBack = decodeHandshakeRequest(encodeHandshakeRequest(request));
        const action = reqBack.requestedClientActions[0];
        return (
          JSON.stringify(back) === JSON.stringify(response) &&
          encodeHandshakeResponse(back).equals(payload) &&
          reqBack.agentVersion === req.agentVersion &&
          action !== undefined &&
          JSON.stringify(sessionTypeOf(action).properties) === JSON.stringify(req.properties) &&
          decodeHandshakeComplete(
            encodeHandshakeComplete({ handshakeTimeToComplete: 5, customerMessage: req.agentVersion }),
          ).customerMessage === req.agentVersion
        );
      },
    ),
    { numRuns: PAYLOAD_ROUND_TRIPS },
  );
  fc.assert(
    fc.property(
      text,
      text,
      uuidArb,
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      (sessionId, output, id, at) => {
        const back = decodeChannelClosed(
          encodeChannelClosed({ sessionId, output, messageId: id, destinationId: id, createdDate: at }),
        );
        return back.sessionId === sessionId && back.output === output;
      },
    ),
    { numRuns: PAYLOAD_ROUND_TRIPS },
  );
  fc.assert(
    fc.property(
      fc.record({
        messageSchemaVersion: text,
        requestId: uuidArb,
        tokenValue: text,
        clientId: uuidArb,
        clientVersion: text,
      }),
      (input) =>
        JSON.stringify(decodeOpenDataChannel(encodeOpenDataChannel(input))) === JSON.stringify(input),
    ),
    { numRuns: PAYLOAD_ROUND_TRIPS },
  );
  t.pass();
});
