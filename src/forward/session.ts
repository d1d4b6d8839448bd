/**
 * One SSM port-forwarding session end to end (spec §1, §10.5): StartSession → WebSocket → handshake →
 * open (smux or basic) ⇄ reconnecting (ResumeSession) → closing → closed.
 *
 * Glues the pure layers together: the reliable channel (sequencing, acks, resends) under the smux client
 * session (mux mode) or a single raw relay (basic mode), over a {@link DataChannelConnection} that is
 * replaced on every reconnect while the channel's counters and buffers carry on.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { ForwardConfig, TuningConfig } from '../config/types.js';
import { documentFor, parametersFor } from '../config/types.js';
import { DataChannelConnection, describeStreamUrl } from '../datachannel/connection.js';
import type { DownReason } from '../datachannel/connection.js';
import {
  FlagCode,
  MAX_OUTPUT_PAYLOAD_BYTES,
  PayloadType,
  TERMINATE_FLAG_WAIT_MS,
} from '../datachannel/constants.js';
import { HandshakeMachine, nodeHandshakeTimer } from '../datachannel/handshake.js';
import type { ClientMessage } from '../datachannel/message.js';
import type { ChannelClosed, HandshakeComplete } from '../datachannel/payloads.js';
import { decodeFlag, encodeFlag } from '../datachannel/payloads.js';
import { NOT_READY_PROBE_MS, RELIABLE_TICK_MS, ReliableChannel } from '../datachannel/reliable.js';
import type { ClientModeDecision } from '../datachannel/version.js';
import { AwsSessionError, ProtocolError, TunnelError, describeError, isPfError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  SMUX_KEEPALIVE_INTERVAL_MS,
  SMUX_WRITE_FRAME_DATA_BYTES,
  SESSION_SEND_BUDGET_BYTES,
  STREAM_WRITE_BUFFER_BYTES,
} from '../mux/defaults.js';
import { SmuxClientSession } from '../mux/session.js';
import type { SpillStore } from '../mux/spill.js';
import type { SessionGrant, SsmApi } from '../ssm/types.js';
import {
  API_BACKOFF,
  LINK_STABLE_AFTER_MS,
  RECONNECT_BACKOFF,
  abortable,
  backoffDelayMs,
  delay,
  withDeadline,
} from './backoff.js';
import { BasicRelay } from './basic.js';
import { InputGuard, warnOncePerText } from './input-guard.js';
import { PumpGate } from './pump-gate.js';
import { describeConnectToPortError } from '../targets/destination.js';
import type { SessionStats } from '../stats.js';

/** Session states (spec §10.5). */
export const SessionState = {
  Starting: 'starting',
  Connecting: 'connecting',
  Handshaking: 'handshaking',
  Open: 'open',
  Reconnecting: 'reconnecting',
  Closing: 'closing',
  Closed: 'closed',
} as const;
export type SessionState = (typeof SessionState)[keyof typeof SessionState];

/** Why a session ended (spec §10.5); distinct so exit status and events can tell them apart. */
export type SessionEndReason =
  | 'user'
  | 'idle'
  | 'channel-closed'
  | 'resume-expired'
  | 'handshake-failed'
  | 'give-up'
  | 'api-error'
  | 'protocol-error';

/** The parts of a forward's config one session reads (the keeper's `SessionSpec` is a superset). */
export type TunnelSessionSpec = Pick<
  ForwardConfig,
  'target' | 'remotePort' | 'host' | 'documentName' | 'parameters' | 'reason' | 'keepAlive'
>;

/** What a session needs from outside. */
export interface TunnelSessionDeps {
  ssm: SsmApi;
  logger: Logger;
  /** HTTP User-Agent for the WebSocket upgrade. */
  userAgent: string;
  /**
   * Turns the forward's `target` (any form of `src/targets/spec.ts`) into the id StartSession takes; called
   * at each session start (`src/targets/resolve.ts`). Absent: the target is used as it is.
   */
  resolveTarget?: (target: string) => Promise<string>;
  /** Daemon-wide spill store for slow local readers (mux mode); undefined = memory only. */
  spill?: SpillStore | undefined;
}

/** Bounded attempts for retryable StartSession errors (throttling, 5xx, network). */
const START_SESSION_ATTEMPTS = 6;

/**
 * One SSM session carrying one forward's connections.
 * Events: 'granted' (SessionId: StartSession returned; record it now, the dial may still hang),
 * 'state' (SessionState), 'closed' (SessionEndReason, Error|undefined), 'reconnected' (ms taken),
 * 'destinationRefused' (), 'customerMessage' (text), 'settled' (gone: boolean; after 'closed', once the
 * service session is known to be over or the attempt to end it failed).
 */
export class TunnelSession extends EventEmitter {
  private stateValue: SessionState = SessionState.Starting;
  private grant: SessionGrant | undefined;
  private connection: DataChannelConnection | undefined;
  private readonly clientId = randomUUID();
  private readonly channel: ReliableChannel;
  private smux: SmuxClientSession | undefined;
  /** When the mux pump runs (`src/forward/pump-gate.ts`); set with {@link smux}. */
  private pumpGate: PumpGate | undefined;
  private basic: BasicRelay | undefined;
  /** The handshake (spec §6); its decision sets the mode once the request is answered. */
  private readonly handshake: HandshakeMachine;
  private tickTimer: NodeJS.Timeout | undefined;
  /** Runs the reliable channel's post-handshake not-ready probe (spec §6.4) until it reports it is over. */
  private notReadyTimer: NodeJS.Timeout | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private openWaiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private endReason: SessionEndReason | undefined;
  private terminateFlagSeq: number | undefined;
  private closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  /** ConnectToPortError flags not yet paired with a stream's FIN. */
  private unpairedRefusals = 0;
  /**
   * Mux streams whose SYN is still in the smux send queue, in open order (the scheduler pulls new streams'
   * SYNs in that order, src/mux/scheduler.ts), each settled with the sequence number of the Output message
   * its SYN went out in. Bounded by the open streams.
   */
  private readonly synsQueued: { id: number; pulled: (seq: number) => void }[] = [];
  /** Per stream opened: the sequence number of the message carrying its open (see {@link whenStreamOpened}). */
  private readonly openSeqs = new WeakMap<Duplex, Promise<number>>();
  /** Successful ResumeSession reconnects. */
  reconnects = 0;
  /** Time from link loss to link up of the latest successful reconnect, ms; -1 before the first. */
  lastReconnectMs = -1;
  /** Monotonic time (performance.now) the session opened, ms; -1 until open. */
  openedAt = -1;
  /** Wall-clock time the session was created, ms since the epoch (for status output). */
  readonly createdAt = Date.now();
  /** Wall-clock time the latest reconnect completed, ms since the epoch; -1 before the first. */
  lastReconnectAt = -1;
  /** The latest error (link loss, failed resume attempt, failure) and its wall-clock time, for status. */
  private lastError: { message: string; at: number } | undefined;
  /** Why {@link close} was called, while it runs. */
  private closingReason: SessionEndReason | undefined;
  /** A reconnect loop is running (one at a time). */
  private reconnecting = false;
  /** 'settled' was emitted. */
  private settled = false;
  /** Counts and logs (once per kind) agent input that is wrong at the session layer. */
  private readonly input: InputGuard;
  /** The concrete target of this session once resolved (for logs and `status`). */
  private resolvedTargetValue: string | undefined;
  /**
   * The current resume episode (issue 10 item 3): the start of the budget, the attempts made, and the
   * streak of attempts that gave no productive link (it drives the backoff). All carry across flaps and
   * reset only once a resumed link has stayed up {@link LINK_STABLE_AFTER_MS}.
   */
  private resumeEpisode: { startedAt: number; attempts: number; streak: number } | undefined;
  /** Monotonic time the latest resumed link proved alive, ms; -1 before any. */
  private linkProvenAt = -1;
  /** Acks received plus agent messages delivered when the latest resumed link proved alive. */
  private linkProgressMark = -1;

  constructor(
    private readonly forward: TunnelSessionSpec,
    private readonly tuning: TuningConfig,
    private readonly boundLocalPort: number,
    private readonly deps: TunnelSessionDeps,
  ) {
    super();
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    this.input = new InputGuard(deps.logger);
    this.handshake = new HandshakeMachine({
      clientVersion: tuning.clientVersion,
      timeoutMs: tuning.handshakeTimeoutMs,
      send: (payloadType, payload) => this.channel.send(payloadType, payload),
      onOpen: (decision, complete) => this.onOpen(decision, complete),
      onFailed: (err) => this.failSoon('handshake-failed', err),
      onInput: (kind, text) => this.input.note(kind, text),
      timer: nodeHandshakeTimer,
      logger: deps.logger,
    });
    this.channel = new ReliableChannel(
      {
        sendWindowMessages: tuning.sendWindowMessages,
        reorderLimitMessages: tuning.reorderLimitMessages,
        giveUpMs: tuning.giveUpMs,
      },
      {
        now: () => performance.now(),
        deliver: (m) => this.deliver(m),
        acked: (seq) => {
          if (seq === this.terminateFlagSeq) this.emit('terminateAcked');
          this.basic?.acked(seq, this.channel.highestReceivedSequence);
        },
        logger: warnOncePerText(deps.logger.child('channel')),
      },
    );
    this.channel.on('drain', () => this.pump());
    this.channel.on('resume', () => this.pump());
    this.channel.on('channelClosed', (closed: ChannelClosed) => this.onChannelClosed(closed));
    this.channel.on('protocolError', (err: ProtocolError) =>
      this.input.note('malformedFrames', `dropped a malformed message: ${describeError(err)}`),
    );
    this.channel.on('unknownMessage', (type: string) => this.log.debug(`ignored message type ${type}`));
    this.channel.on('stalled', () => {
      this.failSoon(
        'give-up',
        new ProtocolError(
          'PF_ERR_WINDOW_STALLED',
          'no acknowledgement progress, or publication paused, for the give-up period; agent stalled',
        ),
      );
    });
    this.channel.on('wedged', (expected: number, buffered: number, sinceMs: number) => {
      void this.fail(
        'give-up',
        new ProtocolError(
          'PF_ERR_RECEIVE_WEDGED',
          `agent message ${expected} missing for ${Math.round(sinceMs)} ms while ${buffered} later ones wait; the agent no longer resends it`,
        ),
      );
    });
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  /** Current state. */
  get state(): SessionState {
    return this.stateValue;
  }

  /** SessionId once StartSession succeeded. */
  get sessionId(): string | undefined {
    return this.grant?.sessionId;
  }

  /** The target id StartSession was called with (`i-…`, `ecs:…`), once resolved. */
  get resolvedTarget(): string | undefined {
    return this.resolvedTargetValue;
  }

  /** `mux` or `basic` once open. */
  get mode(): 'mux' | 'basic' | undefined {
    const decision = this.handshake.decision;
    if (!decision) return undefined;
    return decision.mux ? 'mux' : 'basic';
  }

  /** The session's branch of the stats tree (`src/stats.ts`): a fresh snapshot per read. */
  get stats(): SessionStats {
    const mux = this.smux ? this.smux.stats : null;
    return {
      id: this.sessionId ?? null,
      mode: this.mode ?? null,
      state: this.stateValue,
      startedAt: new Date(this.createdAt).toISOString(),
      ageMs: Date.now() - this.createdAt,
      reconnects: this.reconnects,
      lastReconnectAt: this.lastReconnectAt < 0 ? null : new Date(this.lastReconnectAt).toISOString(),
      lastReconnectMs: this.lastReconnectMs < 0 ? null : this.lastReconnectMs,
      resentMessages: this.channel.stats.resends,
      unackedMessages: this.channel.unacked,
      bufferedUpBytes: mux?.outgoingBufferedBytes ?? 0,
      bufferedDownBytes: mux?.receiveBufferedBytes ?? 0,
      reorderBufferedMessages: this.channel.reorderBuffered,
      lastError: this.lastError
        ? { message: this.lastError.message, at: new Date(this.lastError.at).toISOString() }
        : null,
      channel: { ...this.channel.stats },
      mux,
      basic: this.basic ? this.basic.stats : null,
      input: { ...this.input.stats },
    };
  }

  /** Remember the latest error for status output (one line; logs stay where they are). */
  private noteError(message: string): void {
    this.lastError = { message, at: Date.now() };
  }

  /** Resolves once the session is closed. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  private setState(state: SessionState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    this.emit('state', state);
  }

  /**
   * StartSession, connect and handshake. Resolves when the session is open.
   * @throws AwsSessionError for API failures, TunnelError/ProtocolError for connect/handshake failures.
   */
  async start(): Promise<void> {
    try {
      this.grant = await this.startSessionWithRetry();
    } catch (err) {
      this.finish('api-error');
      throw err;
    }
    // Recorded (ledger) before anything else can hang: the dial below may never complete.
    this.emit('granted', this.grant.sessionId);
    if (this.endReason !== undefined) {
      // close() won the race with StartSession's answer: the new session must not stay open.
      await this.terminateViaApi(this.grant.sessionId);
      throw new TunnelError('PF_ERR_SESSION_CLOSED', `session closed while starting (${this.endReason})`);
    }
    this.log.debug(
      `session ${this.grant.sessionId} started for ${this.resolvedTargetValue ?? this.forward.target}:${this.forward.remotePort}`,
    );
    const opened = new Promise<void>((resolve, reject) => (this.openWaiter = { resolve, reject }));
    // Rejections before the await below (connect failure) must not surface as unhandled.
    opened.catch(() => undefined);
    this.tickTimer = setInterval(
      () => this.guard('resend scan', () => this.channel.tick()),
      RELIABLE_TICK_MS,
    );
    this.tickTimer.unref();
    try {
      this.setState(SessionState.Connecting);
      await this.connect(this.grant);
      this.setState(SessionState.Handshaking);
      this.handshake.start();
      await opened;
    } catch (err) {
      await this.fail(
        isPfError(err) && err.domain === 'protocol' ? 'handshake-failed' : 'api-error',
        err as Error,
      );
      throw err;
    }
  }

  private async startSessionWithRetry(): Promise<SessionGrant> {
    const target = this.deps.resolveTarget
      ? await this.deps.resolveTarget(this.forward.target)
      : this.forward.target;
    this.resolvedTargetValue = target;
    const request = {
      target,
      documentName: documentFor(this.forward),
      parameters: parametersFor(this.forward, this.boundLocalPort),
      ...(this.forward.reason ? { reason: this.forward.reason } : {}),
    };
    for (let attempt = 0; ; attempt++) {
      const call = this.deps.ssm.startSession(request);
      try {
        // close() must not wait for a hung API call (a proxy that never answers).
        return await abortable(call, this.abort.signal);
      } catch (err) {
        if (this.abort.signal.aborted) {
          // Abandoned, not cancelled: a session granted after close() is terminated at once.
          call.then(
            (late) => void this.terminateViaApi(late.sessionId),
            () => undefined,
          );
          throw err;
        }
        if (!(err instanceof AwsSessionError) || !err.retryable || attempt + 1 >= START_SESSION_ATTEMPTS)
          throw err;
        const wait = backoffDelayMs(API_BACKOFF, attempt);
        this.log.warn(`StartSession failed (${describeError(err)}); retrying in ${wait} ms`);
        await delay(wait, this.abort.signal);
      }
    }
  }

  /**
   * Dial one data-channel WebSocket and link it to the reliable channel. `connectTimeoutMs` is one deadline
   * over the whole dial (URL signing, proxy CONNECT, TLS, upgrade, OpenDataChannel); close() aborts it.
   * @throws TunnelError `PF_ERR_CONNECT` on failure, timeout or abort.
   */
  private async connect(
    grant: SessionGrant,
    connectTimeoutMs = this.tuning.connectTimeoutMs,
  ): Promise<DataChannelConnection> {
    const dialStartedAt = performance.now();
    // SigV4 on the upgrade, as recent official clients send it (spec §3.1); {} when not possible.
    const headers =
      (await withDeadline(
        Promise.resolve(this.deps.ssm.signStreamUrl?.(grant.streamUrl)),
        connectTimeoutMs,
        () => new TunnelError('PF_ERR_CONNECT', `signing the StreamUrl took over ${connectTimeoutMs} ms`),
        this.abort.signal,
      )) ?? {};
    const connection = new DataChannelConnection(
      {
        streamUrl: grant.streamUrl,
        tokenValue: grant.tokenValue,
        clientId: this.clientId,
        clientVersion: this.tuning.clientVersion,
        connectTimeoutMs: Math.max(1, Math.round(connectTimeoutMs - (performance.now() - dialStartedAt))),
        pingIntervalMs: this.tuning.pingIntervalMs,
        livenessTimeoutMs: this.tuning.livenessTimeoutMs,
        userAgent: this.deps.userAgent,
        headers,
        now: () => performance.now(),
      },
      this.log.child('ws'),
    );
    await connection.open(this.abort.signal);
    if (!connection.isOpen) {
      throw new TunnelError('PF_ERR_CONNECT', 'data channel closed right after OpenDataChannel');
    }
    this.connection = connection;
    connection.onFrame = this.receiveFrame;
    connection.on('down', (reason: DownReason, detail: string) =>
      this.guard('link loss', () => this.onLinkDown(connection, reason, detail)),
    );
    // Bytes still in the WebSocket count against the window; timers start when a frame left the socket.
    this.channel.attach({
      send: (frame, onWritten) => connection.send(frame, onWritten),
      queuedBytes: () => connection.bufferedAmount,
    });
    this.log.debug(`connected to ${describeStreamUrl(grant.streamUrl)}`);
    return connection;
  }

  /**
   * Resolve once `connection` proves the service kept it (a frame or a pong after OpenDataChannel, see
   * the connection's 'alive' event); reject when it goes down first, after `ms`, or on close().
   */
  private proofOfLife(connection: DataChannelConnection, ms: number): Promise<void> {
    if (connection.alive) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        connection.off('alive', onAlive);
        connection.off('down', onDown);
        this.abort.signal.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const onAlive = (): void => done();
      const onDown = (_reason: DownReason, detail: string): void =>
        done(new TunnelError('PF_ERR_CONNECT', `data channel closed before any sign of life (${detail})`));
      const onAbort = (): void => done(new TunnelError('PF_ERR_SESSION_CLOSED', 'session closed'));
      const timer = setTimeout(() => {
        done(new TunnelError('PF_ERR_CONNECT', `no frame or pong within ${ms} ms of OpenDataChannel`));
        connection.terminate('liveness', 'no sign of life after OpenDataChannel');
      }, ms);
      connection.on('alive', onAlive);
      connection.on('down', onDown);
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  // ---- incoming --------------------------------------------------------------------------------

  /**
   * Every frame of the current connection, guarded like {@link guard} but without a closure per frame
   * (issue 16: this runs once per message).
   */
  private readonly receiveFrame = (frame: Buffer): void => {
    try {
      this.channel.receive(frame);
    } catch (err) {
      this.internalError('frame', err);
    }
  };

  /**
   * Reliable-channel delivery of one in-order message; false refuses it (not acked, resent later).
   * Reached from the network (a frame) and from local sockets (retryDelivery on drain): an exception
   * here fails this session only; the message counts as consumed so the channel does not offer it again.
   */
  private deliver(message: ClientMessage): boolean {
    try {
      return this.dispatch(message);
    } catch (err) {
      this.internalError(
        `delivery of ${message.payloadType === PayloadType.Output ? 'Output' : `payload type ${message.payloadType}`}`,
        err,
      );
      return true;
    }
  }

  private dispatch(message: ClientMessage): boolean {
    switch (message.payloadType) {
      case PayloadType.Output:
        // Basic mode: Output of a connection that has ended is consumed and dropped (spec §9.3, basic.ts).
        if (this.basic?.discards(message.sequenceNumber, message.payload.length)) return true;
        return this.deliverOutput(message.payload);
      case PayloadType.HandshakeRequest:
        this.handshake.onRequest(message.payload);
        return true;
      case PayloadType.HandshakeComplete:
        this.handshake.onComplete(message.payload);
        return true;
      case PayloadType.Flag:
        this.onFlag(message.payload);
        return true;
      default:
        this.input.note(
          'unexpectedPayloadTypes',
          `dropped a message of payload type ${message.payloadType} that no agent sends to a client`,
        );
        return true;
    }
  }

  /**
   * Mux mode never refuses (spec §9.6): a refusal stops every stream of the session and, against the agent's
   * head-only resend, wedges it. The smux session keeps a slow reader's bytes in memory, then in the spill store.
   */
  private deliverOutput(payload: Buffer): boolean {
    if (this.smux) {
      this.smux.receive(payload);
      return true;
    }
    if (this.basic) return this.basic.deliver(payload);
    this.log.warn(`discarded ${payload.length} bytes of Output received before the handshake completed`);
    return true;
  }

  /**
   * The handshake completed (spec §6.3; `src/datachannel/handshake.ts` decided the mode and drops any later
   * handshake message): set up smux or basic mode and open the session.
   */
  private onOpen(decision: ClientModeDecision, complete: HandshakeComplete): void {
    if (complete.customerMessage) {
      this.log.info(`agent message: ${complete.customerMessage}`);
      this.emit('customerMessage', complete.customerMessage);
    }
    if (decision.mux) this.setUpMux(decision);
    else this.setUpBasic();
    // The agent sets up its port plugin now and ignores our first Output until it is done (spec §6.4): probe
    // it quickly, so the connection that started this session waits for the agent, not for the RTO floor.
    this.channel.expectNotReady();
    this.notReadyTimer = setInterval(
      () =>
        this.guard('not-ready probe', () => {
          if (!this.channel.probeNotReady()) clearInterval(this.notReadyTimer);
        }),
      NOT_READY_PROBE_MS,
    );
    this.notReadyTimer.unref();
    this.setState(SessionState.Open);
    this.openedAt = performance.now();
    // The one info line of a session's start (issue 13: one line per session event).
    this.log.info(
      `session ${this.sessionId} open (${this.mode} mode) to ${this.forward.host ?? 'localhost'}:${this.forward.remotePort} via ${this.forward.target} after ${Date.now() - this.createdAt} ms`,
    );
    this.openWaiter?.resolve();
    this.openWaiter = undefined;
  }

  /** A Flag from the agent (spec §9.5). A payload that is not 4 bytes is dropped and counted. */
  private onFlag(payload: Buffer): void {
    let flag: number;
    try {
      flag = decodeFlag(payload);
    } catch (err) {
      this.input.note('malformedFlags', `dropped a malformed Flag: ${describeError(err)}`);
      return;
    }
    if (flag === FlagCode.ConnectToPortError) {
      this.log.warn(
        describeConnectToPortError(this.forward.host, this.forward.remotePort, this.forward.documentName),
      );
      this.unpairedRefusals++;
      this.emit('destinationRefused');
    } else {
      this.input.note('unknownFlags', `dropped flag ${flag}, which no agent sends to a client`);
    }
  }

  private setUpMux(decision: ClientModeDecision): void {
    const smux = new SmuxClientSession(
      {
        streamReceiveBufferBytes: this.tuning.streamReceiveBufferBytes,
        sessionReceiveBufferBytes: this.tuning.sessionReceiveBufferBytes,
        streamBacklogLimitBytes: this.tuning.streamBacklogLimitBytes,
        streamWriteBufferBytes: STREAM_WRITE_BUFFER_BYTES,
        sendBudgetBytes: SESSION_SEND_BUDGET_BYTES,
        maxFrameDataBytes: SMUX_WRITE_FRAME_DATA_BYTES,
      },
      { logger: this.log.child('mux'), spill: this.deps.spill },
    );
    // Reached from local sockets (writes, reads making room): guarded like the network entry points. The
    // gate runs the pump at once on an idle link and packs the frames of one loop iteration under load.
    const gate = new PumpGate({
      busy: () => this.channel.unacked > 0,
      run: this.pumpGuarded,
      defer: setImmediate,
    });
    this.pumpGate = gate;
    smux.on('outgoing', () => gate.request());
    smux.on('error', (err: Error) => this.failSoon('protocol-error', err));
    this.smux = smux;
    const keepAliveMs = decision.smuxKeepAlive
      ? SMUX_KEEPALIVE_INTERVAL_MS
      : this.forward.keepAlive
        ? this.tuning.keepAliveIntervalMs
        : 0;
    if (keepAliveMs > 0) {
      this.keepAliveTimer = setInterval(() => this.guard('keep-alive', () => smux.sendNop()), keepAliveMs);
      this.keepAliveTimer.unref();
    }
  }

  private setUpBasic(): void {
    this.basic = new BasicRelay({
      send: (payload) => this.channel.send(PayloadType.Output, payload),
      sendFlag: (flag) => {
        const seq = this.channel.nextSendSequence;
        this.channel.send(PayloadType.Flag, encodeFlag(flag));
        return seq;
      },
      retryDelivery: () => this.channel.retryDelivery(),
      logger: this.log.child('basic'),
    });
    this.channel.on('drain', () => this.basic?.resume());
  }

  // ---- outgoing --------------------------------------------------------------------------------

  /**
   * smux bytes go straight into each Output frame: one allocation per message, no payload copy (issue 7).
   * One function for the session's life, not one per {@link pump} call (issue 16: a bulk upload pumps once
   * per ack).
   */
  private readonly fillOutput = (target: Buffer, offset: number, maxBytes: number): number =>
    this.smux === undefined ? 0 : this.smux.pullOutgoingInto(target, offset, maxBytes);

  /** {@link pump} guarded like {@link guard}, one function for the session's life (it runs per local write burst). */
  private readonly pumpGuarded = (): void => {
    try {
      this.pump();
    } catch (err) {
      this.internalError('send', err);
    }
  };

  /** Move smux bytes into Output messages while the send window has room (spec §9.6; no sleeps). */
  private pump(): void {
    const smux = this.smux;
    if (!smux) return;
    while (smux.hasOutgoing && this.channel.canSend) {
      if (this.channel.sendFrom(PayloadType.Output, MAX_OUTPUT_PAYLOAD_BYTES, this.fillOutput) === 0) break;
      if (this.synsQueued.length > 0) this.notePulledSyns(smux, this.channel.nextSendSequence - 1);
    }
  }

  /**
   * The message `seq` was just filled: settle the queued SYNs at the head of the list that it took. Only the
   * head is looked at (SYNs leave in open order); should one leave out of order it is settled with a later
   * message, which still bounds it from above, so a waiter waits longer, never too little.
   */
  private notePulledSyns(smux: SmuxClientSession, seq: number): void {
    const queued = this.synsQueued;
    let done = 0;
    while (done < queued.length && !smux.synQueued((queued[done] as { id: number }).id)) {
      (queued[done] as { pulled: (seq: number) => void }).pulled(seq);
      done++;
    }
    if (done > 0) queued.splice(0, done);
  }

  /**
   * Resolves once the agent has consumed (acked, spec §5, §6.4) the message that carried `stream`'s open:
   * in mux mode the Output message its smux SYN went out in, after which the agent dials the destination
   * (spec §9.4) and a refusal follows as ConnectToPortError. In basic mode there is no open message (the
   * agent's connection belongs to the session, spec §9.3): it resolves once every message sent before the
   * call is acked, i.e. the agent is past its not-ready window and has taken whatever ended the previous
   * connection. Rejects with `PF_ERR_STREAM_RESET` if the stream closes first (a session that ends closes
   * its streams). For a stream this session did not open it resolves like basic mode.
   */
  whenStreamOpened(stream: Duplex): Promise<void> {
    const openSeq = this.openSeqs.get(stream) ?? Promise.resolve(this.channel.nextSendSequence - 1);
    const channel = this.channel;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const onClose = (): void => {
        if (settled) return;
        settled = true;
        reject(new TunnelError('PF_ERR_STREAM_RESET', 'the stream closed before the agent took its open'));
      };
      if (stream.closed || stream.destroyed) {
        onClose();
        return;
      }
      stream.once('close', onClose);
      void openSeq
        .then((seq) => channel.whenAckedThrough(seq))
        .then(() => {
          if (settled) return;
          settled = true;
          stream.off('close', onClose);
          resolve();
        });
    });
  }

  /**
   * A stream for one local connection, the same Duplex in both modes: an smux stream (mux mode), or a
   * place in the basic relay's queue, served when the connections before it have ended (basic mode).
   * @throws TunnelError `PF_ERR_SESSION_CLOSED` when the session is not open, `PF_ERR_QUEUE_FULL` when
   * a basic session's queue is full.
   */
  openStream(): Duplex {
    const usable = this.stateValue !== SessionState.Closing && this.stateValue !== SessionState.Closed;
    if (usable && this.smux) {
      const stream = this.smux.openStream();
      // The SYN waits one poll pass for the client's first bytes, to share their message (pump-gate.ts).
      this.pumpGate?.holdForFirstData();
      // Its SYN is queued now; the pump settles this with the message that carries it.
      this.openSeqs.set(
        stream,
        new Promise<number>((pulled) => this.synsQueued.push({ id: stream.id, pulled })),
      );
      return stream;
    }
    if (usable && this.basic) return this.basic.open();
    throw new TunnelError('PF_ERR_SESSION_CLOSED', 'session is not open for new streams');
  }

  /** Consume one unpaired ConnectToPortError; true if there was one. */
  takeDestinationRefusal(): boolean {
    if (this.unpairedRefusals === 0) return false;
    this.unpairedRefusals--;
    return true;
  }

  /** The basic-mode relay (basic mode only). */
  get basicRelay(): BasicRelay | undefined {
    return this.basic;
  }

  /** Open smux streams (0 in basic mode). */
  get streamCount(): number {
    return this.smux?.streamCount ?? 0;
  }

  // ---- link loss and reconnect (spec §10.3) ------------------------------------------------------

  /**
   * The data-channel WebSocket went down. While open (or already reconnecting) this starts the resume loop
   * (spec §10.3); while closing it only ends the wait for the TerminateSession flag's ack; before the
   * session was ever open it is a start-up failure.
   */
  private onLinkDown(connection: DataChannelConnection, reason: DownReason, detail: string): void {
    if (connection !== this.connection) return;
    this.channel.detach();
    this.connection = undefined;
    if (reason === 'closed-by-us' || this.endReason !== undefined) return;
    switch (this.stateValue) {
      case SessionState.Open:
      case SessionState.Reconnecting:
        this.log.warn(`data channel down (${detail}); resuming session`);
        this.noteError(`data channel down: ${detail}`);
        if (!this.reconnecting) this.reconnect().catch((err: unknown) => this.internalError('resume', err));
        return;
      case SessionState.Closing:
        this.emit('linkLost');
        return;
      default:
        this.failSoon(
          'handshake-failed',
          new TunnelError('PF_ERR_CONNECT', `data channel lost before open: ${detail}`),
        );
    }
  }

  /**
   * ResumeSession loop (spec §10.3): fresh token and StreamUrl, new WebSocket, same ClientId and sequence
   * state; the reliable channel resends every un-acked message on attach. Exponential backoff with full jitter
   * between attempts (250 ms ×2, ≤ 10 s), all bounded by `resumeBudgetMs` (a dial never outlives the budget).
   * Ends the session when the budget is spent ('give-up'), when the session no longer exists
   * ('resume-expired') or on a non-retryable API error ('api-error'). Emits 'reconnected' with the time taken.
   */
  private async reconnect(): Promise<void> {
    this.reconnecting = true;
    try {
      await this.reconnectLoop();
    } finally {
      this.reconnecting = false;
    }
  }

  private async reconnectLoop(): Promise<void> {
    this.setState(SessionState.Reconnecting);
    const startedAt = performance.now();
    // A link that stayed up long enough ends the episode; a flap continues it (backoff and budget survive).
    if (this.linkProvenAt >= 0 && startedAt - this.linkProvenAt >= LINK_STABLE_AFTER_MS) {
      this.resumeEpisode = undefined;
    }
    const episode = (this.resumeEpisode ??= { startedAt, attempts: 0, streak: 0 });
    // A resumed link that carried traffic (acks, agent data) earns one immediate retry: the agent keeps
    // what it reads while we are away and resends it one message per scan, so a gap is expensive. A link
    // that only answered a ping, or died before proving anything, lengthens the backoff streak instead.
    let immediate = episode.streak === 0 || this.linkWasProductive();
    if (episode.attempts > 0 && !this.linkWasProductive()) episode.streak++;
    this.linkProgressMark = -1;
    const deadline = episode.startedAt + this.tuning.resumeBudgetMs;
    while (this.endReason === undefined) {
      const attempt = episode.attempts;
      if (!immediate) {
        const wait = Math.min(
          backoffDelayMs(RECONNECT_BACKOFF, Math.max(0, episode.streak - 1)),
          Math.max(0, deadline - performance.now()),
        );
        try {
          await delay(wait, this.abort.signal);
        } catch {
          return;
        }
      }
      immediate = false;
      const remainingMs = deadline - performance.now();
      if (remainingMs <= 0) break;
      episode.attempts++;
      try {
        const sessionId = this.grant?.sessionId ?? '';
        // The SDK retries throttling on its own; the budget bounds the whole call, retries included.
        const fresh = await withDeadline(
          this.deps.ssm.resumeSession(sessionId),
          remainingMs,
          () => new TunnelError('PF_ERR_SESSION_CLOSED', 'ResumeSession outlived the resume budget'),
          this.abort.signal,
        );
        // Use the fresh StreamUrl (its cell may change); fall back to the old one only if empty (spec §10.3).
        this.grant = { ...fresh, streamUrl: fresh.streamUrl || (this.grant?.streamUrl ?? '') };
        if (this.endReason !== undefined) return;
        const dialStartedAt = performance.now();
        const dialMs = Math.max(1, Math.min(this.tuning.connectTimeoutMs, deadline - dialStartedAt));
        const connection = await this.connect(this.grant, dialMs);
        if (this.endReason !== undefined) {
          connection.close();
          return;
        }
        // Accepted is not resumed: a rejected token looks like a socket closed right after
        // OpenDataChannel. Only a frame or pong counts, within what is left of the dial deadline.
        await this.proofOfLife(
          connection,
          Math.max(1, Math.round(dialMs - (performance.now() - dialStartedAt))),
        );
        if (this.endReason !== undefined) return;
        this.linkProvenAt = performance.now();
        this.linkProgressMark = this.progressCount();
        this.reconnects++;
        const took = Math.round(this.linkProvenAt - startedAt);
        this.lastReconnectMs = took;
        this.lastReconnectAt = Date.now();
        this.setState(SessionState.Open);
        this.log.info(
          `session ${sessionId} resumed after ${took} ms (attempt ${attempt + 1} since the link became unstable)`,
        );
        this.emit('reconnected', took);
        this.pump();
        return;
      } catch (err) {
        if (isPfError(err, 'PF_ERR_SESSION_GONE')) {
          await this.fail('resume-expired', err as Error);
          return;
        }
        if (err instanceof AwsSessionError && !err.retryable) {
          await this.fail('api-error', err);
          return;
        }
        if (this.endReason !== undefined) return;
        episode.streak++;
        this.log.warn(`resume attempt ${attempt + 1} failed: ${describeError(err)}`);
        this.noteError(`resume attempt ${attempt + 1} failed: ${describeError(err)}`);
      }
    }
    if (this.endReason === undefined) {
      await this.fail(
        'give-up',
        new TunnelError(
          'PF_ERR_SESSION_CLOSED',
          `could not resume within ${this.tuning.resumeBudgetMs} ms (resumeBudgetMs; ${episode.attempts} attempt(s) since the link became unstable)`,
        ),
      );
    }
  }

  // ---- guards ------------------------------------------------------------------------------------

  /**
   * Run session code reached from the network or a timer. An exception (a bug, or input no check foresaw)
   * fails this session with `PF_ERR_SESSION_INTERNAL`; it never reaches the `ws` or timer callback, where
   * it would end the process and every other forward with it.
   */
  private guard(where: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internalError(where, err);
    }
  }

  private internalError(where: string, err: unknown): void {
    this.input.note('internalErrors', `unexpected error in ${where}: ${describeError(err)}`);
    this.failSoon(
      'protocol-error',
      new TunnelError('PF_ERR_SESSION_INTERNAL', `unexpected error in ${where}: ${describeError(err)}`, {
        cause: err,
      }),
    );
  }

  /** {@link fail} from a callback that cannot await it; a failure while failing is logged, not thrown. */
  private failSoon(reason: SessionEndReason, err: Error): void {
    this.fail(reason, err).catch((failure: unknown) =>
      this.log.error(
        `session ${this.sessionId ?? '(not started)'} did not end cleanly: ${describeError(failure)}`,
      ),
    );
  }

  /** Acks received plus agent messages delivered so far (a link's traffic is the difference). */
  private progressCount(): number {
    return this.channel.stats.acksReceived + this.channel.expectedReceiveSequence;
  }

  /** Whether the latest resumed link carried traffic after it proved alive. */
  private linkWasProductive(): boolean {
    return this.linkProgressMark >= 0 && this.progressCount() > this.linkProgressMark;
  }

  // ---- ending ------------------------------------------------------------------------------------

  private onChannelClosed(closed: ChannelClosed): void {
    const detail = closed.output ? `: ${closed.output}` : '';
    // While closing, channel_closed is the answer to our own TerminateSession, not the service's doing.
    if (this.stateValue === SessionState.Closing)
      this.log.debug(`session ${this.sessionId} closed as asked${detail}`);
    else this.log.info(`session ${this.sessionId} closed by the service${detail}`);
    this.emit('channelClosed', closed);
    // channel_closed answering our own TerminateSession flag ends the session for our reason, not the service's.
    this.finish(
      this.closingReason ?? 'channel-closed',
      new TunnelError('PF_ERR_SESSION_CLOSED', closed.output || 'channel closed by the service'),
    );
    this.settle(true);
  }

  /** End the session on an error; best-effort TerminateSession so the service does not keep it open. */
  private async fail(reason: SessionEndReason, err: Error): Promise<void> {
    if (this.endReason !== undefined) return;
    this.log.error(`session ${this.sessionId ?? '(not started)'} failed: ${describeError(err)}`);
    this.noteError(describeError(err));
    this.openWaiter?.reject(err);
    this.openWaiter = undefined;
    const sessionId = this.sessionId;
    this.finish(reason, err);
    if (!sessionId) return;
    // resume-expired: the service said the session no longer exists.
    this.settle(reason === 'resume-expired' || (await this.terminateViaApi(sessionId)));
  }

  /**
   * Orderly stop (spec §10.4): TerminateSession flag when the agent understands it, wait ≤ 5 s for its
   * ack or channel_closed, else the TerminateSession API; then close the WebSocket with a close frame.
   */
  async close(reason: SessionEndReason = 'user'): Promise<void> {
    if (this.endReason !== undefined) return this.closedPromise;
    const sessionId = this.sessionId;
    this.closingReason = reason;
    this.setState(SessionState.Closing);
    let confirmed = false;
    if (this.handshake.decision?.terminateFlag && this.connection?.isOpen) {
      this.terminateFlagSeq = this.channel.nextSendSequence;
      this.channel.send(PayloadType.Flag, encodeFlag(FlagCode.TerminateSession));
      confirmed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), TERMINATE_FLAG_WAIT_MS);
        const done = (ok: boolean): void => {
          clearTimeout(timer);
          this.off('terminateAcked', onAck);
          this.off('channelClosed', onAck);
          this.off('linkLost', onLinkLost);
          resolve(ok);
        };
        const onAck = (): void => done(true);
        // No link, no ack: fall back to the API at once rather than wait out the timer.
        const onLinkLost = (): void => done(false);
        this.on('terminateAcked', onAck);
        this.on('channelClosed', onAck);
        this.on('linkLost', onLinkLost);
      });
    }
    this.openWaiter?.reject(new TunnelError('PF_ERR_SESSION_CLOSED', 'session closed before it opened'));
    this.openWaiter = undefined;
    this.finish(reason);
    if (sessionId) this.settle(confirmed || (await this.terminateViaApi(sessionId)));
  }

  /** TerminateSession through the API; true when it succeeded. */
  private async terminateViaApi(sessionId: string): Promise<boolean> {
    try {
      await this.deps.ssm.terminateSession(sessionId);
      return true;
    } catch (err) {
      this.log.warn(`TerminateSession ${sessionId} failed: ${describeError(err)}`);
      return false;
    }
  }

  /**
   * Emit 'settled' once after the session ended: `gone` is true when the service session is known to be
   * over (TerminateSession succeeded, its flag was acked, channel_closed, or the service said it does not
   * exist). The ledger forgets a session only then, so a failed terminate is retried on the next start.
   */
  private settle(gone: boolean): void {
    if (this.settled) return;
    this.settled = true;
    this.emit('settled', gone);
  }

  /** Tear everything down once; idempotent. */
  private finish(reason: SessionEndReason, err?: Error): void {
    if (this.endReason !== undefined) return;
    this.endReason = reason;
    this.abort.abort(new TunnelError('PF_ERR_SESSION_CLOSED', `session ended: ${reason}`));
    clearInterval(this.tickTimer);
    clearInterval(this.notReadyTimer);
    clearInterval(this.keepAliveTimer);
    this.handshake.stop();
    this.openWaiter?.reject(err ?? new TunnelError('PF_ERR_SESSION_CLOSED', `session ended: ${reason}`));
    this.openWaiter = undefined;
    this.smux?.destroy(new TunnelError('PF_ERR_STREAM_RESET', `session ended (${reason})`));
    this.basic?.destroy(new TunnelError('PF_ERR_STREAM_RESET', `session ended (${reason})`));
    this.connection?.close();
    this.channel.detach();
    this.setState(SessionState.Closed);
    this.emit('closed', reason, err);
    this.resolveClosed();
  }

  /** Why the session ended, once closed. */
  get reason(): SessionEndReason | undefined {
    return this.endReason;
  }
}
