import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import {
  allocateFrame,
  decodeInbound,
  decodeMessage,
  encodeMessage,
  sealFrame,
  frameDigestMatches,
  readMessageId,
  writeMessageId,
} from '../../src/datachannel/message.js';
import { ProtocolError } from '../../src/errors.js';
import { SHARED_VECTORS_URL, VENDORED_VECTORS_URL, vectors } from '../helpers/vectors.js';

test('vendored vectors equal the spec copy when ../shared is present', (t) => {
  if (!existsSync(SHARED_VECTORS_URL)) {
    t.pass('shared/ not beside the checkout; vendored copy used');
    return;
  }
  t.deepEqual(
    JSON.parse(readFileSync(VENDORED_VECTORS_URL, 'utf8')),
    JSON.parse(readFileSync(SHARED_VECTORS_URL, 'utf8')),
  );
});

for (const vector of vectors.messages) {
  test(`encode matches spec vector byte for byte: ${vector.name}`, (t) => {
    const f = vector.fields;
    const frame = encodeMessage({
      messageType: f.MessageType,
      schemaVersion: f.SchemaVersion,
      createdDate: f.CreatedDate,
      sequenceNumber: f.SequenceNumber,
      flags: f.Flags,
      messageId: f.MessageId,
      payloadType: f.PayloadType,
      payload: Buffer.from(f.PayloadHex, 'hex'),
    });
    t.is(frame.length, vector.length);
    t.is(frame.toString('hex'), vector.hex);
  });

  test(`decode recovers every field of spec vector: ${vector.name}`, (t) => {
    const f = vector.fields;
    const frame = Buffer.from(vector.hex, 'hex');
    const m = decodeMessage(frame);
    t.is(m.messageType, f.MessageType);
    t.is(m.schemaVersion, f.SchemaVersion);
    t.is(m.createdDate, f.CreatedDate);
    t.is(m.sequenceNumber, f.SequenceNumber);
    t.is(m.flags, f.Flags);
    t.is(m.messageId, f.MessageId);
    t.is(m.payloadType, f.PayloadType);
    t.is(m.payload.toString('hex'), f.PayloadHex);
    t.true(frameDigestMatches(frame));
    t.is(frame.subarray(80, 112).toString('hex'), f.PayloadDigestHex);
  });
}

const expectedInvalidCodes: Record<string, string> = {
  'shorter than header': 'PF_ERR_FRAME_TOO_SHORT',
  'PayloadLength beyond frame': 'PF_ERR_FRAME_LENGTH',
  'digest mismatch': 'PF_ERR_DIGEST_MISMATCH',
};

for (const vector of vectors.invalid_messages) {
  test(`decode rejects invalid vector with a typed error: ${vector.name}`, (t) => {
    const err = t.throws(() => decodeMessage(Buffer.from(vector.hex, 'hex')), { instanceOf: ProtocolError });
    t.is(String(err?.code), String(expectedInvalidCodes[vector.name]));
  });
}

test('MessageId halves are swapped on the wire (spec 4.5)', (t) => {
  const buf = Buffer.alloc(16);
  writeMessageId(buf, 0, '0f8fad5b-d9cb-469f-a165-70867728950e');
  t.is(buf.toString('hex'), 'a16570867728950e0f8fad5bd9cb469f');
  t.is(readMessageId(buf, 0), '0f8fad5b-d9cb-469f-a165-70867728950e');
});

test('digest is not verified when verifyDigest is false, payload still returned', (t) => {
  const bad = vectors.invalid_messages.find((v) => v.name === 'digest mismatch');
  if (!bad) return t.fail('vector missing');
  const m = decodeMessage(Buffer.from(bad.hex, 'hex'), { verifyDigest: false });
  t.is(m.payload.toString(), 'abc');
  t.false(frameDigestMatches(Buffer.from(bad.hex, 'hex')));
});

test('payload is copied by default and aliases the frame when copyPayload is false', (t) => {
  const frame = Buffer.from(vectors.messages[0]!.hex, 'hex');
  const copied = decodeMessage(frame);
  const aliased = decodeMessage(frame, { copyPayload: false });
  frame[frame.length - 1] = 0x00;
  t.is(copied.payload.at(-1), 0x69);
  t.is(aliased.payload.at(-1), 0x00);
});

test('pause_publication is accepted without validation', (t) => {
  const frame = Buffer.alloc(120);
  frame.write('pause_publication', 4, 'latin1');
  const m = decodeMessage(frame);
  t.is(m.messageType, 'pause_publication');
  t.is(m.payload.length, 0);
});

test('CreatedDate 0 and HeaderLength 0 are rejected for data messages', (t) => {
  const frame = Buffer.from(vectors.messages[0]!.hex, 'hex');
  const zeroDate = Buffer.from(frame);
  zeroDate.fill(0, 40, 48);
  t.is(t.throws(() => decodeMessage(zeroDate))?.message.includes('CreatedDate'), true);
  const zeroHeader = Buffer.from(frame);
  zeroHeader.writeUInt32BE(0, 0);
  t.is((t.throws(() => decodeMessage(zeroHeader)) as ProtocolError).code, 'PF_ERR_HEADER_LENGTH');
});

test('negative sequence numbers are rejected on stream data', (t) => {
  const frame = Buffer.from(vectors.messages[0]!.hex, 'hex');
  frame.writeBigInt64BE(-1n, 48);
  t.is(
    (t.throws(() => decodeMessage(frame, { verifyDigest: false })) as ProtocolError).code,
    'PF_ERR_SEQUENCE_NUMBER',
  );
});

// ---------------------------------------------------------------------------------------------
// In-place encoding (issue 7): allocateFrame + sealFrame must equal encodeMessage byte for byte.

test('sealFrame over a payload written in place equals encodeMessage byte for byte (spec vectors)', (t) => {
  for (const v of vectors.messages) {
    const message = decodeMessage(Buffer.from(v.hex, 'hex'));
    const frame = allocateFrame(message.payload.length);
    message.payload.copy(frame, 120);
    t.true(sealFrame(frame, message).equals(Buffer.from(v.hex, 'hex')), v.name);
    t.true(encodeMessage(message).equals(frame), v.name);
  }
});

test('sealFrame on a subarray frame (payload shorter than allocated) seals only that view', (t) => {
  const pool = allocateFrame(1024).fill(0xaa);
  const frame = pool.subarray(0, 120 + 5);
  frame.write('hello', 120, 'latin1');
  const header = {
    messageType: 'input_stream_data',
    schemaVersion: 1,
    createdDate: 1_700_000_000_000,
    sequenceNumber: 7,
    flags: 0,
    messageId: '0f8fad5b-d9cb-469f-a165-70867728950e',
    payloadType: 1,
  };
  sealFrame(frame, header);
  t.true(frame.equals(encodeMessage({ ...header, payload: Buffer.from('hello') })));
  t.is(pool[125], 0xaa, 'bytes past the view untouched');
});

test('sealFrame without a MessageId writes a fresh random UUIDv4 (version and variant bits) in wire order', (t) => {
  const ids = new Set<string>();
  for (let i = 0; i < 600; i++) {
    const frame = sealFrame(allocateFrame(0), {
      messageType: 'acknowledge',
      schemaVersion: 1,
      createdDate: 1,
      sequenceNumber: 0,
      flags: 3,
      messageId: undefined,
      payloadType: 0,
    });
    const id = decodeMessage(frame).messageId;
    t.regex(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    ids.add(id);
  }
  t.is(ids.size, 600);
});

test('writeMessageId/readMessageId: upper-case input, every byte value, round trip', (t) => {
  const buf = Buffer.alloc(16);
  writeMessageId(buf, 0, '0F8FAD5B-D9CB-469F-A165-70867728950E');
  t.is(readMessageId(buf, 0), '0f8fad5b-d9cb-469f-a165-70867728950e');
  for (let b = 0; b < 256; b += 17) {
    const raw = Buffer.alloc(16, b);
    const id = readMessageId(raw, 0);
    const back = Buffer.alloc(16);
    writeMessageId(back, 0, id);
    t.true(back.equals(raw));
  }
});

test('decodeMessage and frameDigestMatches: a change to any one bit of the 32-byte PayloadDigest is caught', (t) => {
  const payload = Buffer.from(Array.from({ length: 1024 }, (_, i) => (i * 31) & 0xff));
  const frame = encodeMessage({
    messageType: 'output_stream_data',
    schemaVersion: 1,
    createdDate: 1_700_000_000_000,
    sequenceNumber: 7,
    flags: 1,
    messageId: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
    payloadType: 1,
    payload,
  });
  t.true(frameDigestMatches(frame));
  t.true(decodeMessage(frame).payload.equals(payload));
  for (let byte = 0; byte < 32; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = Buffer.from(frame);
      bad[80 + byte] = (bad[80 + byte] as number) ^ (1 << bit);
      if (frameDigestMatches(bad))
        t.fail(`frameDigestMatches missed a flip of digest byte ${byte} bit ${bit}`);
      const err = t.throws(() => decodeMessage(bad), { instanceOf: ProtocolError });
      if (err?.code !== 'PF_ERR_DIGEST_MISMATCH') t.fail(`byte ${byte} bit ${bit}: ${err?.code}`);
    }
  }
  // Digest at bytes 80..111 of the header (spec §4.1). The decoded payload is a copy: changing the frame afterwards does not change it.
  const decoded = decodeMessage(frame);
  frame[120] = (frame[120] as number) ^ 0xff;
  t.true(decoded.payload.equals(payload));
});

test('decodeInbound: the fields of decodeMessage, the MessageId rendered from its wire bytes, the same errors', (t) => {
  for (const vector of [...vectors.messages, ...vectors.invalid_messages]) {
    const frame = Buffer.from(vector.hex, 'hex');
    let plain: unknown;
    let plainError: unknown;
    try {
      plain = decodeMessage(frame);
    } catch (err) {
      plainError = (err as ProtocolError).code;
    }
    try {
      const inbound = decodeInbound(frame);
      t.deepEqual(
        {
          messageType: inbound.messageType,
          schemaVersion: inbound.schemaVersion,
          createdDate: inbound.createdDate,
          sequenceNumber: inbound.sequenceNumber,
          flags: inbound.flags,
          messageId: inbound.messageId,
          payloadType: inbound.payloadType,
          payload: inbound.payload,
        },
        plain as never,
        vector.name,
      );
      t.is(plainError, undefined, vector.name);
      t.is(inbound.messageId, readMessageId(frame, 64), vector.name);
      for (let i = 0; i < 16; i++) t.is(inbound.messageIdByte(i), frame[64 + i] as number, vector.name);
    } catch (err) {
      t.is((err as ProtocolError).code as unknown, plainError, vector.name);
    }
  }
});

test("decodeInbound with copyPayload 'stream-data': sequenced data is copied, other payloads alias the frame", (t) => {
  for (const vector of vectors.messages) {
    const frame = Buffer.from(vector.hex, 'hex');
    let inbound;
    try {
      inbound = decodeInbound(frame, { copyPayload: 'stream-data' });
    } catch {
      continue;
    }
    if (inbound.payload.length === 0) continue;
    // Flip the frame's last payload byte: an alias sees it, a copy does not.
    const before = inbound.payload[inbound.payload.length - 1];
    frame[frame.length - 1] = (frame[frame.length - 1] as number) ^ 0xff;
    const aliases = inbound.payload[inbound.payload.length - 1] !== before;
    t.is(aliases, !inbound.messageType.endsWith('_stream_data'), vector.name);
  }
});
