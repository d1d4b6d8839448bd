import test from 'ava';
import fc from 'fast-check';
import { HEADER, HeaderFlags, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import { decodeAcknowledge, encodeAcknowledgeMessage } from '../../src/datachannel/payloads.js';
import type { Direction } from '../../src/emulator/faults.js';
import { FrameLog } from '../../src/emulator/frame-log.js';
import type { FrameRecord } from '../../src/emulator/frame-log.js';

const CASES = 20_000;

/**
 * The frame record as the session built it eagerly before the log became columns (c0c9fbe
 * `EmulatedSession.record`): the oracle every lazily built record must equal.
 */
function oracle(
  at: number,
  direction: Direction,
  source: FrameRecord['source'],
  fate: FrameRecord['fate'],
  frame: Buffer,
): FrameRecord {
  try {
    const m = decodeMessage(frame, { verifyDigest: false, copyPayload: false });
    const entry: FrameRecord = {
      at,
      direction,
      source,
      fate,
      messageType: m.messageType,
      sequenceNumber: m.sequenceNumber,
      flags: m.flags,
      messageId: m.messageId,
      payloadType: m.payloadType,
      payloadLength: m.payload.length,
    };
    if (m.messageType === MessageType.Acknowledge) {
      try {
        entry.ackedSequenceNumber = decodeAcknowledge(m.payload).acknowledgedMessageSequenceNumber;
      } catch {
        // Logged without the acked number.
      }
    }
    return entry;
  } catch {
    return {
      at,
      direction,
      source,
      fate: fate === 'relayed' ? 'invalid' : fate,
      messageType: '',
      sequenceNumber: -1,
      flags: 0,
      messageId: '',
      payloadType: 0,
      payloadLength: Math.max(0, frame.length - HEADER.TOTAL_BYTES),
    };
  }
}

function data(type: string, seq: number, payload: Buffer): Buffer {
  return encodeMessage(
    newMessage({ messageType: type, sequenceNumber: seq, flags: HeaderFlags.Data, payloadType: 1, payload }),
  );
}

function ack(type: string, seq: number): Buffer {
  return encodeAcknowledgeMessage(
    {
      acknowledgedMessageType: type,
      acknowledgedMessageId: '0b1c2d3e-4f50-4162-8374-8596a7b8c9da',
      acknowledgedMessageSequenceNumber: seq,
      isSequentialMessage: true,
    },
    Date.now(),
  );
}

/** Frames of every shape the relay sees: canonical hot types, other types, and the odd layouts. */
const seeds: Buffer[] = [
  data(MessageType.InputStreamData, 0, Buffer.alloc(1024, 7)),
  data(MessageType.OutputStreamData, 2 ** 40, Buffer.from('hello')),
  data(MessageType.OutputStreamData, 5, Buffer.alloc(0)),
  ack(MessageType.OutputStreamData, 12345),
  ack(MessageType.InputStreamData, 0),
  encodeMessage(
    newMessage({
      messageType: MessageType.Acknowledge,
      sequenceNumber: 0,
      flags: 3,
      payloadType: 0,
      payload: Buffer.from('{"AcknowledgedMessageSequenceNumber": 9, "AcknowledgedMessageType":"x"}'),
    }),
  ),
  encodeMessage(
    newMessage({
      messageType: MessageType.Acknowledge,
      sequenceNumber: 0,
      flags: 3,
      payloadType: 0,
      payload: Buffer.from('not json'),
    }),
  ),
  ...[
    MessageType.ChannelClosed,
    MessageType.PausePublication,
    MessageType.StartPublication,
    'custom_type',
  ].map((type) =>
    encodeMessage(
      newMessage({
        messageType: type,
        sequenceNumber: 0,
        flags: 0,
        payloadType: 0,
        payload: Buffer.from('{}'),
      }),
    ),
  ),
];

/** Header fields the fast path reads, overwritten with values at and around its limits. */
const headerEdit = fc.oneof(
  fc.record({ at: fc.constant(0), value: fc.constantFrom(115, 116, 117, 200, 0xffffffff) }),
  fc.record({ at: fc.constant(116), value: fc.constantFrom(0, 5, 1024, 1025, 0xffffffff) }),
  fc.record({ at: fc.constantFrom(40, 44), value: fc.constantFrom(0, 1) }),
  fc.record({ at: fc.constant(48), value: fc.constantFrom(0, 0x1fffff, 0x200000, 0xffffffff) }),
  fc.record({ at: fc.constantFrom(52, 56, 60, 112), value: fc.nat({ max: 0xffffffff }) }),
  // MessageType bytes: a NUL or a different letter inside the padded type field.
  fc.record({ at: fc.integer({ min: 4, max: 35 }), value: fc.constantFrom(0, 0x20, 0x41, 0x7f) }),
  fc.record({ truncate: fc.nat({ max: 1200 }) }),
);

function edit(
  frame: Buffer,
  edits: readonly ({ at: number; value: number } | { truncate: number })[],
): Buffer {
  let out = Buffer.from(frame);
  for (const e of edits) {
    if ('truncate' in e) out = out.subarray(0, Math.min(out.length, e.truncate));
    else if (e.at >= 4 && e.at < 36) {
      if (out.length > e.at) out[e.at] = e.value;
    } else if (out.length >= e.at + 4) out.writeUInt32BE(e.value, e.at);
  }
  return out;
}

test(`FrameLog: ${CASES} canonical, odd and broken frames are recorded exactly as an eager decode records them`, (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(...seeds),
      fc.array(headerEdit, { maxLength: 3 }),
      fc.constantFrom<Direction>('toAgent', 'toClient'),
      fc.constantFrom<FrameRecord['source']>('client', 'agent', 'service'),
      fc.constantFrom<FrameRecord['fate']>(
        'relayed',
        'discarded',
        'held',
        'dropped',
        'corrupted',
        'reordered',
      ),
      (seed, edits, direction, source, fate) => {
        const frame = edit(seed, edits);
        const log = new FrameLog(4);
        log.add(1234.5, direction, source, fate, frame);
        t.deepEqual(log.records(), [oracle(1234.5, direction, source, fate, frame)]);
      },
    ),
    { numRuns: CASES },
  );
});

test('FrameLog: a ring of the last `capacity` frames, oldest first, across chunk boundaries', (t) => {
  for (const capacity of [1, 7, 1024, 1500]) {
    const log = new FrameLog(capacity);
    const total = 3 * capacity + 5;
    for (let seq = 0; seq < total; seq++) {
      // An unusual type now and then, so a slot switches between the column forms as the ring turns.
      const frame =
        seq % 3 === 0
          ? data('custom_type', 0, Buffer.alloc(1))
          : data(MessageType.InputStreamData, seq, Buffer.alloc(seq % 50));
      log.add(seq, 'toAgent', 'client', 'relayed', frame);
    }
    t.is(log.recorded, total);
    t.is(log.size, capacity);
    const records = log.records();
    t.is(records.length, capacity);
    records.forEach((r, i) => {
      const seq = total - capacity + i;
      t.is(r.at, seq, `capacity ${capacity}: slot ${i} holds frame ${seq}`);
      t.is(r.messageType, seq % 3 === 0 ? 'custom_type' : MessageType.InputStreamData);
      t.is(r.sequenceNumber, seq % 3 === 0 ? 0 : seq);
      t.is(r.payloadLength, seq % 3 === 0 ? 1 : seq % 50);
      t.is(r.payloadType, PayloadType.Output);
    });
  }
});

test('FrameLog: capacity 0 (maxFramesLogged 0) keeps and counts nothing', (t) => {
  const log = new FrameLog(0);
  log.add(1, 'toAgent', 'client', 'relayed', data(MessageType.InputStreamData, 0, Buffer.alloc(3)));
  t.deepEqual(log.records(), []);
  t.is(log.size, 0);
  t.is(log.recorded, 0);
});

test('FrameLog: records are fresh objects; reading twice gives equal, independent arrays', (t) => {
  const log = new FrameLog(10);
  log.add(5, 'toClient', 'agent', 'relayed', ack(MessageType.InputStreamData, 41));
  const first = log.records();
  const second = log.records();
  t.deepEqual(first, second);
  t.not(first[0], second[0]);
  t.is(first[0]?.ackedSequenceNumber, 41);
});
