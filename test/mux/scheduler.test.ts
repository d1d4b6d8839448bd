import test from 'ava';
import fc from 'fast-check';
import { SMUX_HEADER_BYTES, SmuxCommand, SmuxFrameDecoder } from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import { FinState, SmuxSendScheduler } from '../../src/mux/scheduler.js';
import type { OutgoingStream } from '../../src/mux/scheduler.js';
import type { SmuxWriteCallback } from '../../src/mux/stream.js';

const KiB = 1024;

function scheduler(maxFrameDataBytes = 32 * KiB) {
  let ready = 0;
  const s = new SmuxSendScheduler({ maxFrameDataBytes, onReady: () => ready++ });
  return { s, readyCalls: () => ready };
}

/** Pull once (at most `bytes`), running the callbacks of what completed, like the session does. */
function pull(s: SmuxSendScheduler, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  const completed: SmuxWriteCallback[] = [];
  const end = s.fill(out, 0, bytes, completed);
  for (const callback of completed) callback();
  return out.subarray(0, end);
}

/** Pull everything in pulls of `bytes`; returns the pulls. */
function drainPulls(s: SmuxSendScheduler, bytes: number): Buffer[] {
  const pulls: Buffer[] = [];
  while (s.hasOutgoing) pulls.push(pull(s, bytes));
  return pulls;
}

const label = (f: SmuxFrame): string =>
  `${['SYN', 'FIN', 'PSH', 'NOP'][f.cmd]}:${f.sid}${f.cmd === SmuxCommand.PSH ? `:${f.data.length}` : ''}`;

const pattern = (sid: number, bytes: number): Buffer => Buffer.alloc(bytes, sid & 0xff);

test('fairness: busy streams alternate frame by frame, in 1 KiB pulls, whatever their batch sizes', (t) => {
  const { s } = scheduler();
  const streams = [3, 5, 7].map((id) => s.open(id));
  // One stream has 8× the data of another: it must not get more than its turn while the others have data.
  const sizes = [64 * KiB, 8 * KiB, 16 * KiB];
  streams.forEach((stream, i) => s.queueWrite(stream, [pattern(stream.id, sizes[i] ?? 0)], () => undefined));
  const decoder = new SmuxFrameDecoder();
  const frames = drainPulls(s, KiB).flatMap((b) => decoder.push(b));
  const psh = frames.filter((f) => f.cmd === SmuxCommand.PSH);
  // While all three have data, the sids cycle 3, 5, 7, 3, 5, 7, …
  const shortest = (8 * KiB) / (KiB - SMUX_HEADER_BYTES);
  for (let i = 0; i < 3 * Math.floor(shortest); i++) t.is(psh[i]?.sid, [3, 5, 7][i % 3], `frame ${i}`);
  // Bytes per stream after every frame: no stream is ever more than one frame ahead of another with data left.
  const sent = new Map<number, number>([
    [3, 0],
    [5, 0],
    [7, 0],
  ]);
  for (const frame of psh) {
    sent.set(frame.sid, (sent.get(frame.sid) ?? 0) + frame.data.length);
    const active = [...sent.entries()].filter(([sid, n]) => n < (sizes[[3, 5, 7].indexOf(sid)] ?? 0));
    if (active.length < 3) break;
    const values = active.map(([, n]) => n);
    t.true(Math.max(...values) - Math.min(...values) <= KiB, JSON.stringify([...sent]));
  }
  // Every byte arrived, in order, on its own stream.
  for (const [i, stream] of streams.entries()) {
    const data = Buffer.concat(psh.filter((f) => f.sid === stream.id).map((f) => f.data));
    t.true(data.equals(pattern(stream.id, sizes[i] ?? 0)));
  }
});

test('order: a NOP goes before every queued stream frame; per stream SYN → PSH → FIN', (t) => {
  const { s } = scheduler();
  const a = s.open(3);
  const b = s.open(5);
  s.queueWrite(a, [Buffer.alloc(3000, 1)], () => undefined);
  s.queueWrite(b, [Buffer.alloc(100, 2)], () => undefined);
  s.queueFin(b, () => undefined);
  // The first pull takes SYN:3 and SYN:5; the NOP queued now jumps every PSH and FIN still waiting.
  const decoder = new SmuxFrameDecoder();
  const first = decoder.push(pull(s, 2 * SMUX_HEADER_BYTES)).map(label);
  s.queueNop();
  const rest = drainPulls(s, 512).flatMap((buf) => decoder.push(buf).map(label));
  t.deepEqual(first, ['SYN:3', 'SYN:5']);
  t.is(rest[0], 'NOP:0');
  // 512-byte pulls: the NOP and 496 bytes of stream 3, then stream 5's 100 and 396 more of stream 3.
  t.deepEqual(rest.slice(1, 4), ['PSH:3:496', 'PSH:5:100', 'PSH:3:396']);
  t.true(rest.indexOf('FIN:5') > rest.indexOf('PSH:5:100'));
  t.is(rest.filter((l) => l === 'NOP:0').length, 1);
});

test('at most one NOP is queued, however often it is asked for', (t) => {
  const { s, readyCalls } = scheduler();
  for (let i = 0; i < 5; i++) s.queueNop();
  t.is(s.queuedBytes, SMUX_HEADER_BYTES);
  t.is(readyCalls(), 1, 'onReady only when the queue goes from empty to non-empty');
  t.deepEqual(new SmuxFrameDecoder().push(pull(s, KiB)).map(label), ['NOP:0']);
  t.false(s.hasOutgoing);
});

test('byte accounting: queuedBytes and readyStreams follow the queue exactly, for any writes and pulls', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 0, maxLength: 3 }), {
        minLength: 1,
        maxLength: 6,
      }),
      fc.array(fc.integer({ min: SMUX_HEADER_BYTES + 1, max: 3000 }), { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 1, max: 4096 }),
      (writesPerStream, pullSizes, maxFrame) => {
        const { s } = scheduler(maxFrame);
        let dataTotal = 0;
        let controlTotal = 0;
        const streams: OutgoingStream[] = [];
        writesPerStream.forEach((writes, i) => {
          const stream = s.open(3 + 2 * i);
          streams.push(stream);
          controlTotal++;
          const total = writes.reduce((a, n) => a + n, 0);
          if (total > 0) {
            s.queueWrite(
              stream,
              writes.map((n) => Buffer.alloc(n, i)),
              () => undefined,
            );
            dataTotal += total;
          }
          if (i % 2 === 0) {
            s.queueFin(stream, () => undefined);
            controlTotal++;
          }
        });
        const decoder = new SmuxFrameDecoder();
        let dataSeen = 0;
        let controlSeen = 0;
        let pulled = 0;
        const check = (): void => {
          // Pulls of more than a header never split a frame, so decoded frames are everything pulled.
          if (s.queuedBytes !== dataTotal - dataSeen + SMUX_HEADER_BYTES * (controlTotal - controlSeen)) {
            throw new Error(`queuedBytes ${s.queuedBytes} after ${pulled} bytes`);
          }
          const withFrames = streams.filter(
            (st) => st.synPending || st.batch !== undefined || st.fin === FinState.Queued,
          ).length;
          if (s.readyStreams !== withFrames)
            throw new Error(`readyStreams ${s.readyStreams} ≠ ${withFrames}`);
          if (s.bytesOut !== pulled) throw new Error(`bytesOut ${s.bytesOut} ≠ ${pulled}`);
        };
        check();
        for (let i = 0; s.hasOutgoing; i++) {
          const bound = s.pullBoundBytes;
          const chunk = pull(s, pullSizes[i % pullSizes.length] ?? KiB);
          if (chunk.length > bound) throw new Error(`pulled ${chunk.length} > bound ${bound}`);
          pulled += chunk.length;
          for (const frame of decoder.push(chunk)) {
            if (frame.cmd === SmuxCommand.PSH) dataSeen += frame.data.length;
            else controlSeen++;
          }
          check();
        }
        return s.queuedBytes === 0 && dataSeen === dataTotal && controlSeen === controlTotal;
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test('pulls smaller than a header split frames across pulls without losing or reordering a byte', (t) => {
  const { s } = scheduler(100);
  const a = s.open(3);
  const b = s.open(5);
  s.queueWrite(a, [Buffer.alloc(250, 0xaa)], () => undefined);
  s.queueWrite(b, [Buffer.alloc(30, 0xbb)], () => undefined);
  s.queueFin(a, () => undefined);
  const expected = s.queuedBytes + SMUX_HEADER_BYTES * 4; // + the headers of the PSH frames it will cut
  let previous = s.queuedBytes;
  const pulls: Buffer[] = [];
  for (let i = 0; s.hasOutgoing; i++) {
    const chunk = pull(s, 1 + (i % 7));
    pulls.push(chunk);
    t.true(chunk.length >= 1);
    // A frame cut into the split adds its header once; otherwise the queue only shrinks.
    t.true(s.queuedBytes <= previous + SMUX_HEADER_BYTES, `pull ${i}`);
    previous = s.queuedBytes;
  }
  const bytes = Buffer.concat(pulls);
  t.is(bytes.length, expected);
  t.is(s.bytesOut, expected);
  t.is(s.queuedBytes, 0);
  const frames = new SmuxFrameDecoder().push(bytes);
  t.deepEqual(frames.map(label), [
    'SYN:3',
    'SYN:5',
    'PSH:3:100',
    'PSH:5:30',
    'PSH:3:100',
    'PSH:3:50',
    'FIN:3',
  ]);
  t.is(s.framesOut, frames.length);
});

test('a write callback runs in the pull that takes the last byte of its batch, not before', (t) => {
  const { s } = scheduler(1000);
  const a = s.open(3);
  let done = 0;
  s.queueWrite(a, [Buffer.alloc(1500), Buffer.alloc(500)], () => done++);
  pull(s, SMUX_HEADER_BYTES); // SYN
  pull(s, 1008); // 1000 data bytes
  t.is(done, 0);
  pull(s, 1004); // 996 more
  t.is(done, 0);
  t.is(a.batchRemaining, 4);
  pull(s, 12);
  t.is(done, 1);
  t.false(s.hasOutgoing);
});

test('drop: a stream whose SYN never left sends nothing at all, and its callbacks come back', (t) => {
  const { s } = scheduler();
  const a = s.open(3);
  const calls: string[] = [];
  s.queueWrite(a, [Buffer.alloc(10)], () => calls.push('write'));
  s.queueFin(a, () => calls.push('fin'));
  t.is(s.readyStreams, 1);
  const callbacks = s.drop(a);
  t.is(callbacks.length, 2);
  t.is(a.fin, FinState.Sent, 'marked so that no FIN is ever queued for it');
  t.is(s.readyStreams, 0);
  t.is(s.queuedBytes, 0);
  t.false(s.hasOutgoing);
  t.deepEqual(calls, []);
});

test('drop keeps a frame already split across pulls, and finishes it first', (t) => {
  const { s } = scheduler();
  const a = s.open(3);
  const b = s.open(5);
  pull(s, 2 * SMUX_HEADER_BYTES);
  let written = 0;
  s.queueWrite(a, [Buffer.alloc(20, 1)], () => written++);
  s.queueWrite(b, [Buffer.alloc(20, 2)], () => undefined);
  const head = pull(s, 5); // the start of PSH:3's header: the frame is now split
  t.deepEqual(s.drop(a), [], 'the split frame keeps its callback');
  t.is(s.queuedBytes, 28 - 5 + 20, 'the split remainder and stream 5 data');
  const frames = new SmuxFrameDecoder().push(Buffer.concat([head, ...drainPulls(s, KiB)]));
  t.is(written, 1, 'its callback ran once the split frame was out');
  t.deepEqual(frames.map(label), ['PSH:3:20', 'PSH:5:20']);
});

test('clear() forgets everything without running a callback', (t) => {
  const { s } = scheduler();
  const a = s.open(3);
  let called = false;
  s.queueWrite(a, [Buffer.alloc(100)], () => (called = true));
  s.queueNop();
  s.clear();
  t.false(s.hasOutgoing);
  t.is(s.queuedBytes, 0);
  t.is(s.readyStreams, 0);
  t.false(called);
});
