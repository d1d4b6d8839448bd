/**
 * The benchmark's own tiny wire protocols and payload generator, shared by the servers process
 * (`servers.ts`) and the measuring clients (`clients.ts`). Nothing here touches a socket.
 *
 * - echo: every byte received is sent back.
 * - upload sink: the client sends an 8-byte big-endian length N, then N bytes; the sink answers the
 *   32-byte SHA-256 of those N bytes and closes.
 * - download source: the client sends an 8-byte big-endian length N; the source sends N bytes of the
 *   {@link PatternGenerator} stream, then their 32-byte SHA-256, and closes.
 *
 * No protocol relies on TCP half-close, because smux (spec §9.4) has none: a client only closes after it
 * has everything it expects.
 */
import { createHash } from 'node:crypto';

/** Length of the request header of the sink and the source: one unsigned 64-bit big-endian integer, bytes. */
export const LENGTH_HEADER_BYTES = 8;
/** Length of a SHA-256 digest, bytes. */
export const DIGEST_BYTES = 32;
/** Bytes the pattern generator produces per step; a multiple of 4 (it fills 32-bit words). */
export const PATTERN_CHUNK_BYTES = 64 * 1024;
/** Seed of the pattern stream (any non-zero 32-bit value; fixed so both sides agree). */
export const PATTERN_SEED = 0x9e3779b9;
/** Largest length the sink and the source accept, bytes (8 GiB: far above any run, bounds a bad header). */
export const MAX_TRANSFER_BYTES = 8 * 1024 ** 3;

/**
 * Deterministic pseudo-random byte stream (xorshift32 over little-endian 32-bit words). Fast enough
 * (well above 1 GB/s) that generating download data never limits a measurement. Every instance with the
 * same seed produces the same stream.
 */
export class PatternGenerator {
  private state: number;

  constructor(seed: number = PATTERN_SEED) {
    this.state = seed >>> 0 || 1;
  }

  /** The next {@link PATTERN_CHUNK_BYTES} bytes of the stream, in a fresh buffer. */
  next(): Buffer {
    const buffer = Buffer.allocUnsafeSlow(PATTERN_CHUNK_BYTES);
    const words = new Uint32Array(buffer.buffer, buffer.byteOffset, PATTERN_CHUNK_BYTES / 4);
    let x = this.state;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x >>> 0;
    }
    this.state = x >>> 0;
    return buffer;
  }
}

/** The first `length` bytes of the pattern stream, in one buffer. */
export function patternBytes(length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  const generator = new PatternGenerator();
  for (let offset = 0; offset < length; offset += PATTERN_CHUNK_BYTES) {
    generator.next().copy(out, offset, 0, Math.min(PATTERN_CHUNK_BYTES, length - offset));
  }
  return out;
}

/** SHA-256 of a buffer. */
export function sha256(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}

/** The 8-byte request header announcing `length` bytes. */
export function encodeLength(length: number): Buffer {
  const header = Buffer.alloc(LENGTH_HEADER_BYTES);
  header.writeBigUInt64BE(BigInt(length));
  return header;
}

/**
 * Read the 8-byte length header.
 * @throws RangeError when the value is above {@link MAX_TRANSFER_BYTES}
 */
export function decodeLength(header: Buffer): number {
  const value = header.readBigUInt64BE(0);
  if (value > BigInt(MAX_TRANSFER_BYTES)) {
    throw new RangeError(`length ${value} is above the ${MAX_TRANSFER_BYTES}-byte limit`);
  }
  return Number(value);
}
