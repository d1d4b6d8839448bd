/**
 * Session-layer fuzz (issue 10 item 2): random and mutated agent frames through a real `TunnelSession`
 * over a real WebSocket on 127.0.0.1. A minimal agent in the test speaks the handshake, acks the
 * client's messages and echoes smux PSH frames; then it sends fuzz frames with valid digests (so they pass
 * the codec and reach the session layer), bit-flipped and truncated frames, random bytes and service
 * messages. After every batch a probe (one sequenced message that must be acked) checks that the session
 * still works or that it ended cleanly with a typed error; every few batches a stream echoes bytes end to
 * end. The process must survive with no uncaught exception or unhandled rejection.
 */
import test from 'ava';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { defaultTuning } from '../../src/config/types.js';
import type { TuningConfig } from '../../src/config/types.js';
import { FlagCode, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import {
  decodeAcknowledge,
  encodeAcknowledge,
  encodeAcknowledgeMessage,
  encodeChannelClosed,
  encodeFlag,
  encodeHandshakeComplete,
  encodeHandshakeRequest,
  sessionTypeAction,
} from '../../src/datachannel/payloads.js';
import { createPrng } from '../../src/emulator/faults.js';
import type { Prng } from '../../src/emulator/faults.js';
import { AwsSessionError, isPfError } from '../../src/errors.js';
import type { Logger, LogMeta } from '../../src/log.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import { TunnelSession } from '../../src/forward/session.js';
import type { SessionEndReason } from '../../src/forward/session.js';
import type { SsmApi } from '../../src/ssm/types.js';
import { forwardConfig } from './fixtures.js';
import { withTimeout } from '../helpers/net.js';

/** Open-session fuzz cases per run (the title carries the total with the handshake cases). */
const OPEN_CASES = 100_000;
/** Sessions whose handshake payloads are fuzzed. */
const HANDSHAKE_CASES = 300;
/** Cases between two probes. */
const BATCH = 250;
/** Batches between two stream echo probes. */
const ECHO_EVERY_BATCHES = 2;
const SEED = Number(process.env['PF_FUZZ_SEED'] ?? 20261201);

const AGENT_VERSION = '3.3.987.0';
const VALID_REQUEST = encodeHandshakeRequest({
  agentVersion: AGENT_VERSION,
  requestedClientActions: [
    sessionTypeAction({
      sessionType: 'Port',
      properties: { portNumber: '5432', type: 'LocalPortForwarding', localPortNumber: '0' },
    }),
  ],
});
const VALID_COMPLETE = encodeHandshakeComplete({ handshakeTimeToComplete: 1000, customerMessage: '' });
/** A flag code no agent sends: the session drops it (the probe and filler message). */
const FILLER = Buffer.from([0xff, 0xff, 0xff, 0xff]);

/** What the minimal agent does with the handshake of one connection. */
interface HandshakePlan {
  request: Buffer;
  complete: Buffer;
}

/** The agent side of one data-channel WebSocket: handshake, acks, smux echo, and a raw `send` for fuzz. */
class MiniAgent {
  /** Next agent sequence number. */
  nextSeq = 0;
  /**
   * Sequence numbers ahead of `nextSeq` that a fuzz frame already occupies at the client (held for
   * reordering); they get a harmless filler, so a probe or echo never lands on them.
   */
  readonly reserved = new Set<number>();
  private readonly acked = new Set<number>();
  private readonly ackWaiters = new Map<number, () => void>();
  private clientNext = 0;
  private readonly clientHeld = new Map<number, ClientMessage>();
  private readonly smux = new SmuxFrameDecoder();
  closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly plan: HandshakePlan,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        // OpenDataChannel: the agent starts the handshake.
        this.sequenced(PayloadType.HandshakeRequest, this.plan.request);
        return;
      }
      this.fromClient(data);
    });
    ws.on('close', () => {
      this.closed = true;
      for (const resolve of this.ackWaiters.values()) resolve();
    });
    ws.on('error', () => undefined);
  }

  /** Send raw bytes as one WebSocket message. */
  send(frame: Buffer, binary = true): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame, { binary });
  }

  /** Encode one sequenced agent message (valid digest) at `seq` without sending it. */
  frameAt(seq: number, payloadType: number, payload: Buffer): Buffer {
    return encodeMessage(
      newMessage({
        messageType: MessageType.OutputStreamData,
        sequenceNumber: seq,
        flags: seq === 0 ? 1 : 0,
        payloadType,
        payload,
      }),
    );
  }

  /** Commit and send one in-order message; returns its sequence number. */
  sequenced(payloadType: number, payload: Buffer): number {
    while (this.reserved.delete(this.nextSeq)) {
      this.send(this.frameAt(this.nextSeq++, PayloadType.Flag, FILLER));
    }
    const seq = this.nextSeq++;
    this.send(this.frameAt(seq, payloadType, payload));
    return seq;
  }

  /** Remember that `frame`, if it decodes as agent data ahead of `nextSeq`, occupies its number. */
  reserveIfAhead(frame: Buffer): void {
    try {
      const message = decodeMessage(frame);
      if (message.messageType === MessageType.OutputStreamData && message.sequenceNumber >= this.nextSeq) {
        this.reserved.add(message.sequenceNumber);
      }
    } catch {
      // Dropped by the client's codec too.
    }
  }

  /** Resolves once the client acked `seq` or the socket closed. */
  acknowledged(seq: number): Promise<void> {
    if (this.acked.has(seq) || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.ackWaiters.set(seq, resolve));
  }

  private fromClient(frame: Buffer): void {
    let message: ClientMessage;
    try {
      message = decodeMessage(frame);
    } catch {
      return;
    }
    if (message.messageType === MessageType.Acknowledge) {
      const seq = decodeAcknowledge(message.payload).acknowledgedMessageSequenceNumber;
      this.acked.add(seq);
      this.ackWaiters.get(seq)?.();
      this.ackWaiters.delete(seq);
      return;
    }
    if (message.messageType !== MessageType.InputStreamData) return;
    this.send(
      encodeAcknowledgeMessage(
        {
          acknowledgedMessageType: message.messageType,
          acknowledgedMessageId: message.messageId,
          acknowledgedMessageSequenceNumber: message.sequenceNumber,
          isSequentialMessage: true,
        },
        Date.now(),
      ),
    );
    if (message.sequenceNumber < this.clientNext) return;
    this.clientHeld.set(message.sequenceNumber, message);
    for (;;) {
      const next = this.clientHeld.get(this.clientNext);
      if (next === undefined) return;
      this.clientHeld.delete(this.clientNext);
      this.clientNext++;
      this.onClientMessage(next);
    }
  }

  private onClientMessage(message: ClientMessage): void {
    if (message.payloadType === PayloadType.HandshakeResponse) {
      this.sequenced(PayloadType.HandshakeComplete, this.plan.complete);
      return;
    }
    if (message.payloadType !== PayloadType.Output) return;
    for (const frame of this.smux.push(message.payload)) {
      if (frame.cmd === SmuxCommand.PSH) {
        this.sequenced(PayloadType.Output, encodeFrame(SmuxCommand.PSH, frame.sid, frame.data));
      }
    }
  }
}

/** A WebSocket server on 127.0.0.1 handing out one MiniAgent per connection. */
async function startMiniService(): Promise<{
  url: string;
  nextAgent(plan: HandshakePlan): Promise<MiniAgent>;
  close(): Promise<void>;
}> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const port = (wss.address() as AddressInfo).port;
  let pending: { plan: HandshakePlan; resolve: (agent: MiniAgent) => void } | undefined;
  wss.on('connection', (ws) => {
    const waiter = pending;
    pending = undefined;
    if (!waiter) {
      ws.close();
      return;
    }
    waiter.resolve(new MiniAgent(ws, waiter.plan));
  });
  return {
    url: `ws://127.0.0.1:${port}/v1/data-channel/fuzz`,
    nextAgent: (plan) => new Promise((resolve) => (pending = { plan, resolve })),
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}

/** An SSM API that grants sessions on the mini service; ResumeSession says the session is gone. */
function miniSsm(url: string): SsmApi & { terminated: number } {
  let n = 0;
  const api = {
    terminated: 0,
    startSession: () =>
      Promise.resolve({ sessionId: `fuzz-${++n}`, tokenValue: 'fuzz-token', streamUrl: url }),
    resumeSession: () =>
      Promise.reject(new AwsSessionError('PF_ERR_SESSION_GONE', 'the fuzz service does not resume')),
    terminateSession: () => {
      api.terminated++;
      return Promise.resolve();
    },
  };
  return api;
}

/** Counts log lines by level (one instance per session); every line is dropped. */
class CountingLogger implements Logger {
  counts = { error: 0, warn: 0, info: 0, debug: 0 };
  readonly debugEnabled = false;
  error(_m: string, _meta?: LogMeta): void {
    this.counts.error++;
  }
  warn(_m: string, _meta?: LogMeta): void {
    this.counts.warn++;
  }
  info(_m: string, _meta?: LogMeta): void {
    this.counts.info++;
  }
  debug(_m: string, _meta?: LogMeta): void {
    this.counts.debug++;
  }
  child(): Logger {
    return this;
  }
}

const tuning: TuningConfig = { ...defaultTuning, handshakeTimeoutMs: 5_000 };

// ---- case generation -----------------------------------------------------------------------------

function int(rnd: Prng, below: number): number {
  return Math.floor(rnd() * below);
}

function bytes(rnd: Prng, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = int(rnd, 256);
  return out;
}

/** Flip, overwrite, truncate or extend a copy of `input` one to four times. */
function mutate(rnd: Prng, input: Buffer): Buffer {
  let out = Buffer.from(input);
  const times = 1 + int(rnd, 4);
  for (let i = 0; i < times; i++) {
    const kind = int(rnd, 4);
    if (out.length === 0 || kind === 3) {
      out = Buffer.concat([out, bytes(rnd, 1 + int(rnd, 8))]);
    } else if (kind === 0) {
      const at = int(rnd, out.length);
      out[at] = (out[at] as number) ^ (1 << int(rnd, 8));
    } else if (kind === 1) {
      out[int(rnd, out.length)] = int(rnd, 256);
    } else {
      out = out.subarray(0, int(rnd, out.length));
    }
  }
  return out;
}

/** Valid payloads of every kind an agent or service produces, to mutate or to misplace. */
const TEMPLATES: Buffer[] = [
  VALID_REQUEST,
  VALID_COMPLETE,
  encodeFlag(FlagCode.ConnectToPortError),
  encodeFlag(FlagCode.DisconnectToPort),
  encodeAcknowledge({
    acknowledgedMessageType: 'input_stream_data',
    acknowledgedMessageId: '11111111-2222-3333-4444-555555555555',
    acknowledgedMessageSequenceNumber: 7,
    isSequentialMessage: true,
  }),
  encodeChannelClosed({
    sessionId: 'fuzz',
    output: 'bye',
    messageId: '11111111-2222-3333-4444-555555555555',
    destinationId: 'fuzz',
    createdDate: 1,
  }),
  Buffer.from('{}'),
  Buffer.from('null'),
  Buffer.from('[1,2,3]'),
  Buffer.from('{"HandshakeTimeToComplete":"soon","CustomerMessage":7}'),
  encodeFrame(SmuxCommand.NOP, 0),
];

/** Payload types other than Output, valid and not. */
function payloadTypeOf(rnd: Prng): number {
  const pick = int(rnd, 10);
  if (pick < 6) {
    const known = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    return known[int(rnd, known.length)] as number;
  }
  if (pick < 9) return 13 + int(rnd, 243);
  return 13 + int(rnd, 0xffff_fff0);
}

function payloadOf(rnd: Prng): Buffer {
  const pick = int(rnd, 10);
  const template = TEMPLATES[int(rnd, TEMPLATES.length)] as Buffer;
  if (pick < 4) return bytes(rnd, int(rnd, 64));
  if (pick < 8) return mutate(rnd, template);
  return template;
}

/** Kinds of case and how often each comes up, per 10 000. */
const KINDS: [kind: string, weight: number][] = [
  ['payload', 4220],
  ['flag', 1800],
  ['mutated', 1500],
  ['truncated', 600],
  ['random', 500],
  ['ack', 500],
  ['service', 400],
  ['reorder', 460],
  ['output', 15],
  ['closed', 5],
];

function kindOf(rnd: Prng): string {
  let r = int(rnd, 10_000);
  for (const [kind, weight] of KINDS) {
    if (r < weight) return kind;
    r -= weight;
  }
  return 'payload';
}

/**
 * Send one fuzz case. The agent's sequence counter stays in step with the client's `expected`: every
 * sequence number used gets one valid, harmless message (a mutated copy goes first, the original after).
 */
function sendCase(agent: MiniAgent, rnd: Prng, counts: Map<string, number>): void {
  const kind = kindOf(rnd);
  counts.set(kind, (counts.get(kind) ?? 0) + 1);
  switch (kind) {
    case 'payload':
      agent.sequenced(payloadTypeOf(rnd), payloadOf(rnd));
      return;
    case 'flag': {
      const length = int(rnd, 9);
      agent.sequenced(
        PayloadType.Flag,
        length === 4 && rnd() < 0.5 ? encodeFlag(int(rnd, 5) as FlagCode) : bytes(rnd, length),
      );
      return;
    }
    case 'mutated':
    case 'truncated': {
      const seq = agent.nextSeq++;
      const original = agent.frameAt(seq, payloadTypeOf(rnd), payloadOf(rnd));
      const bad =
        kind === 'mutated' ? mutate(rnd, original) : original.subarray(0, int(rnd, original.length));
      agent.reserveIfAhead(bad);
      agent.send(bad);
      agent.send(original);
      return;
    }
    case 'random':
      if (rnd() < 0.9) agent.send(bytes(rnd, int(rnd, 300)));
      // Text frames must be UTF-8, or the ws library itself closes the link (1007) before any session code.
      else agent.send(Buffer.from(bytes(rnd, int(rnd, 300)).toString('latin1'), 'utf8'), false);
      return;
    case 'ack': {
      const payload = rnd() < 0.5 ? mutate(rnd, TEMPLATES[4] as Buffer) : bytes(rnd, int(rnd, 80));
      agent.send(
        encodeMessage(
          newMessage({
            messageType: MessageType.Acknowledge,
            sequenceNumber: 0,
            flags: 3,
            payloadType: 0,
            payload,
          }),
        ),
      );
      return;
    }
    case 'service': {
      const types = [
        MessageType.PausePublication,
        MessageType.StartPublication,
        MessageType.AgentSessionState,
        MessageType.InputStreamData,
        'x',
      ];
      const messageType = types[int(rnd, types.length)] as string;
      const payload = payloadOf(rnd);
      agent.send(
        encodeMessage(
          newMessage({ messageType, sequenceNumber: int(rnd, 1000), flags: 0, payloadType: 0, payload }),
        ),
      );
      return;
    }
    case 'reorder': {
      // A message at a sequence number already used (duplicate) or still ahead (held until reached).
      const seq = rnd() < 0.5 ? int(rnd, agent.nextSeq) : agent.nextSeq + 1 + int(rnd, 50);
      const frame = agent.frameAt(seq, payloadTypeOf(rnd), payloadOf(rnd));
      agent.reserveIfAhead(frame);
      agent.send(frame);
      return;
    }
    case 'closed':
      // channel_closed ends the session on purpose, whatever its payload (spec §10.1).
      agent.send(
        encodeMessage(
          newMessage({
            messageType: MessageType.ChannelClosed,
            sequenceNumber: 0,
            flags: 0,
            payloadType: 0,
            payload: rnd() < 0.5 ? (TEMPLATES[5] as Buffer) : mutate(rnd, TEMPLATES[5] as Buffer),
          }),
        ),
      );
      return;
    case 'output': {
      // smux bytes from a broken agent: most fail the session (bad version or command), cleanly.
      agent.sequenced(
        PayloadType.Output,
        rnd() < 0.5 ? bytes(rnd, 1 + int(rnd, 40)) : mutate(rnd, encodeFrame(SmuxCommand.NOP, 0)),
      );
      return;
    }
  }
}

// ---- the run -------------------------------------------------------------------------------------

const END_REASONS: SessionEndReason[] = ['protocol-error', 'handshake-failed', 'channel-closed', 'give-up'];

test.serial(
  `session fuzz: ${OPEN_CASES} open-session cases and ${HANDSHAKE_CASES} handshake cases; the process survives, each session stays usable or fails with a typed error`,
  async (t) => {
    t.timeout(100_000);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => {
      uncaught.push(err);
    };
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    const service = await startMiniService();
    const ssm = miniSsm(service.url);
    const rnd = createPrng(SEED);
    const counts = new Map<string, number>();
    const ends = new Map<string, number>();
    const started = performance.now();
    let sessions = 0;
    let echoes = 0;
    let maxWarnsPerSession = 0;
    let malformedFlags = 0;
    let lateHandshakes = 0;

    const open = async (
      plan: HandshakePlan,
    ): Promise<{ session: TunnelSession; agent: MiniAgent; logger: CountingLogger }> => {
      const logger = new CountingLogger();
      const session = new TunnelSession(forwardConfig({ remotePort: 5432 }), tuning, 0, {
        ssm,
        logger,
        userAgent: 'pf-daemon-fuzz',
      });
      sessions++;
      const agent = service.nextAgent(plan);
      await session.start();
      return { session, agent: await agent, logger };
    };

    /** The session ended: check it ended cleanly, with a typed error. */
    const checkEnded = async (session: TunnelSession, what: string): Promise<void> => {
      await withTimeout(session.closed, 10_000, `${what}: session close`);
      const reason = session.reason ?? 'user';
      ends.set(reason, (ends.get(reason) ?? 0) + 1);
      t.true(END_REASONS.includes(reason), `${what}: ended with reason ${reason}`);
    };
    let lastError: unknown;
    const closedWith = (session: TunnelSession): void => {
      session.once('closed', (_reason: SessionEndReason, err: Error | undefined) => {
        lastError = err;
        if (err !== undefined && !isPfError(err)) t.fail(`untyped session error: ${String(err)}`);
      });
    };

    try {
      // Phase 1: fuzzed handshakes. Each either opens (then closes) or fails start() with a typed error.
      for (let i = 0; i < HANDSHAKE_CASES; i++) {
        const plan =
          i % 2 === 0
            ? {
                request: rnd() < 0.2 ? bytes(rnd, int(rnd, 64)) : mutate(rnd, VALID_REQUEST),
                complete: VALID_COMPLETE,
              }
            : {
                request: VALID_REQUEST,
                complete: rnd() < 0.3 ? bytes(rnd, int(rnd, 64)) : mutate(rnd, VALID_COMPLETE),
              };
        const logger = new CountingLogger();
        const session = new TunnelSession(forwardConfig({ remotePort: 5432 }), tuning, 0, {
          ssm,
          logger,
          userAgent: 'pf-daemon-fuzz',
        });
        sessions++;
        const agentReady = service.nextAgent(plan);
        try {
          await session.start();
          await session.close('user');
          ends.set('opened', (ends.get('opened') ?? 0) + 1);
        } catch (err) {
          if (!isPfError(err)) t.fail(`handshake case ${i}: untyped error ${String(err)}`);
          else ends.set(err.code, (ends.get(err.code) ?? 0) + 1);
        }
        await agentReady;
      }

      // Phase 2: fuzz an open session in batches; replace it whenever it ends.
      let current = await open({ request: VALID_REQUEST, complete: VALID_COMPLETE });
      closedWith(current.session);
      let streamSeq = 0;
      for (let done = 0, batch = 0; done < OPEN_CASES; batch++) {
        const { session, agent, logger } = current;
        for (let i = 0; i < BATCH && done < OPEN_CASES; i++, done++) sendCase(agent, rnd, counts);
        // Probe: start publication (a fuzzed pause may hold the client's data), then one message to ack.
        agent.send(
          encodeMessage(
            newMessage({
              messageType: MessageType.StartPublication,
              sequenceNumber: 0,
              flags: 0,
              payloadType: 0,
              payload: Buffer.alloc(0),
            }),
          ),
        );
        const probe = agent.sequenced(PayloadType.Flag, FILLER);
        await withTimeout(
          Promise.race([agent.acknowledged(probe), session.closed]),
          10_000,
          `probe after case ${done}`,
        );
        const alive = session.state === 'open';
        if (alive && batch % ECHO_EVERY_BATCHES === 0) {
          const stream: Duplex = session.openStream();
          const text = `echo ${++streamSeq}`;
          const echoed = new Promise<string>((resolve, reject) => {
            stream.once('data', (chunk: Buffer) => resolve(chunk.toString()));
            // A stream reset is a clean end only when its session failed, with a typed error.
            stream.once('error', (err: Error) => (isPfError(err) ? resolve('closed') : reject(err)));
          });
          stream.write(text);
          const answer = await withTimeout(
            Promise.race([echoed, session.closed.then(() => 'closed')]),
            10_000,
            `stream echo after case ${done}`,
          );
          if (answer !== 'closed') {
            t.is(answer, text, 'the stream still carries data end to end');
            echoes++;
          }
          stream.destroy();
        }
        if (session.state !== 'open') {
          await checkEnded(session, `after case ${done}`);
          if (lastError !== undefined) t.true(isPfError(lastError), 'the session error is typed');
          maxWarnsPerSession = Math.max(maxWarnsPerSession, logger.counts.warn);
          current = await open({ request: VALID_REQUEST, complete: VALID_COMPLETE });
          closedWith(current.session);
          continue;
        }
        const input = session.stats['input'] as { malformedFlags: number; lateHandshakes: number };
        malformedFlags = Math.max(malformedFlags, input.malformedFlags);
        lateHandshakes = Math.max(lateHandshakes, input.lateHandshakes);
        maxWarnsPerSession = Math.max(maxWarnsPerSession, logger.counts.warn);
      }
      await current.session.close('user');
      const elapsedMs = Math.round(performance.now() - started);
      t.log(
        `seed ${SEED}: ${OPEN_CASES + HANDSHAKE_CASES} cases in ${elapsedMs} ms over ${sessions} sessions; ` +
          `${echoes} stream echoes; kinds ${JSON.stringify(Object.fromEntries(counts))}; ` +
          `ends ${JSON.stringify(Object.fromEntries(ends))}; most warn lines in one session ${maxWarnsPerSession}; ` +
          `most malformed flags in one session ${malformedFlags}, late handshakes ${lateHandshakes}`,
      );
      t.deepEqual(uncaught, [], 'no uncaught exception or unhandled rejection');
      t.true(echoes > 0, 'streams were echoed through fuzzed sessions');
      t.true(malformedFlags > 100, 'malformed flags were dropped without ending the session');
      t.true(maxWarnsPerSession < 40, 'bad input is logged once per kind, not once per message');
    } finally {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
      await service.close();
    }
  },
);
