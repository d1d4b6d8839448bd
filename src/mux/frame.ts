/**
 * Pure codec for smux v1 frames (spec §9.4; xtaci/smux `frame.go`): 8-byte little-endian header
 * `ver(1) cmd(1) length(u16) sid(u32)` followed by `length` data bytes for PSH.
 */
import { ProtocolError } from '../errors.js';

/** smux protocol version we speak (protocol: v1; v2 adds UPD and is not used by the agent). */
export const SMUX_VERSION = 1;
/** Frame header size in bytes (protocol). */
export const SMUX_HEADER_BYTES = 8;
/**
 * Largest PSH data length the u16 length field allows, bytes (protocol). Readers must accept it; what we
 * write is our own, smaller default (`SMUX_WRITE_FRAME_DATA_BYTES`, `src/mux/defaults.ts`).
 */
export const SMUX_FRAME_DATA_LIMIT_BYTES = 65535;

/** smux commands (xtaci/smux `frame.go`). */
export const SmuxCommand = {
  /** Open a stream; no data. v1 has no SYN-ACK. */
  SYN: 0,
  /** Close a stream ("finished"); no data. */
  FIN: 1,
  /** Data for a stream. */
  PSH: 2,
  /** Keep-alive; sid 0. */
  NOP: 3,
} as const;
export type SmuxCommand = (typeof SmuxCommand)[keyof typeof SmuxCommand];

/** A decoded smux frame. */
export interface SmuxFrame {
  cmd: SmuxCommand;
  /** Stream id; 0 for NOP. */
  sid: number;
  /**
   * PSH data (empty for other commands). May be a view into the decoder's input chunk: the decoder never
   * mutates input, and Node never reuses socket read buffers, so the view stays valid.
   */
  data: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Render a frame for logs. */
export function describeFrame(frame: Pick<SmuxFrame, 'cmd' | 'sid'> & { data?: Buffer }): string {
  const name = (Object.keys(SmuxCommand) as (keyof typeof SmuxCommand)[]).find(
    (k) => SmuxCommand[k] === frame.cmd,
  );
  return `${name ?? `cmd#${frame.cmd}`} sid=${frame.sid}${frame.data && frame.data.length ? ` len=${frame.data.length}` : ''}`;
}

/** Write a frame header into `target` at `offset`. */
export function writeFrameHeader(
  target: Buffer,
  offset: number,
  cmd: SmuxCommand,
  sid: number,
  length: number,
): void {
  target[offset] = SMUX_VERSION;
  target[offset + 1] = cmd;
  target.writeUInt16LE(length, offset + 2);
  target.writeUInt32LE(sid, offset + 4);
}

/**
 * Encode one frame into a new buffer.
 * @throws ProtocolError `PF_ERR_SMUX_FRAME` for data over 65535 bytes, data on a non-PSH frame or a bad sid.
 */
export function encodeFrame(cmd: SmuxCommand, sid: number, data: Buffer = EMPTY): Buffer {
  if (data.length > SMUX_FRAME_DATA_LIMIT_BYTES) {
    throw new ProtocolError('PF_ERR_SMUX_FRAME', `smux frame data of ${data.length} bytes exceeds 65535`);
  }
  if (data.length > 0 && cmd !== SmuxCommand.PSH) {
    throw new ProtocolError('PF_ERR_SMUX_FRAME', 'only PSH frames carry data');
  }
  if (!Number.isInteger(sid) || sid < 0 || sid > 0xffffffff) {
    throw new ProtocolError('PF_ERR_SMUX_FRAME', `smux stream id ${sid} out of range`);
  }
  const frame = Buffer.allocUnsafe(SMUX_HEADER_BYTES + data.length);
  writeFrameHeader(frame, 0, cmd, sid, data.length);
  data.copy(frame, SMUX_HEADER_BYTES);
  return frame;
}

/**
 * Incremental decoder: feed chunks of the smux byte stream in order, get complete frames out.
 * Handles frames split across chunks and many frames in one chunk. Frames wholly inside one chunk are
 * returned as views; only frames spanning chunks are copied.
 *
 * Like xtaci/smux, only PSH frames consume `length` data bytes; the length field of other commands is
 * ignored. A version other than 1 or an unknown command throws, and the decoder must then be discarded
 * (the session dies, as the agent's does).
 */
export class SmuxFrameDecoder {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private failed = false;

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Feed one chunk and return the frames it completes.
   * @throws ProtocolError `PF_ERR_SMUX_VERSION` or `PF_ERR_SMUX_COMMAND`.
   */
  push(chunk: Buffer): SmuxFrame[] {
    if (this.failed) throw new ProtocolError('PF_ERR_SMUX_FRAME', 'smux decoder used after a protocol error');
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: SmuxFrame[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === undefined) break;
      frames.push(frame);
    }
    return frames;
  }

  private next(): SmuxFrame | undefined {
    if (this.buffered < SMUX_HEADER_BYTES) return undefined;
    let head = this.chunks[0] as Buffer;
    if (head.length < SMUX_HEADER_BYTES) {
      this.coalesce(SMUX_HEADER_BYTES);
      head = this.chunks[0] as Buffer;
    }
    const ver = head[0] as number;
    const cmd = head[1] as number;
    if (ver !== SMUX_VERSION) {
      this.failed = true;
      throw new ProtocolError('PF_ERR_SMUX_VERSION', `smux frame version ${ver}, expected 1`);
    }
    if (cmd > SmuxCommand.NOP) {
      this.failed = true;
      throw new ProtocolError('PF_ERR_SMUX_COMMAND', `smux frame command ${cmd} is not valid in v1`);
    }
    const length = cmd === SmuxCommand.PSH ? head.readUInt16LE(2) : 0;
    const sid = head.readUInt32LE(4);
    const total = SMUX_HEADER_BYTES + length;
    if (this.buffered < total) return undefined;
    if (head.length < total) {
      this.coalesce(total);
      head = this.chunks[0] as Buffer;
    }
    const data = length === 0 ? EMPTY : head.subarray(SMUX_HEADER_BYTES, total);
    this.consume(total);
    return { cmd: cmd as SmuxCommand, sid, data };
  }

  /** Make the first chunk at least `bytes` long by joining the chunks it needs. */
  private coalesce(bytes: number): void {
    const joined = Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0] as Buffer;
      const take = Math.min(chunk.length, bytes - filled);
      chunk.copy(joined, filled, 0, take);
      filled += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    this.chunks.unshift(joined);
  }

  /** Drop `bytes` from the front (they lie within the first chunk). */
  private consume(bytes: number): void {
    const head = this.chunks[0] as Buffer;
    if (head.length === bytes) this.chunks.shift();
    else this.chunks[0] = head.subarray(bytes);
    this.buffered -= bytes;
  }
}
