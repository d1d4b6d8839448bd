/**
 * The agent's ack frame for one received `input_stream_data` message (spec §5, §4.4), built from a prebuilt
 * template: the JSON's fixed parts are copied, the acked MessageId's hex is written straight from its wire
 * bytes and the sequence number's digits straight into the frame. No JSON, no MessageId string, no header
 * object per ack: one allocation and one digest (issue 16). The bytes are exactly those of
 * `encodeAcknowledgeMessage` (`src/datachannel/payloads.ts`) for `{ input_stream_data, message.messageId,
 * message.sequenceNumber, true }`, the JSON the reference agent writes (test/emulator/agent-ack.test.ts checks it).
 *
 * The emulator's own copy of the daemon's `encodeOutputAcknowledgeMessage` (same file) for the other
 * direction, so that each side keeps its own encoder.
 */
import { HEADER, HeaderFlags, MessageType, PayloadType, SCHEMA_VERSION } from '../datachannel/constants.js';
import type { FrameHeader, InboundMessage } from '../datachannel/message.js';
import { allocateFrame, sealFrame } from '../datachannel/message.js';

/** The ack JSON up to the MessageId, for an `input_stream_data` ack (the reference key order, spec §5). */
const INPUT_ACK_PREFIX = Buffer.from(
  `{"AcknowledgedMessageType":"${MessageType.InputStreamData}","AcknowledgedMessageId":"`,
  'latin1',
);
/** The ack JSON from the end of the MessageId to the sequence number's digits. */
const ACK_SEQUENCE_KEY = Buffer.from('","AcknowledgedMessageSequenceNumber":', 'latin1');
/** The ack JSON after the digits (the agent always sends IsSequentialMessage true). */
const ACK_END = Buffer.from(',"IsSequentialMessage":true}', 'latin1');
/** Characters of a MessageId in its hyphenated text form, bytes (spec §4.5). */
const MESSAGE_ID_TEXT_BYTES = 36;
/** Lowercase hex digit character codes (a UUID string as the agent renders it). */
const HEX = Buffer.from('0123456789abcdef', 'latin1');
/** `-` between the UUID's groups. */
const CHAR_HYPHEN = 0x2d;
/** `0`. */
const CHAR_0 = 0x30;

/**
 * Header of every ack the agent sends (spec §4.4: seq 0, Flags 3, PayloadType 0, fresh MessageId): one shared
 * record whose `createdDate` is set per ack, as sealing is synchronous.
 */
const ackHeader: FrameHeader = {
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
 * The ack frame of `message`, an `input_stream_data` message the agent received.
 * @param createdDate - CreatedDate of the ack, Unix ms (non-zero)
 */
export function encodeInputAcknowledge(message: InboundMessage, createdDate: number): Buffer {
  const seq = message.sequenceNumber;
  const digits = decimalDigits(seq);
  const frame = allocateFrame(
    INPUT_ACK_PREFIX.length + MESSAGE_ID_TEXT_BYTES + ACK_SEQUENCE_KEY.length + digits + ACK_END.length,
  );
  // Uint8Array#set, not Buffer#copy: the same bytes without Buffer's argument handling per call.
  frame.set(INPUT_ACK_PREFIX, HEADER.PAYLOAD_OFFSET);
  let pos = HEADER.PAYLOAD_OFFSET + INPUT_ACK_PREFIX.length;
  // RFC 4122 byte i is wire byte i + 8 for i < 8, i − 8 after (spec §4.5); hyphens before RFC bytes 4, 6, 8, 10.
  for (let i = 0; i < HEADER.MESSAGE_ID_BYTES; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) frame[pos++] = CHAR_HYPHEN;
    const byte = message.messageIdByte(i < 8 ? i + 8 : i - 8);
    frame[pos++] = HEX[byte >>> 4] as number;
    frame[pos++] = HEX[byte & 0x0f] as number;
  }
  frame.set(ACK_SEQUENCE_KEY, pos);
  pos += ACK_SEQUENCE_KEY.length;
  let rest = seq;
  for (let i = pos + digits - 1; i >= pos; i--) {
    frame[i] = CHAR_0 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
  pos += digits;
  frame.set(ACK_END, pos);
  ackHeader.createdDate = createdDate;
  return sealFrame(frame, ackHeader);
}
