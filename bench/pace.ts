/**
 * What a sender that sleeps 1 ms after every 1024-byte message achieves (spec §9.2, §9.6): the real agent's
 * read loop, and the reference client's send loop. Two figures:
 *
 * - the theoretical ceiling, 1024 bytes per 1 ms = 1.024 MB/s (the sleep alone, zero cost per message);
 * - the emulator's own paced rate on this machine: the emulator's {@link OutboundPump} (the loop that
 *   paces agent Output in the `paced` emulator) run in this process with a sink that only counts bytes.
 *   Timer granularity makes each "1 ms" sleep last longer, so this is below the ceiling. It is the
 *   "direct-equivalent" rate a perfect client could download at from the paced emulator.
 */
import { performance } from 'node:perf_hooks';
import { OutboundPump, PORT_PLUGIN } from '../src/emulator/port.js';

/** Payload of one message of the reference agent and client, bytes (spec §9.2; fixed by the agent). */
export const REFERENCE_MESSAGE_BYTES = 1024;
/** Sleep after each message of the reference agent and client, ms (spec §9.2; fixed by the agent). */
export const REFERENCE_PACING_MS = 1;
/** Ceiling of a 1 ms-per-1024-byte sender, bytes per second (1.024 MB/s). */
export const REFERENCE_CEILING_BYTES_PER_SECOND = (REFERENCE_MESSAGE_BYTES / REFERENCE_PACING_MS) * 1000;

/** Result of {@link measureEmulatorPacedRate}. */
export interface PacedReference {
  /** Bytes pushed through the pump. */
  bytes: number;
  /** Messages the pump emitted. */
  messages: number;
  /** From the push to the last message, s. */
  seconds: number;
  /** Achieved rate, bytes per second. */
  bytesPerSecond: number;
  /** Mean time per message (send + sleep), ms. */
  msPerMessage: number;
}

/**
 * Run the emulator's paced pump (default chunk size and pacing) over `bytes` bytes with a counting sink.
 * @param bytes - bytes to send; 2 MiB takes about 2.5 s
 */
export function measureEmulatorPacedRate(bytes: number): Promise<PacedReference> {
  return new Promise((resolve) => {
    let sent = 0;
    let messages = 0;
    const start = performance.now();
    const pump = new OutboundPump(
      {
        chunkSize: REFERENCE_MESSAGE_BYTES,
        pacingMs: REFERENCE_PACING_MS,
        highWaterBytes: PORT_PLUGIN.PUMP_HIGH_WATER_BYTES,
      },
      {
        emit: (chunk: Buffer) => {
          sent += chunk.length;
          messages++;
          if (sent < bytes) return;
          const seconds = (performance.now() - start) / 1000;
          pump.stop();
          resolve({
            bytes: sent,
            messages,
            seconds,
            bytesPerSecond: sent / seconds,
            msPerMessage: (seconds * 1000) / messages,
          });
        },
        canRun: () => true,
        onHigh: () => undefined,
        onLow: () => undefined,
      },
    );
    pump.push(Buffer.alloc(bytes));
  });
}
