/**
 * Pure codec for data-channel messages: one binary WebSocket frame = 120-byte header + payload
 * (spec §4). No sockets, timers or logging here.
 */
import { hash, randomFillSync, randomUUID } from 'node:crypto';
import { ProtocolError } from '../errors.js';
import { HEADER, MessageType, SCHEMA_VERSION } from './constants.js';

/** A decoded (or to-be-encoded) data-channel message. Field names follow the wire (spec §4.1). */
export interface ClientMessage {
  /** MessageType string, e.g. `input_stream_data` (padding stripped). */
  messageType: string;
  /** SchemaVersion header field; 1 for everything we send. */
  schemaVersion: number;
  /** CreatedDate, Unix time in milliseconds; non-zero. */
  createdDate: number;
  /** SequenceNumber; per-direction counter for `*_stream_data`, 0 for acks and service messages. */
  sequenceNumber: number;
  /** Flags header field (spec §4.4); receivers ignore it. */
  flags: number;
  /** MessageId as a lowercase hyphenated UUID string (RFC 4122 byte order). */
  messageId: string;
  /** PayloadType (spec §4.3); 0 for acks and service messages. */
  payloadType: number;
  /** Payload bytes. */
  payload: Buffer;
}

/** Options for {@link decodeMessage}. */
export interface DecodeOptions {
  /**
   * Verify the SHA-256 payload digest and throw `PF_ERR_DIGEST_MISMATCH` when it is wrong
   * (the reference client does; the reference agent does not). Default true.
   */
  verifyDigest?: boolean;
  /**
   * Copy the payload out of the frame (default true). Pass false only when the caller owns the frame
   * buffer and never reuses it: the payload then aliases the frame (spec §4.1, weakness #16).
   * `'stream-data'` copies only the payload of `*_stream_data` messages: for a caller that reads every
   * other payload at once and keeps only sequenced data (the reliable channel).
   */
  copyPayload?: boolean | 'stream-data';
}

/**
 * Header fields {@link sealFrame} writes in place around a payload already at `HEADER.PAYLOAD_OFFSET`: one
 * allocation per outgoing frame, no intermediate payload buffer (issue 7).
 */
export interface FrameHeader {
  /** MessageType string (1–32 ASCII bytes). */
  messageType: string;
  /** SchemaVersion header field. */
  schemaVersion: number;
  /** CreatedDate, Unix time in milliseconds. */
  createdDate: number;
  /** SequenceNumber (spec §7.1). */
  sequenceNumber: number;
  /** Flags header field (spec §4.4). */
  flags: number;
  /**
   * MessageId as a UUID string, or undefined for a fresh random UUIDv4 written straight from random bytes
   * (spec §4.5) without going through a string.
   */
  messageId: string | undefined;
  /** PayloadType (spec §4.3). */
  payloadType: number;
}

const MESSAGE_TYPE_PADDING = 0x20;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** 2^32: splits a safe integer into the two u32 halves of a 64-bit field. */
const U32_SPAN = 0x1_0000_0000;
/** Largest high u32 half of a non-negative safe integer (2^53 − 1 >> 32). */
const MAX_SAFE_HIGH_WORD = 0x1f_ffff;

/** Two lowercase hex digits per byte value, for building MessageId strings without `toString('hex')`. */
const HEX_BYTE: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** The message types we know, space-padded to 32 bytes as every reference encoder writes them (spec §4.1). */
const PADDED_TYPES: ReadonlyMap<string, Buffer> = new Map(
  Object.values(MessageType).map((type) => {
    const padded = Buffer.alloc(HEADER.MESSAGE_TYPE_BYTES, MESSAGE_TYPE_PADDING);
    padded.write(type, 0, 'latin1');
    return [type, padded];
  }),
);
const PADDED_TYPE_LIST: readonly (readonly [string, Buffer])[] = [...PADDED_TYPES];
/**
 * The payload of every publication-control message: they carry nothing we use. Zero bytes, so sharing one
 * instance is safe.
 */
const EMPTY_PAYLOAD = Buffer.alloc(0);

/**
 * Random bytes for MessageIds, refilled 16 × 256 at a time: one `randomFillSync` per 256 messages instead of
 * one `randomUUID()` string (and its hex parse) per message.
 */
const RANDOM_ID_POOL = Buffer.allocUnsafe(HEADER.MESSAGE_ID_BYTES * 256);
let randomIdOffset = RANDOM_ID_POOL.length;

/** Message types the parser accepts without header validation (spec §4.1). */
function isPublicationControl(messageType: string): boolean {
  return messageType === MessageType.PausePublication || messageType === MessageType.StartPublication;
}

/** True for the two sequenced message types. */
export function isStreamData(messageType: string): boolean {
  return messageType === MessageType.InputStreamData || messageType === MessageType.OutputStreamData;
}

/** A fresh random UUIDv4 string for a new message or request. */
export function newMessageId(): string {
  return randomUUID();
}

/** Value of one hex digit character code (already validated by {@link UUID_PATTERN}). */
function hexDigit(code: number): number {
  // '0'-'9' → 0-9; 'a'-'f' and 'A'-'F' → 10-15 (bit 5 folds case).
  return code <= 0x39 ? code - 0x30 : (code | 0x20) - 0x57;
}

/**
 * Write a UUID string into `target` at `offset` in wire order: bytes 8..15 first, then 0..7 (spec §4.5).
 * @throws ProtocolError `PF_ERR_MESSAGE_ID` when `uuid` is not a UUID string.
 */
export function writeMessageId(target: Buffer, offset: number, uuid: string): void {
  if (!UUID_PATTERN.test(uuid))
    throw new ProtocolError('PF_ERR_MESSAGE_ID', `not a UUID: ${JSON.stringify(uuid)}`);
  let char = 0;
  for (let byte = 0; byte < HEADER.MESSAGE_ID_BYTES; byte++) {
    if (char === 8 || char === 13 || char === 18 || char === 23) char++;
    const value = (hexDigit(uuid.charCodeAt(char)) << 4) | hexDigit(uuid.charCodeAt(char + 1));
    char += 2;
    // RFC bytes 8..15 go first on the wire.
    target[offset + (byte < 8 ? byte + 8 : byte - 8)] = value;
  }
}

/** Write fresh random UUIDv4 bytes (version 4, RFC 4122 variant) at `offset`, in wire order (spec §4.5). */
function writeRandomMessageId(target: Buffer, offset: number): void {
  if (randomIdOffset === RANDOM_ID_POOL.length) {
    randomFillSync(RANDOM_ID_POOL);
    randomIdOffset = 0;
  }
  const from = randomIdOffset;
  randomIdOffset += HEADER.MESSAGE_ID_BYTES;
  // Wire bytes 0..7 are RFC bytes 8..15 (variant in RFC byte 8), wire 8..15 are RFC 0..7 (version in byte 6).
  RANDOM_ID_POOL.copy(target, offset, from, from + HEADER.MESSAGE_ID_BYTES);
  target[offset] = ((target[offset] as number) & 0x3f) | 0x80;
  target[offset + 14] = ((target[offset + 14] as number) & 0x0f) | 0x40;
}

/** Read a wire-order MessageId (spec §4.5) as a lowercase hyphenated UUID string. */
export function readMessageId(source: Buffer, offset: number): string {
  const b = (i: number): string => HEX_BYTE[source[offset + (i < 8 ? i + 8 : i - 8)] as number] as string;
  return (
    b(0) +
    b(1) +
    b(2) +
    b(3) +
    '-' +
    b(4) +
    b(5) +
    '-' +
    b(6) +
    b(7) +
    '-' +
    b(8) +
    b(9) +
    '-' +
    b(10) +
    b(11) +
    b(12) +
    b(13) +
    b(14) +
    b(15)
  );
}

/** SHA-256 of `payload` (one-shot `crypto.hash`: no Hash object per message). */
export function payloadDigest(payload: Buffer): Buffer {
  return Buffer.from(payloadDigestLatin1(payload), 'latin1');
}

/**
 * SHA-256 of `payload` as a 32-character latin1 string (one char per byte). On Node 20 `crypto.hash` with
 * output `'buffer'` costs about 1.2 µs more per call than with a string output, because it allocates a
 * fresh ArrayBuffer in C++ for every digest; the hot paths write or compare the string in place (issue 16).
 */
function payloadDigestLatin1(payload: Buffer): string {
  return hash('sha256', payload, 'binary');
}

/** Write the SHA-256 of `frame[start, end)` into the PayloadDigest field of `frame`. */
function writePayloadDigest(frame: Buffer, start: number, end: number): void {
  frame.write(
    payloadDigestLatin1(frame.subarray(start, end)),
    HEADER.PAYLOAD_DIGEST_OFFSET,
    HEADER.PAYLOAD_DIGEST_BYTES,
    'latin1',
  );
}

/** True when the PayloadDigest field of `frame` is the SHA-256 of `frame[start, end)`. */
function payloadDigestMatches(frame: Buffer, start: number, end: number): boolean {
  return digestFieldMatches(frame, frame.subarray(start, end));
}

/** True when the PayloadDigest field of `frame` is the SHA-256 of `payload` (a view of its payload). */
function digestFieldMatches(frame: Buffer, payload: Buffer): boolean {
  const digest = payloadDigestLatin1(payload);
  for (let i = 0; i < HEADER.PAYLOAD_DIGEST_BYTES; i++) {
    if (digest.charCodeAt(i) !== frame[HEADER.PAYLOAD_DIGEST_OFFSET + i]) return false;
  }
  return true;
}

/** Write an unsigned 64-bit field; safe integers without BigInt, anything else through BigInt (same errors). */
function writeU64(frame: Buffer, value: number, offset: number): void {
  if (Number.isSafeInteger(value) && value >= 0) {
    frame.writeUInt32BE(Math.floor(value / U32_SPAN), offset);
    frame.writeUInt32BE(value >>> 0, offset + 4);
  } else {
    frame.writeBigUInt64BE(BigInt(value), offset);
  }
}

/** Write a signed 64-bit field; safe integers without BigInt, anything else through BigInt (same errors). */
function writeI64(frame: Buffer, value: number, offset: number): void {
  if (Number.isSafeInteger(value)) {
    const high = Math.floor(value / U32_SPAN);
    frame.writeInt32BE(high, offset);
    frame.writeUInt32BE(value - high * U32_SPAN, offset + 4);
  } else {
    frame.writeBigInt64BE(BigInt(value), offset);
  }
}

/** Read an unsigned 64-bit field as the nearest double (identical to `Number(readBigUInt64BE())`). */
function readU64(frame: Buffer, offset: number): number {
  return frame.readUInt32BE(offset) * U32_SPAN + frame.readUInt32BE(offset + 4);
}

/**
 * An uninitialised frame for a payload of `payloadBytes`: the caller writes the payload at
 * `HEADER.PAYLOAD_OFFSET`, then calls {@link sealFrame}.
 */
export function allocateFrame(payloadBytes: number): Buffer {
  return Buffer.allocUnsafe(HEADER.TOTAL_BYTES + payloadBytes);
}

/**
 * Write the 120-byte header of `frame` in place: the payload is every byte from `HEADER.PAYLOAD_OFFSET` on,
 * already written by the caller; its digest is computed here. Produces exactly the bytes of
 * {@link encodeMessage} for the same fields. Returns `frame`.
 * @throws ProtocolError when the message type is too long or the MessageId is not a UUID.
 */
export function sealFrame(frame: Buffer, header: FrameHeader): Buffer {
  const type = header.messageType;
  const padded = PADDED_TYPES.get(type);
  if (padded !== undefined) {
    padded.copy(frame, HEADER.MESSAGE_TYPE_OFFSET);
  } else {
    const typeBytes = Buffer.byteLength(type, 'latin1');
    if (typeBytes === 0 || typeBytes > HEADER.MESSAGE_TYPE_BYTES) {
      throw new ProtocolError('PF_ERR_MESSAGE_TYPE', `message type must be 1-32 ASCII bytes: ${type}`);
    }
    frame.write(type, HEADER.MESSAGE_TYPE_OFFSET, 'latin1');
    frame.fill(
      MESSAGE_TYPE_PADDING,
      HEADER.MESSAGE_TYPE_OFFSET + typeBytes,
      HEADER.MESSAGE_TYPE_OFFSET + HEADER.MESSAGE_TYPE_BYTES,
    );
  }
  const payloadLength = frame.length - HEADER.PAYLOAD_OFFSET;
  frame.writeUInt32BE(HEADER.HEADER_LENGTH_VALUE, HEADER.HEADER_LENGTH_OFFSET);
  frame.writeUInt32BE(header.schemaVersion, HEADER.SCHEMA_VERSION_OFFSET);
  writeU64(frame, header.createdDate, HEADER.CREATED_DATE_OFFSET);
  writeI64(frame, header.sequenceNumber, HEADER.SEQUENCE_NUMBER_OFFSET);
  writeU64(frame, header.flags, HEADER.FLAGS_OFFSET);
  if (header.messageId === undefined) writeRandomMessageId(frame, HEADER.MESSAGE_ID_OFFSET);
  else writeMessageId(frame, HEADER.MESSAGE_ID_OFFSET, header.messageId);
  writePayloadDigest(frame, HEADER.PAYLOAD_OFFSET, frame.length);
  frame.writeUInt32BE(header.payloadType, HEADER.PAYLOAD_TYPE_OFFSET);
  frame.writeUInt32BE(payloadLength, HEADER.PAYLOAD_LENGTH_OFFSET);
  return frame;
}

/**
 * Encode a message into one freshly allocated frame buffer, header written in place.
 * The digest is computed here; `HeaderLength` is always 116.
 * @throws ProtocolError when the message type is too long or the MessageId is not a UUID.
 */
export function encodeMessage(message: ClientMessage): Buffer {
  const payload = message.payload;
  const frame = allocateFrame(payload.length);
  payload.copy(frame, HEADER.PAYLOAD_OFFSET);
  return sealFrame(frame, message);
}

/** Convenience: a message with SchemaVersion 1, CreatedDate now and a fresh MessageId. */
export function newMessage(
  fields: Pick<ClientMessage, 'messageType' | 'sequenceNumber' | 'flags' | 'payloadType' | 'payload'> &
    Partial<Pick<ClientMessage, 'createdDate' | 'messageId'>>,
): ClientMessage {
  return {
    schemaVersion: SCHEMA_VERSION,
    createdDate: fields.createdDate ?? Date.now(),
    messageId: fields.messageId ?? newMessageId(),
    ...fields,
  };
}

/** The known message type whose space-padded form fills the MessageType field exactly, if any. */
function knownMessageType(frame: Buffer): string | undefined {
  const first = frame[HEADER.MESSAGE_TYPE_OFFSET];
  for (let k = 0; k < PADDED_TYPE_LIST.length; k++) {
    const [type, padded] = PADDED_TYPE_LIST[k] as readonly [string, Buffer];
    if (padded[0] === first && bytesEqualAt(frame, HEADER.MESSAGE_TYPE_OFFSET, padded)) return type;
  }
  return undefined;
}

/** Read the MessageType field: strip NUL bytes, then surrounding whitespace (spec §4.1). */
function readMessageType(frame: Buffer): string {
  const known = knownMessageType(frame);
  if (known !== undefined) return known;
  let text = '';
  for (let i = HEADER.MESSAGE_TYPE_OFFSET; i < HEADER.MESSAGE_TYPE_OFFSET + HEADER.MESSAGE_TYPE_BYTES; i++) {
    const byte = frame[i] as number;
    if (byte === 0) continue;
    text += String.fromCharCode(byte);
  }
  return text.trim();
}

/**
 * One decoded incoming message as the reliable channel's receive path takes it ({@link decodeInbound}): the
 * fields of {@link ClientMessage}, but the MessageId kept as its 16 wire bytes in four u32 words and rendered
 * as a string only when read. The string is needed by nothing on the hot path (an ack writes the id's hex
 * straight from the words, `encodeOutputAcknowledgeMessage` in `payloads.ts`), so a message costs one object
 * and no string building (issue 16).
 */
export class InboundMessage implements ClientMessage {
  constructor(
    /** MessageType string (padding stripped). */
    readonly messageType: string,
    /** SchemaVersion header field. */
    readonly schemaVersion: number,
    /** CreatedDate, Unix time in milliseconds. */
    readonly createdDate: number,
    /** SequenceNumber (spec §7.1). */
    readonly sequenceNumber: number,
    /** Flags header field (spec §4.4). */
    readonly flags: number,
    /** MessageId wire bytes 0–3 as a big-endian u32 (spec §4.5). */
    readonly idWord0: number,
    /** MessageId wire bytes 4–7. */
    readonly idWord1: number,
    /** MessageId wire bytes 8–11. */
    readonly idWord2: number,
    /** MessageId wire bytes 12–15. */
    readonly idWord3: number,
    /** PayloadType (spec §4.3). */
    readonly payloadType: number,
    /** Payload bytes (a copy unless decoded with `copyPayload: false`). */
    readonly payload: Buffer,
  ) {}

  /** MessageId as a lowercase hyphenated UUID string (RFC 4122 byte order), rendered on each read. */
  get messageId(): string {
    const wire = Buffer.allocUnsafe(HEADER.MESSAGE_ID_BYTES);
    wire.writeUInt32BE(this.idWord0, 0);
    wire.writeUInt32BE(this.idWord1, 4);
    wire.writeUInt32BE(this.idWord2, 8);
    wire.writeUInt32BE(this.idWord3, 12);
    return readMessageId(wire, 0);
  }

  /** Wire byte `index` (0–15) of the MessageId. */
  messageIdByte(index: number): number {
    const word =
      index < 8 ? (index < 4 ? this.idWord0 : this.idWord1) : index < 12 ? this.idWord2 : this.idWord3;
    return (word >>> (24 - 8 * (index & 3))) & 0xff;
  }
}

/** True when `frame[offset, offset + literal.length)` equals `literal` (a JS loop: cheaper than a native call for 32 bytes). */
function bytesEqualAt(frame: Buffer, offset: number, literal: Buffer): boolean {
  for (let i = 0; i < literal.length; i++) if (frame[offset + i] !== literal[i]) return false;
  return true;
}

/**
 * Decode one binary frame. Validates per spec §4.1 (stricter than the reference, compatible with it).
 * `pause_publication` / `start_publication` are accepted without header validation.
 * @throws ProtocolError (and nothing else) for any malformed input.
 */
export function decodeMessage(frame: Buffer, options: DecodeOptions = {}): ClientMessage {
  const m = decodeInbound(frame, options);
  return {
    messageType: m.messageType,
    schemaVersion: m.schemaVersion,
    createdDate: m.createdDate,
    sequenceNumber: m.sequenceNumber,
    flags: m.flags,
    messageId: m.messageId,
    payloadType: m.payloadType,
    payload: m.payload,
  };
}

/**
 * {@link decodeMessage} for the receive hot path: the same validation and errors, the result an
 * {@link InboundMessage} (no MessageId string). `copyPayload` defaults to true as there.
 * @throws ProtocolError (and nothing else) for any malformed input.
 */
export function decodeInbound(frame: Buffer, options: DecodeOptions = {}): InboundMessage {
  if (frame.length < HEADER.TOTAL_BYTES) {
    throw new ProtocolError('PF_ERR_FRAME_TOO_SHORT', `frame of ${frame.length} bytes is shorter than 120`);
  }
  const messageType = readMessageType(frame);
  const control = isPublicationControl(messageType);
  const headerLength = frame.readUInt32BE(HEADER.HEADER_LENGTH_OFFSET);
  const payloadLength = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
  const createdDate = readU64(frame, HEADER.CREATED_DATE_OFFSET);
  const sequenceHigh = frame.readInt32BE(HEADER.SEQUENCE_NUMBER_OFFSET);
  const sequenceLow = frame.readUInt32BE(HEADER.SEQUENCE_NUMBER_OFFSET + 4);
  const schemaVersion = frame.readUInt32BE(HEADER.SCHEMA_VERSION_OFFSET);
  const flags = readU64(frame, HEADER.FLAGS_OFFSET);
  const payloadType = frame.readUInt32BE(HEADER.PAYLOAD_TYPE_OFFSET);
  const idWord0 = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET);
  const idWord1 = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 4);
  const idWord2 = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 8);
  const idWord3 = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 12);

  if (control) {
    // Accepted without validation; their payload carries nothing we use.
    return new InboundMessage(
      messageType,
      schemaVersion,
      createdDate,
      0,
      flags,
      idWord0,
      idWord1,
      idWord2,
      idWord3,
      payloadType,
      EMPTY_PAYLOAD,
    );
  }

  if (headerLength < HEADER.HEADER_LENGTH_VALUE) {
    throw new ProtocolError('PF_ERR_HEADER_LENGTH', `HeaderLength ${headerLength} is below 116`);
  }
  const payloadStart = headerLength + 4;
  if (payloadStart + payloadLength > frame.length) {
    throw new ProtocolError(
      'PF_ERR_FRAME_LENGTH',
      `HeaderLength ${headerLength} + 4 + PayloadLength ${payloadLength} exceeds frame of ${frame.length} bytes`,
    );
  }
  if (!PADDED_TYPES.has(messageType) && (messageType.length === 0 || !/^[\x21-\x7e]+$/.test(messageType))) {
    throw new ProtocolError('PF_ERR_MESSAGE_TYPE', `MessageType ${JSON.stringify(messageType)} is not valid`);
  }
  if (createdDate === 0) throw new ProtocolError('PF_ERR_CREATED_DATE', 'CreatedDate is 0');

  // In range (0 ≤ seq ≤ 2^53 − 1) exactly when the high word is in [0, 0x1fffff].
  const sequenceInRange = sequenceHigh >= 0 && sequenceHigh <= MAX_SAFE_HIGH_WORD;
  let sequenceNumber = 0;
  if (isStreamData(messageType)) {
    if (!sequenceInRange) {
      const sequenceBig = frame.readBigInt64BE(HEADER.SEQUENCE_NUMBER_OFFSET);
      throw new ProtocolError('PF_ERR_SEQUENCE_NUMBER', `SequenceNumber ${sequenceBig} out of range`);
    }
    sequenceNumber = sequenceHigh * U32_SPAN + sequenceLow;
  } else if (sequenceInRange) {
    sequenceNumber = sequenceHigh * U32_SPAN + sequenceLow;
  }

  const view = frame.subarray(payloadStart, payloadStart + payloadLength);
  if (payloadLength > 0 && options.verifyDigest !== false) {
    if (!digestFieldMatches(frame, view)) {
      throw new ProtocolError(
        'PF_ERR_DIGEST_MISMATCH',
        `payload digest mismatch on ${messageType}#${sequenceNumber}`,
      );
    }
  }
  let payload = view;
  const copy = options.copyPayload ?? true;
  if (copy === true || (copy === 'stream-data' && isStreamData(messageType))) {
    // allocUnsafe (pooled below 4 KiB, like Buffer.from) + set is the cheapest copy on Node 20.
    payload = Buffer.allocUnsafe(payloadLength);
    payload.set(view);
  }
  return new InboundMessage(
    messageType,
    schemaVersion,
    createdDate,
    sequenceNumber,
    flags,
    idWord0,
    idWord1,
    idWord2,
    idWord3,
    payloadType,
    payload,
  );
}

/** True when the frame's PayloadDigest field is the SHA-256 of its payload (for the emulator's counters). */
export function frameDigestMatches(frame: Buffer): boolean {
  if (frame.length < HEADER.TOTAL_BYTES) return false;
  const headerLength = frame.readUInt32BE(HEADER.HEADER_LENGTH_OFFSET);
  const payloadLength = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
  const start = headerLength + 4;
  if (start + payloadLength > frame.length) return false;
  return payloadDigestMatches(frame, start, start + payloadLength);
}

/** Read just the SequenceNumber of an encoded frame we produced (no validation). */
export function peekSequenceNumber(frame: Buffer): number {
  return Number(frame.readBigInt64BE(HEADER.SEQUENCE_NUMBER_OFFSET));
}
