import test from 'ava';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import {
  SMUX_HEADER_BYTES,
  SMUX_FRAME_DATA_LIMIT_BYTES,
  SmuxCommand,
  SmuxFrameDecoder,
  describeFrame,
  encodeFrame,
} from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import { vectors } from '../helpers/vectors.js';

/** Expected fields of each valid spec vector (spec §9.4 byte examples), by vector name. */
const expected: Record<string, { cmd: SmuxCommand; sid: number; data: Buffer }> = {
  'SYN sid 3': { cmd: SmuxCommand.SYN, sid: 3, data: Buffer.alloc(0) },
  "PSH sid 3 'hello'": { cmd: SmuxCommand.PSH, sid: 3, data: Buffer.from('hello') },
  'FIN sid 3': { cmd: SmuxCommand.FIN, sid: 3, data: Buffer.alloc(0) },
  NOP: { cmd: SmuxCommand.NOP, sid: 0, data: Buffer.alloc(0) },
  'PSH sid 5 1024 bytes 0x00..0xff repeated': {
    cmd: SmuxCommand.PSH,
    sid: 5,
    data: Buffer.from(Array.from({ length: 1024 }, (_, i) => i & 0xff)),
  },
};

const expectedInvalid: Record<string, string> = {
  'invalid: version 2 (UPD era) must be rejected': 'PF_ERR_SMUX_VERSION',
  'invalid: unknown cmd 9': 'PF_ERR_SMUX_COMMAND',
};

test('every smux vector has an expectation in this test', (t) => {
  t.true(vectors.smux.length >= 6);
  for (const vector of vectors.smux) {
    t.truthy(vector.invalid ? expectedInvalid[vector.name] : expected[vector.name], vector.name);
  }
});

for (const vector of vectors.smux.filter((v) => !v.invalid)) {
  test(`encode matches spec vector byte for byte: ${vector.name}`, (t) => {
    const want = expected[vector.name];
    if (!want) return t.fail('no expectation');
    t.is(encodeFrame(want.cmd, want.sid, want.data).toString('hex'), vector.hex);
  });

  test(`decode recovers spec vector: ${vector.name}`, (t) => {
    const want = expected[vector.name];
    if (!want) return t.fail('no expectation');
    const frames = new SmuxFrameDecoder().push(Buffer.from(vector.hex, 'hex'));
    t.is(frames.length, 1);
    t.is(frames[0]?.cmd, want.cmd);
    t.is(frames[0]?.sid, want.sid);
    t.is(frames[0]?.data.toString('hex'), want.data.toString('hex'));
  });
}

for (const vector of vectors.smux.filter((v) => v.invalid)) {
  test(`decode rejects spec vector with its code: ${vector.name}`, (t) => {
    const decoder = new SmuxFrameDecoder();
    const err = t.throws(() => decoder.push(Buffer.from(vector.hex, 'hex')), { instanceOf: ProtocolError });
    t.is<string | undefined, string | undefined>(err?.code, expectedInvalid[vector.name]);
    // A failed decoder stays failed: the session must be discarded.
    t.throws(() => decoder.push(encodeFrame(SmuxCommand.NOP, 0)), { instanceOf: ProtocolError });
  });
}

test('all spec vectors back to back decode in order, whole and byte by byte', (t) => {
  const valid = vectors.smux.filter((v) => !v.invalid);
  const stream = Buffer.concat(valid.map((v) => Buffer.from(v.hex, 'hex')));
  const whole = new SmuxFrameDecoder().push(stream);
  const bytewise = new SmuxFrameDecoder();
  const pieces: SmuxFrame[] = [];
  for (let i = 0; i < stream.length; i++) pieces.push(...bytewise.push(stream.subarray(i, i + 1)));
  t.deepEqual(
    whole.map((f) => describeFrame(f)),
    valid.map((v) => describeFrame(expected[v.name] as SmuxFrame)),
  );
  t.deepEqual(pieces, whole);
  t.is(bytewise.bufferedBytes, 0);
});

test('the length field of SYN, FIN and NOP is ignored, as in xtaci/smux', (t) => {
  const synWithLength = Buffer.from('0100050003000000', 'hex');
  const frames = new SmuxFrameDecoder().push(Buffer.concat([synWithLength, encodeFrame(SmuxCommand.NOP, 0)]));
  t.deepEqual(
    frames.map((f) => [f.cmd, f.sid, f.data.length]),
    [
      [SmuxCommand.SYN, 3, 0],
      [SmuxCommand.NOP, 0, 0],
    ],
  );
});

test('a 65535-byte PSH (largest the u16 allows) round-trips; 65536 is refused by the encoder', (t) => {
  const data = Buffer.alloc(SMUX_FRAME_DATA_LIMIT_BYTES, 0x5a);
  const frame = encodeFrame(SmuxCommand.PSH, 7, data);
  t.is(frame.length, SMUX_HEADER_BYTES + SMUX_FRAME_DATA_LIMIT_BYTES);
  const decoded = new SmuxFrameDecoder().push(frame);
  t.true(decoded[0]?.data.equals(data));
  const err = t.throws(() => encodeFrame(SmuxCommand.PSH, 7, Buffer.alloc(65536)), {
    instanceOf: ProtocolError,
  });
  t.is(err?.code, 'PF_ERR_SMUX_FRAME');
  t.is(
    t.throws(() => encodeFrame(SmuxCommand.FIN, 7, Buffer.from('x')), { instanceOf: ProtocolError })?.code,
    'PF_ERR_SMUX_FRAME',
  );
  t.is(
    t.throws(() => encodeFrame(SmuxCommand.SYN, 2 ** 32), { instanceOf: ProtocolError })?.code,
    'PF_ERR_SMUX_FRAME',
  );
});

test('a frame spanning chunks is returned as a copy that later input cannot change', (t) => {
  const frame = encodeFrame(SmuxCommand.PSH, 3, Buffer.from('abcdef'));
  const first = Buffer.from(frame.subarray(0, 10));
  const second = Buffer.from(frame.subarray(10));
  const decoder = new SmuxFrameDecoder();
  t.deepEqual(decoder.push(first), []);
  const [decoded] = decoder.push(second);
  first.fill(0);
  second.fill(0);
  t.is(decoded?.data.toString(), 'abcdef');
});

const arbitraryFrame = fc.oneof(
  fc.record({
    cmd: fc.constantFrom(SmuxCommand.SYN, SmuxCommand.FIN, SmuxCommand.NOP),
    sid: fc.nat({ max: 0xffffffff }),
    data: fc.constant(Buffer.alloc(0)),
  }),
  fc.record({
    cmd: fc.constant(SmuxCommand.PSH),
    sid: fc.nat({ max: 0xffffffff }),
    data: fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
  }),
);

test('property (300 runs): random chunk splits decode to the same frames as the whole stream', (t) => {
  fc.assert(
    fc.property(
      fc.array(arbitraryFrame, { maxLength: 20 }),
      fc.array(fc.nat({ max: 4000 }), { maxLength: 30 }),
      (frames, cuts) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f.cmd, f.sid, f.data)));
        const whole = new SmuxFrameDecoder().push(stream);
        const split = new SmuxFrameDecoder();
        const got: SmuxFrame[] = [];
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        let from = 0;
        for (const to of [...points, stream.length]) {
          got.push(...split.push(stream.subarray(from, to)));
          from = to;
        }
        t.is(split.bufferedBytes, 0);
        t.deepEqual(got, whole);
        // The decoder is the inverse of the encoder.
        t.deepEqual(
          whole.map((f) => [f.cmd, f.sid, f.data.toString('hex')]),
          frames.map((f) => [f.cmd, f.sid, f.data.toString('hex')]),
        );
      },
    ),
    { numRuns: 300 },
  );
});
