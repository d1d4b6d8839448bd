/**
 * End-to-end: a raw client built only from the codec drives full sessions over a real `ws` WebSocket against
 * the emulator with the real EmulatedAgent and a real TCP echo server on 127.0.0.1.
 */
import test from 'ava';
import { ResumeSessionCommand, StartSessionCommand, TerminateSessionCommand } from '@aws-sdk/client-ssm';
import type { SSMClient } from '@aws-sdk/client-ssm';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST } from '../../src/config/types.js';
import { ActionStatus, FlagCode, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import {
  decodeAcknowledge,
  decodeChannelClosed,
  decodeHandshakeRequest,
  encodeFlag,
  encodeHandshakeResponse,
  sessionTypeOf,
} from '../../src/datachannel/payloads.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import { RawClient, TARGET, ssmFor } from './service.helpers.js';

const CLIENT_VERSION = '1.2.694.0';
const RESEND_INTERVAL_MS = 100;

interface Echo {
  port: number;
  close(): Promise<void>;
}

async function startEcho(): Promise<Echo> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function withSetup(
  options: Partial<EmulatorOptions>,
  run: (emulator: Emulator, ssm: SSMClient, echo: Echo) => Promise<void>,
): Promise<void> {
  const echo = await startEcho();
  const emulator = await startEmulator(options);
  const ssm = ssmFor(emulator);
  try {
    await run(emulator, ssm, echo);
  } finally {
    ssm.destroy();
    await emulator.close();
    await echo.close();
  }
}

/**
 * The client half of the reliable layer, minimal: acks every agent message, delivers Output payloads in
 * sequence order exactly once, and resends its own messages every 100 ms until acked (the agent's not-ready
 * window makes the first data message need a resend).
 */
class MiniClient {
  nextSeq = 0;
  expected = 0;
  readonly unacked = new Map<number, Buffer>();
  readonly delivered: ClientMessage[] = [];
  readonly outputSeqs: number[] = [];
  private readonly reorder = new Map<number, ClientMessage>();
  private readonly resendTimer: NodeJS.Timeout;

  constructor(public raw: RawClient) {
    this.attach(raw);
    this.resendTimer = setInterval(() => {
      for (const frame of this.unacked.values()) this.raw.ws.send(frame);
    }, RESEND_INTERVAL_MS);
  }

  attach(raw: RawClient): void {
    this.raw = raw;
    raw.events.on('message', (m: ClientMessage) => this.onMessage(m));
    for (const m of raw.messages) this.onMessage(m);
  }

  send(payloadType: number, payload: Buffer): number {
    const seq = this.nextSeq++;
    const frame = encodeMessage(
      newMessage({
        messageType: MessageType.InputStreamData,
        sequenceNumber: seq,
        flags: 0,
        payloadType,
        payload,
      }),
    );
    this.unacked.set(seq, frame);
    this.raw.ws.send(frame);
    return seq;
  }

  stop(): void {
    clearInterval(this.resendTimer);
  }

  private onMessage(m: ClientMessage): void {
    if (m.messageType === MessageType.Acknowledge) {
      const acked = JSON.parse(m.payload.toString()) as { AcknowledgedMessageSequenceNumber: number };
      this.unacked.delete(acked.AcknowledgedMessageSequenceNumber);
      return;
    }
    if (m.messageType !== MessageType.OutputStreamData) return;
    this.raw.ack(m);
    if (m.sequenceNumber < this.expected) return;
    this.reorder.set(m.sequenceNumber, m);
    for (let next = this.reorder.get(this.expected); next; next = this.reorder.get(this.expected)) {
      this.reorder.delete(this.expected);
      this.expected++;
      this.delivered.push(next);
      if (next.payloadType === PayloadType.Output) this.outputSeqs.push(next.sequenceNumber);
      this.raw.events.emit('delivered', next);
    }
  }

  /** Wait until a delivered message matches. */
  waitDelivered(predicate: (m: ClientMessage) => boolean, timeoutMs = 10_000): Promise<ClientMessage> {
    const found = this.delivered.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const on = (m: ClientMessage): void => {
        if (!predicate(m)) return;
        clearTimeout(timer);
        this.raw.events.off('delivered', on);
        resolve(m);
      };
      const timer = setTimeout(() => {
        this.raw.events.off('delivered', on);
        reject(new Error('timed out waiting for a delivered message'));
      }, timeoutMs);
      this.raw.events.on('delivered', on);
    });
  }
}

/** Run the §6 handshake; returns the HandshakeRequest's AgentVersion and Properties. */
async function handshake(
  emulator: Emulator,
  client: MiniClient,
  sessionId: string,
): Promise<{ agentVersion: string; properties: Record<string, string>; mode: unknown }> {
  const complete = waitFor(emulator, 'handshakeComplete', (id) => id === sessionId, 10_000);
  const request = await client.waitDelivered((m) => m.payloadType === PayloadType.HandshakeRequest);
  const decoded = decodeHandshakeRequest(request.payload);
  client.send(
    PayloadType.HandshakeResponse,
    encodeHandshakeResponse({
      clientVersion: CLIENT_VERSION,
      processedClientActions: decoded.requestedClientActions.map((a) => ({
        actionType: a.actionType,
        actionStatus: ActionStatus.Success,
        actionResult: null,
        error: '',
      })),
      errors: null,
    }),
  );
  await client.waitDelivered((m) => m.payloadType === PayloadType.HandshakeComplete);
  const [, mode] = await complete;
  const action = decoded.requestedClientActions[0];
  return {
    agentVersion: decoded.agentVersion,
    properties: action ? sessionTypeOf(action).properties : {},
    mode,
  };
}

/** Collect PSH data of `sid` from delivered Output payloads until `bytes` arrived. */
function collectStream(client: MiniClient, sid: number, bytes: number, timeoutMs = 15_000): Promise<Buffer> {
  const decoder = new SmuxFrameDecoder();
  const chunks: Buffer[] = [];
  let total = 0;
  let fed = 0;
  return new Promise((resolve, reject) => {
    const feed = (): boolean => {
      for (; fed < client.delivered.length; fed++) {
        const m = client.delivered[fed] as ClientMessage;
        if (m.payloadType !== PayloadType.Output) continue;
        for (const frame of decoder.push(m.payload)) {
          if (frame.cmd === SmuxCommand.PSH && frame.sid === sid) {
            chunks.push(Buffer.from(frame.data));
            total += frame.data.length;
          }
        }
      }
      return total >= bytes;
    };
    if (feed()) {
      resolve(Buffer.concat(chunks));
      return;
    }
    const on = (): void => {
      if (!feed()) return;
      clearTimeout(timer);
      client.raw.events.off('delivered', on);
      resolve(Buffer.concat(chunks));
    };
    const timer = setTimeout(() => {
      client.raw.events.off('delivered', on);
      reject(new Error(`timed out with ${total}/${bytes} bytes of stream ${sid}`));
    }, timeoutMs);
    client.raw.events.on('delivered', on);
  });
}

async function startLocal(ssm: SSMClient, port: number) {
  const out = await ssm.send(
    new StartSessionCommand({
      Target: TARGET,
      DocumentName: DOCUMENT_LOCAL,
      Parameters: { portNumber: [String(port)], localPortNumber: ['15432'] },
    }),
  );
  return { id: out.SessionId ?? '', token: out.TokenValue ?? '', url: out.StreamUrl ?? '' };
}

test('full mux session: handshake, smux SYN+PSH to an echo server, echo as ≤1024-byte Output with continuous seqs', async (t) => {
  await withSetup({}, async (emulator, ssm, echo) => {
    const s = await startLocal(ssm, echo.port);
    const client = new MiniClient(await RawClient.open(s.url, s.token));
    try {
      const hs = await handshake(emulator, client, s.id);
      t.is(hs.agentVersion, '3.3.987.0');
      t.is(hs.mode, 'mux');
      t.deepEqual(hs.properties, {
        portNumber: String(echo.port),
        type: 'LocalPortForwarding',
        localPortNumber: '15432',
      });
      const first = client.delivered[0] as ClientMessage;
      t.is(first.sequenceNumber, 0);
      t.is(first.flags, 1);

      const data = randomBytes(5000);
      client.send(
        PayloadType.Output,
        Buffer.concat([encodeFrame(SmuxCommand.SYN, 3), encodeFrame(SmuxCommand.PSH, 3, data)]),
      );
      const echoed = await collectStream(client, 3, data.length);
      t.true(echoed.equals(data), 'echo matches');

      const outputs = client.delivered.filter((m) => m.payloadType === PayloadType.Output);
      t.true(outputs.length >= 5);
      t.true(outputs.every((m) => m.payload.length <= 1024));
      t.deepEqual(
        client.outputSeqs,
        client.outputSeqs.map((_, i) => i + 2),
        'Output seqs continue after the two handshake messages without gaps',
      );
      const info = emulator.session(s.id);
      t.is(info.mode, 'mux');
      t.is(info.state, 'connected');
      const agent = info.agent;
      t.truthy(agent);
      t.is(agent?.mode, 'mux');
      t.is(agent?.clientVersion, CLIENT_VERSION);
      t.false(agent?.smuxKeepAliveOn);
      t.is(agent?.stats.streamsOpened, 1);
      t.deepEqual(agent?.streamBytes.get(3), { toDestination: 5000, fromDestination: 5000 });
      t.deepEqual(info.clientVersions, [CLIENT_VERSION]);
      t.true(
        info.frames.some((f) => f.direction === 'toAgent' && f.payloadType === PayloadType.HandshakeResponse),
      );
      t.true(
        info.frames.some(
          (f) => f.direction === 'toClient' && f.payloadType === PayloadType.HandshakeComplete,
        ),
      );
      t.true(info.counters.clientFramesOut >= outputs.length + 3);

      const ended = waitFor(emulator, 'sessionTerminated', (id) => id === s.id);
      await ssm.send(new TerminateSessionCommand({ SessionId: s.id }));
      await ended;
      const closed = await client.raw.next((m) => m.messageType === MessageType.ChannelClosed);
      t.is(decodeChannelClosed(closed.payload).sessionId, s.id);
    } finally {
      client.stop();
    }
  });
});

test('idle timeout with the real agent ends the session with channel_closed', async (t) => {
  await withSetup({ idleTimeoutMs: 400 }, async (emulator, ssm, echo) => {
    const ended = waitFor(emulator, 'sessionTerminated', undefined, 10_000);
    const s = await startLocal(ssm, echo.port);
    const client = new MiniClient(await RawClient.open(s.url, s.token));
    try {
      await handshake(emulator, client, s.id);
      const [, reason] = await ended;
      t.is(reason, 'idleTimeout');
      const closed = await client.raw.next((m) => m.messageType === MessageType.ChannelClosed);
      t.is(decodeChannelClosed(closed.payload).output, 'Session idle timeout reached');
      await client.raw.closed;
      const r = await ssm.send(new ResumeSessionCommand({ SessionId: s.id }));
      t.falsy(r.TokenValue);
    } finally {
      client.stop();
    }
  });
});

test('WebSocket drop, ResumeSession and reconnect: sequence numbers continue and the stream keeps working', async (t) => {
  await withSetup({}, async (emulator, ssm, echo) => {
    const s = await startLocal(ssm, echo.port);
    const client = new MiniClient(
      await RawClient.open(s.url, s.token, 'c0a80000-0000-4000-8000-0000000000aa'),
    );
    try {
      await handshake(emulator, client, s.id);
      const first = randomBytes(1500);
      client.send(
        PayloadType.Output,
        Buffer.concat([encodeFrame(SmuxCommand.SYN, 3), encodeFrame(SmuxCommand.PSH, 3, first)]),
      );
      await collectStream(client, 3, first.length);
      const gone = waitFor(emulator, 'clientDisconnected', (id) => id === s.id);
      emulator.dropClient(s.id, 'bye');
      const { code, reason } = await client.raw.closed;
      t.is(code, 1000);
      t.is(reason, 'Bye');
      await gone;

      const r = await ssm.send(new ResumeSessionCommand({ SessionId: s.id }));
      const raw = await RawClient.open(
        r.StreamUrl ?? '',
        r.TokenValue ?? '',
        'c0a80000-0000-4000-8000-0000000000aa',
      );
      client.attach(raw);
      const second = randomBytes(1500);
      client.send(PayloadType.Output, encodeFrame(SmuxCommand.PSH, 3, second));
      const all = await collectStream(client, 3, first.length + second.length);
      t.true(all.equals(Buffer.concat([first, second])));
      const info = emulator.session(s.id);
      t.is(info.counters.reconnects, 1);
      t.is(info.counters.resumes, 1);
      t.is(info.counters.webSocketDrops, 1);
      t.deepEqual(
        client.outputSeqs,
        client.outputSeqs.map((_, i) => i + 2),
      );
      t.is(info.agent?.stats.streamsOpened, 1);
    } finally {
      client.stop();
    }
  });
});

test('ToRemoteHost: host is mapped through hostMap and appears in the handshake properties', async (t) => {
  await withSetup({ hostMap: { 'db.internal': '127.0.0.1' } }, async (emulator, ssm, echo) => {
    const out = await ssm.send(
      new StartSessionCommand({
        Target: TARGET,
        DocumentName: DOCUMENT_REMOTE_HOST,
        Parameters: { host: ['db.internal'], portNumber: [String(echo.port)] },
      }),
    );
    const client = new MiniClient(await RawClient.open(out.StreamUrl ?? '', out.TokenValue ?? ''));
    try {
      const hs = await handshake(emulator, client, out.SessionId ?? '');
      t.is(hs.properties['host'], 'db.internal');
      const data = randomBytes(100);
      client.send(
        PayloadType.Output,
        Buffer.concat([encodeFrame(SmuxCommand.SYN, 3), encodeFrame(SmuxCommand.PSH, 3, data)]),
      );
      t.true((await collectStream(client, 3, data.length)).equals(data));
    } finally {
      client.stop();
    }
  });
});

test('TerminateSession flag from the client: the agent flushes, the service sends channel_closed', async (t) => {
  await withSetup({}, async (emulator, ssm, echo) => {
    const s = await startLocal(ssm, echo.port);
    const client = new MiniClient(await RawClient.open(s.url, s.token));
    try {
      await handshake(emulator, client, s.id);
      const ended = waitFor(emulator, 'sessionTerminated', (id) => id === s.id, 10_000);
      client.send(PayloadType.Flag, encodeFlag(FlagCode.TerminateSession));
      const [, reason] = await ended;
      t.is(reason, 'agentTerminated');
      const closed = await client.raw.next((m) => m.messageType === MessageType.ChannelClosed);
      t.is(decodeChannelClosed(closed.payload).output, 'Session terminated by the client');
      t.is(client.unacked.size, 0, 'the flag was acked before the end');
    } finally {
      client.stop();
    }
  });
});

/** Resolve once `condition()` holds, checking after every turn of the event loop; reject after `timeoutMs`. */
function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (condition()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setImmediate(check);
    };
    check();
  });
}

/** The fields a frame record shares with the decoded frame, and the acked number of an ack. */
function describeFrame(m: ClientMessage): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    messageType: m.messageType,
    sequenceNumber: m.sequenceNumber,
    flags: m.flags,
    messageId: m.messageId,
    payloadType: m.payloadType,
    payloadLength: m.payload.length,
  };
  if (m.messageType === MessageType.Acknowledge)
    fields['ackedSequenceNumber'] = decodeAcknowledge(m.payload).acknowledgedMessageSequenceNumber;
  return fields;
}

test("frame log at volume: every frame of a 2 MiB echo at the agent's pace is logged in order with its numbers, MessageId and acked seq, matching the counters", async (t) => {
  t.timeout(90_000);
  const BYTES = 2 * 1024 * 1024;
  // One smux PSH frame per input message, 1024 bytes with its header: the size the daemon sends.
  const PSH_DATA_BYTES = 1016;
  await withSetup({ maxFramesLogged: 100_000 }, async (emulator, ssm, echo) => {
    const s = await startLocal(ssm, echo.port);
    const raw = await RawClient.open(s.url, s.token);
    const sent: Buffer[] = [];
    const send = raw.ws.send.bind(raw.ws);
    raw.ws.send = ((frame: Buffer) => {
      sent.push(frame);
      send(frame);
    }) as typeof raw.ws.send;
    const client = new MiniClient(raw);
    const startedAt = Date.now();
    try {
      await handshake(emulator, client, s.id);
      const data = randomBytes(BYTES);
      client.send(PayloadType.Output, encodeFrame(SmuxCommand.SYN, 3));
      for (let offset = 0; offset < BYTES; offset += PSH_DATA_BYTES) {
        client.send(
          PayloadType.Output,
          encodeFrame(SmuxCommand.PSH, 3, data.subarray(offset, offset + PSH_DATA_BYTES)),
        );
      }
      const echoed = await collectStream(client, 3, BYTES, 60_000);
      t.true(echoed.equals(data), 'echo matches');
      const info = emulator.session(s.id);
      const agent = info.agent;
      if (agent === undefined) throw new Error('no agent');
      // Quiet: everything the client sent is acked, everything the agent sent is acked and its ack processed.
      await until(
        () =>
          client.unacked.size === 0 &&
          agent.unackedCount === 0 &&
          info.counters.clientFramesIn === sent.length,
        'both sides to have everything acked',
      );
      const endedAt = Date.now();

      const frames = info.frames;
      const counters = info.counters;
      const stats = agent.stats;
      t.true(stats.dataMessagesOut > 2000, `${stats.dataMessagesOut} Output messages`);
      t.is(frames.length, counters.clientFramesIn + counters.clientFramesOut, 'one record per frame');
      t.true(frames.every((f) => f.fate === 'relayed' && f.source !== 'service'));
      const toAgent = frames.filter((f) => f.direction === 'toAgent');
      const toClient = frames.filter((f) => f.direction === 'toClient');
      t.is(toAgent.length, counters.clientFramesIn);
      t.is(toClient.length, counters.clientFramesOut);
      t.is(toAgent.length, stats.framesIn);
      t.is(toClient.length, stats.framesOut);
      // Field for field, in order, what the client sent and what it received.
      t.deepEqual(
        toAgent.map(({ at: _at, direction: _d, source: _s, fate: _f, ...rest }) => rest),
        sent.map((frame) => describeFrame(decodeMessage(frame, { verifyDigest: false }))),
      );
      t.deepEqual(
        toClient.map(({ at: _at, direction: _d, source: _s, fate: _f, ...rest }) => rest),
        raw.messages.map(describeFrame),
      );
      const acksOut = toClient.filter((f) => f.messageType === MessageType.Acknowledge);
      const outputs = toClient.filter((f) => f.messageType === MessageType.OutputStreamData);
      const acksIn = toAgent.filter((f) => f.messageType === MessageType.Acknowledge);
      t.is(acksOut.length, stats.acksSent);
      t.is(outputs.length, stats.dataMessagesOut + stats.resends);
      t.is(acksIn.length, stats.acksReceived);
      // Compared as sorted sets: ava compares Sets in insertion order, and under load a message resent out of
      // the agent's not-ready window is acked after later ones.
      const sortedSet = (seqs: (number | undefined)[]): (number | undefined)[] =>
        [...new Set(seqs)].sort((a, b) => (a ?? -1) - (b ?? -1));
      const inputSeqs = sortedSet(
        toAgent.filter((f) => f.messageType === MessageType.InputStreamData).map((f) => f.sequenceNumber),
      );
      t.is(inputSeqs.length, client.nextSeq);
      t.deepEqual(
        sortedSet(acksOut.map((f) => f.ackedSequenceNumber)),
        inputSeqs,
        'every input message acked',
      );
      t.deepEqual(
        sortedSet(acksIn.map((f) => f.ackedSequenceNumber)),
        sortedSet(outputs.map((f) => f.sequenceNumber)),
        'every agent message acked by the client',
      );
      // Acks name the MessageId of the message they ack.
      const inputIds = new Map(
        sent
          .map((frame) => decodeMessage(frame, { verifyDigest: false }))
          .filter((m) => m.messageType === MessageType.InputStreamData)
          .map((m) => [m.sequenceNumber, m.messageId]),
      );
      for (const m of raw.messages) {
        if (m.messageType !== MessageType.Acknowledge) continue;
        const content = decodeAcknowledge(m.payload);
        if (content.acknowledgedMessageId !== inputIds.get(content.acknowledgedMessageSequenceNumber)) {
          t.fail(
            `ack of ${content.acknowledgedMessageSequenceNumber} names ${content.acknowledgedMessageId}`,
          );
          break;
        }
      }
      t.true(
        frames.every(
          (f, i) =>
            f.at >= startedAt && f.at <= endedAt && (i === 0 || f.at >= (frames[i - 1] as { at: number }).at),
        ),
        'timestamps in order, within the run',
      );
    } finally {
      client.stop();
    }
  });
});
