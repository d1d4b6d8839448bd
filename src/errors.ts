/**
 * Typed errors with stable codes.
 *
 * Every error pf-daemon raises on purpose is a {@link PfError} whose `code` is one of the literal
 * `PF_ERR_*` strings below. Tests and callers branch on `code`, never on message text. The codes are
 * listed in the README; never renumber or rename one, add new ones instead.
 *
 * Domains (fastify-style table rather than one hand-written class per code):
 * - protocol: bytes from the network violate the data-channel or smux wire format. Costs one
 *   session (or one message) at most.
 * - config: the user's flags or YAML are wrong. The CLI prints the message and exits 2.
 * - aws: an SSM API call failed; the message names the fix.
 * - tunnel: a forward or session failed at run time.
 * - control: the control socket or the metrics endpoint (observability, never the data path).
 */

/** Every stable error code, with the domain it belongs to and a one-line description for the README. */
export const ERROR_CODES = {
  // protocol: data-channel message codec (spec §4)
  PF_ERR_FRAME_TOO_SHORT: {
    domain: 'protocol',
    text: 'binary frame shorter than the 120-byte message header',
  },
  PF_ERR_FRAME_LENGTH: {
    domain: 'protocol',
    text: 'HeaderLength + 4 + PayloadLength exceeds the frame length',
  },
  PF_ERR_HEADER_LENGTH: { domain: 'protocol', text: 'HeaderLength is 0 or smaller than the fixed header' },
  PF_ERR_MESSAGE_TYPE: { domain: 'protocol', text: 'MessageType is empty or not printable ASCII' },
  PF_ERR_CREATED_DATE: { domain: 'protocol', text: 'CreatedDate is 0' },
  PF_ERR_SEQUENCE_NUMBER: { domain: 'protocol', text: 'SequenceNumber is negative or above 2^53' },
  PF_ERR_DIGEST_MISMATCH: { domain: 'protocol', text: 'PayloadDigest is not the SHA-256 of the payload' },
  PF_ERR_PAYLOAD: { domain: 'protocol', text: 'a control payload (JSON or flag) is malformed' },
  PF_ERR_MESSAGE_ID: { domain: 'protocol', text: 'a MessageId is not a UUID' },
  // protocol: smux v1 (spec §9.4)
  PF_ERR_SMUX_VERSION: { domain: 'protocol', text: 'smux frame version is not 1' },
  PF_ERR_SMUX_COMMAND: { domain: 'protocol', text: 'smux frame command is not SYN, FIN, PSH or NOP' },
  PF_ERR_SMUX_FRAME: {
    domain: 'protocol',
    text: 'smux frame cannot be encoded (length or stream id out of range)',
  },
  // protocol: session-level violations
  PF_ERR_HANDSHAKE: { domain: 'protocol', text: 'the handshake failed or asked for something unsupported' },
  PF_ERR_WINDOW_STALLED: { domain: 'protocol', text: 'no ack progress (or a pause) for the give-up period' },
  PF_ERR_RECEIVE_WEDGED: {
    domain: 'protocol',
    text: 'the next agent message stayed missing for the give-up period',
  },
  // config
  PF_ERR_CONFIG: { domain: 'config', text: 'a flag or configuration value is invalid' },
  PF_ERR_CONFIG_FILE: { domain: 'config', text: 'the configuration file cannot be read or parsed' },
  // aws
  PF_ERR_TARGET_NOT_CONNECTED: { domain: 'aws', text: 'the target is not connected to SSM' },
  PF_ERR_INVALID_DOCUMENT: { domain: 'aws', text: 'the session document does not exist or is not shared' },
  PF_ERR_INVALID_PARAMETERS: { domain: 'aws', text: 'the document parameters were rejected' },
  PF_ERR_ACCESS_DENIED: { domain: 'aws', text: 'IAM denied the SSM call' },
  PF_ERR_THROTTLED: { domain: 'aws', text: 'SSM throttled the call' },
  PF_ERR_AWS_INTERNAL: { domain: 'aws', text: 'SSM returned an internal error' },
  PF_ERR_CREDENTIALS: { domain: 'aws', text: 'no valid AWS credentials' },
  PF_ERR_SESSION_GONE: { domain: 'aws', text: 'the session no longer exists and cannot be resumed' },
  PF_ERR_STREAM_URL: {
    domain: 'aws',
    text: 'the StreamUrl is not wss://, or not an AWS host although the endpoint is AWS',
  },
  PF_ERR_AWS: { domain: 'aws', text: 'another SSM API error' },
  // aws: target resolution (src/targets/)
  PF_ERR_TARGET_NOT_FOUND: {
    domain: 'aws',
    text: 'no online instance or running ECS task matches the target',
  },
  PF_ERR_TARGET_AMBIGUOUS: { domain: 'aws', text: 'several instances or tasks match and pick is not any' },
  PF_ERR_ECS_EXEC_DISABLED: { domain: 'aws', text: 'the ECS container has no running ExecuteCommandAgent' },
  // tunnel
  PF_ERR_CONNECT: { domain: 'tunnel', text: 'the data-channel WebSocket could not be opened' },
  PF_ERR_SESSION_CLOSED: {
    domain: 'tunnel',
    text: 'the session ended (channel_closed, terminate or give-up)',
  },
  PF_ERR_STREAM_RESET: { domain: 'tunnel', text: 'a multiplexed stream was reset because its session ended' },
  PF_ERR_DESTINATION_REFUSED: {
    domain: 'tunnel',
    text: 'the agent could not connect to the destination port',
  },
  PF_ERR_LISTEN: { domain: 'tunnel', text: 'the local listener could not be opened' },
  PF_ERR_SESSION_INTERNAL: {
    domain: 'tunnel',
    text: 'an unexpected error inside one session; that session failed, the daemon went on',
  },
  PF_ERR_STREAM_BACKLOG: {
    domain: 'tunnel',
    text: 'a connection was reset: its reader left too much waiting',
  },
  PF_ERR_QUEUE_FULL: {
    domain: 'tunnel',
    text: 'a basic-mode session already has its most connections waiting; one more was refused',
  },
  PF_ERR_ABORTED: { domain: 'tunnel', text: 'a connection stopped waiting for a session (it closed first)' },
  // tunnel: dynamic forwarding (src/socks/)
  PF_ERR_SOCKS_HANDSHAKE: {
    domain: 'tunnel',
    text: 'a SOCKS/HTTP CONNECT client sent a bad request, failed auth or was too slow',
  },
  PF_ERR_SOCKS_NOT_ALLOWED: {
    domain: 'tunnel',
    text: "a CONNECT destination is not in the listener's allow list",
  },
  PF_ERR_SOCKS_LIMIT: {
    domain: 'tunnel',
    text: 'a CONNECT needed a new destination while maxSessions were busy',
  },
  // control: the control socket and metrics endpoint (src/control/, src/metrics/)
  PF_ERR_CONTROL_SOCKET: {
    domain: 'control',
    text: 'the control socket cannot be opened, or no daemon answers on it',
  },
  PF_ERR_CONTROL_REQUEST: {
    domain: 'control',
    text: 'a control-socket request was malformed, too long or not a status request',
  },
  PF_ERR_METRICS_LISTEN: { domain: 'control', text: 'the metrics HTTP server could not listen' },
} as const;

/** A stable error code. */
export type ErrorCode = keyof typeof ERROR_CODES;
/** The domain an error code belongs to. */
export type ErrorDomain = (typeof ERROR_CODES)[ErrorCode]['domain'];

/** Codes of one domain. */
export type CodeOf<D extends ErrorDomain> = {
  [C in ErrorCode]: (typeof ERROR_CODES)[C]['domain'] extends D ? C : never;
}[ErrorCode];

/** Base class of every pf-daemon error. */
export class PfError extends Error {
  /** Stable machine-readable code (`PF_ERR_*`). */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** The domain of this error's code. */
  get domain(): ErrorDomain {
    return ERROR_CODES[this.code].domain;
  }

  override get name(): string {
    return this.constructor.name;
  }
}

/** Bytes from the network broke the wire format. Never thrown for anything but bad input. */
export class ProtocolError extends PfError {
  declare readonly code: CodeOf<'protocol'>;
  constructor(code: CodeOf<'protocol'>, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The user's flags or configuration file are invalid; `message` names the fix. */
export class ConfigError extends PfError {
  declare readonly code: CodeOf<'config'>;
  constructor(code: CodeOf<'config'>, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** An SSM API call failed. `retryable` says whether backing off and trying again can help. */
export class AwsSessionError extends PfError {
  declare readonly code: CodeOf<'aws'>;
  /** True for throttling, 5xx and network errors (spec §2.4). */
  readonly retryable: boolean;
  constructor(code: CodeOf<'aws'>, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(code, message, options);
    this.retryable = options?.retryable ?? false;
  }
}

/** A forward, session or stream failed at run time. */
export class TunnelError extends PfError {
  declare readonly code: CodeOf<'tunnel'>;
  constructor(code: CodeOf<'tunnel'>, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The control socket or metrics endpoint failed, or a control request was refused. */
export class ControlError extends PfError {
  declare readonly code: CodeOf<'control'>;
  constructor(code: CodeOf<'control'>, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Type guard: `err` is a {@link PfError}, optionally with the given code. */
export function isPfError(err: unknown, code?: ErrorCode): err is PfError {
  return err instanceof PfError && (code === undefined || err.code === code);
}

/** One-line text for any thrown value, for logs and the CLI. */
export function describeError(err: unknown): string {
  if (err instanceof PfError) return `${err.message} [${err.code}]`;
  if (err instanceof Error) return err.message;
  return String(err);
}
