import test from 'ava';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { SmuxClientSession } from '../../src/mux/session.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';

const DECODER_RANDOM_RUNS = 20_000;
const DECODER_MUTATED_RUNS = 15_000;
const SESSION_RANDOM_RUNS = 10_000;
const SESSION_MUTATED_RUNS = 10_000;

/** Valid frames for the streams a session opens first (3, 5) and a few it does not know. */
const validFrame = fc
  .record({
    cmd: fc.constantFrom(SmuxCommand.SYN, SmuxCommand.FIN, SmuxCommand.PSH, SmuxCommand.NOP),
    sid: fc.constantFrom(0, 3, 5, 7, 2, 0xffffffff),
    data: fc.uint8Array({ maxLength: 300 }),
  })
  .map(({ cmd, sid, data }) =>
    encodeFrame(
      cmd,
      cmd === SmuxCommand.NOP ? 0 : sid,
      cmd === SmuxCommand.PSH ? Buffer.from(data) : undefined,
    ),
  );

/** A valid smux byte stream with a few bytes overwritten, cut into random chunks. */
const mutatedChunks = fc
  .tuple(
    fc.array(validFrame, { minLength: 1, maxLength: 8 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
    fc.array(fc.nat(), { maxLength: 6 }),
  )
  .map(([frames, edits, cuts]) => {
    const bytes = Buffer.concat(frames);
    for (const [at, value] of edits) bytes[at % bytes.length] = value;
    return split(bytes, cuts);
  });

/** Random bytes, cut into random chunks. */
const randomChunks = fc
  .tuple(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 6 }))
  .map(([bytes, cuts]) => split(Buffer.from(bytes), cuts));

function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const to of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, to));
    from = to;
  }
  return chunks;
}

/** Feed chunks to a fresh decoder; true when it only ever threw ProtocolError (and then stayed failed). */
function decoderOnlyThrowsProtocolErrors(chunks: Buffer[]): boolean {
  const decoder = new SmuxFrameDecoder();
  for (const chunk of chunks) {
    try {
      for (const frame of decoder.push(chunk)) {
        if (frame.cmd > SmuxCommand.NOP || (frame.cmd !== SmuxCommand.PSH && frame.data.length > 0))
          return false;
      }
    } catch (err) {
      return (
        err instanceof ProtocolError && ['PF_ERR_SMUX_VERSION', 'PF_ERR_SMUX_COMMAND'].includes(err.code)
      );
    }
  }
  return decoder.bufferedBytes >= 0;
}

/** Feed chunks to a session with two open streams; true when receive() never threw and state is coherent. */
function sessionNeverThrows(chunks: Buffer[]): boolean {
  const session = new SmuxClientSession(
    {
      streamReceiveBufferBytes: 256,
      sessionReceiveBufferBytes: 400,
      streamBacklogLimitBytes: 1024,
      streamWriteBufferBytes: 1024,
      maxFrameDataBytes: 512,
      sendBudgetBytes: 4 * 1024 * 1024,
    },
    { logger: silentLogger },
  );
  const streams = [session.openStream(), session.openStream()];
  for (const s of streams) s.on('error', () => undefined);
  streams[0]?.on('data', () => undefined);
  streams[1]?.write('x');
  session.pullOutgoing(1024);
  try {
    for (const chunk of chunks) session.receive(chunk);
  } catch {
    return false;
  }
  const stats = session.stats;
  const coherent =
    // Input after a protocol error is ignored, so only a live session has counted every byte.
    (session.destroyed || stats.bytesIn === chunks.reduce((n, c) => n + c.length, 0)) &&
    stats.receiveBufferedBytes >= 0 &&
    session.streamCount <= 2 &&
    (!session.destroyed || (session.streamCount === 0 && !session.hasOutgoing));
  session.destroy();
  return coherent && session.streamCount === 0;
}

test(`decoder fuzz (${DECODER_RANDOM_RUNS} cases): random bytes in random chunks only throw ProtocolError`, (t) => {
  fc.assert(fc.property(randomChunks, decoderOnlyThrowsProtocolErrors), { numRuns: DECODER_RANDOM_RUNS });
  t.pass();
});

test(`decoder fuzz (${DECODER_MUTATED_RUNS} cases): mutated valid streams only throw ProtocolError`, (t) => {
  fc.assert(fc.property(mutatedChunks, decoderOnlyThrowsProtocolErrors), { numRuns: DECODER_MUTATED_RUNS });
  t.pass();
});

test(`session fuzz (${SESSION_RANDOM_RUNS} cases): receive() of random bytes never throws`, (t) => {
  fc.assert(fc.property(randomChunks, sessionNeverThrows), { numRuns: SESSION_RANDOM_RUNS });
  t.pass();
});

test(`session fuzz (${SESSION_MUTATED_RUNS} cases): receive() of mutated valid streams never throws`, (t) => {
  fc.assert(fc.property(mutatedChunks, sessionNeverThrows), { numRuns: SESSION_MUTATED_RUNS });
  t.pass();
});
