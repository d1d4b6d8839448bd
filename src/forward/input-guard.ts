/**
 * What a session does with agent input that passed the message codec but is wrong at the session layer
 * (issue 10 item 2): every case is counted, logged once per session and kind (an agent that repeats a bad
 * message must not flood the journal), and costs at most that one session — never the process.
 *
 * | Input                                              | Cost                                       |
 * |----------------------------------------------------|--------------------------------------------|
 * | Frame the codec rejects (digest, lengths, JSON)    | dropped (not acked), counted               |
 * | Flag payload that is not 4 bytes                   | dropped (acked, no effect), counted        |
 * | Flag with an unknown code                          | dropped, counted                           |
 * | HandshakeRequest/Complete that does not decode     | the handshake fails (`PF_ERR_HANDSHAKE`)   |
 * | HandshakeRequest/Complete after the handshake      | dropped, counted; open streams carry on    |
 * | PayloadType the client never receives (e.g. 5, 6)  | dropped, counted                           |
 * | Any exception thrown while handling network input  | that session fails (`PF_ERR_SESSION_INTERNAL`) |
 */
import type { Logger } from '../log.js';

/** Counters of the session-layer input checks; part of `TunnelSession.stats`. */
export interface SessionInputStats {
  /** Frames the message codec or the reliable channel rejected (digest, lengths, ack JSON); dropped. */
  malformedFrames: number;
  /** Flag payloads that were not 4 bytes long; dropped. */
  malformedFlags: number;
  /** Flags with a code the agent never sends towards a client; dropped. */
  unknownFlags: number;
  /** HandshakeRequest or HandshakeComplete payloads that did not decode; the handshake failed. */
  malformedHandshakes: number;
  /** HandshakeRequest or HandshakeComplete after the handshake had passed that step; dropped. */
  lateHandshakes: number;
  /** Sequenced messages of a PayloadType a client never receives; dropped. */
  unexpectedPayloadTypes: number;
  /** Exceptions caught at a network or timer entry point; each failed the session. */
  internalErrors: number;
}

/** Kinds of bad input, one warn line each per session. */
export type BadInputKind = keyof SessionInputStats;

/** Counts bad input and logs the first occurrence of each kind; later ones go to debug only. */
export class InputGuard {
  readonly stats: SessionInputStats = {
    malformedFrames: 0,
    malformedFlags: 0,
    unknownFlags: 0,
    malformedHandshakes: 0,
    lateHandshakes: 0,
    unexpectedPayloadTypes: 0,
    internalErrors: 0,
  };
  private readonly warned = new Set<BadInputKind>();

  constructor(private readonly logger: Logger) {}

  /** Count one bad input of `kind`; warn the first time per session, debug afterwards. */
  note(kind: BadInputKind, text: string): void {
    this.stats[kind]++;
    if (this.warned.has(kind)) {
      if (this.logger.debugEnabled) this.logger.debug(`${text} (${this.stats[kind]} so far)`);
      return;
    }
    this.warned.add(kind);
    this.logger.warn(`${text}; further ones are counted in stats, not logged`);
  }
}

/**
 * A logger for layers that warn once per bad frame (the reliable channel): each distinct warn text goes
 * out once, repeats go to debug, so an agent that repeats a bad message cannot flood the journal.
 */
export function warnOncePerText(logger: Logger): Logger {
  const seen = new Set<string>();
  const wrap = (target: Logger): Logger => ({
    error: (message, meta) => target.error(message, meta),
    warn: (message, meta) => {
      if (seen.has(message)) {
        target.debug(message, meta);
        return;
      }
      seen.add(message);
      target.warn(`${message} (repeats are logged at debug level)`, meta);
    },
    info: (message, meta) => target.info(message, meta),
    debug: (message, meta) => target.debug(message, meta),
    get debugEnabled() {
      return target.debugEnabled;
    },
    child: (namespace, meta) => wrap(target.child(namespace, meta)),
  });
  return wrap(logger);
}
