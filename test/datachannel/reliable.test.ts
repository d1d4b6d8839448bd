import test from 'ava';
import fc from 'fast-check';
import { HeaderFlags, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import {
  decodeAcknowledge,
  encodeAcknowledge,
  encodeChannelClosed,
  encodeFlag,
} from '../../src/datachannel/payloads.js';
import type { ReliableChannelOptions } from '../../src/datachannel/reliable.js';
import {
  NOT_READY_PROBE_LIMIT,
  NOT_READY_PROBE_MAX_IN_FLIGHT,
  NOT_READY_PROBE_MS,
  NOT_READY_PROBE_WINDOW_MS,
  PAUSE_PROBE_MS,
  ReliableChannel,
} from '../../src/datachannel/reliable.js';
import { ProtocolError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { CREATED, agentAck, agentData, serviceMessage } from './frames.js';

// ---------------------------------------------------------------------------------------------
// Helpers: a fake clock and a recording transport (agent-side frames come from ./frames.ts).

interface Harness {
  ch: ReliableChannel;
  /** Frames handed to the current transport, decoded, in order. */
  sent: ClientMessage[];
  /** Raw bytes of the same frames. */
  raw: Buffer[];
  delivered: ClientMessage[];
  clock: { now: number };
  /** Return value for the next deliver() calls. */
  accept: (m: ClientMessage) => boolean;
  /** Advance the fake clock in 50 ms ticks (calling tick()) up to `ms` later. */
  run(ms: number): void;
  /** Decoded frames sent since the last take(). */
  take(): ClientMessage[];
}

function harness(options: Partial<ReliableChannelOptions> = {}, attach = true): Harness {
  const clock = { now: 10_000 };
  const sent: ClientMessage[] = [];
  const raw: Buffer[] = [];
  const delivered: ClientMessage[] = [];
  let cursor = 0;
  const h: Harness = {
    ch: undefined as unknown as ReliableChannel,
    sent,
    raw,
    delivered,
    clock,
    accept: () => true,
    run(ms: number) {
      const end = clock.now + ms;
      while (clock.now + 50 <= end) {
        clock.now += 50;
        h.ch.tick();
      }
      clock.now = end;
    },
    take() {
      const out = sent.slice(cursor);
      cursor = sent.length;
      return out;
    },
  };
  h.ch = new ReliableChannel(
    { sendWindowMessages: 4, reorderLimitMessages: 3, giveUpMs: 5_000, ...options },
    {
      now: () => clock.now,
      deliver: (m) => {
        if (!h.accept(m)) return false;
        delivered.push(m);
        return true;
      },
      logger: silentLogger,
    },
  );
  if (attach) h.ch.attach(recorder(h));
  return h;
}

function recorder(h: Harness): (frame: Buffer) => void {
  return (frame) => {
    h.raw.push(frame);
    h.sent.push(decodeMessage(frame));
  };
}

const ackedSeqs = (frames: ClientMessage[]): number[] =>
  frames
    .filter((m) => m.messageType === MessageType.Acknowledge)
    .map((m) => decodeAcknowledge(m.payload).acknowledgedMessageSequenceNumber);
const dataSeqs = (frames: ClientMessage[]): number[] =>
  frames.filter((m) => m.messageType === MessageType.InputStreamData).map((m) => m.sequenceNumber);
const texts = (messages: ClientMessage[]): string[] => messages.map((m) => m.payload.toString());

// ---------------------------------------------------------------------------------------------
// Receiving (spec 7.2)

test('in-order messages are delivered, acked and advance expected', (t) => {
  const h = harness();
  for (let i = 0; i < 3; i++) h.ch.receive(agentData(i, `m${i}`));
  t.deepEqual(texts(h.delivered), ['m0', 'm1', 'm2']);
  t.deepEqual(ackedSeqs(h.take()), [0, 1, 2]);
  t.is(h.ch.expectedReceiveSequence, 3);
  t.is(h.ch.stats.acksSent, 3);
  t.is(h.ch.stats.framesReceived, 3);
});

test('ack frame format: acknowledge, seq 0, Flags 3, PayloadType 0, ack JSON of the message (spec 5)', (t) => {
  const h = harness();
  const frame = agentData(0, 'hello');
  const original = decodeMessage(frame);
  h.ch.receive(frame);
  const [ack] = h.take();
  if (!ack) return t.fail('no ack');
  t.is(ack.messageType, 'acknowledge');
  t.is(ack.sequenceNumber, 0);
  t.is(ack.flags, 3);
  t.is(ack.payloadType, 0);
  t.is(ack.schemaVersion, 1);
  t.true(ack.createdDate > 0);
  t.not(ack.messageId, original.messageId);
  t.is(
    ack.payload.toString(),
    encodeAcknowledge({
      acknowledgedMessageType: 'output_stream_data',
      acknowledgedMessageId: original.messageId,
      acknowledgedMessageSequenceNumber: 0,
      isSequentialMessage: true,
    }).toString(),
  );
});

test('a lone 0x0a payload is delivered unaltered (weakness #18)', (t) => {
  const h = harness();
  h.ch.receive(agentData(0, Buffer.from([0x0a])));
  t.is(h.delivered[0]?.payload.toString('hex'), '0a');
  h.ch.send(PayloadType.Output, Buffer.from([0x0a]));
  t.is(
    h
      .take()
      .find((m) => m.messageType === 'input_stream_data')
      ?.payload.toString('hex'),
    '0a',
  );
});

test('duplicates are re-acked and not delivered again (weakness #1)', (t) => {
  const h = harness();
  h.ch.receive(agentData(0, 'a'));
  h.ch.receive(agentData(1, 'b'));
  h.ch.receive(agentData(0, 'a'));
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a', 'b']);
  t.deepEqual(ackedSeqs(h.take()), [0, 1, 0, 0]);
  t.is(h.ch.stats.duplicatesReceived, 2);
  t.is(h.ch.expectedReceiveSequence, 2);
});

test('out-of-order messages are acked and buffered, then drained in order', (t) => {
  const h = harness();
  h.ch.receive(agentData(2, 'c'));
  h.ch.receive(agentData(1, 'b'));
  h.ch.receive(agentData(2, 'c'));
  t.deepEqual(h.delivered, []);
  t.deepEqual(ackedSeqs(h.take()), [2, 1, 2]);
  t.is(h.ch.stats.outOfOrderReceived, 2);
  t.is(h.ch.stats.duplicatesReceived, 1);
  t.is(h.ch.reorderBuffered, 2);
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a', 'b', 'c']);
  // Only the head needed a new ack: the buffered ones were acked on arrival.
  t.deepEqual(ackedSeqs(h.take()), [0]);
  t.is(h.ch.expectedReceiveSequence, 3);
  t.is(h.ch.reorderBuffered, 0);
});

test('beyond the reorder limit messages are dropped without ack, then accepted on resend', (t) => {
  const h = harness({ reorderLimitMessages: 3 });
  for (const seq of [1, 2, 3, 4]) h.ch.receive(agentData(seq, `m${seq}`));
  t.deepEqual(ackedSeqs(h.take()), [1, 2, 3]);
  t.is(h.ch.stats.reorderDropped, 1);
  t.is(h.ch.reorderBuffered, 3);
  h.ch.receive(agentData(0, 'm0'));
  t.deepEqual(texts(h.delivered), ['m0', 'm1', 'm2', 'm3']);
  h.ch.receive(agentData(4, 'm4'));
  t.deepEqual(texts(h.delivered), ['m0', 'm1', 'm2', 'm3', 'm4']);
  t.deepEqual(ackedSeqs(h.take()), [0, 4]);
});

test('a refused in-order message is neither acked nor consumed; retryDelivery delivers and acks it', (t) => {
  const h = harness();
  h.accept = () => false;
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(h.delivered, []);
  t.deepEqual(h.take(), []);
  t.is(h.ch.expectedReceiveSequence, 0);
  t.is(h.ch.stats.refusedDeliveries, 1);
  // Still refused on retry: nothing changes.
  h.ch.retryDelivery();
  t.is(h.ch.stats.refusedDeliveries, 2);
  t.deepEqual(h.take(), []);
  h.accept = () => true;
  h.ch.retryDelivery();
  t.deepEqual(texts(h.delivered), ['a']);
  t.deepEqual(ackedSeqs(h.take()), [0]);
  t.is(h.ch.expectedReceiveSequence, 1);
  // The agent's own resend of it is now a duplicate.
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a']);
  t.deepEqual(ackedSeqs(h.take()), [0]);
});

test('a refused head is delivered once when the agent resends it', (t) => {
  const h = harness();
  h.accept = () => false;
  h.ch.receive(agentData(0, 'a'));
  h.accept = () => true;
  h.ch.receive(agentData(0, 'a'));
  h.ch.retryDelivery();
  t.deepEqual(texts(h.delivered), ['a']);
  t.deepEqual(ackedSeqs(h.take()), [0]);
  t.is(h.ch.reorderBuffered, 0);
});

test('refusal while draining the reorder buffer stops at the head; retry resumes without re-acking', (t) => {
  const h = harness();
  h.ch.receive(agentData(2, 'c'));
  h.ch.receive(agentData(1, 'b'));
  h.accept = (m) => m.sequenceNumber === 0;
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a']);
  t.is(h.ch.expectedReceiveSequence, 1);
  t.deepEqual(ackedSeqs(h.take()), [2, 1, 0]);
  h.accept = () => true;
  h.ch.retryDelivery();
  t.deepEqual(texts(h.delivered), ['a', 'b', 'c']);
  t.deepEqual(h.take(), [], 'b and c were acked when buffered');
  t.is(h.ch.expectedReceiveSequence, 3);
});

test('while detached, data is delivered and state advances but no ack is sent (weakness #19)', (t) => {
  const h = harness();
  h.ch.detach();
  t.false(h.ch.attached);
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a']);
  t.deepEqual(h.take(), []);
  t.is(h.ch.expectedReceiveSequence, 1);
  h.ch.attach(recorder(h));
  h.ch.receive(agentData(0, 'a'));
  t.deepEqual(texts(h.delivered), ['a'], 'the resend is a duplicate, not a second delivery');
  t.deepEqual(ackedSeqs(h.take()), [0]);
});

test('data sent from inside deliver() goes out after the ack (acks first, spec 7.4)', (t) => {
  const h = harness();
  h.accept = () => {
    h.ch.send(PayloadType.Output, Buffer.from('reply'));
    return true;
  };
  h.ch.receive(agentData(0, 'ping'));
  const frames = h.take();
  t.deepEqual(
    frames.map((m) => m.messageType),
    ['acknowledge', 'input_stream_data'],
  );
});

// ---------------------------------------------------------------------------------------------
// Sending, acks, resends (spec 7.1, 7.3)

test('send assigns consecutive sequence numbers and transmits input_stream_data, Flags 0', (t) => {
  const h = harness();
  t.is(h.ch.nextSendSequence, 0);
  h.ch.send(PayloadType.HandshakeResponse, Buffer.from('{}'));
  h.ch.send(PayloadType.Flag, encodeFlag(2));
  const frames = h.take();
  t.deepEqual(dataSeqs(frames), [0, 1]);
  t.deepEqual(
    frames.map((m) => [m.messageType, m.flags, m.payloadType]),
    [
      ['input_stream_data', 0, 6],
      ['input_stream_data', 0, 10],
    ],
  );
  t.is(h.ch.nextSendSequence, 2);
  t.is(h.ch.unacked, 2);
  t.is(h.ch.stats.dataMessagesSent, 2);
});

test('acks match by sequence number only; unknown and repeated acks are ignored', (t) => {
  const h = harness();
  const acked: number[] = [];
  h.ch.on('acked', (seq) => acked.push(seq));
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.ch.receive(agentAck(1));
  h.ch.receive(agentAck(1));
  h.ch.receive(agentAck(77));
  t.deepEqual(acked, [1]);
  t.is(h.ch.unacked, 1);
  t.is(h.ch.stats.acksReceived, 3);
  t.is(h.ch.stats.protocolErrors, 0);
});

test('an ack for a queued, never transmitted message does not remove it', (t) => {
  const h = harness({ sendWindowMessages: 1 });
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.ch.receive(agentAck(1));
  t.is(h.ch.unacked, 2);
  h.ch.receive(agentAck(0));
  t.deepEqual(dataSeqs(h.take()), [0, 1]);
});

test('resend timing: strictly after the RTO, identical bytes, x2 backoff capped at 1 s', (t) => {
  const h = harness();
  h.ch.send(PayloadType.Output, Buffer.from('x'));
  const original = h.raw[0];
  const sendTimes: number[] = [];
  const start = h.clock.now;
  h.take();
  for (let i = 0; i < 80; i++) {
    h.run(50);
    for (const m of h.take()) if (m.messageType === 'input_stream_data') sendTimes.push(h.clock.now - start);
  }
  // Initial RTO 200 ms: due once now − lastSentAt > 200, i.e. at the 250 ms tick; then 400, 800, 1000, 1000…
  t.deepEqual(sendTimes, [250, 700, 1550, 2600, 3650]);
  for (const frame of h.raw.slice(1)) t.true(frame.equals(original as Buffer));
  t.is(h.ch.stats.resends, 5);
  t.is(h.ch.stats.dataMessagesSent, 1);
});

test('Karn: only first-attempt acks give RTT samples, and a sample moves the RTO', (t) => {
  const h = harness();
  // Message 0: first-attempt ack after 150 ms → sample.
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.run(150);
  h.ch.receive(agentAck(0));
  t.is(h.ch.stats.rttSamples, 1);
  // Message 1: resent at 250 ms, acked at 300 ms: ambiguous, no sample.
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.run(300);
  t.is(h.ch.stats.resends, 1);
  h.ch.receive(agentAck(1));
  t.is(h.ch.stats.rttSamples, 1);
  // Message 2: a 190 ms sample. After the 150 ms sample rtt = 106.25, var = 12.5; now
  // var = 9.375 + 20.9375 = 30.3125, rtt = 92.96875 + 23.75 = 116.71875, RTO = 116.71875 + 121.25 = 237.96875.
  // Had the resent message 1 been sampled (50 ms after its resend) the RTO would be different.
  h.ch.send(PayloadType.Output, Buffer.from('c'));
  h.run(190);
  t.is(h.ch.stats.resends, 1);
  h.ch.receive(agentAck(2));
  t.is(h.ch.stats.rttSamples, 2);
  // Message 3 uses RTO 237.97 ms: not due 237 ms after sending, due at 238 ms.
  h.ch.send(PayloadType.Output, Buffer.from('d'));
  h.take();
  h.clock.now += 237;
  h.ch.tick();
  t.deepEqual(dataSeqs(h.take()), []);
  h.clock.now += 1;
  h.ch.tick();
  t.deepEqual(dataSeqs(h.take()), [3]);
});

test('window: send() returns false at the window, queues without dropping, drain once below it', (t) => {
  const h = harness({ sendWindowMessages: 4 });
  let drains = 0;
  h.ch.on('drain', () => drains++);
  const results = [0, 1, 2, 3, 4, 5].map((i) => h.ch.send(PayloadType.Output, Buffer.from(`m${i}`)));
  t.deepEqual(results, [true, true, true, false, false, false]);
  t.deepEqual(dataSeqs(h.take()), [0, 1, 2, 3], 'only a window in flight');
  t.is(h.ch.unacked, 6);
  h.ch.receive(agentAck(0));
  t.deepEqual(dataSeqs(h.take()), [4]);
  t.is(drains, 0);
  h.ch.receive(agentAck(2));
  t.deepEqual(dataSeqs(h.take()), [5]);
  t.is(drains, 0);
  h.ch.receive(agentAck(1));
  t.is(h.ch.unacked, 3);
  t.is(drains, 1);
  h.ch.receive(agentAck(3));
  t.is(drains, 1, 'drain is owed only after send() returned false');
  // Resends never exceed what is in flight.
  h.run(300);
  t.deepEqual(dataSeqs(h.take()), [4, 5]);
});

test('a throwing transport loses only that write; the resend recovers it', (t) => {
  const h = harness();
  let fail = true;
  h.ch.detach();
  h.ch.attach((frame) => {
    if (fail) throw new Error('socket gone');
    h.sent.push(decodeMessage(frame));
  });
  t.notThrows(() => h.ch.send(PayloadType.Output, Buffer.from('x')));
  fail = false;
  h.run(250);
  t.deepEqual(dataSeqs(h.take()), [0]);
});

// ---------------------------------------------------------------------------------------------
// pause_publication / start_publication (spec 8)

test('pause holds new data and resends but keeps acking; start resends all un-acked then queued', (t) => {
  const h = harness({ sendWindowMessages: 8 });
  const events: string[] = [];
  h.ch.on('pause', () => events.push('pause'));
  h.ch.on('resume', () => events.push('resume'));
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.ch.send(PayloadType.Output, Buffer.from('c'));
  h.ch.receive(agentAck(1));
  h.take();
  h.ch.receive(serviceMessage('pause_publication'));
  h.ch.receive(serviceMessage('pause_publication'));
  t.true(h.ch.paused);
  t.deepEqual(events, ['pause']);
  h.ch.send(PayloadType.Output, Buffer.from('d'));
  h.run(5_000);
  t.deepEqual(h.take(), [], 'no new data, no resends while paused');
  t.is(h.ch.stats.resends, 0);
  h.ch.receive(serviceMessage('start_publication'));
  t.false(h.ch.paused);
  t.deepEqual(events, ['pause', 'resume']);
  t.deepEqual(dataSeqs(h.take()), [0, 2, 3], 'all un-acked at once, oldest first, then the queued one');
  t.is(h.ch.stats.resends, 2);
});

test("data sent from a 'resume' listener goes out after the resends, once", (t) => {
  const h = harness();
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.take();
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(1_000);
  h.ch.on('resume', () => h.ch.send(PayloadType.Output, Buffer.from('b')));
  h.ch.receive(serviceMessage('start_publication'));
  t.deepEqual(dataSeqs(h.take()), [0, 1]);
  t.is(h.ch.stats.resends, 1);
  t.is(h.ch.stats.dataMessagesSent, 2);
});

test('pause is cleared by incoming output_stream_data, after its ack', (t) => {
  const h = harness();
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.take();
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(1_000);
  h.ch.receive(agentData(0, 'z'));
  t.false(h.ch.paused);
  t.deepEqual(
    h.take().map((m) => [m.messageType, m.messageType === 'acknowledge' ? 0 : m.sequenceNumber]),
    [
      ['acknowledge', 0],
      ['input_stream_data', 0],
    ],
  );
});

test('pause is cleared by an incoming acknowledge', (t) => {
  const h = harness();
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.take();
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(1_000);
  h.ch.send(PayloadType.Output, Buffer.from('c'));
  h.ch.receive(agentAck(0));
  t.false(h.ch.paused);
  t.deepEqual(dataSeqs(h.take()), [1, 2]);
});

test('a long pause probes with the head once per 60 s', (t) => {
  const h = harness({ giveUpMs: 1_000_000 });
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.take();
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(PAUSE_PROBE_MS - 50);
  t.deepEqual(dataSeqs(h.take()), []);
  h.run(50);
  t.deepEqual(dataSeqs(h.take()), [0]);
  h.run(PAUSE_PROBE_MS);
  t.deepEqual(dataSeqs(h.take()), [0]);
  t.true(h.ch.paused);
});

// ---------------------------------------------------------------------------------------------
// Link loss and resume (spec 10.3)

test('detach/attach: queued while down, resend un-acked oldest first then queued; counters kept', (t) => {
  const h = harness({ sendWindowMessages: 4 });
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.ch.send(PayloadType.Output, Buffer.from('c'));
  h.ch.receive(agentData(0, 'x'));
  h.ch.receive(agentAck(1));
  const firstRaw = h.raw.slice();
  h.take();
  h.ch.detach();
  h.ch.send(PayloadType.Output, Buffer.from('d'));
  h.ch.send(PayloadType.Output, Buffer.from('e'));
  h.ch.send(PayloadType.Output, Buffer.from('f'));
  h.run(10_000);
  t.deepEqual(h.take(), []);
  t.is(h.ch.nextSendSequence, 6);
  const sentBefore = h.ch.stats.framesSent;
  const second: Buffer[] = [];
  h.ch.attach((frame) => second.push(frame));
  t.true(h.ch.attached);
  const seqs = second.map((f) => decodeMessage(f).sequenceNumber);
  // 0 and 2 in flight before (resends), then queued 3 and 4 fill the window of 4; 5 waits.
  t.deepEqual(seqs, [0, 2, 3, 4]);
  t.true(second[0]?.equals(firstRaw[0] as Buffer));
  t.true(second[1]?.equals(firstRaw[2] as Buffer), 'same bytes as the first transmission of seq 2');
  t.is(h.ch.stats.framesSent, sentBefore + 4);
  t.is(h.ch.expectedReceiveSequence, 1);
  t.is(h.ch.unacked, 5);
  h.ch.receive(agentAck(0));
  t.is(decodeMessage(second.at(-1) as Buffer).sequenceNumber, 5);
});

test('attach clears a pause left over from the previous link', (t) => {
  const h = harness();
  h.ch.receive(serviceMessage('pause_publication'));
  h.ch.detach();
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.attach(recorder(h));
  t.false(h.ch.paused);
  t.deepEqual(dataSeqs(h.take()), [0]);
});

// ---------------------------------------------------------------------------------------------
// Give-up (spec 7.3)

test("'stalled' after giveUpMs without ack progress, once; paused time counts, detached time does not", (t) => {
  const h = harness({ giveUpMs: 2_000 });
  let stalls = 0;
  h.ch.on('stalled', () => stalls++);
  h.run(10_000);
  t.is(stalls, 0, 'nothing un-acked: no stall');
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.run(1_000);
  h.ch.detach();
  h.run(10_000);
  t.is(stalls, 0, 'detached time does not count');
  h.ch.attach(recorder(h));
  h.run(1_000);
  // Spec §8: a pause counts toward the give-up (c359da3 stopped the clock while paused).
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(950);
  t.is(stalls, 0);
  // A start_publication is not progress: it neither restarts nor re-arms the clock.
  h.ch.receive(serviceMessage('start_publication'));
  h.run(50);
  t.is(stalls, 1, 'paused time counted');
  h.run(10_000);
  t.is(stalls, 1, 'emitted once');
  // Progress re-arms it.
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  h.ch.receive(agentAck(0));
  h.run(2_000);
  t.is(stalls, 2);
});

test("a pause that is never lifted ends in 'stalled' after giveUpMs, even with nothing un-acked", (t) => {
  const h = harness({ giveUpMs: 3_000 });
  let stalls = 0;
  h.ch.on('stalled', () => stalls++);
  h.ch.receive(serviceMessage('pause_publication'));
  h.run(2_950);
  t.is(stalls, 0);
  t.true(h.ch.paused);
  h.run(50);
  t.is(stalls, 1, 'the pause alone gives up');
  h.run(10_000);
  t.is(stalls, 1);
});

test('a flapping pause resends only what expired, never the whole window per transition', (t) => {
  const h = harness({ sendWindowMessages: 64, giveUpMs: 1_000_000 });
  for (let i = 0; i < 64; i++) h.ch.send(PayloadType.Output, Buffer.from(`m${i}`));
  t.is(dataSeqs(h.take()).length, 64);
  // 200 pause/start transitions 10 ms apart (2 s): the agent side flaps, nothing is acked.
  let starts = 0;
  for (let i = 0; i < 100; i++) {
    h.ch.receive(serviceMessage('pause_publication'));
    h.clock.now += 10;
    h.ch.receive(serviceMessage('start_publication'));
    starts++;
    h.clock.now += 10;
    if (i % 5 === 4) h.ch.tick();
  }
  const resends = h.ch.stats.resends;
  // Base RTO 200 ms doubling to 1 s: each message expires at 0.2, 0.6, 1.4 s within the 2 s, so ≤ 3 resends
  // each; c359da3 resent all 64 on each of the 100 starts (6400).
  t.true(resends <= 3 * 64, `${resends} resends over ${starts} starts`);
  t.true(resends >= 64, 'expired messages are resent');
  const seqs = dataSeqs(h.take());
  for (let seq = 0; seq < 64; seq++) {
    const copies = seqs.filter((s) => s === seq).length;
    t.true(copies >= 1 && copies <= 3, `seq ${seq} sent ${copies} times`);
  }
});

test("'wedged' when the next expected message stays missing for giveUpMs while later ones wait, once per gap", (t) => {
  const h = harness({ giveUpMs: 2_000, reorderLimitMessages: 100 });
  const wedges: number[][] = [];
  h.ch.on('wedged', (expected, buffered, sinceMs) => wedges.push([expected, buffered, sinceMs]));
  h.ch.receive(agentData(0, 'a'));
  // Message 1 never comes; 2… keep arriving and wait in the reorder buffer.
  for (let seq = 2; seq < 6; seq++) h.ch.receive(agentData(seq, `x${seq}`));
  h.run(1_900);
  for (let seq = 6; seq < 10; seq++) h.ch.receive(agentData(seq, `x${seq}`));
  t.deepEqual(wedges, [], 'later arrivals are not progress');
  h.run(200);
  t.is(wedges.length, 1);
  t.like(wedges[0], [1, 8]);
  t.true((wedges[0]?.[2] as number) >= 2_000);
  h.run(10_000);
  t.is(wedges.length, 1, 'once per gap');
  // The gap filled: delivered in order, no new report.
  h.ch.receive(agentData(1, 'b'));
  t.is(h.ch.expectedReceiveSequence, 10);
  h.run(10_000);
  t.is(wedges.length, 1);
});

test("no 'wedged' for a gap that fills within giveUpMs, nor for a refused head held in the buffer", (t) => {
  const h = harness({ giveUpMs: 2_000, reorderLimitMessages: 100 });
  let wedges = 0;
  h.ch.on('wedged', () => wedges++);
  for (let round = 0; round < 5; round++) {
    const base = round * 2;
    h.ch.receive(agentData(base + 1, 'later'));
    h.run(1_500);
    h.ch.receive(agentData(base, 'head'));
  }
  t.is(h.ch.expectedReceiveSequence, 10);
  h.accept = () => false;
  h.ch.receive(agentData(10, 'refused'));
  h.ch.receive(agentData(11, 'behind'));
  h.run(10_000);
  t.is(wedges, 0, 'each gap lasted 1.5 s; a refused head is not missing');
});

// ---------------------------------------------------------------------------------------------
// Service messages and malformed input

test('channel_closed emits its payload; unknown message types are reported and never acked', (t) => {
  const h = harness();
  const closed: unknown[] = [];
  const unknown: string[] = [];
  h.ch.on('channelClosed', (c) => closed.push(c));
  h.ch.on('unknownMessage', (type) => unknown.push(type));
  h.ch.receive(
    serviceMessage(
      'channel_closed',
      encodeChannelClosed({
        sessionId: 's-1',
        output: 'idle timeout',
        messageId: '11111111-2222-3333-4444-555555555555',
        destinationId: 'd',
        createdDate: CREATED,
      }),
    ),
  );
  h.ch.receive(serviceMessage('channel_closed', Buffer.from('not json')));
  h.ch.receive(serviceMessage('agent_session_state', Buffer.from('{}')));
  h.ch.receive(serviceMessage('future_type'));
  t.deepEqual(closed, [
    { sessionId: 's-1', output: 'idle timeout' },
    { sessionId: '', output: '' },
  ]);
  t.deepEqual(unknown, ['agent_session_state', 'future_type']);
  t.is(h.ch.stats.unknownMessages, 2);
  t.deepEqual(h.take(), []);
});

test('malformed frames never throw: counted, emitted as ProtocolError, dropped without ack', (t) => {
  const h = harness();
  const errors: ProtocolError[] = [];
  h.ch.on('protocolError', (e) => errors.push(e));
  const good = agentData(0, 'payload');
  const badDigest = Buffer.from(good);
  badDigest.writeUInt8(badDigest.readUInt8(badDigest.length - 1) ^ 0xff, badDigest.length - 1);
  const badAck = serviceMessage('acknowledge', Buffer.from('{"oops":1}'));
  const truncated = good.subarray(0, 100);
  const zeroDate = Buffer.from(good);
  zeroDate.fill(0, 40, 48);
  for (const frame of [badDigest, badAck, truncated, zeroDate, Buffer.alloc(0)]) {
    t.notThrows(() => h.ch.receive(frame));
  }
  t.deepEqual(
    errors.map((e) => e.code),
    [
      'PF_ERR_DIGEST_MISMATCH',
      'PF_ERR_PAYLOAD',
      'PF_ERR_FRAME_TOO_SHORT',
      'PF_ERR_CREATED_DATE',
      'PF_ERR_FRAME_TOO_SHORT',
    ],
  );
  t.true(errors.every((e) => e instanceof ProtocolError));
  t.is(h.ch.stats.protocolErrors, 5);
  t.deepEqual(h.take(), []);
  t.deepEqual(h.delivered, []);
  t.is(h.ch.expectedReceiveSequence, 0);
  h.ch.receive(good);
  t.deepEqual(texts(h.delivered), ['payload']);
});

// ---------------------------------------------------------------------------------------------
// Property: two ends over a lossy, duplicating, reordering link deliver everything exactly once in order.

/** Minimal agent peer: agent algorithm of spec 7 (ack/buffer/re-ack, resend every expired entry). */
class SimAgent {
  expected = 0;
  readonly reorder = new Map<number, Buffer>();
  readonly delivered: Buffer[] = [];
  private nextSeq = 0;
  readonly outgoing = new Map<number, { frame: Buffer; lastSentAt: number }>();
  constructor(
    private readonly send: (frame: Buffer) => void,
    private readonly now: () => number,
  ) {}

  sendData(payload: Buffer): void {
    const seq = this.nextSeq++;
    const frame = agentData(seq, payload);
    this.outgoing.set(seq, { frame, lastSentAt: this.now() });
    this.send(frame);
  }

  tick(): void {
    for (const entry of this.outgoing.values()) {
      if (this.now() - entry.lastSentAt > 200) {
        entry.lastSentAt = this.now();
        this.send(entry.frame);
      }
    }
  }

  receive(frame: Buffer): void {
    const m = decodeMessage(frame);
    if (m.messageType === MessageType.Acknowledge) {
      this.outgoing.delete(decodeAcknowledge(m.payload).acknowledgedMessageSequenceNumber);
      return;
    }
    if (m.messageType !== MessageType.InputStreamData) throw new Error(`agent got ${m.messageType}`);
    const ack = (): void =>
      this.send(
        encodeMessage(
          newMessage({
            messageType: MessageType.Acknowledge,
            sequenceNumber: 0,
            flags: HeaderFlags.Ack,
            payloadType: 0,
            payload: encodeAcknowledge({
              acknowledgedMessageType: MessageType.InputStreamData,
              acknowledgedMessageId: m.messageId,
              acknowledgedMessageSequenceNumber: m.sequenceNumber,
              isSequentialMessage: true,
            }),
          }),
        ),
      );
    if (m.sequenceNumber < this.expected) return ack();
    if (m.sequenceNumber > this.expected) {
      this.reorder.set(m.sequenceNumber, m.payload);
      return ack();
    }
    this.delivered.push(m.payload);
    this.expected++;
    ack();
    for (let next = this.reorder.get(this.expected); next; next = this.reorder.get(this.expected)) {
      this.reorder.delete(this.expected);
      this.delivered.push(next);
      this.expected++;
    }
  }
}

interface Fate {
  drop: boolean;
  dup: boolean;
  delayMs: number;
}

const fateArb: fc.Arbitrary<Fate> = fc.record({
  drop: fc.boolean(),
  dup: fc.boolean(),
  delayMs: fc.integer({ min: 0, max: 400 }),
});

const SIM_RUNS = 300;

test(`simulation (${SIM_RUNS} fast-check runs): lossy/dup/reorder link, outage and pause, exactly-once in-order both ways`, (t) => {
  fc.assert(
    fc.property(
      fc.record({
        toAgent: fc.array(fateArb, { maxLength: 200 }),
        toClient: fc.array(fateArb, { maxLength: 200 }),
        clientPayloads: fc.integer({ min: 0, max: 40 }),
        agentPayloads: fc.integer({ min: 0, max: 40 }),
        window: fc.integer({ min: 1, max: 8 }),
        reorderLimit: fc.integer({ min: 1, max: 16 }),
        refusals: fc.array(fc.boolean(), { maxLength: 40 }),
        outage: fc.option(
          fc.record({ at: fc.integer({ min: 0, max: 3_000 }), ms: fc.integer({ min: 50, max: 3_000 }) }),
        ),
        pause: fc.option(
          fc.record({ at: fc.integer({ min: 0, max: 3_000 }), ms: fc.integer({ min: 50, max: 3_000 }) }),
        ),
        spreadMs: fc.integer({ min: 0, max: 2_000 }),
      }),
      (s) => {
        let now = 0;
        type InFlight = { at: number; frame: Buffer; order: number };
        const toAgent: InFlight[] = [];
        const toClient: InFlight[] = [];
        let order = 0;
        const fates = { toAgent: 0, toClient: 0 };
        const link = (queue: InFlight[], list: Fate[], key: 'toAgent' | 'toClient') => (frame: Buffer) => {
          const fate = list[fates[key]++] ?? { drop: false, dup: false, delayMs: 5 };
          if (fate.drop) return;
          queue.push({ at: now + fate.delayMs, frame: Buffer.from(frame), order: order++ });
          if (fate.dup) queue.push({ at: now + fate.delayMs + 7, frame: Buffer.from(frame), order: order++ });
        };
        const received: Buffer[] = [];
        let refusalIndex = 0;
        let stalled = false;
        const client = new ReliableChannel(
          { sendWindowMessages: s.window, reorderLimitMessages: s.reorderLimit, giveUpMs: 600_000 },
          {
            now: () => now,
            deliver: (m) => {
              if (s.refusals[refusalIndex++] === true) return false;
              received.push(m.payload);
              return true;
            },
            logger: silentLogger,
          },
        );
        client.on('stalled', () => (stalled = true));
        const clientLink = link(toAgent, s.toAgent, 'toAgent');
        client.attach(clientLink);
        const agent = new SimAgent(link(toClient, s.toClient, 'toClient'), () => now);

        const expectedToAgent = Array.from({ length: s.clientPayloads }, (_, i) => `c${i}`);
        const expectedToClient = Array.from({ length: s.agentPayloads }, (_, i) => `a${i}`);
        const step = 10;
        let nextClient = 0;
        let nextAgent = 0;
        const due = (queue: InFlight[]): InFlight[] => {
          const ready = queue.filter((f) => f.at <= now).sort((a, b) => a.at - b.at || a.order - b.order);
          for (const f of ready) queue.splice(queue.indexOf(f), 1);
          return ready;
        };
        const limit = 200_000;
        for (; now < limit; now += step) {
          // Producers spread their messages over spreadMs.
          while (
            nextClient < s.clientPayloads &&
            nextClient * s.spreadMs <= now * Math.max(1, s.clientPayloads)
          ) {
            client.send(PayloadType.Output, Buffer.from(`c${nextClient++}`));
          }
          while (
            nextAgent < s.agentPayloads &&
            nextAgent * s.spreadMs <= now * Math.max(1, s.agentPayloads)
          ) {
            agent.sendData(Buffer.from(`a${nextAgent++}`));
          }
          if (s.outage && now === s.outage.at - (s.outage.at % step)) {
            client.detach();
            toAgent.length = 0;
            toClient.length = 0;
          }
          if (s.outage && now === s.outage.at - (s.outage.at % step) + s.outage.ms - (s.outage.ms % step)) {
            client.attach(clientLink);
          }
          if (s.pause && now === s.pause.at - (s.pause.at % step)) {
            client.receive(serviceMessage('pause_publication'));
          }
          if (s.pause && now === s.pause.at - (s.pause.at % step) + s.pause.ms - (s.pause.ms % step)) {
            client.receive(serviceMessage('start_publication'));
          }
          for (const f of due(toAgent)) agent.receive(f.frame);
          // Frames reach the client only while it is attached (the socket is gone otherwise).
          for (const f of due(toClient)) if (client.attached) client.receive(f.frame);
          if (now % 50 === 0) {
            client.tick();
            client.retryDelivery();
            agent.tick();
          }
          const done =
            nextClient === s.clientPayloads &&
            nextAgent === s.agentPayloads &&
            client.unacked === 0 &&
            agent.outgoing.size === 0 &&
            received.length === s.agentPayloads &&
            agent.delivered.length === s.clientPayloads &&
            client.attached;
          if (done) break;
        }
        if (now >= limit) return false;
        return (
          !stalled &&
          client.stats.protocolErrors === 0 &&
          JSON.stringify(received.map(String)) === JSON.stringify(expectedToClient) &&
          JSON.stringify(agent.delivered.map(String)) === JSON.stringify(expectedToAgent)
        );
      },
    ),
    { numRuns: SIM_RUNS },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// sendFrom: payload written in place (issue 7)

test('sendFrom commits what fill wrote (a short fill is trimmed), in sequence with send(); a 0-byte fill commits nothing', (t) => {
  const h = harness({ sendWindowMessages: 10 });
  t.is(h.ch.send(PayloadType.Output, Buffer.from('first')), true);
  const written = h.ch.sendFrom(PayloadType.Output, 1024, (target, offset, max) => {
    t.is(offset, 120);
    t.is(max, 1024);
    return target.write('second', offset, 'latin1');
  });
  t.is(written, 6);
  t.is(
    h.ch.sendFrom(PayloadType.Output, 1024, () => 0),
    0,
  );
  t.is(
    h.ch.sendFrom(PayloadType.Flag, 4, (target, offset) => target.writeUInt32BE(2, offset) - offset),
    4,
  );
  const sent = h.take();
  t.deepEqual(dataSeqs(sent), [0, 1, 2]);
  t.deepEqual(texts(sent.slice(0, 2)), ['first', 'second']);
  t.is(sent[2]?.payloadType, PayloadType.Flag);
  t.is(h.ch.nextSendSequence, 3);
  t.is(h.ch.unacked, 3);
  // Frames are valid (digest over the trimmed payload) and resent byte for byte.
  t.is(h.raw[1]?.length, 120 + 6);
  h.run(1_000);
  const resent = h.raw.slice(3);
  t.true(resent.length >= 3);
  t.true(resent[0]?.equals(h.raw[0] as Buffer));
  t.true(resent[1]?.equals(h.raw[1] as Buffer));
});

// ---------------------------------------------------------------------------------------------
// The not-ready window after HandshakeComplete (spec 6.4)

test('not-ready probe: the first message after the handshake is resent every 20 ms until the agent acks it, not after the 200 ms RTO', (t) => {
  const h = harness();
  // The handshake response, acked at once: the channel has an RTT sample and the 200 ms RTO floor.
  h.ch.send(PayloadType.HandshakeResponse, Buffer.from('{}'));
  h.ch.receive(agentAck(0));
  h.ch.expectNotReady();
  h.take();
  h.ch.send(PayloadType.Output, Buffer.from('syn'));
  t.deepEqual(dataSeqs(h.take()), [1]);
  // Called more often than it may resend: only one copy per NOT_READY_PROBE_MS since the last one left.
  const copies: number[] = [];
  for (let at = 5; at <= 100; at += 5) {
    h.clock.now += 5;
    t.true(h.ch.probeNotReady(), `still probing at +${at} ms`);
    for (const seq of dataSeqs(h.take())) copies.push(seq === 1 ? at : -seq);
  }
  t.deepEqual(copies, [20, 40, 60, 80, 100]);
  t.is(h.ch.stats.notReadyProbes, 5);
  t.is(h.ch.stats.resends, 5);
  // The agent is ready and acks: probing ends, and nothing more is resent by it.
  h.ch.receive(agentAck(1));
  h.clock.now += NOT_READY_PROBE_MS;
  t.false(h.ch.probeNotReady());
  t.false(h.ch.probeNotReady());
  t.deepEqual(dataSeqs(h.take()), []);
});

test('not-ready probe: a later message is never probed, probing ends after its window, and a copy still in the transport is not doubled', (t) => {
  const written = new Map<number, () => void>();
  const sent: number[] = [];
  const h = harness({}, false);
  h.ch.attach({
    send: (frame: Buffer, onWritten?: () => void) => {
      const message = decodeMessage(frame);
      if (message.messageType !== MessageType.InputStreamData) return;
      sent.push(message.sequenceNumber);
      if (onWritten) written.set(message.sequenceNumber, onWritten);
    },
    queuedBytes: () => 0,
  });
  h.ch.expectNotReady();
  // Nothing sent yet: probing waits (and does not end) until the first message goes out.
  h.clock.now += 100;
  t.true(h.ch.probeNotReady());
  h.ch.send(PayloadType.Output, Buffer.from('a'));
  h.ch.send(PayloadType.Output, Buffer.from('b'));
  // Copy of seq 0 has not left the transport: no second copy however long it waits.
  h.clock.now += 200;
  t.true(h.ch.probeNotReady());
  t.deepEqual(sent, [0, 1]);
  written.get(0)?.();
  h.clock.now += NOT_READY_PROBE_MS;
  t.true(h.ch.probeNotReady());
  t.deepEqual(sent, [0, 1, 0], 'only the head is probed');
  // Past the window the probe stops for good; the RTO timer takes over.
  h.clock.now += NOT_READY_PROBE_WINDOW_MS;
  t.false(h.ch.probeNotReady());
  t.deepEqual(sent, [0, 1, 0]);
});

test('not-ready probe: at most 10 copies, and none while a window of data is in flight behind the head (a bulk upload on a slow uplink)', (t) => {
  const lone = harness();
  lone.ch.expectNotReady();
  lone.ch.send(PayloadType.Output, Buffer.from('syn'));
  lone.take();
  for (let i = 0; i < 40; i++) {
    lone.clock.now += NOT_READY_PROBE_MS;
    lone.ch.probeNotReady();
  }
  t.is(lone.ch.stats.notReadyProbes, NOT_READY_PROBE_LIMIT);
  t.is(dataSeqs(lone.take()).length, NOT_READY_PROBE_LIMIT);

  const bulk = harness();
  bulk.ch.expectNotReady();
  for (let i = 0; i <= NOT_READY_PROBE_MAX_IN_FLIGHT; i++)
    bulk.ch.send(PayloadType.Output, Buffer.from(`m${i}`));
  bulk.take();
  for (let i = 0; i < 5; i++) {
    bulk.clock.now += NOT_READY_PROBE_MS;
    t.true(bulk.ch.probeNotReady());
  }
  t.is(bulk.ch.stats.notReadyProbes, 0);
  t.deepEqual(dataSeqs(bulk.take()), []);
});

test('ackedThrough / whenAckedThrough: a waiter resolves only once every message up to its seq is acked, out-of-order acks and resends included', async (t) => {
  const h = harness({ sendWindowMessages: 4 });
  for (const text of ['a', 'b', 'c', 'd', 'e']) h.ch.send(PayloadType.Output, Buffer.from(text));
  t.false(h.ch.ackedThrough(0));
  t.false(h.ch.ackedThrough(7), 'a seq not committed yet is not acked');
  const resolved: number[] = [];
  // Registered out of order: the list keeps sequence order, each resolves when its own prefix is acked.
  for (const seq of [2, 0, 4, 1]) void h.ch.whenAckedThrough(seq).then(() => resolved.push(seq));
  t.is(h.ch.ackWaitersPending, 4);
  const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  h.ch.receive(agentAck(1));
  h.ch.receive(agentAck(2));
  await settle();
  t.deepEqual(resolved, [], 'acks of 1 and 2 leave 0 un-acked: nothing is through');
  t.false(h.ch.ackedThrough(1));
  h.run(250); // the RTO resends 0 (and 3); its late ack still counts
  t.true(dataSeqs(h.take()).includes(0));
  h.ch.receive(agentAck(0));
  await settle();
  t.deepEqual(resolved, [0, 1, 2], 'the ack of 0 completes the prefix 0..2');
  t.true(h.ch.ackedThrough(2));
  t.false(h.ch.ackedThrough(3));
  t.is(h.ch.lowestUnacked, 3);
  // 4 was queued behind the window; it is transmitted after the acks and only its own ack finishes it.
  h.ch.receive(agentAck(4));
  await settle();
  t.is(h.ch.ackWaitersPending, 1);
  h.ch.receive(agentAck(3));
  await settle();
  t.deepEqual(resolved, [0, 1, 2, 4]);
  t.is(h.ch.ackWaitersPending, 0);
  t.is(h.ch.lowestUnacked, h.ch.nextSendSequence);
  await h.ch.whenAckedThrough(4);
  t.pass('an already-acked prefix resolves at once');
});
