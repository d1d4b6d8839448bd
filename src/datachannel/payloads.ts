/**
 * Pure codecs for the control payloads carried inside data-channel messages (spec §3.2, §5, §6, §9.5,
 * §10.1). Every parser takes untrusted bytes and throws only `ProtocolError` (`PF_ERR_PAYLOAD`).
 * JSON is written with keys in the order the reference ends use, so vectors match byte for byte.
 */
import { ProtocolError } from '../errors.js';
import type { ActionStatus, FlagCode } from './constants.js';
import { HEADER, HeaderFlags, MessageType, PayloadType, SCHEMA_VERSION } from './constants.js';
import { allocateFrame, sealFrame } from './message.js';
import type { FrameHeader, InboundMessage } from './message.js';

// ---------------------------------------------------------------------------------------------
// Helpers for validating parsed JSON without `any`.

type JsonObject = Record<string, unknown>;

function parseJsonObject(payload: Buffer | string, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (err) {
    throw new ProtocolError('PF_ERR_PAYLOAD', `${what} is not valid JSON`, { cause: err });
  }
  if (!isObject(value)) throw new ProtocolError('PF_ERR_PAYLOAD', `${what} is not a JSON object`);
  return value;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field<T>(obj: JsonObject, key: string, guard: (v: unknown) => v is T, what: string): T {
  const value = obj[key];
  if (!guard(value))
    throw new ProtocolError('PF_ERR_PAYLOAD', `${what}: field ${key} is missing or has the wrong type`);
  return value;
}

function optionalField<T>(obj: JsonObject, key: string, guard: (v: unknown) => v is T, fallback: T): T {
  const value = obj[key];
  return guard(value) ? value : fallback;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isSafeInteger = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isArray = (v: unknown): v is unknown[] => Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// Acknowledge (spec §5)

/** Content of an `acknowledge` payload. */
export interface AcknowledgeContent {
  /** MessageType of the acked message. */
  acknowledgedMessageType: string;
  /** MessageId of the acked message (string form). Informational: matching is by sequence number. */
  acknowledgedMessageId: string;
  /** SequenceNumber of the acked message. */
  acknowledgedMessageSequenceNumber: number;
  /** Always true on the wire. */
  isSequentialMessage: boolean;
}

/** An ack payload as JSON text: compact, with the reference key order (what {@link encodeAcknowledge} encodes). */
export function acknowledgeJson(ack: AcknowledgeContent): string {
  return acknowledgeJsonFast(ack) ?? acknowledgeJsonEscaped(ack);
}

/** {@link acknowledgeJson} for any strings, escaping them with `JSON.stringify`. */
function acknowledgeJsonEscaped(ack: AcknowledgeContent): string {
  return (
    `{"AcknowledgedMessageType":${JSON.stringify(ack.acknowledgedMessageType)},` +
    `"AcknowledgedMessageId":${JSON.stringify(ack.acknowledgedMessageId)},` +
    `"AcknowledgedMessageSequenceNumber":${ack.acknowledgedMessageSequenceNumber},` +
    `"IsSequentialMessage":${ack.isSequentialMessage}}`
  );
}

/** Encode an ack payload: compact JSON with the reference key order. */
export function encodeAcknowledge(ack: AcknowledgeContent): Buffer {
  return Buffer.from(acknowledgeJson(ack), 'utf8');
}

/**
 * A whole `acknowledge` message frame (spec §4.4: seq 0, Flags 3, PayloadType 0, fresh MessageId) for `ack`,
 * with the JSON written straight into the frame: one allocation per ack.
 */
export function encodeAcknowledgeMessage(ack: AcknowledgeContent, createdDate: number): Buffer {
  const fast = acknowledgeJsonFast(ack);
  let frame: Buffer;
  if (fast !== undefined) {
    // ASCII only: one char per byte, latin1 is the cheapest exact encoder.
    frame = allocateFrame(fast.length);
    frame.write(fast, HEADER.PAYLOAD_OFFSET, 'latin1');
  } else {
    const json = acknowledgeJsonEscaped(ack);
    frame = allocateFrame(Buffer.byteLength(json, 'utf8'));
    frame.write(json, HEADER.PAYLOAD_OFFSET, 'utf8');
  }
  return sealFrame(frame, ackHeaderFields(createdDate));
}

/** The ack JSON up to the MessageId for an `output_stream_data` ack, as bytes (the template of every ack we send). */
const OUTPUT_ACK_PREFIX_BYTES = Buffer.from(
  `{"AcknowledgedMessageType":"${MessageType.OutputStreamData}","AcknowledgedMessageId":"`,
  'latin1',
);
/** The same for an `input_stream_data` ack (the ones the agent sends; the emulator's). */
const INPUT_ACK_PREFIX_BYTES = Buffer.from(
  `{"AcknowledgedMessageType":"${MessageType.InputStreamData}","AcknowledgedMessageId":"`,
  'latin1',
);
/** The ack JSON from the end of the MessageId to the sequence number's digits. */
const ACK_SEQUENCE_KEY_BYTES = Buffer.from('","AcknowledgedMessageSequenceNumber":', 'latin1');
/** The ack JSON after the digits of a sequential ack. */
const ACK_SEQUENTIAL_TRUE_END = Buffer.from(',"IsSequentialMessage":true}', 'latin1');
/** Characters of a MessageId in its hyphenated text form (spec §4.5). */
const MESSAGE_ID_TEXT_CHARS = 36;
/** Lowercase hex digit character codes. */
const HEX_CHAR_CODES = Buffer.from('0123456789abcdef', 'latin1');
const CHAR_HYPHEN = 0x2d;
/**
 * The header fields of the acks {@link encodeSequentialAcknowledge} seals: one shared record whose
 * `createdDate` is set per ack (sealing is synchronous), instead of one object per ack.
 */
const templateAckHeader: FrameHeader = {
  messageType: MessageType.Acknowledge,
  schemaVersion: SCHEMA_VERSION,
  createdDate: 0,
  sequenceNumber: 0,
  flags: HeaderFlags.Ack,
  messageId: undefined,
  payloadType: PayloadType.None,
};

/** Decimal digits of a non-negative safe integer. */
function decimalDigits(value: number): number {
  let digits = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  return digits;
}

/**
 * The ack frame of one received sequential message (spec §5, §4.4), built from a prebuilt template: the
 * JSON's fixed parts (`prefix` names the acked type) are copied, the acked MessageId's hex is written straight
 * from its wire bytes and the sequence number's digits straight into the frame: no JSON, no strings, one
 * allocation (issue 16). The bytes are exactly those of {@link encodeAcknowledgeMessage} for `{ type,
 * message.messageId, message.sequenceNumber, true }` (test/datachannel/payloads.test.ts and
 * test/emulator/agent-ack.test.ts check it).
 */
function encodeSequentialAcknowledge(prefix: Buffer, message: InboundMessage, createdDate: number): Buffer {
  const seq = message.sequenceNumber;
  const digits = decimalDigits(seq);
  const frame = allocateFrame(
    prefix.length +
      MESSAGE_ID_TEXT_CHARS +
      ACK_SEQUENCE_KEY_BYTES.length +
      digits +
      ACK_SEQUENTIAL_TRUE_END.length,
  );
  // Uint8Array#set, not Buffer#copy: the same bytes without Buffer's argument handling per call.
  frame.set(prefix, HEADER.PAYLOAD_OFFSET);
  let pos = HEADER.PAYLOAD_OFFSET + prefix.length;
  // RFC 4122 byte i is wire byte i + 8 for i < 8, i − 8 after (spec §4.5); hyphens before RFC bytes 4, 6, 8, 10.
  for (let i = 0; i < HEADER.MESSAGE_ID_BYTES; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) frame[pos++] = CHAR_HYPHEN;
    const byte = message.messageIdByte(i < 8 ? i + 8 : i - 8);
    frame[pos++] = HEX_CHAR_CODES[byte >>> 4] as number;
    frame[pos++] = HEX_CHAR_CODES[byte & 0x0f] as number;
  }
  frame.set(ACK_SEQUENCE_KEY_BYTES, pos);
  pos += ACK_SEQUENCE_KEY_BYTES.length;
  let rest = seq;
  for (let i = pos + digits - 1; i >= pos; i--) {
    frame[i] = CHAR_0 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
  pos += digits;
  frame.set(ACK_SEQUENTIAL_TRUE_END, pos);
  templateAckHeader.createdDate = createdDate;
  return sealFrame(frame, templateAckHeader);
}

/** The ack the daemon sends for a received `output_stream_data` message (see {@link encodeSequentialAcknowledge}). */
export function encodeOutputAcknowledgeMessage(message: InboundMessage, createdDate: number): Buffer {
  return encodeSequentialAcknowledge(OUTPUT_ACK_PREFIX_BYTES, message, createdDate);
}

/**
 * The ack the agent sends for a received `input_stream_data` message (the emulator's; the same template with
 * the other acked type, the JSON the reference agent writes).
 */
export function encodeInputAcknowledgeMessage(message: InboundMessage, createdDate: number): Buffer {
  return encodeSequentialAcknowledge(INPUT_ACK_PREFIX_BYTES, message, createdDate);
}

/** Header fields of every ack we send (spec §4.4: seq 0, Flags 3, PayloadType 0, fresh MessageId). */
function ackHeaderFields(createdDate: number): FrameHeader {
  return {
    messageType: MessageType.Acknowledge,
    schemaVersion: SCHEMA_VERSION,
    createdDate,
    sequenceNumber: 0,
    flags: HeaderFlags.Ack,
    messageId: undefined,
    payloadType: PayloadType.None,
  };
}

/** Printable ASCII without `"` and `\`: a string JSON.stringify writes as itself between quotes. */
const PLAIN_JSON_STRING = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
/** The ack JSON up to the MessageId for the one type we acknowledge, prebuilt (issue 16). */
const OUTPUT_ACK_PREFIX = `{"AcknowledgedMessageType":"${MessageType.OutputStreamData}","AcknowledgedMessageId":"`;

/**
 * {@link acknowledgeJson} by plain concatenation, without `JSON.stringify`, when both strings need no
 * escaping (always so for the acks we send: the type is a constant, the MessageId a UUID we rendered);
 * undefined otherwise. Same text as {@link acknowledgeJson} whenever it returns one.
 */
function acknowledgeJsonFast(ack: AcknowledgeContent): string | undefined {
  const type = ack.acknowledgedMessageType;
  const id = ack.acknowledgedMessageId;
  if (!PLAIN_JSON_STRING.test(id)) return undefined;
  let prefix: string;
  if (type === MessageType.OutputStreamData) prefix = OUTPUT_ACK_PREFIX;
  else if (PLAIN_JSON_STRING.test(type))
    prefix = `{"AcknowledgedMessageType":"${type}","AcknowledgedMessageId":"`;
  else return undefined;
  return (
    prefix +
    id +
    '","AcknowledgedMessageSequenceNumber":' +
    ack.acknowledgedMessageSequenceNumber +
    (ack.isSequentialMessage ? ',"IsSequentialMessage":true}' : ',"IsSequentialMessage":false}')
  );
}

// The canonical ack layout both reference ends write (spec §5), split at its variable parts.
const ACK_TYPE_PREFIX = Buffer.from('{"AcknowledgedMessageType":"', 'latin1');
const ACK_ID_KEY = Buffer.from('","AcknowledgedMessageId":"', 'latin1');
const ACK_SEQUENCE_KEY = Buffer.from('","AcknowledgedMessageSequenceNumber":', 'latin1');
const ACK_SEQUENTIAL_KEY = Buffer.from(',"IsSequentialMessage":', 'latin1');
const ACK_TRUE_END = Buffer.from('true}', 'latin1');
const ACK_FALSE_END = Buffer.from('false}', 'latin1');
/** Most sequence-number digits the fast path takes: 15 digits stay below 2^53, so the value is exact. */
const ACK_MAX_FAST_DIGITS = 15;
const CHAR_QUOTE = 0x22;
const CHAR_BACKSLASH = 0x5c;
const CHAR_0 = 0x30;
const CHAR_9 = 0x39;

/** True when `literal` occurs in `payload` at `pos`. */
function bytesAt(payload: Buffer, pos: number, literal: Buffer): boolean {
  if (pos + literal.length > payload.length) return false;
  for (let i = 0; i < literal.length; i++) if (payload[pos + i] !== literal[i]) return false;
  return true;
}

/** End of a JSON string body from `pos` made only of printable ASCII without `"` or `\` (escapes: no). */
function plainStringEnd(payload: Buffer, pos: number): number {
  let i = pos;
  for (; i < payload.length; i++) {
    const c = payload[i] as number;
    if (c < 0x20 || c > 0x7e || c === CHAR_BACKSLASH) return -1;
    if (c === CHAR_QUOTE) return i;
  }
  return -1;
}

/**
 * Where the variable parts of the canonical ack {@link scanCanonicalAcknowledge} last accepted lie. One
 * module-level scratch record instead of an object per ack (the scan is synchronous and not re-entrant).
 */
const canonicalAck = { typeStart: 0, typeEnd: 0, idStart: 0, idEnd: 0, seq: 0, sequential: true };

/**
 * Scan an ack in the exact canonical layout (spec §5: compact JSON, reference key order, plain ASCII strings,
 * a non-negative integer of at most 15 digits), without JSON.parse and without creating strings; on success
 * fills {@link canonicalAck} and returns true. Anything else returns false and takes the general JSON path.
 */
function scanCanonicalAcknowledge(payload: Buffer): boolean {
  if (!bytesAt(payload, 0, ACK_TYPE_PREFIX)) return false;
  const typeStart = ACK_TYPE_PREFIX.length;
  const typeEnd = plainStringEnd(payload, typeStart);
  if (typeEnd < 0 || !bytesAt(payload, typeEnd, ACK_ID_KEY)) return false;
  const idStart = typeEnd + ACK_ID_KEY.length;
  const idEnd = plainStringEnd(payload, idStart);
  if (idEnd < 0 || !bytesAt(payload, idEnd, ACK_SEQUENCE_KEY)) return false;
  let pos = idEnd + ACK_SEQUENCE_KEY.length;
  const digitsStart = pos;
  let seq = 0;
  for (; pos < payload.length; pos++) {
    const c = payload[pos] as number;
    if (c < CHAR_0 || c > CHAR_9) break;
    seq = seq * 10 + (c - CHAR_0);
  }
  const digits = pos - digitsStart;
  if (digits === 0 || digits > ACK_MAX_FAST_DIGITS) return false;
  // JSON forbids leading zeros ("07"); leave such input to JSON.parse, which rejects it.
  if (digits > 1 && payload[digitsStart] === CHAR_0) return false;
  if (!bytesAt(payload, pos, ACK_SEQUENTIAL_KEY)) return false;
  pos += ACK_SEQUENTIAL_KEY.length;
  let sequential: boolean;
  if (bytesAt(payload, pos, ACK_TRUE_END)) {
    sequential = true;
    pos += ACK_TRUE_END.length;
  } else if (bytesAt(payload, pos, ACK_FALSE_END)) {
    sequential = false;
    pos += ACK_FALSE_END.length;
  } else {
    return false;
  }
  if (pos !== payload.length) return false;
  canonicalAck.typeStart = typeStart;
  canonicalAck.typeEnd = typeEnd;
  canonicalAck.idStart = idStart;
  canonicalAck.idEnd = idEnd;
  canonicalAck.seq = seq;
  canonicalAck.sequential = sequential;
  return true;
}

/**
 * Parse an ack in the exact canonical layout (see {@link scanCanonicalAcknowledge}) without JSON.parse.
 * Undefined for anything else, which then takes the general JSON path: on every input it accepts this returns
 * what the JSON path returns.
 */
export function decodeCanonicalAcknowledge(payload: Buffer): AcknowledgeContent | undefined {
  if (!scanCanonicalAcknowledge(payload)) return undefined;
  return {
    acknowledgedMessageType: payload.toString('latin1', canonicalAck.typeStart, canonicalAck.typeEnd),
    acknowledgedMessageId: payload.toString('latin1', canonicalAck.idStart, canonicalAck.idEnd),
    acknowledgedMessageSequenceNumber: canonicalAck.seq,
    isSequentialMessage: canonicalAck.sequential,
  };
}

/**
 * The AcknowledgedMessageSequenceNumber of an ack payload, the one field the reliable channel matches on
 * (spec §5): the same acceptance and errors as {@link decodeAcknowledge}, but the canonical layout creates no
 * strings and no object (issue 16).
 * @throws ProtocolError `PF_ERR_PAYLOAD` when the payload is not a valid ack.
 */
export function acknowledgedSequenceNumberOf(payload: Buffer): number {
  if (scanCanonicalAcknowledge(payload)) return canonicalAck.seq;
  return decodeAcknowledge(payload).acknowledgedMessageSequenceNumber;
}

/**
 * Parse an ack payload: the canonical layout every reference end writes takes a byte-level fast path
 * ({@link decodeCanonicalAcknowledge}); anything else goes through JSON.parse and field validation.
 */
export function decodeAcknowledge(payload: Buffer): AcknowledgeContent {
  const fast = decodeCanonicalAcknowledge(payload);
  if (fast !== undefined) return fast;
  const what = 'acknowledge payload';
  const obj = parseJsonObject(payload, what);
  const seq = field(obj, 'AcknowledgedMessageSequenceNumber', isSafeInteger, what);
  if (seq < 0) throw new ProtocolError('PF_ERR_PAYLOAD', `${what}: negative sequence number ${seq}`);
  return {
    acknowledgedMessageType: field(obj, 'AcknowledgedMessageType', isString, what),
    acknowledgedMessageId: optionalField(obj, 'AcknowledgedMessageId', isString, ''),
    acknowledgedMessageSequenceNumber: seq,
    isSequentialMessage: optionalField(obj, 'IsSequentialMessage', isBoolean, true),
  };
}

// ---------------------------------------------------------------------------------------------
// Handshake (spec §6)

/** One requested client action of a HandshakeRequest. */
export interface RequestedClientAction {
  /** `SessionType` or `KMSEncryption` (or anything a future agent sends). */
  actionType: string;
  /** Raw action parameters; see {@link sessionTypeOf}. */
  actionParameters: JsonObject;
}

/** HandshakeRequest payload (agent → client, PayloadType 5). */
export interface HandshakeRequest {
  /** Agent version; drives the client's mode decisions (§3.3). */
  agentVersion: string;
  requestedClientActions: RequestedClientAction[];
}

/** SessionType action parameters. `properties` values are strings; unknown keys kept, ignored by us. */
export interface SessionTypeParameters {
  sessionType: string;
  properties: Record<string, string>;
}

/** Encode a HandshakeRequest (used by the emulator's agent). */
export function encodeHandshakeRequest(request: HandshakeRequest): Buffer {
  return Buffer.from(
    JSON.stringify({
      AgentVersion: request.agentVersion,
      RequestedClientActions: request.requestedClientActions.map((a) => ({
        ActionType: a.actionType,
        ActionParameters: a.actionParameters,
      })),
    }),
    'utf8',
  );
}

/** Parse a HandshakeRequest. */
export function decodeHandshakeRequest(payload: Buffer): HandshakeRequest {
  const what = 'handshake request';
  const obj = parseJsonObject(payload, what);
  const actions = optionalField(obj, 'RequestedClientActions', isArray, []);
  return {
    agentVersion: optionalField(obj, 'AgentVersion', isString, ''),
    requestedClientActions: actions.map((entry) => {
      if (!isObject(entry)) throw new ProtocolError('PF_ERR_PAYLOAD', `${what}: action is not an object`);
      return {
        actionType: field(entry, 'ActionType', isString, what),
        actionParameters: optionalField(entry, 'ActionParameters', isObject, {}),
      };
    }),
  };
}

/** Build the parameters of a SessionType action (emulator side). */
export function sessionTypeAction(parameters: SessionTypeParameters): RequestedClientAction {
  return {
    actionType: 'SessionType',
    actionParameters: { SessionType: parameters.sessionType, Properties: parameters.properties },
  };
}

/** Read the SessionType action's parameters; non-string property values are dropped. */
export function sessionTypeOf(action: RequestedClientAction): SessionTypeParameters {
  const params = action.actionParameters;
  const rawProperties = optionalField(params, 'Properties', isObject, {});
  // fromEntries defines own properties, so a key named "__proto__" is kept as data, not a prototype.
  const properties = Object.fromEntries(
    Object.entries(rawProperties).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
  );
  return { sessionType: optionalField(params, 'SessionType', isString, ''), properties };
}

/** One processed action in a HandshakeResponse. */
export interface ProcessedClientAction {
  actionType: string;
  actionStatus: ActionStatus;
  /** `null` for SessionType. */
  actionResult: unknown;
  /** Empty on success. */
  error: string;
}

/** HandshakeResponse payload (client → agent, PayloadType 6). */
export interface HandshakeResponse {
  /** The agent takes its mode decisions from this (§3.3). */
  clientVersion: string;
  processedClientActions: ProcessedClientAction[];
  /** `null` or a list of error strings. */
  errors: string[] | null;
}

/** Encode a HandshakeResponse with the reference key order. */
export function encodeHandshakeResponse(response: HandshakeResponse): Buffer {
  return Buffer.from(
    JSON.stringify({
      ClientVersion: response.clientVersion,
      ProcessedClientActions: response.processedClientActions.map((a) => ({
        ActionType: a.actionType,
        ActionStatus: a.actionStatus,
        ActionResult: a.actionResult ?? null,
        Error: a.error,
      })),
      Errors: response.errors,
    }),
    'utf8',
  );
}

/** Parse a HandshakeResponse (used by the emulator's agent). A missing ClientVersion reads as "". */
export function decodeHandshakeResponse(payload: Buffer): HandshakeResponse {
  const what = 'handshake response';
  const obj = parseJsonObject(payload, what);
  const actions = optionalField(obj, 'ProcessedClientActions', isArray, []);
  const errors = obj['Errors'];
  return {
    clientVersion: optionalField(obj, 'ClientVersion', isString, ''),
    processedClientActions: actions.map((entry) => {
      if (!isObject(entry)) throw new ProtocolError('PF_ERR_PAYLOAD', `${what}: action is not an object`);
      const status = field(entry, 'ActionStatus', isSafeInteger, what);
      return {
        actionType: field(entry, 'ActionType', isString, what),
        actionStatus: status as ActionStatus,
        actionResult: entry['ActionResult'] ?? null,
        error: optionalField(entry, 'Error', isString, ''),
      };
    }),
    errors: Array.isArray(errors) ? errors.filter(isString) : null,
  };
}

/** HandshakeComplete payload (agent → client, PayloadType 7). */
export interface HandshakeComplete {
  /** Nanoseconds the handshake took, as reported by the agent. */
  handshakeTimeToComplete: number;
  /** Text to show the user when non-empty. */
  customerMessage: string;
}

/** Encode a HandshakeComplete. */
export function encodeHandshakeComplete(complete: HandshakeComplete): Buffer {
  return Buffer.from(
    JSON.stringify({
      HandshakeTimeToComplete: complete.handshakeTimeToComplete,
      CustomerMessage: complete.customerMessage,
    }),
    'utf8',
  );
}

/** Parse a HandshakeComplete. */
export function decodeHandshakeComplete(payload: Buffer): HandshakeComplete {
  const obj = parseJsonObject(payload, 'handshake complete');
  return {
    handshakeTimeToComplete: optionalField(obj, 'HandshakeTimeToComplete', isSafeInteger, 0),
    customerMessage: optionalField(obj, 'CustomerMessage', isString, ''),
  };
}

// ---------------------------------------------------------------------------------------------
// Flag (spec §4.3, §9.5)

/** Flag payload byte length (protocol). */
export const FLAG_PAYLOAD_BYTES = 4;

/** Encode a flag code as 4 bytes big-endian. */
export function encodeFlag(flag: FlagCode): Buffer {
  const buf = Buffer.alloc(FLAG_PAYLOAD_BYTES);
  buf.writeUInt32BE(flag, 0);
  return buf;
}

/** Decode a flag payload. Unknown codes are returned as numbers for the caller to log and ignore. */
export function decodeFlag(payload: Buffer): number {
  if (payload.length !== FLAG_PAYLOAD_BYTES) {
    throw new ProtocolError('PF_ERR_PAYLOAD', `flag payload must be 4 bytes, got ${payload.length}`);
  }
  return payload.readUInt32BE(0);
}

// ---------------------------------------------------------------------------------------------
// channel_closed (spec §10.1)

/** channel_closed payload (service → client). */
export interface ChannelClosed {
  sessionId: string;
  /** Reason text; may be empty. */
  output: string;
}

/** Encode a channel_closed payload (emulator side). */
export function encodeChannelClosed(
  fields: ChannelClosed & { messageId: string; destinationId: string; createdDate: number },
): Buffer {
  return Buffer.from(
    JSON.stringify({
      MessageType: 'channel_closed',
      MessageId: fields.messageId,
      DestinationId: fields.destinationId,
      SessionId: fields.sessionId,
      SchemaVersion: 1,
      CreatedDate: String(fields.createdDate),
      Output: fields.output,
    }),
    'utf8',
  );
}

/** Parse a channel_closed payload; an unparseable payload still ends the session, with an empty reason. */
export function decodeChannelClosed(payload: Buffer): ChannelClosed {
  let obj: JsonObject;
  try {
    obj = parseJsonObject(payload, 'channel_closed payload');
  } catch {
    return { sessionId: '', output: '' };
  }
  return {
    sessionId: optionalField(obj, 'SessionId', isString, ''),
    output: optionalField(obj, 'Output', isString, ''),
  };
}

// ---------------------------------------------------------------------------------------------
// OpenDataChannel text frame (spec §3.2)

/** The first (text) frame on the data-channel WebSocket. */
export interface OpenDataChannelInput {
  /** `"1.0"`. */
  messageSchemaVersion: string;
  /** Fresh UUIDv4 per connect. */
  requestId: string;
  /** Bearer token from StartSession/ResumeSession. Secret: never log. */
  tokenValue: string;
  /** UUIDv4 fixed for the session. */
  clientId: string;
  /** Same value as the HandshakeResponse's ClientVersion. */
  clientVersion: string;
}

/** Encode OpenDataChannel as compact JSON with the reference key order. */
export function encodeOpenDataChannel(input: OpenDataChannelInput): string {
  return JSON.stringify({
    MessageSchemaVersion: input.messageSchemaVersion,
    RequestId: input.requestId,
    TokenValue: input.tokenValue,
    ClientId: input.clientId,
    ClientVersion: input.clientVersion,
  });
}

/** Parse OpenDataChannel (emulator side). `ClientVersion` may be missing (agent frames have none). */
export function decodeOpenDataChannel(text: string): OpenDataChannelInput {
  const what = 'OpenDataChannel';
  const obj = parseJsonObject(text, what);
  return {
    messageSchemaVersion: optionalField(obj, 'MessageSchemaVersion', isString, ''),
    requestId: optionalField(obj, 'RequestId', isString, ''),
    tokenValue: field(obj, 'TokenValue', isString, what),
    clientId: optionalField(obj, 'ClientId', isString, ''),
    clientVersion: optionalField(obj, 'ClientVersion', isString, ''),
  };
}
