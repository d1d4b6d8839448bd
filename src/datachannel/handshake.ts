/**
 * The client's answer to the agent's HandshakeRequest (spec §6). Pure: takes the decoded request,
 * returns the response to send, the mode decisions (spec §3.3) and, when the session cannot go on, the
 * error to end it with. Sending, acking and the 15 s deadline belong to the session layer.
 */
import { ProtocolError } from '../errors.js';
import { ActionStatus, LOCAL_PORT_FORWARDING, SESSION_TYPE_PORT } from './constants.js';
import type { HandshakeRequest, HandshakeResponse, ProcessedClientAction } from './payloads.js';
import { sessionTypeOf } from './payloads.js';
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
