/**
 * The session's frame log (spec §12.3): the last `capacity` frames relayed, dropped or injected, as a ring of
 * typed-array columns. Recording a frame decodes its header once and stores numbers; the {@link FrameRecord}
 * objects, with their MessageId strings, are built only when the log is read. At tens of thousands of frames
 * per second this keeps the log off the emulator's per-message cost: no object, no string and no JSON per
 * frame, and nothing a frame's buffer stays alive for (issue 16).
 */
import { HEADER, MessageType } from '../datachannel/constants.js';
import { decodeInbound, readMessageId } from '../datachannel/message.js';
import { acknowledgedSequenceNumberOf } from '../datachannel/payloads.js';
import type { Direction, FaultFate } from './faults.js';

/** One relayed, dropped or injected frame (spec §12.3). */
export interface FrameRecord {
  /** Unix time, ms. */
  at: number;
  /** `toAgent` = from the client; `toClient` = from the agent or the service. */
  direction: Direction;
  /** Who produced the frame. */
  source: 'client' | 'agent' | 'service';
  /**
   * `relayed` = written to its destination; `discarded` = the client was away; `held` = kept back during a
   * pause; fault fates as applied by the fault pipe; `invalid` = could not be decoded (still relayed).
   */
  fate: 'relayed' | 'discarded' | 'held' | 'invalid' | FaultFate;
  messageType: string;
  sequenceNumber: number;
  flags: number;
  messageId: string;
  payloadType: number;
  payloadLength: number;
  /** For acks: the acknowledged SequenceNumber. */
  ackedSequenceNumber?: number;
}

/** Slots per storage chunk; the log grows a chunk at a time up to its capacity (our choice). */
const CHUNK_SLOTS = 1024;

const DIRECTIONS: readonly Direction[] = ['toAgent', 'toClient'];
const SOURCES: readonly FrameRecord['source'][] = ['client', 'agent', 'service'];
const FATES: readonly FrameRecord['fate'][] = [
  'relayed',
  'discarded',
  'held',
  'invalid',
  'dropped',
  'duplicated',
  'corrupted',
  'reordered',
  'delayed',
];
/** Message types stored as a small code; anything else is kept as a string beside the ring. */
const TYPES: readonly string[] = Object.values(MessageType);
/** Type code of a frame that did not decode. */
const TYPE_INVALID = 0;
/** Type code of a decoded type outside {@link TYPES}. */
const TYPE_OTHER = 255;

/** The columns of {@link CHUNK_SLOTS} slots. */
interface Chunk {
  at: Float64Array;
  /** Direction, source and fate indices (2 + 2 + 4 bits). */
  meta: Uint8Array;
  /** {@link TYPES} index + 1, {@link TYPE_INVALID} or {@link TYPE_OTHER}. */
  type: Uint8Array;
  sequenceNumber: Float64Array;
  flags: Float64Array;
  payloadType: Uint32Array;
  payloadLength: Float64Array;
  /** MessageId as four big-endian wire words per slot (spec §4.5). */
  id: Uint32Array;
  /** Acknowledged SequenceNumber of an ack; NaN when none (not an ack, or a malformed one). */
  acked: Float64Array;
  /** Message types outside {@link TYPES}, by slot. */
  otherTypes: Map<number, string>;
}

function newChunk(): Chunk {
  return {
    at: new Float64Array(CHUNK_SLOTS),
    meta: new Uint8Array(CHUNK_SLOTS),
    type: new Uint8Array(CHUNK_SLOTS),
    sequenceNumber: new Float64Array(CHUNK_SLOTS),
    flags: new Float64Array(CHUNK_SLOTS),
    payloadType: new Uint32Array(CHUNK_SLOTS),
    payloadLength: new Float64Array(CHUNK_SLOTS),
    id: new Uint32Array(4 * CHUNK_SLOTS),
    acked: new Float64Array(CHUNK_SLOTS),
    otherTypes: new Map(),
  };
}

/** 2^32, to join the u32 halves of a 64-bit header field. */
const U32_SPAN = 0x1_0000_0000;
/** Largest high u32 half of a non-negative safe integer (2^53 − 1 >> 32). */
const MAX_SAFE_HIGH_WORD = 0x1f_ffff;
/** MessageType padding byte of every reference encoder (spec §4.1). */
const TYPE_PADDING = 0x20;

/** The type field, space-padded, of the three types that make up nearly all traffic; the fast path takes only these. */
const HOT_TYPES: readonly { type: string; code: number; padded: Buffer; stream: boolean }[] = [
  MessageType.InputStreamData,
  MessageType.OutputStreamData,
  MessageType.Acknowledge,
].map((type) => {
  const padded = Buffer.alloc(HEADER.MESSAGE_TYPE_BYTES, TYPE_PADDING);
  padded.write(type, 'latin1');
  return { type, code: TYPES.indexOf(type) + 1, padded, stream: type !== MessageType.Acknowledge };
});

/** The entry of {@link HOT_TYPES} whose padded form fills the type field of `frame`, if any. */
function hotType(frame: Buffer): (typeof HOT_TYPES)[number] | undefined {
  const first = frame[HEADER.MESSAGE_TYPE_OFFSET];
  for (const hot of HOT_TYPES) {
    if (hot.padded[0] !== first) continue;
    for (let i = 1; i < HEADER.MESSAGE_TYPE_BYTES; i++) {
      if (frame[HEADER.MESSAGE_TYPE_OFFSET + i] !== hot.padded[i]) return undefined;
    }
    return hot;
  }
  return undefined;
}

/** Wire bytes of one MessageId, to render it as a string on read. */
const idScratch = Buffer.alloc(HEADER.MESSAGE_ID_BYTES);

/** The last `capacity` frames of one session; see the file comment. */
export class FrameLog {
  private readonly chunks: Chunk[] = [];
  private total = 0;

  /** @param capacity - frames kept, the oldest overwritten first; 0 keeps none */
  constructor(private readonly capacity: number) {}

  /** Frames recorded since the session began, including those the ring has overwritten. */
  get recorded(): number {
    return this.total;
  }

  /** Frames held now: `min(recorded, capacity)`. */
  get size(): number {
    return Math.min(this.total, this.capacity);
  }

  /**
   * Record one frame. `invalid` replaces a `relayed` fate when the frame does not decode; the header fields
   * are those `decodeMessage` (`src/datachannel/message.ts`) reads, without digest check.
   */
  add(
    at: number,
    direction: Direction,
    source: FrameRecord['source'],
    fate: FrameRecord['fate'],
    frame: Buffer,
  ): void {
    if (this.capacity <= 0) return;
    const index = this.total % this.capacity;
    this.total++;
    const c = (this.chunks[Math.floor(index / CHUNK_SLOTS)] ??= newChunk());
    const slot = index % CHUNK_SLOTS;
    c.at[slot] = at;
    if (c.type[slot] === TYPE_OTHER) c.otherTypes.delete(slot);
    c.acked[slot] = NaN;
    if (this.addCanonical(c, slot, direction, source, fate, frame)) return;
    let m;
    try {
      m = decodeInbound(frame, { verifyDigest: false, copyPayload: false });
    } catch {
      c.meta[slot] = pack(direction, source, fate === 'relayed' ? 'invalid' : fate);
      c.type[slot] = TYPE_INVALID;
      c.payloadLength[slot] = Math.max(0, frame.length - HEADER.TOTAL_BYTES);
      return;
    }
    c.meta[slot] = pack(direction, source, fate);
    const type = TYPES.indexOf(m.messageType);
    if (type >= 0) c.type[slot] = type + 1;
    else {
      c.type[slot] = TYPE_OTHER;
      c.otherTypes.set(slot, m.messageType);
    }
    c.sequenceNumber[slot] = m.sequenceNumber;
    c.flags[slot] = m.flags;
    c.payloadType[slot] = m.payloadType;
    c.payloadLength[slot] = m.payload.length;
    c.id[4 * slot] = m.idWord0;
    c.id[4 * slot + 1] = m.idWord1;
    c.id[4 * slot + 2] = m.idWord2;
    c.id[4 * slot + 3] = m.idWord3;
    if (m.messageType === MessageType.Acknowledge) {
      try {
        c.acked[slot] = acknowledgedSequenceNumberOf(m.payload);
      } catch {
        // A malformed ack is still logged, without the acked number.
      }
    }
  }

  /**
   * The fast path of {@link add}: a frame of a {@link HOT_TYPES} type in the canonical layout (HeaderLength
   * 116, payload within the frame, CreatedDate set, a stream message's SequenceNumber in range) is read field by
   * field, without a decoded message object. Such a frame is one `decodeInbound` accepts with exactly these
   * values (test/emulator/frame-log.test.ts checks it against `decodeMessage`); anything else returns false and
   * takes the decoder.
   */
  private addCanonical(
    c: Chunk,
    slot: number,
    direction: Direction,
    source: FrameRecord['source'],
    fate: FrameRecord['fate'],
    frame: Buffer,
  ): boolean {
    if (frame.length < HEADER.TOTAL_BYTES) return false;
    const hot = hotType(frame);
    if (hot === undefined) return false;
    if (frame.readUInt32BE(HEADER.HEADER_LENGTH_OFFSET) !== HEADER.HEADER_LENGTH_VALUE) return false;
    const payloadLength = frame.readUInt32BE(HEADER.PAYLOAD_LENGTH_OFFSET);
    if (HEADER.PAYLOAD_OFFSET + payloadLength > frame.length) return false;
    if (
      frame.readUInt32BE(HEADER.CREATED_DATE_OFFSET) === 0 &&
      frame.readUInt32BE(HEADER.CREATED_DATE_OFFSET + 4) === 0
    ) {
      return false;
    }
    const sequenceHigh = frame.readInt32BE(HEADER.SEQUENCE_NUMBER_OFFSET);
    const inRange = sequenceHigh >= 0 && sequenceHigh <= MAX_SAFE_HIGH_WORD;
    if (hot.stream && !inRange) return false;
    c.meta[slot] = pack(direction, source, fate);
    c.type[slot] = hot.code;
    c.sequenceNumber[slot] = inRange
      ? sequenceHigh * U32_SPAN + frame.readUInt32BE(HEADER.SEQUENCE_NUMBER_OFFSET + 4)
      : 0;
    c.flags[slot] =
      frame.readUInt32BE(HEADER.FLAGS_OFFSET) * U32_SPAN + frame.readUInt32BE(HEADER.FLAGS_OFFSET + 4);
    c.payloadType[slot] = frame.readUInt32BE(HEADER.PAYLOAD_TYPE_OFFSET);
    c.payloadLength[slot] = payloadLength;
    c.id[4 * slot] = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET);
    c.id[4 * slot + 1] = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 4);
    c.id[4 * slot + 2] = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 8);
    c.id[4 * slot + 3] = frame.readUInt32BE(HEADER.MESSAGE_ID_OFFSET + 12);
    if (!hot.stream) {
      try {
        c.acked[slot] = acknowledgedSequenceNumberOf(
          frame.subarray(HEADER.PAYLOAD_OFFSET, HEADER.PAYLOAD_OFFSET + payloadLength),
        );
      } catch {
        // A malformed ack is still logged, without the acked number.
      }
    }
    return true;
  }

  /** The frames held, oldest first, as fresh records. */
  records(): FrameRecord[] {
    const size = this.size;
    const first = this.total - size;
    const out: FrameRecord[] = new Array<FrameRecord>(size);
    for (let i = 0; i < size; i++) out[i] = this.record((first + i) % this.capacity);
    return out;
  }

  private record(index: number): FrameRecord {
    const c = this.chunks[Math.floor(index / CHUNK_SLOTS)] as Chunk;
    const slot = index % CHUNK_SLOTS;
    const meta = c.meta[slot] as number;
    const head = {
      at: c.at[slot] as number,
      direction: DIRECTIONS[meta >>> 6] as Direction,
      source: SOURCES[(meta >>> 4) & 3] as FrameRecord['source'],
      fate: FATES[meta & 15] as FrameRecord['fate'],
    };
    const type = c.type[slot] as number;
    if (type === TYPE_INVALID) {
      return {
        ...head,
        messageType: '',
        sequenceNumber: -1,
        flags: 0,
        messageId: '',
        payloadType: 0,
        payloadLength: c.payloadLength[slot] as number,
      };
    }
    for (let w = 0; w < 4; w++) idScratch.writeUInt32BE(c.id[4 * slot + w] as number, 4 * w);
    const entry: FrameRecord = {
      ...head,
      messageType: type === TYPE_OTHER ? (c.otherTypes.get(slot) ?? '') : (TYPES[type - 1] as string),
      sequenceNumber: c.sequenceNumber[slot] as number,
      flags: c.flags[slot] as number,
      messageId: readMessageId(idScratch, 0),
      payloadType: c.payloadType[slot] as number,
      payloadLength: c.payloadLength[slot] as number,
    };
    const acked = c.acked[slot] as number;
    if (!Number.isNaN(acked)) entry.ackedSequenceNumber = acked;
    return entry;
  }
}

/** Direction, source and fate as one byte. */
function pack(direction: Direction, source: FrameRecord['source'], fate: FrameRecord['fate']): number {
  return (DIRECTIONS.indexOf(direction) << 6) | (SOURCES.indexOf(source) << 4) | FATES.indexOf(fate);
}
