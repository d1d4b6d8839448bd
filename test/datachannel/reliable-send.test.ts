/**
 * Send side of the reliable channel over a transport that queues (issue 10 item 4, spec §7.3, §9.6): timers run
 * from when a copy left the transport, a queued copy is never resent, queued bytes gate new transmissions, a
 * moving queue (acks arriving) triggers no timer resends, and a message lost while later ones are acked is
 * resent at once (RACK). Fake clock, fake transport; no sockets.
 */
import test from 'ava';
import { MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { decodeMessage } from '../../src/datachannel/message.js';
import {
  RACK_REORDER_WINDOW_MS,
  ReliableChannel,
  SEND_QUEUE_LIMIT_BYTES,
} from '../../src/datachannel/reliable.js';
import { silentLogger } from '../../src/log.js';
import { agentAck } from './frames.js';

/** A transport that holds frames until `flush(n)` writes the oldest n out (like a socket behind a slow link). */
function queueingHarness(window = 64) {
  const clock = { now: 1_000 };
  const queue: { frame: Buffer; onWritten: (() => void) | undefined }[] = [];
  const sentSeqs: number[] = [];
  const ch = new ReliableChannel(
    { sendWindowMessages: window, reorderLimitMessages: 16, giveUpMs: 600_000 },
    { now: () => clock.now, deliver: () => true, logger: silentLogger },
  );
  ch.attach({
    send: (frame, onWritten) => {
      const m = decodeMessage(frame);
      if (m.messageType === MessageType.InputStreamData) sentSeqs.push(m.sequenceNumber);
      queue.push({ frame, onWritten });
    },
    queuedBytes: () => queue.reduce((sum, q) => sum + q.frame.length, 0),
  });
  return {
    ch,
    clock,
    queue,
    sentSeqs,
    flush(n: number) {
      for (const q of queue.splice(0, n)) q.onWritten?.();
    },
    advance(ms: number) {
      const end = clock.now + ms;
      while (clock.now + 50 <= end) {
        clock.now += 50;
        ch.tick();
      }
      clock.now = end;
    },
  };
}

test('a copy still queued in the transport is never timer-resent; its clock starts when it left', (t) => {
  const h = queueingHarness();
  h.ch.send(PayloadType.Output, Buffer.alloc(100));
  h.advance(5_000);
  t.deepEqual(h.sentSeqs, [0], 'nothing resent while the only copy waits in the transport');
  t.true(h.ch.stats.resendsHeldQueued > 0);
  h.flush(1);
  h.advance(200);
  t.deepEqual(h.sentSeqs, [0], 'not due until RTO after it left');
  h.advance(100);
  t.deepEqual(h.sentSeqs, [0, 0], 'resent once RTO after it left');
});

test('bytes queued in the transport stop new transmissions above SEND_QUEUE_LIMIT_BYTES', (t) => {
  const h = queueingHarness(256);
  for (let i = 0; i < 200; i++) h.ch.send(PayloadType.Output, Buffer.alloc(1024));
  const queued = h.queue.reduce((sum, q) => sum + q.frame.length, 0);
  t.true(h.sentSeqs.length < 200, 'not the whole window at once');
  t.true(queued >= SEND_QUEUE_LIMIT_BYTES && queued < SEND_QUEUE_LIMIT_BYTES + 2048, `queued ${queued}`);
  const before = h.sentSeqs.length;
  h.flush(10);
  t.true(h.sentSeqs.length > before, 'written copies make room for queued messages');
  t.true(h.ch.stats.peakQueuedBytes < SEND_QUEUE_LIMIT_BYTES + 2048);
});

test('a slow queue that keeps moving (acks in order, 40 ms apart) causes no timer resend', (t) => {
  const h = queueingHarness(32);
  for (let i = 0; i < 32; i++) h.ch.send(PayloadType.Output, Buffer.alloc(1024));
  // Everything left the socket at once (a big kernel buffer), then the acks trickle back: the last one
  // arrives 1.3 s later, far beyond the 1 s RTO ceiling.
  h.flush(h.queue.length);
  for (let seq = 0; seq < 32; seq++) {
    h.advance(40);
    h.ch.receive(agentAck(seq));
  }
  t.is(h.ch.stats.resends, 0);
  t.is(h.ch.unacked, 0);
});

test('a message lost while later ones are acked is resent after their round trip plus the reorder window', (t) => {
  const h = queueingHarness(8);
  for (let i = 0; i < 4; i++) h.ch.send(PayloadType.Output, Buffer.alloc(10));
  h.flush(4);
  h.advance(20);
  h.ch.receive(agentAck(0));
  h.ch.receive(agentAck(2));
  h.ch.receive(agentAck(3));
  h.clock.now += RACK_REORDER_WINDOW_MS + 20;
  h.ch.tick();
  t.deepEqual(h.sentSeqs, [0, 1, 2, 3, 1], 'message 1 resent well before the 200 ms RTO');
  t.is(h.ch.stats.rackResends, 1);
});

test('canSend is the window: false once un-acked + queued reach sendWindowMessages, true again after an ack', (t) => {
  const h = queueingHarness(4);
  const committed: boolean[] = [];
  while (h.ch.canSend) committed.push(h.ch.send(PayloadType.Output, Buffer.alloc(10)));
  t.deepEqual(committed, [true, true, true, false], "send() returns false on the window's last message");
  t.is(h.ch.unacked, 4);
  t.false(h.ch.canSend);
  // sendFrom() leaves the window check to the caller: canSend is that check.
  h.flush(4);
  h.ch.receive(agentAck(0));
  t.is(h.ch.unacked, 3);
  t.true(h.ch.canSend);
  t.is(
    h.ch.sendFrom(PayloadType.Output, 1024, (target, offset) => target.write('x', offset)),
    1,
  );
  t.false(h.ch.canSend);
});

// ---------------------------------------------------------------------------------------------
// Hot-path sharing (issue 16): one header record for every seal, ws's callback as the written notification.

test('frames kept for resend stay byte-identical and keep their own header while later messages are sealed', (t) => {
  const clock = { now: 1_000 };
  const ch = new ReliableChannel(
    { sendWindowMessages: 64, reorderLimitMessages: 16, giveUpMs: 600_000 },
    { now: () => clock.now, deliver: () => true, logger: silentLogger },
  );
  const first: Buffer[] = [];
  ch.attach((frame) => first.push(Buffer.from(frame)));
  const payloads: { type: number; bytes: Buffer }[] = [];
  for (let i = 0; i < 40; i++) {
    // Alternate payload types and sizes, so a header field left over from the previous seal would show.
    const type = i % 3 === 0 ? PayloadType.Flag : PayloadType.Output;
    const bytes = Buffer.alloc(1 + ((i * 37) % 1024), i);
    payloads.push({ type, bytes });
    if (i % 2 === 0) ch.send(type, bytes);
    else ch.sendFrom(type, 1024, (target, offset) => bytes.copy(target, offset));
  }
  // A new link resends every un-acked frame: the stored buffers themselves, sent again.
  const resent: Buffer[] = [];
  ch.detach();
  ch.attach((frame) => resent.push(frame));
  t.is(resent.length, 40);
  for (let i = 0; i < 40; i++) {
    t.true((resent[i] as Buffer).equals(first[i] as Buffer), `frame ${i} unchanged since its first send`);
    const m = decodeMessage(resent[i] as Buffer);
    t.is(m.sequenceNumber, i);
    t.is(m.payloadType, (payloads[i] as { type: number }).type);
    t.true(m.payload.equals((payloads[i] as { bytes: Buffer }).bytes));
  }
});

test('a written notification with an error leaves the copy waiting: no timer resend on that link, resent on the next', (t) => {
  const clock = { now: 1_000 };
  const ch = new ReliableChannel(
    { sendWindowMessages: 8, reorderLimitMessages: 16, giveUpMs: 600_000 },
    { now: () => clock.now, deliver: () => true, logger: silentLogger },
  );
  const sent: number[] = [];
  ch.attach({
    send: (frame, onWritten) => {
      sent.push(decodeMessage(frame).sequenceNumber);
      // What ws does for a frame that never reached the kernel (socket destroyed under it).
      onWritten?.(new Error('socket gone'));
    },
    queuedBytes: () => 0,
  });
  ch.send(PayloadType.Output, Buffer.from('x'));
  for (let i = 0; i < 40; i++) {
    clock.now += 50;
    ch.tick();
  }
  t.deepEqual(sent, [0], 'a copy that never left is not timed out on the same link');
  t.true(ch.stats.resendsHeldQueued > 0);
  const again: number[] = [];
  ch.attach((frame) => again.push(decodeMessage(frame).sequenceNumber));
  t.deepEqual(again, [0], 'the next link sends it again');
});

test('deps.acked sees every ack that removes a message, once, in order; the acked event only when listened to', (t) => {
  const acked: number[] = [];
  const events: number[] = [];
  const ch = new ReliableChannel(
    { sendWindowMessages: 8, reorderLimitMessages: 16, giveUpMs: 600_000 },
    { now: () => 1_000, deliver: () => true, acked: (seq) => acked.push(seq), logger: silentLogger },
  );
  ch.attach(() => undefined);
  for (let i = 0; i < 4; i++) ch.send(PayloadType.Output, Buffer.from([i]));
  ch.receive(agentAck(1));
  ch.on('acked', (seq) => events.push(seq));
  ch.receive(agentAck(1));
  ch.receive(agentAck(0));
  ch.receive(agentAck(9));
  ch.receive(agentAck(3));
  t.deepEqual(acked, [1, 0, 3]);
  t.deepEqual(events, [0, 3]);
});
