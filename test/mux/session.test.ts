import test from 'ava';
import fc from 'fast-check';
import { once } from 'node:events';
import { isPfError } from '../../src/errors.js';
import type { SmuxClientSession } from '../../src/mux/session.js';
import { SMUX_HEADER_BYTES, SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import type { SmuxStream } from '../../src/mux/stream.js';
import { KiB, eventually, newSession, next, turn } from './helpers.js';

/** Pull everything pending in pulls of `pullBytes` and decode it. */
function drain(session: SmuxClientSession, pullBytes = 1024 * KiB): { bytes: Buffer; frames: SmuxFrame[] } {
  const pulls: Buffer[] = [];
  for (let b = session.pullOutgoing(pullBytes); b !== undefined; b = session.pullOutgoing(pullBytes)) {
    pulls.push(b);
  }
  const bytes = Buffer.concat(pulls);
  return {
    bytes,
    get frames() {
      return new SmuxFrameDecoder().push(bytes);
    },
  };
}

const describe = (f: SmuxFrame): string =>
  `${['SYN', 'FIN', 'PSH', 'NOP'][f.cmd]}:${f.sid}${f.cmd === SmuxCommand.PSH ? `:${f.data.length}` : ''}`;

/**
 * A tiny smux v1 server (the agent's role) written with the frame codec: accepts SYN, echoes PSH data on the
 * same stream, answers FIN with FIN and forgets the stream, as the agent does when its destination closes.
 * It pumps on the session's 'outgoing' event in pulls of `pullBytes`, like the data-channel pump.
 */
class EchoServer {
  readonly decoder = new SmuxFrameDecoder();
  readonly received: SmuxFrame[] = [];
  readonly open = new Set<number>();
  echo = true;
  private readonly onOutgoing = (): void => this.pump();

  constructor(
    readonly session: SmuxClientSession,
    readonly pullBytes = 1024,
  ) {
    session.on('outgoing', this.onOutgoing);
  }

  pump(): void {
    const replies: Buffer[] = [];
    for (
      let b = this.session.pullOutgoing(this.pullBytes);
      b;
      b = this.session.pullOutgoing(this.pullBytes)
    ) {
      for (const frame of this.decoder.push(b)) {
        this.received.push(frame);
        if (frame.cmd === SmuxCommand.SYN) this.open.add(frame.sid);
        else if (frame.cmd === SmuxCommand.PSH && this.open.has(frame.sid) && this.echo) {
          replies.push(encodeFrame(SmuxCommand.PSH, frame.sid, frame.data));
        } else if (frame.cmd === SmuxCommand.FIN && this.open.delete(frame.sid)) {
          replies.push(encodeFrame(SmuxCommand.FIN, frame.sid));
        }
      }
    }
    if (replies.length > 0) this.session.receive(Buffer.concat(replies));
  }

  /** Agent-initiated close: FIN for `sid` (the destination closed first). */
  finFromAgent(sid: number): void {
    this.open.delete(sid);
    this.session.receive(encodeFrame(SmuxCommand.FIN, sid));
  }

  detach(): void {
    this.session.off('outgoing', this.onOutgoing);
  }
}

async function readAll(stream: SmuxStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

test('stream ids are 3, 5, 7, … and the first frames are SYN then data, byte for byte', (t) => {
  const session = newSession();
  const streams = [session.openStream(), session.openStream(), session.openStream()];
  t.deepEqual(
    streams.map((s) => s.id),
    [3, 5, 7],
  );
  t.true(session.hasOutgoing);
  streams[0]?.write('hello');
  const { bytes } = drain(session);
  t.is(
    bytes.toString('hex'),
    [
      '0100000003000000', // SYN 3 (spec §9.4 byte example)
      '0100000005000000',
      '0100000007000000',
      '010205000300000068656c6c6f', // PSH 3 "hello" (spec §9.4 byte example)
    ].join(''),
  );
  t.false(session.hasOutgoing);
  t.is(session.pullOutgoing(1024), undefined);
  t.is(session.streamCount, 3);
  t.like(session.stats, { streamsOpened: 3, framesOut: 4, bytesOut: bytes.length, outgoingBufferedBytes: 0 });
});

test('per stream the order is SYN → PSH… → FIN, FIN only after all data (spec vector bytes)', async (t) => {
  const session = newSession();
  const stream = session.openStream();
  stream.write('hel');
  stream.end('lo');
  const seen: string[] = [];
  while (seen.at(-1) !== 'FIN:3') {
    if (!session.hasOutgoing) await eventually(once(session, 'outgoing'), 'outgoing');
    seen.push(...drain(session).frames.map(describe));
  }
  t.deepEqual(seen, ['SYN:3', 'PSH:3:3', 'PSH:3:2', 'FIN:3']);
  await eventually(once(stream, 'finish'), 'finish');
});

test('a NOP is queued with sid 0 and at most one is pending', (t) => {
  const session = newSession();
  session.sendNop();
  session.sendNop();
  t.is(session.stats.outgoingBufferedBytes, SMUX_HEADER_BYTES);
  t.is(drain(session).bytes.toString('hex'), '0103000000000000');
});

test("'outgoing' is coalesced: one event for many writes in one turn, again only after hasOutgoing was false", async (t) => {
  const session = newSession();
  let events = 0;
  session.on('outgoing', () => events++);
  const a = session.openStream();
  const b = session.openStream();
  a.write('x');
  b.write('y');
  session.sendNop();
  await turn();
  t.is(events, 1);
  drain(session);
  await turn();
  t.is(events, 1);
  a.write('z');
  await turn();
  t.is(events, 2);
  // Pulled synchronously before the microtask ran: nothing to announce.
  b.write('w');
  await turn();
  drain(session);
  await turn();
  t.true(events <= 3);
  t.false(session.hasOutgoing);
});

test('two busy streams are served round-robin, one frame each per turn, in 1 KiB pulls', async (t) => {
  const session = newSession();
  const a = session.openStream();
  const b = session.openStream();
  a.write(Buffer.alloc(64 * KiB, 0xaa));
  b.write(Buffer.alloc(64 * KiB, 0xbb));
  const decoder = new SmuxFrameDecoder();
  const perPull: string[] = [];
  const bytes = new Map<number, number>([
    [3, 0],
    [5, 0],
  ]);
  let pulls = 0;
  for (let p = session.pullOutgoing(1024); p !== undefined && pulls < 100; p = session.pullOutgoing(1024)) {
    t.true(p.length <= 1024);
    pulls++;
    const frames = decoder.push(p);
    // Each pull holds whole frames: no frame is split when the pull is larger than a header.
    t.is(decoder.bufferedBytes, 0);
    for (const f of frames) {
      if (f.cmd !== SmuxCommand.PSH) continue;
      perPull.push(String(f.sid));
      bytes.set(f.sid, (bytes.get(f.sid) ?? 0) + f.data.length);
    }
    const a3 = bytes.get(3) ?? 0;
    const b5 = bytes.get(5) ?? 0;
    t.true(Math.abs(a3 - b5) <= 1024, `after pull ${pulls}: ${a3} vs ${b5}`);
  }
  t.is(perPull.slice(0, 8).join(''), '35353535');
  await turn();
});

test('PSH frames never exceed maxFrameDataBytes, and pulls never exceed maxBytes', (t) => {
  const session = newSession({ maxFrameDataBytes: 1000 });
  const s = session.openStream();
  s.write(Buffer.alloc(10_000, 1));
  const { frames } = drain(session, 1 << 20);
  const lengths = frames.filter((f) => f.cmd === SmuxCommand.PSH).map((f) => f.data.length);
  t.deepEqual(
    lengths,
    Array.from({ length: 10 }, () => 1000),
  );
  s.write(Buffer.alloc(5000, 2));
  const sizes: number[] = [];
  for (let p = session.pullOutgoing(777); p; p = session.pullOutgoing(777)) sizes.push(p.length);
  t.true(sizes.every((n) => n <= 777));
  t.is(
    sizes.reduce((x, y) => x + y, 0),
    5000 + SMUX_HEADER_BYTES * sizes.length,
  );
});

test('pulls smaller than a header split frames; the byte stream stays continuous', (t) => {
  const session = newSession();
  const s = session.openStream();
  s.write('hello world');
  s.write('!');
  const pulls: Buffer[] = [];
  for (let p = session.pullOutgoing(3); p; p = session.pullOutgoing(3)) pulls.push(p);
  t.true(pulls.every((p) => p.length <= 3));
  t.deepEqual(new SmuxFrameDecoder().push(Buffer.concat(pulls)).map(describe), [
    'SYN:3',
    'PSH:3:11',
    'PSH:3:1',
  ]);
  t.is(session.pullOutgoing(0), undefined);
});

test('property (200 runs): any pull sizes and writes give each stream SYN, its bytes in order, FIN', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.uint8Array({ minLength: 0, maxLength: 3000 }), { maxLength: 5 }), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.array(fc.integer({ min: 1, max: 2500 }), { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 1, max: 4096 }),
      async (writes, pullSizes, maxFrameDataBytes) => {
        const session = newSession({ maxFrameDataBytes, streamWriteBufferBytes: 4096 });
        const streams = writes.map((chunks) => {
          const s = session.openStream();
          for (const c of chunks) s.write(c);
          s.end();
          return s;
        });
        const decoder = new SmuxFrameDecoder();
        const got = new Map<number, { events: string[]; data: Buffer[] }>();
        let i = 0;
        let fins = 0;
        for (let guard = 0; fins < streams.length && guard < 100_000; guard++) {
          if (!session.hasOutgoing) {
            await eventually(once(session, 'outgoing'), 'outgoing');
            continue;
          }
          const p = session.pullOutgoing(pullSizes[i++ % pullSizes.length] as number);
          if (!p) continue;
          for (const f of decoder.push(p)) {
            const g = got.get(f.sid) ?? { events: [], data: [] };
            got.set(f.sid, g);
            if (f.cmd === SmuxCommand.PSH) {
              if (f.data.length > maxFrameDataBytes) return false;
              g.data.push(f.data);
              if (g.events.at(-1) !== 'PSH') g.events.push('PSH');
            } else {
              g.events.push(f.cmd === SmuxCommand.SYN ? 'SYN' : 'FIN');
              if (f.cmd === SmuxCommand.FIN) fins++;
            }
          }
        }
        return streams.every((s, n) => {
          const g = got.get(s.id);
          const sent = Buffer.concat(writes[n] ?? []);
          const order = sent.length > 0 ? 'SYN PSH FIN' : 'SYN FIN';
          return g !== undefined && g.events.join(' ') === order && Buffer.concat(g.data).equals(sent);
        });
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

test('backpressure: write() returns false at the high-water mark; callbacks and drain follow pulls', async (t) => {
  const session = newSession({ streamWriteBufferBytes: 64 * KiB, maxFrameDataBytes: 65535 });
  const s = session.openStream();
  let firstDone = false;
  t.true(s.write(Buffer.alloc(48 * KiB), () => (firstDone = true)));
  t.false(s.write(Buffer.alloc(48 * KiB)));
  let drained = false;
  s.on('drain', () => (drained = true));
  await turn();
  t.false(drained, 'no drain while nothing was pulled');
  t.is(session.stats.outgoingBufferedBytes, SMUX_HEADER_BYTES + 48 * KiB);
  // SYN plus one frame with all but the last byte of the first chunk: its callback must not fire yet.
  const part = session.pullOutgoing(2 * SMUX_HEADER_BYTES + 48 * KiB - 1) as Buffer;
  t.deepEqual(new SmuxFrameDecoder().push(part).map(describe), ['SYN:3', `PSH:3:${48 * KiB - 1}`]);
  await turn();
  t.false(firstDone || drained);
  const drainEvent = next(s, 'drain');
  drain(session);
  await eventually(drainEvent, 'drain');
  t.true(firstDone);
  t.is(s.writableLength, 0);
  t.is(session.stats.outgoingBufferedBytes, 0);
});

test('receive never blocks: a paused reader past the memory cap without spill is reset alone, the other stream flows', async (t) => {
  const session = newSession({ streamReceiveBufferBytes: 16 * KiB, streamBacklogLimitBytes: 96 * KiB });
  const stalled = session.openStream();
  const flowing = session.openStream();
  drain(session);
  const got: Buffer[] = [];
  flowing.on('data', (chunk: Buffer) => got.push(chunk));
  const failed = next(stalled, 'error');
  // Memory without a spill store: the unread stream takes its Readable buffer (64 KiB) and 16 KiB, then is
  // reset; the other one keeps getting everything.
  for (let i = 0; i < 40; i++) {
    session.receive(encodeFrame(SmuxCommand.PSH, stalled.id, Buffer.alloc(4000, i)));
    session.receive(encodeFrame(SmuxCommand.PSH, flowing.id, Buffer.alloc(1000, i)));
  }
  const [error] = await eventually(failed, 'the stalled stream reset');
  t.true(isPfError(error, 'PF_ERR_STREAM_BACKLOG'));
  t.regex((error as Error).message, /spilling is off/);
  await turn();
  t.is(Buffer.concat(got).length, 40 * 1000, 'the other stream got every byte at once');
  t.is(session.stats.backlogResets, 1);
  t.false(session.destroyed);
  t.deepEqual(drain(session).frames.map(describe), [`FIN:${stalled.id}`], 'the agent is told to close it');
});

test('receive: the session-wide memory cap applies across streams', async (t) => {
  const session = newSession({
    streamReceiveBufferBytes: 64 * KiB,
    sessionReceiveBufferBytes: 64 * KiB,
    streamBacklogLimitBytes: 256 * KiB,
  });
  const a = session.openStream();
  const b = session.openStream();
  a.pause();
  b.pause();
  const failedB = next(b, 'error');
  // 64 KiB fills each Readable buffer; a then takes the whole session memory, so b has nowhere to go.
  for (let i = 0; i < 4; i++) session.receive(encodeFrame(SmuxCommand.PSH, a.id, Buffer.alloc(32 * KiB, 1)));
  for (let i = 0; i < 3; i++) session.receive(encodeFrame(SmuxCommand.PSH, b.id, Buffer.alloc(32 * KiB, 2)));
  await eventually(failedB, 'b reset');
  t.is(session.stats.receiveBufferedBytes, 128 * KiB, 'a kept its bytes: Readable buffer and queue');
  // Reading a gives the memory back.
  let read = 0;
  a.on('data', (chunk: Buffer) => (read += chunk.length));
  a.resume();
  await turn();
  t.is(read, 128 * KiB);
  t.is(session.stats.receiveBufferedBytes, 0);
});

test('receive: the agent FIN ends the reader only after every queued byte', async (t) => {
  const session = newSession({ streamReceiveBufferBytes: 256 * KiB });
  const s = session.openStream();
  s.pause();
  for (let i = 0; i < 6; i++) session.receive(encodeFrame(SmuxCommand.PSH, s.id, Buffer.alloc(32 * KiB, i)));
  session.receive(encodeFrame(SmuxCommand.FIN, s.id));
  t.false(s.remoteEnded, 'FIN waits behind the queued bytes');
  const body = readAll(s);
  s.resume();
  const bytes = await eventually(body, 'all bytes then end');
  t.is(bytes.length, 6 * 32 * KiB);
  for (let i = 0; i < 6; i++) t.is(bytes[i * 32 * KiB], i);
  t.true(s.remoteEnded);
});

test('FIN both ways, local end first: FIN sent after data, agent FIN ends the stream, no leak', async (t) => {
  const session = newSession();
  const server = new EchoServer(session);
  const s = session.openStream();
  const closed = next(s, 'close');
  const echoed = readAll(s);
  s.end('ping');
  t.is((await eventually(echoed, 'echo')).toString(), 'ping');
  await eventually(closed, 'close');
  t.deepEqual(server.received.map(describe), ['SYN:3', 'PSH:3:4', 'FIN:3']);
  t.is(session.streamCount, 0);
  t.like(session.stats, { streamsOpened: 1, streamsClosed: 1, receiveBufferedBytes: 0 });
  server.detach();
  t.is(session.listenerCount('outgoing'), 0);
});

test('FIN both ways, agent FIN first: data then end; our FIN is skipped and later writes are dropped', async (t) => {
  const session = newSession();
  const server = new EchoServer(session);
  const s = session.openStream();
  const closed = next(s, 'close');
  s.write('request');
  const received = readAll(s);
  await eventually(new Promise<void>((resolve) => s.once('data', () => resolve())), 'echo');
  server.finFromAgent(s.id);
  t.is((await eventually(received, 'end')).toString(), 'request');
  await eventually(closed, 'close');
  t.is(s.errored, null);
  t.is(session.streamCount, 0);
  t.false(session.hasOutgoing);
  t.deepEqual(server.received.map(describe), ['SYN:3', 'PSH:3:7']);
});

test('agent FIN while our data is queued: the unsent data and FIN are dropped, callbacks succeed', async (t) => {
  const session = newSession();
  const s = session.openStream();
  drain(session);
  s.on('data', () => undefined);
  const writeDone = new Promise<Error | null | undefined>((resolve) => s.write('late', resolve));
  s.end();
  session.receive(encodeFrame(SmuxCommand.FIN, s.id));
  t.falsy(await eventually(writeDone, 'write callback'));
  await eventually(once(s, 'close'), 'close');
  t.false(session.hasOutgoing);
  t.is(session.streamCount, 0);
  // Later PSH and FIN for the forgotten stream are dropped and counted.
  session.receive(
    Buffer.concat([encodeFrame(SmuxCommand.PSH, 3, Buffer.from('x')), encodeFrame(SmuxCommand.FIN, 3)]),
  );
  t.is(session.stats.unknownStreamFrames, 2);
});

test('local destroy mid-write: a FIN follows the frame in progress, the rest is dropped, callback fails', async (t) => {
  const session = newSession();
  const s = session.openStream();
  const errors: unknown[] = [];
  s.write(Buffer.alloc(100 * KiB), (err) => errors.push(err));
  const first = session.pullOutgoing(4) as Buffer; // half the SYN header
  s.destroy();
  t.is(session.streamCount, 0);
  const rest = drain(session, 1024);
  const frames = new SmuxFrameDecoder().push(Buffer.concat([first, rest.bytes]));
  t.deepEqual(frames.map(describe), ['SYN:3', 'FIN:3']);
  await eventually(once(s, 'close'), 'close');
  t.is(errors.length, 1);
  t.true(isPfError(errors[0], 'PF_ERR_STREAM_RESET'));
  t.is(session.stats.outgoingBufferedBytes, 0);
});

test('local destroy while a data frame is split across pulls: the frame is finished, then FIN', async (t) => {
  const session = newSession();
  const s = session.openStream();
  drain(session);
  s.write(Buffer.alloc(100, 7));
  const part = session.pullOutgoing(5) as Buffer;
  s.destroy();
  const rest = drain(session, 1024);
  const frames = new SmuxFrameDecoder().push(Buffer.concat([part, rest.bytes]));
  t.deepEqual(frames.map(describe), ['PSH:3:100', 'FIN:3']);
  t.true(frames[0]?.data.equals(Buffer.alloc(100, 7)));
  await eventually(once(s, 'close'), 'close');
});

test('a stream destroyed before its SYN was pulled sends nothing at all', async (t) => {
  const session = newSession();
  const s = session.openStream();
  s.write('never');
  s.destroy();
  t.false(session.hasOutgoing);
  t.is(session.pullOutgoing(1024), undefined);
  t.is(session.streamCount, 0);
  await eventually(once(s, 'close'), 'close');
  t.like(session.stats, { streamsOpened: 1, streamsClosed: 1, outgoingBufferedBytes: 0 });
});

test('destroy resets every stream with PF_ERR_STREAM_RESET, emits close once and refuses use', async (t) => {
  const session = newSession();
  const streams = [session.openStream(), session.openStream()];
  drain(session);
  streams[0]?.write('pending');
  const errors = streams.map((s) => eventually(once(s, 'error'), 'stream error'));
  let closes = 0;
  session.on('close', () => closes++);
  const closed = next(session, 'close');
  const streamClosed: number[] = [];
  session.on('streamClosed', (id) => streamClosed.push(id));
  session.destroy();
  session.destroy();
  t.true(session.destroyed);
  t.is(session.streamCount, 0);
  t.deepEqual(streamClosed, [3, 5]);
  t.false(session.hasOutgoing);
  t.is(session.pullOutgoing(1024), undefined);
  for (const [err] of await Promise.all(errors)) t.true(isPfError(err, 'PF_ERR_STREAM_RESET'));
  await eventually(closed, 'close');
  await turn();
  t.is(closes, 1);
  t.true(
    isPfError(
      t.throws(() => session.openStream()),
      'PF_ERR_STREAM_RESET',
    ),
  );
  session.receive(encodeFrame(SmuxCommand.PSH, 3, Buffer.from('ignored')));
  session.sendNop();
  t.false(session.hasOutgoing);
});

test('destroy(err) hands the given error to the streams', async (t) => {
  const session = newSession();
  const s = session.openStream();
  const boom = new Error('boom');
  const error = eventually(once(s, 'error'), 'error');
  session.destroy(boom);
  t.is((await error)[0], boom);
});

for (const [name, bytes, code] of [
  ['version 2', '0202000003000000', 'PF_ERR_SMUX_VERSION'],
  ['unknown cmd 9', '0109000003000000', 'PF_ERR_SMUX_COMMAND'],
] as const) {
  test(`a protocol error (${name}) kills the session: streams reset, 'error' then 'close'`, async (t) => {
    const session = newSession();
    const s = session.openStream();
    const streamError = eventually(once(s, 'error'), 'stream error');
    const order: string[] = [];
    session.on('error', (err) => order.push(`error:${isPfError(err) ? err.code : '?'}`));
    session.on('close', () => order.push('close'));
    const closed = next(session, 'close');
    // Valid data before the bad frame, in the same chunk.
    t.notThrows(() =>
      session.receive(Buffer.concat([encodeFrame(SmuxCommand.NOP, 0), Buffer.from(bytes, 'hex')])),
    );
    t.true(session.destroyed);
    await eventually(closed, 'close');
    t.deepEqual(order, [`error:${code}`, 'close']);
    const [err] = await streamError;
    t.true(isPfError(err, 'PF_ERR_STREAM_RESET'));
    t.true(isPfError((err as Error).cause, code));
    t.is(session.streamCount, 0);
  });
}

test('a protocol error without an error listener does not throw from receive()', async (t) => {
  const session = newSession();
  const closed = next(session, 'close');
  t.notThrows(() => session.receive(Buffer.from('0209000000000000', 'hex')));
  await eventually(closed, 'close');
});

test('unknown-sid PSH/FIN and server SYN are ignored and counted; NOP is ignored', (t) => {
  const session = newSession();
  const s = session.openStream();
  session.receive(
    Buffer.concat([
      encodeFrame(SmuxCommand.PSH, 99, Buffer.from('x')),
      encodeFrame(SmuxCommand.FIN, 101),
      encodeFrame(SmuxCommand.SYN, 2),
      encodeFrame(SmuxCommand.NOP, 0),
      encodeFrame(SmuxCommand.PSH, s.id, Buffer.from('ok')),
    ]),
  );
  t.like(session.stats, { framesIn: 5, unknownStreamFrames: 3 });
  t.is((s.read() as Buffer).toString(), 'ok');
  t.is(session.streamCount, 1);
});

test('a throwing data listener resets only its stream; receive() does not throw', async (t) => {
  const session = newSession();
  const bad = session.openStream();
  const good = session.openStream();
  bad.on('data', () => {
    throw new Error('listener bug');
  });
  const badError = eventually(once(bad, 'error'), 'error');
  await turn(); // let the stream start flowing, so push() emits 'data' synchronously
  t.notThrows(() =>
    session.receive(
      Buffer.concat([
        encodeFrame(SmuxCommand.PSH, bad.id, Buffer.from('a')),
        encodeFrame(SmuxCommand.PSH, good.id, Buffer.from('b')),
      ]),
    ),
  );
  t.is(((await badError)[0] as Error).message, 'listener bug');
  t.is((good.read() as Buffer).toString(), 'b');
  t.false(session.destroyed);
  t.is(session.streamCount, 1);
});

test('receive() re-entered from a data listener keeps byte order', async (t) => {
  const session = newSession();
  const s = session.openStream();
  const got: string[] = [];
  const second = encodeFrame(SmuxCommand.PSH, s.id, Buffer.from('2'));
  s.on('data', (d: Buffer) => {
    got.push(d.toString());
    if (d.toString() === '1') session.receive(second);
  });
  await turn(); // let the stream start flowing, so push() emits 'data' synchronously
  session.receive(
    Buffer.concat([
      encodeFrame(SmuxCommand.PSH, s.id, Buffer.from('1')),
      encodeFrame(SmuxCommand.PSH, s.id, Buffer.from('3')),
    ]),
  );
  t.deepEqual(got, ['1', '3', '2']);
});

test('1000 streams opened, echoed and closed leave streamCount 0 and no listeners behind', async (t) => {
  const session = newSession();
  const server = new EchoServer(session);
  const closedIds = new Set<number>();
  session.on('streamClosed', (id) => closedIds.add(id));
  const done: Promise<void>[] = [];
  for (let i = 0; i < 1000; i++) {
    const s = session.openStream();
    const body = `message ${i}`;
    done.push(
      readAll(s).then((echo) => {
        if (echo.toString() !== body) throw new Error(`stream ${s.id} echoed ${echo.toString()}`);
      }),
    );
    done.push(once(s, 'close').then(() => undefined));
    s.end(body);
  }
  await eventually(Promise.all(done), '1000 echoes');
  t.is(session.streamCount, 0);
  t.is(closedIds.size, 1000);
  t.like(session.stats, {
    streamsOpened: 1000,
    streamsClosed: 1000,
    receiveBufferedBytes: 0,
    outgoingBufferedBytes: 0,
  });
  t.is(server.open.size, 0);
  server.detach();
  session.removeAllListeners('streamClosed');
  for (const event of ['outgoing', 'error', 'close', 'streamClosed'] as const) {
    t.is(session.listenerCount(event), 0, event);
  }
});

test('small writes made while a batch is in flight are coalesced into full pulls', async (t) => {
  const session = newSession();
  const s = session.openStream();
  for (let i = 0; i < 100; i++) s.write(Buffer.alloc(100, i));
  t.is(session.pullOutgoing(1024)?.length, 2 * SMUX_HEADER_BYTES + 100); // SYN and the first write
  await turn();
  const p = session.pullOutgoing(1024) as Buffer;
  t.is(p.length, 1024);
  const frames = new SmuxFrameDecoder().push(p);
  t.deepEqual(frames.map(describe), ['PSH:3:1016']);
});

test('invalid options are refused with PF_ERR_CONFIG', (t) => {
  t.true(
    isPfError(
      t.throws(() => newSession({ maxFrameDataBytes: 65536 })),
      'PF_ERR_CONFIG',
    ),
  );
  t.true(
    isPfError(
      t.throws(() => newSession({ streamReceiveBufferBytes: 0 })),
      'PF_ERR_CONFIG',
    ),
  );
});

// ---------------------------------------------------------------------------------------------
// pullOutgoingInto (issue 7): the same bytes as pullOutgoing, written in place.

test('pullOutgoingInto writes exactly the bytes pullOutgoing would, at the offset, for any pull sizes', async (t) => {
  const sizes = [1, 3, 8, 9, 17, 1024, 1024, 5000, 7, 1024, 65_536];
  const script = (session: SmuxClientSession): SmuxStream[] => {
    const streams = [session.openStream(), session.openStream(), session.openStream()];
    streams[0]?.write(Buffer.alloc(40_000, 1));
    streams[1]?.write(Buffer.alloc(3_000, 2));
    streams[1]?.end();
    streams[2]?.write(Buffer.alloc(70_000, 3));
    session.sendNop();
    return streams;
  };
  const a = newSession();
  const b = newSession();
  script(a);
  script(b);
  await new Promise((resolve) => setImmediate(resolve));
  const viaPull: Buffer[] = [];
  const viaInto: Buffer[] = [];
  for (let i = 0; a.hasOutgoing || b.hasOutgoing; i++) {
    const size = sizes[i % sizes.length] as number;
    const pulled = a.pullOutgoing(size);
    const target = Buffer.alloc(120 + size + 5, 0xee);
    const n = b.pullOutgoingInto(target, 120, size);
    t.is(target[120 + n], 0xee, 'nothing written past the count');
    if (pulled !== undefined) viaPull.push(pulled);
    if (n > 0) viaInto.push(target.subarray(120, 120 + n));
    t.is(n, pulled?.length ?? 0);
    if (i > 10_000) break;
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.true(Buffer.concat(viaInto).equals(Buffer.concat(viaPull)));
  t.deepEqual(b.stats, a.stats);
  t.is(b.pullOutgoingInto(Buffer.alloc(10), 10, 5), 0, 'no room');
});
