/**
 * Pure codec for data-channel messages: one binary WebSocket frame = 120-byte header + payload
 * (spec §4). No sockets, timers or logging here.
 */
import { createHash, randomUUID } from 'node:crypto';
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
   */
  copyPayload?: boolean;
}

const MESSAGE_TYPE_PADDING = 0x20;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_SEQUENCE = BigInt(Number.MAX_SAFE_INTEGER);

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

/**
 * Write a UUID string into `target` at `offset` in wire order: bytes 8..15 first, then 0..7 (spec §4.5).
 * @throws ProtocolError `PF_ERR_MESSAGE_ID` when `uuid` is not a UUID string.
 */
export function writeMessageId(target: Buffer, offset: number, uuid: string): void {
  if (!UUID_PATTERN.test(uuid))
    throw new ProtocolError('PF_ERR_MESSAGE_ID', `not a UUID: ${JSON.stringify(uuid)}`);
  const hex = uuid.replace(/-/g, '');
  // hex chars 16..31 are RFC bytes 8..15; they go first on the wire.
  target.write(hex.slice(16), offset, 8, 'hex');
  target.write(hex.slice(0, 16), offset + 8, 8, 'hex');
}

/** Read a wire-order MessageId (spec §4.5) as a lowercase hyphenated UUID string. */
export function readMessageId(source: Buffer, offset: number): string {
  const hex = source.toString('hex', offset + 8, offset + 16) + source.toString('hex', offset, offset + 8);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** SHA-256 of `payload`. */
export function payloadDigest(payload: Buffer): Buffer {
  return createHash('sha256').update(payload).digest();
}

/**
 * Encode a message into one freshly allocated frame buffer, header written in place.
 * The digest is computed here; `HeaderLength` is always 116.
 * @throws ProtocolError when the message type is too long or the MessageId is not a UUID.
 */
export function encodeMessage(message: ClientMessage): Buffer {
  const typeBytes = Buffer.byteLength(message.messageType, 'latin1');
  if (typeBytes === 0 || typeBytes > HEADER.MESSAGE_TYPE_BYTES) {
    throw new ProtocolError(
      'PF_ERR_MESSAGE_TYPE',
      `message type must be 1-32 ASCII bytes: ${message.messageType}`,
    );
  }
  const payload = message.payload;
  const frame = Buffer.allocUnsafe(HEADER.TOTAL_BYTES + payload.length);
  frame.writeUInt32BE(HEADER.HEADER_LENGTH_VALUE, HEADER.HEADER_LENGTH_OFFSET);
  frame.write(message.messageType, HEADER.MESSAGE_TYPE_OFFSET, 'latin1');
  frame.fill(
    MESSAGE_TYPE_PADDING,
    HEADER.MESSAGE_TYPE_OFFSET + typeBytes,
    HEADER.MESSAGE_TYPE_OFFSET + HEADER.MESSAGE_TYPE_BYTES,
  );
  frame.writeUInt32BE(message.schemaVersion, HEADER.SCHEMA_VERSION_OFFSET);
  frame.writeBigUInt64BE(BigInt(message.createdDate), HEADER.CREATED_DATE_OFFSET);
  frame.writeBigInt64BE(BigInt(message.sequenceNumber), HEADER.SEQUENCE_NUMBER_OFFSET);
  frame.writeBigUInt64BE(BigInt(message.flags), HEADER.FLAGS_OFFSET);
  writeMessageId(frame, HEADER.MESSAGE_ID_OFFSET, message.messageId);
  createHash('sha256').update(payload).digest().copy(frame, HEADER.PAYLOAD_DIGEST_OFFSET);
  frame.writeUInt32BE(message.payloadType, HEADER.PAYLOAD_TYPE_OFFSET);
  frame.writeUInt32BE(payload.length, HEADER.PAYLOAD_LENGTH_OFFSET);
  payload.copy(frame, HEADER.PAYLOAD_OFFSET);
  return frame;
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

/** Read the MessageType field: strip NUL bytes, then surrounding whitespace (spec §4.1). */
function readMessageType(frame: Buffer): string {
  let text = '';
  for (let i = HEADER.MESSAGE_TYPE_OFFSET; i < HEADER.MESSAGE_TYPE_OFFSET + HEADER.MESSAGE_TYPE_BYTES; i++) {
    const byte = frame[i] as number;
    if (byte === 0) continue;
    text += String.fromCharCode(byte);
  }
  return text.trim();
}

/**
 * Decode one binary frame. Validates per spec §4.1 (stricter than the reference, compatible with it).
 * `pause_publication` / `start_publication` are accepted without header validation.
 * @throws ProtocolError (and nothing else) for any malformed input.
 */
export function decodeMessage(frame: Buffer, options: DecodeOptions = {}): ClientMessage {
  if (frame.length < HEADER.TOTAL_BYTES) {
    throw new ProtocolError('PF_ERR_FRAME_TOO_SHORT', `frame of ${frame.length} bytes is shorter than 120`);
  }
  const messageType = readMessageType(frame);
  const control = isPublicationControl(messageType);
  const headerLength = frame.readUInt32BE(HEADER.HEADER_LENGTH_OFFSET);
  const payloadLength = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
  const createdDateBig = frame.readBigUInt64BE(HEADER.CREATED_DATE_OFFSET);
  const sequenceBig = frame.readBigInt64BE(HEADER.SEQUENCE_NUMBER_OFFSET);
  const schemaVersion = frame.readUInt32BE(HEADER.SCHEMA_VERSION_OFFSET);
  const flags = Number(frame.readBigUInt64BE(HEADER.FLAGS_OFFSET));
  const payloadType = frame.readUInt32BE(HEADER.PAYLOAD_TYPE_OFFSET);
  const messageId = readMessageId(frame, HEADER.MESSAGE_ID_OFFSET);

  if (control) {
    // Accepted without validation; their payload carries nothing we use.
    return {
      messageType,
      schemaVersion,
      createdDate: Number(createdDateBig),
      sequenceNumber: 0,
      flags,
      messageId,
      payloadType,
      payload: Buffer.alloc(0),
    };
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
  if (messageType.length === 0 || !/^[\x21-\x7e]+$/.test(messageType)) {
    throw new ProtocolError('PF_ERR_MESSAGE_TYPE', `MessageType ${JSON.stringify(messageType)} is not valid`);
  }
  if (createdDateBig === 0n) throw new ProtocolError('PF_ERR_CREATED_DATE', 'CreatedDate is 0');

  let sequenceNumber = 0;
  if (isStreamData(messageType)) {
    if (sequenceBig < 0n || sequenceBig > MAX_SEQUENCE) {
      throw new ProtocolError('PF_ERR_SEQUENCE_NUMBER', `SequenceNumber ${sequenceBig} out of range`);
    }
    sequenceNumber = Number(sequenceBig);
  } else if (sequenceBig >= 0n && sequenceBig <= MAX_SEQUENCE) {
    sequenceNumber = Number(sequenceBig);
  }

  const view = frame.subarray(payloadStart, payloadStart + payloadLength);
  if (payloadLength > 0 && options.verifyDigest !== false) {
    const digest = payloadDigest(view);
    if (!digest.equals(frame.subarray(HEADER.PAYLOAD_DIGEST_OFFSET, HEADER.PAYLOAD_DIGEST_OFFSET + 32))) {
      throw new ProtocolError(
        'PF_ERR_DIGEST_MISMATCH',
        `payload digest mismatch on ${messageType}#${sequenceNumber}`,
      );
    }
  }
  const payload = options.copyPayload === false ? view : Buffer.from(view);
  return {
    messageType,
    schemaVersion,
    createdDate: Number(createdDateBig),
    sequenceNumber,
    flags,
    messageId,
    payloadType,
    payload,
  };
}

/** True when the frame's PayloadDigest field is the SHA-256 of its payload (for the emulator's counters). */
export function frameDigestMatches(frame: Buffer): boolean {
  if (frame.length < HEADER.TOTAL_BYTES) return false;
  const headerLength = frame.readUInt32BE(HEADER.HEADER_LENGTH_OFFSET);
  const payloadLength = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
  const start = headerLength + 4;
  if (start + payloadLength > frame.length) return false;
  return payloadDigest(frame.subarray(start, start + payloadLength)).equals(
    frame.subarray(HEADER.PAYLOAD_DIGEST_OFFSET, HEADER.PAYLOAD_DIGEST_OFFSET + HEADER.PAYLOAD_DIGEST_BYTES),
  );
}

/** Read just the SequenceNumber and MessageType of an encoded frame we produced (no validation). */
export function peekSequenceNumber(frame: Buffer): number {
  return Number(frame.readBigInt64BE(HEADER.SEQUENCE_NUMBER_OFFSET));
}
