/**
 * The client side of the handshake (spec §6): {@link answerHandshake}, the pure answer to the agent's
 * HandshakeRequest (the response, the mode decisions of spec §3.3, the error to end the session with), and
 * {@link HandshakeMachine}, the state machine around it (request → response → complete, both waits bounded,
 * late and malformed messages). The machine does no I/O: it sends through an injected function and times out
 * through an injected timer, so its tests drive it without a socket or real time. Sequencing, acking and
 * resends of the messages it sends belong to the reliable channel (`src/datachannel/reliable.ts`).
 */
import { ProtocolError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { ActionStatus, LOCAL_PORT_FORWARDING, PayloadType, SESSION_TYPE_PORT } from './constants.js';
import type {
  HandshakeComplete,
  HandshakeRequest,
  HandshakeResponse,
  ProcessedClientAction,
} from './payloads.js';
import {
  decodeHandshakeComplete,
  decodeHandshakeRequest,
  encodeHandshakeResponse,
  sessionTypeOf,
} from './payloads.js';
import type { ClientModeDecision } from './version.js';
import { clientModeFor } from './version.js';

/** Requested client action types (spec §6.1; agent `sessionplugin` handshake). */
export const ClientActionType = {
  /** Says what kind of session this is; the only action port sessions carry. */
  SessionType: 'SessionType',
  /** KMS encryption of the stream; shell sessions only, never supported by pf-daemon. */
  KMSEncryption: 'KMSEncryption',
} as const;

/** What {@link answerHandshake} decided. */
export interface HandshakeOutcome {
  /** HandshakeResponse to send as client sequence 0 (PayloadType 6), success or not (spec §6.2). */
  response: HandshakeResponse;
  /** Mux / keep-alive / terminate-flag decisions from the AgentVersion and `Properties.type` (spec §3.3). */
  decision: ClientModeDecision;
  /**
   * `Properties` of the (first) SessionType action, string values only; unknown keys kept for logging
   * and ignored (spec §6.1). Empty when there is no SessionType action.
   */
  properties: Record<string, string>;
  /**
   * Set when the session must end (`PF_ERR_HANDSHAKE`): the response still goes out, so the agent
   * cancels the session at once instead of waiting out its 15 s timeout.
   */
  failure?: ProtocolError;
}

/**
 * Answer a HandshakeRequest (spec §6.1, §6.2).
 *
 * - `SessionType` with SessionType `Port` and `Properties.type` `LocalPortForwarding` → status 1
 *   (Success), `ActionResult` null, `Error` "".
 * - `SessionType` with anything else → status 2 (Failed) with an error text, and a failure: pf-daemon
 *   implements no shell or stdin/stdout session.
 * - `KMSEncryption` or any unknown action → status 3 (Unsupported) and a failure (the agent cancels the
 *   session; the reference client's status 0 here is weakness #15).
 * - No `SessionType` action at all → failure (the responses to the other actions still go out).
 *
 * `Errors` is always null; the per-action `Error` strings carry the reasons.
 *
 * @param clientVersion the ClientVersion to report; the agent takes its mode decisions from it (§3.3).
 */
export function answerHandshake(request: HandshakeRequest, clientVersion: string): HandshakeOutcome {
  const processed: ProcessedClientAction[] = [];
  const problems: string[] = [];
  let properties: Record<string, string> | undefined;

  for (const action of request.requestedClientActions) {
    if (action.actionType === ClientActionType.SessionType) {
      const params = sessionTypeOf(action);
      properties ??= params.properties;
      const type = params.properties['type'] ?? '';
      if (params.sessionType === SESSION_TYPE_PORT && type === LOCAL_PORT_FORWARDING) {
        processed.push({
          actionType: action.actionType,
          actionStatus: ActionStatus.Success,
          actionResult: null,
          error: '',
        });
      } else {
        const error =
          `pf-daemon supports only SessionType ${JSON.stringify(SESSION_TYPE_PORT)} with type ` +
          `${JSON.stringify(LOCAL_PORT_FORWARDING)}; got SessionType ${JSON.stringify(params.sessionType)}` +
          ` and type ${JSON.stringify(type)}`;
        problems.push(error);
        processed.push({
          actionType: action.actionType,
          actionStatus: ActionStatus.Failed,
          actionResult: null,
          error,
        });
      }
    } else {
      const error = `pf-daemon does not support the ${JSON.stringify(action.actionType)} client action`;
      problems.push(error);
      processed.push({
        actionType: action.actionType,
        actionStatus: ActionStatus.Unsupported,
        actionResult: null,
        error,
      });
    }
  }
  if (properties === undefined) problems.push('handshake request carries no SessionType action');

  const props = properties ?? {};
  const outcome: HandshakeOutcome = {
    response: { clientVersion, processedClientActions: processed, errors: null },
    decision: clientModeFor(request.agentVersion, props['type'] ?? ''),
    properties: props,
  };
  if (problems.length > 0) {
    outcome.failure = new ProtocolError(
      'PF_ERR_HANDSHAKE',
      `handshake with agent ${request.agentVersion || '(no version)'} failed: ${problems.join('; ')}`,
    );
  }
  return outcome;
}

/** States of {@link HandshakeMachine} (spec §6, §10.5 `handshaking`). */
export const HandshakeState = {
  /** Created; {@link HandshakeMachine.start} not called yet (no deadline runs). */
  Idle: 'idle',
  /** Waiting for the agent's HandshakeRequest, within `timeoutMs` of `start()`. */
  AwaitingRequest: 'awaiting-request',
  /** HandshakeResponse sent; waiting for the agent's HandshakeComplete, within `timeoutMs` of the request. */
  AwaitingComplete: 'awaiting-complete',
  /** HandshakeComplete received and accepted: the session is open. Later handshake messages are dropped. */
  Open: 'open',
  /** The handshake failed (reported once through `onFailed`) or was stopped; every later input is ignored. */
  Done: 'done',
} as const;
export type HandshakeState = (typeof HandshakeState)[keyof typeof HandshakeState];

/** A one-shot timer (injected so tests drive time; Node's `setTimeout`/`clearTimeout` in production). */
export interface HandshakeTimer {
  /** Run `fn` once after `ms`; returns a handle for {@link HandshakeTimer.clear}. */
  set(fn: () => void, ms: number): unknown;
  /** Cancel a pending `set`; a handle that already fired or was cleared is ignored. */
  clear(handle: unknown): void;
}

/** The real timer: Node's `setTimeout` and `clearTimeout`. */
export const nodeHandshakeTimer: HandshakeTimer = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Kinds of agent input the machine drops, for the session's input counters (`src/forward/input-guard.ts`). */
export type HandshakeInputKind = 'lateHandshakes' | 'malformedHandshakes';

/** What {@link HandshakeMachine} needs (see docs/architecture.md, Conventions: narrow dependencies). */
export interface HandshakeMachineDeps {
  /** ClientVersion to report in the HandshakeResponse (spec §3.3); the agent takes its decisions from it. */
  clientVersion: string;
  /** Bound on each wait (for the request after `start()`, for the complete after the response), ms. */
  timeoutMs: number;
  /** Send one message on the reliable channel (here only the HandshakeResponse, PayloadType 6). */
  send(payloadType: PayloadType, payload: Buffer): void;
  /** The handshake completed: set up smux or basic mode per `decision` and open. Called at most once. */
  onOpen(decision: ClientModeDecision, complete: HandshakeComplete): void;
  /** The handshake failed (`PF_ERR_HANDSHAKE`): end the session. Called at most once, never after `onOpen`. */
  onFailed(error: ProtocolError): void;
  /** Agent input that was dropped or did not decode, with one line saying what (for counters and a warning). */
  onInput(kind: HandshakeInputKind, text: string): void;
  /** One-shot timer for the two deadlines. */
  timer: HandshakeTimer;
  /** Logger scoped to the session; debug only. */
  logger: Logger;
}

/**
 * The client's handshake state machine (spec §6): `start()` once the data channel is up, then feed it the
 * agent's HandshakeRequest and HandshakeComplete payloads in the order the reliable channel delivers them.
 *
 * Rules:
 * - The request is answered once, failure or not (the response goes out so the agent cancels at once instead
 *   of waiting out its own 15 s, spec §6.2). A second request is dropped (`lateHandshakes`): the agent sends
 *   exactly one per session, and answering again could change the mode under open streams.
 * - A HandshakeComplete before any request fails the handshake: the mode is not known yet.
 * - A HandshakeComplete after the session opened is dropped (`lateHandshakes`): setting up a second smux
 *   session would orphan every open stream.
 * - A payload that does not decode fails the handshake (`malformedHandshakes`, `PF_ERR_HANDSHAKE` with the
 *   decoder's error as cause).
 * - Each wait is bounded by `timeoutMs`; running out fails the handshake.
 */
export class HandshakeMachine {
  private stateValue: HandshakeState = HandshakeState.Idle;
  private decisionValue: ClientModeDecision | undefined;
  private timerHandle: unknown;

  constructor(private readonly deps: HandshakeMachineDeps) {}

  /** Current state. */
  get state(): HandshakeState {
    return this.stateValue;
  }

  /** The mode decisions, once the request was answered successfully (before the complete arrives too). */
  get decision(): ClientModeDecision | undefined {
    return this.decisionValue;
  }

  /** Start the wait for the HandshakeRequest. Only from `Idle`; a request that came first is not waited for. */
  start(): void {
    if (this.stateValue !== HandshakeState.Idle) return;
    this.stateValue = HandshakeState.AwaitingRequest;
    this.arm(`no handshake from the agent within ${this.deps.timeoutMs} ms`);
  }

  /** Stop: cancel the deadline and ignore every later input (the session is ending). Idempotent. */
  stop(): void {
    this.disarm();
    if (this.stateValue !== HandshakeState.Open) this.stateValue = HandshakeState.Done;
  }

  /**
   * The agent's HandshakeRequest payload (PayloadType 5, spec §6.1). Answers it (sends the response),
   * then either fails or waits for the HandshakeComplete. Changes state.
   */
  onRequest(payload: Buffer): void {
    switch (this.stateValue) {
      case HandshakeState.Idle:
      case HandshakeState.AwaitingRequest:
        break;
      case HandshakeState.AwaitingComplete:
      case HandshakeState.Open:
        this.deps.onInput('lateHandshakes', 'dropped a HandshakeRequest after the handshake was answered');
        return;
      case HandshakeState.Done:
        return;
    }
    this.disarm();
    let outcome: HandshakeOutcome;
    try {
      outcome = answerHandshake(decodeHandshakeRequest(payload), this.deps.clientVersion);
    } catch (err) {
      this.deps.onInput('malformedHandshakes', `malformed HandshakeRequest: ${describeError(err)}`);
      this.failWith(handshakeError('malformed HandshakeRequest', err));
      return;
    }
    this.deps.send(PayloadType.HandshakeResponse, encodeHandshakeResponse(outcome.response));
    if (outcome.failure) {
      this.failWith(outcome.failure);
      return;
    }
    this.decisionValue = outcome.decision;
    this.stateValue = HandshakeState.AwaitingComplete;
    this.deps.logger.debug(
      `handshake request answered; mode ${outcome.decision.mux ? 'mux' : 'basic'}, agent smux keep-alive ${outcome.decision.smuxKeepAlive}`,
    );
    this.arm('the agent never completed the handshake');
  }

  /**
   * The agent's HandshakeComplete payload (PayloadType 7, spec §6.3). Opens the session once (`onOpen`).
   * Changes state.
   */
  onComplete(payload: Buffer): void {
    switch (this.stateValue) {
      case HandshakeState.Idle:
      case HandshakeState.AwaitingRequest:
        this.failWith(new ProtocolError('PF_ERR_HANDSHAKE', 'HandshakeComplete before HandshakeRequest'));
        return;
      case HandshakeState.AwaitingComplete:
        break;
      case HandshakeState.Open:
        this.deps.onInput('lateHandshakes', 'dropped a HandshakeComplete after the session was open');
        return;
      case HandshakeState.Done:
        return;
    }
    this.disarm();
    let complete: HandshakeComplete;
    try {
      complete = decodeHandshakeComplete(payload);
    } catch (err) {
      this.deps.onInput('malformedHandshakes', `malformed HandshakeComplete: ${describeError(err)}`);
      this.failWith(handshakeError('malformed HandshakeComplete', err));
      return;
    }
    this.stateValue = HandshakeState.Open;
    this.deps.onOpen(this.decisionValue as ClientModeDecision, complete);
  }

  private arm(timeoutText: string): void {
    this.timerHandle = this.deps.timer.set(() => {
      this.timerHandle = undefined;
      this.failWith(new ProtocolError('PF_ERR_HANDSHAKE', timeoutText));
    }, this.deps.timeoutMs);
  }

  private disarm(): void {
    if (this.timerHandle === undefined) return;
    this.deps.timer.clear(this.timerHandle);
    this.timerHandle = undefined;
  }

  /** Fail once: no deadline left, every later input ignored. */
  private failWith(error: ProtocolError): void {
    this.disarm();
    this.stateValue = HandshakeState.Done;
    this.deps.onFailed(error);
  }
}

/** A `PF_ERR_HANDSHAKE` error for a handshake payload that did not decode, keeping the decoder's error. */
function handshakeError(what: string, err: unknown): ProtocolError {
  return new ProtocolError('PF_ERR_HANDSHAKE', `${what}: ${describeError(err)}`, { cause: err });
}
