import test from 'ava';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import type { SmuxClientSession } from '../../src/mux/session.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import { KiB, eventually, newSession, next, turn } from './helpers.js';

/**
 * The agent's role in miniature: accepts SYN, echoes PSH on the same stream, answers FIN with FIN. Pumps in
 * 1 KiB pulls (spec §9.6 payload size) whenever the session announces 'outgoing'.
 */
function echoServer(session: SmuxClientSession): { frames: SmuxFrame[]; stop: () => void } {
  const decoder = new SmuxFrameDecoder();
  const frames: SmuxFrame[] = [];
  const open = new Set<number>();
  const pump = (): void => {
    const replies: Buffer[] = [];
    for (let b = session.pullOutgoing(1024); b; b = session.pullOutgoing(1024)) {
      for (const f of decoder.push(b)) {
        frames.push(f);
        if (f.cmd === SmuxCommand.SYN) open.add(f.sid);
        else if (f.cmd === SmuxCommand.PSH && open.has(f.sid))
          replies.push(encodeFrame(SmuxCommand.PSH, f.sid, f.data));
        else if (f.cmd === SmuxCommand.FIN && open.delete(f.sid))
          replies.push(encodeFrame(SmuxCommand.FIN, f.sid));
      }
    }
    // Feed back in odd-sized chunks: frames span receive() calls, as they span data-channel messages.
    const all = Buffer.concat(replies);
    for (let i = 0; i < all.length; i += 777) session.receive(all.subarray(i, i + 777));
  };
  session.on('outgoing', pump);
  return { frames, stop: () => session.off('outgoing', pump) };
}

test('SmuxStream is a Duplex with its id; strings and Uint8Arrays are written as bytes', async (t) => {
  const session = newSession();
  const server = echoServer(session);
  const s = session.openStream();
  t.is(s.id, 3);
  t.true(s.readable && s.writable);
  t.is(s.writableHighWaterMark, 64 * KiB);
  t.is(s.readableHighWaterMark, 64 * KiB, 'Node buffers 64 KiB; the receive queue keeps the rest');
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  const ended = next(s, 'end');
  s.write('ab');
  s.write(new Uint8Array([0x63]));
  s.end(Buffer.from('d'));
  await eventually(ended, 'end');
  t.is(Buffer.concat(chunks).toString(), 'abcd');
  server.stop();
});

test('1 MiB of random bytes echoes intact through pipeline(), frames ≤ 1016 data bytes in 1 KiB pulls', async (t) => {
  const session = newSession();
  const server = echoServer(session);
  const s = session.openStream();
  const payload = randomBytes(KiB * KiB);
  const received: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      received.push(chunk);
      cb();
    },
  });
  const closed = next(s, 'close');
  await eventually(
    Promise.all([
      pipeline(Readable.from([payload.subarray(0, 300_000), payload.subarray(300_000)]), s),
      pipeline(s, sink),
    ]),
    'echo of 1 MiB',
  );
  t.true(Buffer.concat(received).equals(payload));
  await eventually(closed, 'close');
  t.is(session.streamCount, 0);
  const psh = server.frames.filter((f) => f.cmd === SmuxCommand.PSH);
  t.true(psh.every((f) => f.data.length <= 1016));
  t.is(
    psh.reduce((n, f) => n + f.data.length, 0),
    payload.length,
  );
  server.stop();
});

test('a lone 0x0a byte is sent unaltered (spec §11 #18)', (t) => {
  const session = newSession();
  const s = session.openStream();
  s.write(Buffer.from([0x0a]));
  const frames = new SmuxFrameDecoder().push(session.pullOutgoing(1024) as Buffer);
  t.is(frames[1]?.data.toString('hex'), '0a');
});

test('after the agent FIN, writes produce no PSH and succeed; the stream closes once read out', async (t) => {
  const session = newSession();
  const s = session.openStream();
  session.pullOutgoing(1024);
  session.receive(
    Buffer.concat([
      encodeFrame(SmuxCommand.PSH, s.id, Buffer.from('bye')),
      encodeFrame(SmuxCommand.FIN, s.id),
    ]),
  );
  t.true(s.remoteEnded);
  // Reader paused: the stream stays until its data is consumed.
  t.is(session.streamCount, 1);
  const written = new Promise<unknown>((resolve) => s.write('ignored', resolve));
  t.falsy(await eventually(written, 'write callback'));
  t.false(session.hasOutgoing);
  const closed = next(s, 'close');
  t.is((s.read() as Buffer).toString(), 'bye');
  s.read(); // observe the end
  await eventually(closed, 'close');
  t.is(session.streamCount, 0);
  t.is(session.stats.receiveBufferedBytes, 0);
});

test('destroy with an error: the error reaches the stream, a FIN is sent, the session lives on', async (t) => {
  const session = newSession();
  const s = session.openStream();
  const other = session.openStream();
  session.pullOutgoing(1024);
  const boom = new Error('local socket reset');
  const errored = eventually(once(s, 'error'), 'error');
  s.destroy(boom);
  t.is((await errored)[0], boom);
  const frames = new SmuxFrameDecoder().push(session.pullOutgoing(1024) as Buffer);
  t.deepEqual(
    frames.map((f) => [f.cmd, f.sid]),
    [[SmuxCommand.FIN, 3]],
  );
  t.false(session.destroyed);
  t.is(session.streamCount, 1);
  other.destroy();
  t.is(session.streamCount, 0);
});

test('end() then destroy before FIN is pulled: exactly one FIN is sent', async (t) => {
  const session = newSession();
  const s = session.openStream();
  session.pullOutgoing(1024);
  s.end();
  await turn();
  s.destroy();
  const frames = new SmuxFrameDecoder().push(session.pullOutgoing(1024) as Buffer);
  t.deepEqual(
    frames.map((f) => [f.cmd, f.sid]),
    [[SmuxCommand.FIN, 3]],
  );
  t.is(session.pullOutgoing(1024), undefined);
});

test('no listeners leak on the stream after a full echo round trip', async (t) => {
  const session = newSession();
  const server = echoServer(session);
  const s = session.openStream();
  const closed = next(s, 'close');
  const data: Buffer[] = [];
  const onData = (d: Buffer): void => void data.push(d);
  s.on('data', onData);
  s.end('x');
  await eventually(closed, 'close');
  s.off('data', onData);
  for (const event of s.eventNames()) t.is(s.listenerCount(event), 0, String(event));
  t.is(Buffer.concat(data).toString(), 'x');
  server.stop();
});
