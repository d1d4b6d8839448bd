/**
 * Wire constants of the Session Manager data channel (spec `shared/protocol/README.md`, §3–§9).
 *
 * Values marked "protocol" are fixed by the real service and agent and must not change; values marked
 * "default" are pf-daemon's own choices.
 */

/** Byte offsets and sizes of the 120-byte message header (spec §4.1). All protocol. */
export const HEADER = {
  /** Value of the HeaderLength field: bytes before PayloadLength, PayloadLength itself not counted. */
  HEADER_LENGTH_VALUE: 116,
  /** Total bytes before the payload: HeaderLength field value + the 4-byte PayloadLength. */
  TOTAL_BYTES: 120,
  HEADER_LENGTH_OFFSET: 0,
  MESSAGE_TYPE_OFFSET: 4,
  /** MessageType is ASCII, left-aligned, padded with 0x20. */
  MESSAGE_TYPE_BYTES: 32,
  SCHEMA_VERSION_OFFSET: 36,
  CREATED_DATE_OFFSET: 40,
  SEQUENCE_NUMBER_OFFSET: 48,
  FLAGS_OFFSET: 56,
  /** UUID with its 8-byte halves swapped (spec §4.5). */
  MESSAGE_ID_OFFSET: 64,
  MESSAGE_ID_BYTES: 16,
  PAYLOAD_DIGEST_OFFSET: 80,
  /** SHA-256. */
  PAYLOAD_DIGEST_BYTES: 32,
  PAYLOAD_TYPE_OFFSET: 112,
  PAYLOAD_LENGTH_OFFSET: 116,
  PAYLOAD_OFFSET: 120,
} as const;

/** Value of the SchemaVersion header field for every message we send (protocol). */
export const SCHEMA_VERSION = 1;

/** MessageType strings (spec §4.2; agent `message/clientmessage.go`). */
export const MessageType = {
  /** Sequenced data from client to agent; acked by the agent. */
  InputStreamData: 'input_stream_data',
  /** Sequenced data from agent to client; acked by the client. */
  OutputStreamData: 'output_stream_data',
  /** Acknowledgement of one sequenced message; never sequenced, never acked. */
  Acknowledge: 'acknowledge',
  /** Service message: the session ended. Payload JSON with `Output` reason (§10.1). */
  ChannelClosed: 'channel_closed',
  /** Service message: the peer's data channel is away; stop sending (§8). */
  PausePublication: 'pause_publication',
  /** Service message: the peer is back; resume sending (§8). */
  StartPublication: 'start_publication',
  /** Agent → service state report; clients never see it. */
  AgentSessionState: 'agent_session_state',
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** PayloadType values (spec §4.3; agent `message/clientmessage.go`). */
export const PayloadType = {
  /** Not a typed payload: acks and service messages. */
  None: 0,
  /** Data bytes (basic mode) or smux byte stream (mux mode). */
  Output: 1,
  /** Unused by port sessions. */
  Error: 2,
  /** Terminal size JSON; shell sessions only, never sent by us. */
  Size: 3,
  /** Unused by port sessions. */
  Parameter: 4,
  /** Agent → client handshake request (§6.1). */
  HandshakeRequest: 5,
  /** Client → agent handshake response (§6.2). */
  HandshakeResponse: 6,
  /** Agent → client handshake complete (§6.3). */
  HandshakeComplete: 7,
  /** KMS only; never for port sessions. */
  EncChallengeRequest: 8,
  /** KMS only. */
  EncChallengeResponse: 9,
  /** 4-byte big-endian flag code (§9.5). */
  Flag: 10,
  /** Non-interactive commands only. */
  StdErr: 11,
  /** Non-interactive commands only. */
  ExitCode: 12,
} as const;
export type PayloadType = (typeof PayloadType)[keyof typeof PayloadType];

/** Flag payload codes (spec §4.3, §9.5). */
export const FlagCode = {
  /** Client → agent, basic mode: the local connection ended; agent closes and redials on next data. */
  DisconnectToPort: 1,
  /** Client → agent: end the session (agent > 2.3.722.0 only). */
  TerminateSession: 2,
  /** Agent → client, mux mode: dialling the destination failed for a newly opened stream. */
  ConnectToPortError: 3,
} as const;
export type FlagCode = (typeof FlagCode)[keyof typeof FlagCode];

/** Header Flags values senders must use (spec §4.4); receivers ignore Flags. */
export const HeaderFlags = {
  /** Client data and agent data after seq 0. */
  Data: 0,
  /** Agent's sequence 0 message (SYN-like bit). */
  First: 1,
  /** Acknowledge messages. */
  Ack: 3,
} as const;

/** Handshake action statuses (spec §6.2). */
export const ActionStatus = {
  Success: 1,
  Failed: 2,
  Unsupported: 3,
} as const;
export type ActionStatus = (typeof ActionStatus)[keyof typeof ActionStatus];

/** ClientVersion we send in OpenDataChannel and HandshakeResponse (spec §3.3 recommendation; protocol). */
export const DEFAULT_CLIENT_VERSION = '1.2.694.0';

/** Largest Output payload we send, bytes (spec §7.3, §9.6; both reference ends use exactly this). */
export const MAX_OUTPUT_PAYLOAD_BYTES = 1024;

/**
 * How long a closing client waits for the ack of its TerminateSession flag or for `channel_closed` before it
 * calls the TerminateSession API instead, ms (spec §9.5 "SHOULD wait up to 5 s"; our default at that bound).
 */
export const TERMINATE_FLAG_WAIT_MS = 5_000;

/** Version thresholds (spec §3.3; protocol). */
export const VersionThreshold = {
  /** Client side: mux iff AgentVersion > this. */
  AGENT_MUX_ABOVE: '3.0.196.0',
  /** Client side: smux keep-alive off iff AgentVersion > this. */
  AGENT_KEEPALIVE_OFF_ABOVE: '3.1.1511.0',
  /** Client side: TerminateSession flag understood iff AgentVersion > this. */
  AGENT_TERMINATE_FLAG_ABOVE: '2.3.722.0',
  /** Agent side: mux iff ClientVersion >= this. */
  CLIENT_MUX_AT_LEAST: '1.1.70',
  /** Agent side: smux keep-alive off iff ClientVersion > this. */
  CLIENT_KEEPALIVE_OFF_ABOVE: '1.2.331.0',
} as const;

/** Handshake `Properties.type` for both port-forwarding documents (spec §2.1). */
export const LOCAL_PORT_FORWARDING = 'LocalPortForwarding';
/** Handshake `SessionType` for port sessions (spec §6.1). */
export const SESSION_TYPE_PORT = 'Port';

/** Render a message type / payload type pair for logs. */
export function describeMessage(messageType: string, payloadType: number, sequenceNumber: number): string {
  const name =
    Object.entries(PayloadType).find(([, v]) => v === payloadType)?.[0] ?? `payload#${payloadType}`;
  return `${messageType}/${name}#${sequenceNumber}`;
}
