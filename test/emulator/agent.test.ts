/**
 * EmulatedAgent driven by a raw test client built only from the codecs (message, payloads, smux frame),
 * against real TCP destinations on 127.0.0.1. Waits are on events with timeouts; the only fixed waits bound
 * "nothing happens" assertions.
 */
import test from 'ava';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { EmulatedAgent } from '../../src/emulator/agent.js';
import type { AgentOptions } from '../../src/emulator/agent.js';
import { AgentRttEstimator } from '../../src/emulator/agent-reliability.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import {
  decodeAcknowledge,
  decodeHandshakeComplete,
  decodeHandshakeRequest,
  encodeAcknowledge,
  encodeFlag,
  encodeHandshakeResponse,
} from '../../src/datachannel/payloads.js';
import type { AcknowledgeContent } from '../../src/datachannel/payloads.js';
import { FlagCode, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import { silentLogger } from '../../src/log.js';
import { clientModeFor } from '../../src/datachannel/version.js';
import { poke, waitFor } from './bus.js';

/** Resolve after `ms`: only to bound an assertion that something does NOT happen. */
const quietPeriod = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Destinations

interface Destination {
  port: number;
  sockets: net.Socket[];
  received: Buffer[];
  closedSockets: number;
  close(): Promise<void>;
}

/** Echo server (optionally speaking `banner` first) that records what it got. */
async function startDestination(banner?: Buffer): Promise<Destination> {
  const dest: Destination = {
    port: 0,
    sockets: [],
    received: [],
    closedSockets: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of dest.sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    dest.sockets.push(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      dest.closedSockets++;
      poke();
    });
    socket.on('data', (chunk: Buffer) => {
      dest.received.push(chunk);
      socket.write(chunk);
      poke();
    });
    if (banner !== undefined) socket.write(banner);
    poke();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  dest.port = (server.address() as AddressInfo).port;
  return dest;
}

/** A port that refuses connections: listened once, then closed. */
async function refusingPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const receivedText = (dest: Destination): string => Buffer.concat(dest.received).toString('latin1');

// ---------------------------------------------------------------------------------------------
// The raw client

function agentOptions(port: number, overrides: Partial<AgentOptions> = {}): AgentOptions {
  return {
    agentVersion: '3.3.987.0',
    properties: { portNumber: String(port), type: 'LocalPortForwarding', localPortNumber: '15432' },
    resolveHost: (host) => host,
    chunkSize: 1024,
    pacingMs: 1,
    notReadyWindowMs: 50,
    handshakeTimeoutMs: 15000,
    handshakeDelayMs: 0,
    skipHandshakeComplete: false,
    requestKmsAction: false,
    sessionType: 'Port',
    dialFailStreamIds: [],
    dialFailCount: 0,
    dialDelayMs: 0,
    injectMessages: [],
    ...overrides,
  };
}

const SUCCESS_ACTION = { actionType: 'SessionType', actionStatus: 1 as const, actionResult: null, error: '' };

class RawClient {
  readonly agent: EmulatedAgent;
  /** Every frame from the agent, decoded with digest verification, in arrival order. */
  readonly frames: { message: ClientMessage; raw: Buffer }[] = [];
  /** First copy of each agent sequenced message, by sequence number. */
  readonly outputs = new Map<number, ClientMessage>();
  /** Acks from the agent. */
  readonly acks: AcknowledgeContent[] = [];
  /** Agent smux frames, reassembled from contiguous Output payloads. */
  readonly smuxFrames: SmuxFrame[] = [];
  /** Agent Output payload bytes in sequence order (basic mode). */
  readonly outputBytes: Buffer[] = [];
  readonly failures: string[] = [];
  autoAck = true;
  private nextSeq = 0;
  private contiguous = 0;
  private readonly smuxDecoder = new SmuxFrameDecoder();
  /** Frames we sent, by sequence number, for resends. */
  readonly sent = new Map<number, Buffer>();

  constructor(options: AgentOptions, now: () => number = Date.now) {
    this.agent = new EmulatedAgent(options, {
      now,
      sendToClient: (frame) => setImmediate(() => this.onFrame(frame)),
      logger: silentLogger,
    });
    for (const event of [
      'handshakeComplete',
      'ready',
      'terminateRequested',
      'streamOpened',
      'streamClosed',
      'dialFailed',
      'destinationConnected',
      'message',
    ]) {
      this.agent.on(event, poke);
    }
    this.agent.on('failed', (reason: string) => {
      this.failures.push(reason);
      poke();
    });
  }

  private onFrame(raw: Buffer): void {
    const message = decodeMessage(raw);
    this.frames.push({ message, raw });
    if (message.messageType === MessageType.Acknowledge) {
      this.acks.push(decodeAcknowledge(message.payload));
    } else if (message.messageType === MessageType.OutputStreamData) {
      if (this.autoAck) this.ack(message);
      if (!this.outputs.has(message.sequenceNumber)) this.outputs.set(message.sequenceNumber, message);
      this.advance();
    }
    poke();
  }

  private advance(): void {
    for (;;) {
      const next = this.outputs.get(this.contiguous);
      if (next === undefined) return;
      this.contiguous++;
      if (next.payloadType !== PayloadType.Output) continue;
      this.outputBytes.push(next.payload);
      if (this.agent.mode === 'mux') this.smuxFrames.push(...this.smuxDecoder.push(next.payload));
    }
  }

  ack(message: ClientMessage): void {
    this.deliver(
      encodeMessage(
        newMessage({
          messageType: MessageType.Acknowledge,
          sequenceNumber: 0,
          flags: 3,
          payloadType: PayloadType.None,
          payload: encodeAcknowledge({
            acknowledgedMessageType: message.messageType,
            acknowledgedMessageId: message.messageId,
            acknowledgedMessageSequenceNumber: message.sequenceNumber,
            isSequentialMessage: true,
          }),
        }),
      ),
    );
  }

  /** Send one `input_stream_data`; returns its sequence number. */
  send(payloadType: number, payload: Buffer, seq = this.nextSeq++): number {
    const frame = encodeMessage(
      newMessage({
        messageType: MessageType.InputStreamData,
        sequenceNumber: seq,
        flags: 0,
        payloadType,
        payload,
      }),
    );
    this.sent.set(seq, frame);
    this.deliver(frame);
    return seq;
  }

  sendOutput(payload: Buffer | string): number {
    return this.send(PayloadType.Output, typeof payload === 'string' ? Buffer.from(payload) : payload);
  }

  sendFlag(code: FlagCode): number {
    return this.send(PayloadType.Flag, encodeFlag(code));
  }

  resend(seq: number): void {
    this.deliver(this.sent.get(seq) as Buffer);
  }

  deliver(frame: Buffer): void {
    setImmediate(() => this.agent.receiveFromClient(frame));
  }

  ackedSeqs(seq: number): number {
    return this.acks.filter((a) => a.acknowledgedMessageSequenceNumber === seq).length;
  }

  waitAck(seq: number, count = 1): Promise<true> {
    return waitFor(() => this.ackedSeqs(seq) >= count, `${count} ack(s) of client seq ${seq}`);
  }

  waitOutput(seq: number): Promise<ClientMessage> {
    return waitFor(() => this.outputs.get(seq), `agent seq ${seq}`);
  }

  /** HandshakeResponse as seq 0 (or the next number), then wait for HandshakeComplete. */
  async handshake(clientVersion = '1.2.694.0'): Promise<ClientMessage> {
    await this.waitOutput(0);
    this.send(
      PayloadType.HandshakeResponse,
      encodeHandshakeResponse({ clientVersion, processedClientActions: [SUCCESS_ACTION], errors: null }),
    );
    return this.waitOutput(1);
  }

  async ready(clientVersion = '1.2.694.0'): Promise<void> {
    this.agent.start();
    await this.handshake(clientVersion);
    await waitFor(() => this.agent.state === 'ready', 'agent ready');
  }

  /** Data the agent sent on smux stream `sid`. */
  streamData(sid: number): string {
    return Buffer.concat(
      this.smuxFrames.filter((f) => f.sid === sid && f.cmd === SmuxCommand.PSH).map((f) => f.data),
    ).toString('latin1');
  }

  finReceived(sid: number): boolean {
    return this.smuxFrames.some((f) => f.sid === sid && f.cmd === SmuxCommand.FIN);
  }
}

const syn = (sid: number): Buffer => encodeFrame(SmuxCommand.SYN, sid);
const psh = (sid: number, text: string): Buffer => encodeFrame(SmuxCommand.PSH, sid, Buffer.from(text));
const fin = (sid: number): Buffer => encodeFrame(SmuxCommand.FIN, sid);

// ---------------------------------------------------------------------------------------------
// Handshake

test('HandshakeRequest: seq 0, Flags 1, payload type 5, agent version and document properties', async (t) => {
  const client = new RawClient(
    agentOptions(5432, {
      properties: { portNumber: '5432', type: 'LocalPortForwarding', host: 'db.internal' },
    }),
  );
  client.agent.start();
  const request = await client.waitOutput(0);
  client.agent.close('test over');
  t.is(request.messageType, 'output_stream_data');
  t.is(request.sequenceNumber, 0);
  t.is(request.flags, 1);
  t.is(request.payloadType, PayloadType.HandshakeRequest);
  t.is(request.schemaVersion, 1);
  const decoded = decodeHandshakeRequest(request.payload);
  t.is(decoded.agentVersion, '3.3.987.0');
  t.deepEqual(decoded.requestedClientActions, [
    {
      actionType: 'SessionType',
      actionParameters: {
        SessionType: 'Port',
        Properties: { portNumber: '5432', type: 'LocalPortForwarding', host: 'db.internal' },
      },
    },
  ]);
});

test('requestKmsAction adds a KMSEncryption action; status 3 for it fails the agent', async (t) => {
  const client = new RawClient(agentOptions(1, { requestKmsAction: true }));
  client.agent.start();
  const request = await client.waitOutput(0);
  const actions = decodeHandshakeRequest(request.payload).requestedClientActions;
  t.deepEqual(
    actions.map((a) => a.actionType),
    ['SessionType', 'KMSEncryption'],
  );
  client.send(
    PayloadType.HandshakeResponse,
    encodeHandshakeResponse({
      clientVersion: '1.2.694.0',
      processedClientActions: [
        SUCCESS_ACTION,
        { actionType: 'KMSEncryption', actionStatus: 3, actionResult: null, error: 'unsupported' },
      ],
      errors: null,
    }),
  );
  const reason = await waitFor(() => client.failures[0], 'failed');
  t.regex(reason, /KMSEncryption.*status 3/);
  t.is(client.agent.state, 'closed');
});

for (const [clientVersion, mode, keepAlive] of [
  ['1.2.694.0', 'mux', false],
  ['1.2.331.0', 'mux', true],
  ['1.1.70', 'mux', true],
  ['1.1.69', 'basic', false],
  ['', 'basic', false],
] as const) {
  test(`ClientVersion ${JSON.stringify(clientVersion)} selects ${mode} mode, keep-alive ${keepAlive ? 'on' : 'off'}`, async (t) => {
    const client = new RawClient(agentOptions(1));
    const events: unknown[] = [];
    client.agent.on('handshakeComplete', (e) => events.push(e));
    client.agent.start();
    const complete = await client.handshake(clientVersion);
    client.agent.close('test over');
    t.is(client.agent.mode, mode);
    t.is(client.agent.smuxKeepAliveOn, keepAlive);
    t.is(client.agent.clientVersion, clientVersion);
    t.deepEqual(events, [{ mode, clientVersion }]);
    t.is(complete.sequenceNumber, 1);
    t.is(complete.flags, 0);
    t.is(complete.payloadType, PayloadType.HandshakeComplete);
    const body = decodeHandshakeComplete(complete.payload);
    t.is(body.customerMessage, '');
    t.true(Number.isSafeInteger(body.handshakeTimeToComplete) && body.handshakeTimeToComplete >= 0);
  });
}

// An agent advertising an old AgentVersion must not use features that version lacks, or it disagrees with every
// client that follows spec §3.3 (seen with the real session-manager-plugin 1.2.694.0 against agentVersion
// 3.0.196.0: the plugin went basic, the emulated agent mux, and the session died on the plugin's first byte).
for (const [agentVersion, mode, keepAlive] of [
  ['3.3.987.0', 'mux', false],
  ['3.1.1511.1', 'mux', false],
  ['3.1.1511.0', 'mux', true],
  ['3.0.196.1', 'mux', true],
  ['3.0.196.0', 'basic', false],
  ['2.3.722.0', 'basic', false],
] as const) {
  test(`AgentVersion ${agentVersion} with ClientVersion 1.2.694.0 selects ${mode} mode, keep-alive ${keepAlive ? 'on' : 'off'}, as the client decides`, async (t) => {
    const client = new RawClient(agentOptions(1, { agentVersion }));
    client.agent.start();
    await client.handshake('1.2.694.0');
    client.agent.close('test over');
    t.is(client.agent.mode, mode);
    t.is(client.agent.smuxKeepAliveOn, keepAlive);
    const clientSide = clientModeFor(agentVersion, 'LocalPortForwarding');
    t.is(clientSide.mux ? 'mux' : 'basic', mode, 'agent and client agree on the mode');
    if (clientSide.mux) t.is(clientSide.smuxKeepAlive, keepAlive, 'agent and client agree on keep-alive');
  });
}

test('basic: an old agent (3.0.196.0) relays raw bytes for a current ClientVersion', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port, { agentVersion: '3.0.196.0' }));
  await client.ready('1.2.694.0');
  t.is(client.agent.mode, 'basic');
  await waitFor(() => dest.sockets.length === 1, 'dial at start');
  client.sendOutput('raw, not smux');
  await waitFor(() => Buffer.concat(client.outputBytes).toString() === 'raw, not smux', 'echo');
  client.agent.close('test over');
  await dest.close();
});

test('ack of the HandshakeResponse: acknowledge, seq 0, Flags 3, payload type 0, exact JSON, before HandshakeComplete', async (t) => {
  const client = new RawClient(agentOptions(1));
  client.agent.start();
  await client.handshake();
  client.agent.close('test over');
  const ackIndex = client.frames.findIndex((f) => f.message.messageType === 'acknowledge');
  const completeIndex = client.frames.findIndex(
    (f) => f.message.payloadType === PayloadType.HandshakeComplete,
  );
  t.true(ackIndex >= 0 && ackIndex < completeIndex);
  const ack = (client.frames[ackIndex] as { message: ClientMessage }).message;
  t.is(ack.sequenceNumber, 0);
  t.is(ack.flags, 3);
  t.is(ack.payloadType, 0);
  const responseId = decodeMessage(client.sent.get(0) as Buffer).messageId;
  t.is(
    ack.payload.toString('utf8'),
    `{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"${responseId}",` +
      `"AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}`,
  );
});

test('a relay that answers synchronously from inside sendToClient does not re-enter the agent', async (t) => {
  const holder: { agent?: EmulatedAgent } = {};
  const acked: number[] = [];
  const agent = new EmulatedAgent(agentOptions(1), {
    now: Date.now,
    sendToClient: (frame) => {
      const m = decodeMessage(frame);
      if (m.messageType !== MessageType.OutputStreamData) return;
      const ack = encodeMessage(
        newMessage({
          messageType: MessageType.Acknowledge,
          sequenceNumber: 0,
          flags: 3,
          payloadType: PayloadType.None,
          payload: encodeAcknowledge({
            acknowledgedMessageType: m.messageType,
            acknowledgedMessageId: m.messageId,
            acknowledgedMessageSequenceNumber: m.sequenceNumber,
            isSequentialMessage: true,
          }),
        }),
      );
      acked.push(m.sequenceNumber);
      holder.agent?.receiveFromClient(ack);
      if (m.sequenceNumber === 0) {
        holder.agent?.receiveFromClient(
          encodeMessage(
            newMessage({
              messageType: MessageType.InputStreamData,
              sequenceNumber: 0,
              flags: 0,
              payloadType: PayloadType.HandshakeResponse,
              payload: encodeHandshakeResponse({
                clientVersion: '1.2.694.0',
                processedClientActions: [SUCCESS_ACTION],
                errors: null,
              }),
            }),
          ),
        );
      }
      poke();
    },
    logger: silentLogger,
  });
  holder.agent = agent;
  agent.on('handshakeComplete', poke);
  agent.on('message', poke);
  agent.start();
  await waitFor(() => agent.stats.acksReceived === 2, 'both agent messages acked');
  t.is(agent.unackedCount, 0);
  t.is(agent.mode, 'mux');
  t.deepEqual(acked, [0, 1]);
  agent.close('test over');
});

test('ActionStatus 2 fails the agent without HandshakeComplete', async (t) => {
  const client = new RawClient(agentOptions(1));
  client.agent.start();
  await client.waitOutput(0);
  client.send(
    PayloadType.HandshakeResponse,
    encodeHandshakeResponse({
      clientVersion: '1.2.694.0',
      processedClientActions: [{ ...SUCCESS_ACTION, actionStatus: 2, error: 'no shell' }],
      errors: null,
    }),
  );
  const reason = await waitFor(() => client.failures[0], 'failed');
  t.regex(reason, /status 2/);
  t.false(client.outputs.has(1));
});

test('no HandshakeResponse within handshakeTimeoutMs fails the agent', async (t) => {
  const client = new RawClient(agentOptions(1, { handshakeTimeoutMs: 100 }));
  client.agent.start();
  const reason = await waitFor(() => client.failures[0], 'failed');
  t.regex(reason, /handshake timeout/);
});

test('data sent before HandshakeComplete is acked and discarded', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  client.agent.start();
  await client.waitOutput(0);
  const early = client.sendOutput(Buffer.concat([syn(3), psh(3, 'lost')]));
  await client.waitAck(early);
  await client.handshake();
  await waitFor(() => client.agent.state === 'ready', 'ready');
  client.sendOutput(Buffer.concat([syn(5), psh(5, 'kept')]));
  await waitFor(() => client.streamData(5) === 'kept', 'echo on stream 5');
  t.is(receivedText(dest), 'kept');
  t.is(client.agent.stats.streamsOpened, 1);
  client.agent.close('test over');
  await dest.close();
});

test('not-ready window: in-order Output neither acked nor consumed, out-of-order acked and buffered', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port, { notReadyWindowMs: 300 }));
  client.agent.start();
  await client.handshake();
  const first = client.sendOutput(Buffer.concat([syn(3), psh(3, 'one,')]));
  const second = client.sendOutput(psh(3, 'two'));
  await client.waitAck(second);
  t.is(client.ackedSeqs(first), 0);
  t.is(client.agent.expectedSequenceNumber, first);
  t.is(client.agent.stats.outOfOrderReceived, 1);
  // The client's resend loop: the head goes through once the window is over.
  const resender = setInterval(() => client.resend(first), 100);
  try {
    await client.waitAck(first);
  } finally {
    clearInterval(resender);
  }
  await waitFor(() => client.streamData(3) === 'one,two', 'echo of both messages in order');
  t.is(receivedText(dest), 'one,two');
  client.agent.close('test over');
  await dest.close();
});

// ---------------------------------------------------------------------------------------------
// Reliability

test('duplicates are re-acked and not delivered twice; out-of-order is delivered in order', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  const open = client.sendOutput(Buffer.concat([syn(3), psh(3, 'a')]));
  await client.waitAck(open);
  client.resend(open);
  await client.waitAck(open, 2);
  t.is(client.agent.stats.duplicatesReceived, 1);
  // seq open+2 before open+1
  const later = client.send(PayloadType.Output, psh(3, 'c'), open + 2);
  await client.waitAck(later);
  client.send(PayloadType.Output, psh(3, 'b'), open + 1);
  await waitFor(() => client.streamData(3) === 'abc', 'echo abc');
  t.is(receivedText(dest), 'abc');
  client.agent.close('test over');
  await dest.close();
});

test('agent RTO estimator follows spec §7.3 without a floor', (t) => {
  const rtt = new AgentRttEstimator();
  t.is(rtt.rtoMs, 200);
  rtt.sample(20);
  // var = 0.75*0 + 0.25*|100-20| = 20; rtt = 0.875*100 + 0.125*20 = 90; rto = 90 + max(10, 80) = 170
  t.is(rtt.rttVariationMs, 20);
  t.is(rtt.srttMs, 90);
  t.is(rtt.rtoMs, 170);
  for (let i = 0; i < 100; i++) rtt.sample(1);
  t.true(rtt.rtoMs < 20, `RTO ${rtt.rtoMs} falls below 200 ms on a fast link`);
  rtt.sample(100_000);
  t.is(rtt.rtoMs, 1000);
});

test('only the head is resent after RTO, its clock restarts, and nothing is resent while paused', async (t) => {
  let now = 1_000_000;
  const client = new RawClient(agentOptions(1), () => now);
  client.autoAck = false;
  client.agent.start();
  await client.handshake();
  const resent = (): number[] =>
    client.frames
      .filter((f) => f.message.messageType === 'output_stream_data')
      .map((f) => f.message.sequenceNumber);
  t.deepEqual(resent(), [0, 1]);
  const frames = (): number => resent().length;
  now += 200; // not strictly older than RTO (200 ms)
  client.agent.scanResends();
  t.is(client.agent.stats.resends, 0);
  now += 1;
  client.agent.scanResends();
  client.agent.scanResends();
  await waitFor(() => frames() === 3, 'one resend');
  t.deepEqual(resent(), [0, 1, 0]);
  t.is(client.agent.stats.resends, 1);
  const sequenced = client.frames.filter((f) => f.message.messageType === 'output_stream_data');
  t.deepEqual(sequenced[2]?.raw, sequenced[0]?.raw, 'a resend is the identical frame');
  client.agent.pausePublication();
  now += 10_000;
  client.agent.scanResends();
  t.is(client.agent.stats.resends, 1);
  client.agent.startPublication();
  client.agent.scanResends();
  await waitFor(() => frames() === 4, 'second resend of the head');
  t.deepEqual(resent(), [0, 1, 0, 0]);
  // Ack the head: seq 1 becomes the head and is old, so it is next.
  client.ack(client.outputs.get(0) as ClientMessage);
  await waitFor(() => client.agent.unackedCount === 1, 'head acked');
  client.agent.scanResends();
  await waitFor(() => frames() === 5, 'resend of seq 1');
  t.deepEqual(resent(), [0, 1, 0, 0, 1]);
  client.agent.close('test over');
});

test('a malformed frame is dropped without ack; a wrong digest is counted but processed', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  const acksBefore = client.acks.length;
  client.deliver(Buffer.alloc(50));
  const frame = encodeMessage(
    newMessage({
      messageType: MessageType.InputStreamData,
      sequenceNumber: 1,
      flags: 0,
      payloadType: PayloadType.Output,
      payload: Buffer.concat([syn(3), psh(3, 'ok')]),
    }),
  );
  frame[frame.length - 1] = 'K'.charCodeAt(0);
  client.deliver(frame);
  await waitFor(() => client.streamData(3) === 'oK', 'echo of the corrupted payload');
  t.is(client.acks.length, acksBefore + 1);
  t.is(client.agent.stats.digestMismatches, 1);
  t.is(client.agent.stats.framesIn >= 3, true);
  client.agent.close('test over');
  await dest.close();
});

// ---------------------------------------------------------------------------------------------
// Mux mode

test('mux: echo over stream 3 with per-stream byte counts', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  client.sendOutput(Buffer.concat([syn(3), psh(3, 'hello')]));
  await waitFor(() => client.streamData(3) === 'hello', 'echo');
  t.deepEqual(client.agent.streamBytes.get(3), { toDestination: 5, fromDestination: 5 });
  t.is(client.agent.stats.streamsOpened, 1);
  client.sendOutput(fin(3));
  await waitFor(() => client.finReceived(3), 'FIN back');
  await waitFor(() => dest.closedSockets === 1, 'destination closed');
  client.agent.close('test over');
  await dest.close();
});

test('mux: a 10 KiB server write arrives as 1024-byte Output messages with continuous sequence numbers', async (t) => {
  const banner = Buffer.alloc(10 * 1024, 0x61);
  const dest = await startDestination(banner);
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  client.sendOutput(syn(3));
  await waitFor(() => client.streamData(3).length === banner.length, '10 KiB on stream 3');
  const seqs = [...client.outputs.keys()].sort((a, b) => a - b);
  t.deepEqual(
    seqs,
    seqs.map((_, i) => i),
  );
  const sizes = seqs
    .map((s) => client.outputs.get(s) as ClientMessage)
    .filter((m) => m.payloadType === PayloadType.Output)
    .map((m) => m.payload.length);
  t.true(sizes.every((n) => n <= 1024));
  t.true(
    sizes.slice(0, -1).every((n) => n === 1024),
    `sizes ${sizes.join(',')}`,
  );
  t.is(
    sizes.reduce((a, b) => a + b, 0),
    banner.length + 8 * client.smuxFrames.length,
  );
  client.agent.close('test over');
  await dest.close();
});

test('mux: dial to a refusing port sends Flag ConnectToPortError, then FIN on that stream', async (t) => {
  const port = await refusingPort();
  const client = new RawClient(agentOptions(port));
  await client.ready();
  client.sendOutput(Buffer.concat([syn(3), psh(3, 'x')]));
  await waitFor(() => client.finReceived(3), 'FIN for stream 3');
  const flag = [...client.outputs.values()].find((m) => m.payloadType === PayloadType.Flag) as ClientMessage;
  t.truthy(flag);
  t.is(flag.payload.toString('hex'), '00000003');
  const finCarrier = Math.max(...[...client.outputs.values()].map((m) => m.sequenceNumber));
  t.true(flag.sequenceNumber < finCarrier, 'flag precedes the Output carrying FIN');
  t.is(client.agent.stats.dialFailures, 1);
  t.is(client.agent.state, 'ready', 'a dial failure is not fatal in mux mode');
  client.agent.close('test over');
});

test('mux: dialFailStreamIds fails only the listed stream; others keep working', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port, { dialFailStreamIds: [5] }));
  const failed: unknown[] = [];
  client.agent.on('dialFailed', (sid) => failed.push(sid));
  await client.ready();
  client.sendOutput(
    Buffer.concat([syn(3), syn(5), syn(7), psh(3, 'three'), psh(5, 'five'), psh(7, 'seven')]),
  );
  await waitFor(
    () => client.streamData(3) === 'three' && client.streamData(7) === 'seven',
    'echo on 3 and 7',
  );
  await waitFor(() => client.finReceived(5), 'FIN on 5');
  t.deepEqual(failed, [5]);
  t.is(client.streamData(5), '');
  t.false(receivedText(dest).includes('five'));
  client.agent.close('test over');
  await dest.close();
});

test('mux: pause stops output until start_publication', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  client.sendOutput(syn(3));
  await waitFor(() => dest.sockets.length === 1, 'destination connected');
  client.agent.pausePublication();
  (dest.sockets[0] as net.Socket).write('while paused');
  await quietPeriod(150);
  t.is(client.streamData(3), '');
  client.agent.startPublication();
  await waitFor(() => client.streamData(3) === 'while paused', 'data after resume');
  t.pass();
  client.agent.close('test over');
  await dest.close();
});

test('forced receive stall: in-order Output is neither acked nor consumed until released', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  client.agent.stallReceive();
  const seq = client.sendOutput(Buffer.concat([syn(3), psh(3, 'held')]));
  const after = client.sendOutput(psh(3, '!'));
  await client.waitAck(after);
  t.is(client.ackedSeqs(seq), 0);
  t.is(client.agent.stats.streamsOpened, 0);
  client.agent.releaseReceiveStall();
  client.resend(seq);
  await waitFor(() => client.streamData(3) === 'held!', 'echo after release');
  t.pass();
  client.agent.close('test over');
  await dest.close();
});

test('TerminateSession flag: acked, outgoing buffer flushed, then terminateRequested', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready();
  let terminated = 0;
  client.agent.on('terminateRequested', () => terminated++);
  const seq = client.sendFlag(FlagCode.TerminateSession);
  await client.waitAck(seq);
  await waitFor(() => terminated === 1, 'terminateRequested');
  t.is(client.agent.state, 'terminating');
  client.agent.close('terminated');
  client.agent.close('again');
  t.is(client.agent.state, 'closed');
  await dest.close();
});

// ---------------------------------------------------------------------------------------------
// Basic mode

test('basic: dial at start, raw echo, DisconnectToPort closes and the next Output redials', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready('1.1.69');
  t.is(client.agent.mode, 'basic');
  await waitFor(() => dest.sockets.length === 1, 'initial dial');
  client.sendOutput('first');
  await waitFor(() => Buffer.concat(client.outputBytes).toString() === 'first', 'echo of first');
  client.sendFlag(FlagCode.DisconnectToPort);
  await waitFor(() => dest.closedSockets === 1, 'destination closed');
  t.is(dest.sockets.length, 1, 'no redial before data');
  client.sendOutput('second');
  await waitFor(() => Buffer.concat(client.outputBytes).toString() === 'firstsecond', 'echo of second');
  t.is(dest.sockets.length, 2);
  client.agent.close('test over');
  await dest.close();
});

test('basic: a 10 KiB server banner arrives as exactly ten 1024-byte Output messages', async (t) => {
  const dest = await startDestination(Buffer.alloc(10 * 1024, 0x62));
  const client = new RawClient(agentOptions(dest.port));
  await client.ready('');
  await waitFor(() => Buffer.concat(client.outputBytes).length === 10 * 1024, 'banner');
  t.deepEqual(
    client.outputBytes.map((b) => b.length),
    new Array(10).fill(1024),
  );
  client.agent.close('test over');
  await dest.close();
});

test('basic: destination closing first is silent; the next Output redials', async (t) => {
  const dest = await startDestination();
  const client = new RawClient(agentOptions(dest.port));
  await client.ready('1.1.69');
  await waitFor(() => dest.sockets.length === 1, 'initial dial');
  (dest.sockets[0] as net.Socket).end('bye');
  await waitFor(() => Buffer.concat(client.outputBytes).toString() === 'bye', 'bye');
  const framesBefore = client.outputs.size;
  client.sendOutput('again');
  await waitFor(() => dest.sockets.length === 2 && receivedText(dest) === 'again', 'redial and write');
  await waitFor(() => Buffer.concat(client.outputBytes).toString() === 'byeagain', 'echo after redial');
  t.false(
    [...client.outputs.values()].slice(framesBefore).some((m) => m.payloadType === PayloadType.Flag),
    'the client is not told',
  );
  client.agent.close('test over');
  await dest.close();
});

test('basic: initial dial failure fails the agent', async (t) => {
  const port = await refusingPort();
  const client = new RawClient(agentOptions(port));
  client.agent.start();
  await client.handshake('1.1.69');
  const reason = await waitFor(() => client.failures[0], 'failed');
  t.regex(reason, /dial failed/);
  t.is(client.agent.stats.dialFailures, 1);
});
