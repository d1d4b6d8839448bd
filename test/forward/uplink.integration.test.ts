/**
 * A slow uplink (issue 10 item 4, spec §7.3, §9.6): the emulator reads the client's WebSocket at a limited byte
 * rate (`toAgentBytesPerSec`), so TCP backpressure reaches the daemon. The daemon must keep the link busy
 * without a resend storm: a message's timer starts when its copy has left the socket, a copy still queued is
 * never resent, and bytes queued in the WebSocket count against the window. Measured: goodput at the
 * destination, duplicate Output messages as the agent counts them, and the WebSocket's largest queue.
 *
 * The agent is the faithful one (1 KiB messages 1 ms apart, head-only resend every 100 ms). The destination is a
 * sink, so the downlink carries only the agent's acks and the uplink carries only our data.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { PayloadType } from '../../src/datachannel/constants.js';
import { SEND_QUEUE_LIMIT_BYTES } from '../../src/datachannel/reliable.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { AgentMessageEvent } from '../../src/emulator/agent.js';
import type { TunnelSession } from '../../src/forward/session.js';
import { startForward, tuningWith, withTimeout } from './fixtures.js';

/** A destination that reads and discards; `received` resolves once `bytes` arrived in total. */
async function startSink(): Promise<{
  port: number;
  total: () => number;
  received: (bytes: number) => Promise<number>;
  close: () => Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  let total = 0;
  const waiters: { bytes: number; resolve: (at: number) => void }[] = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length;
      for (let i = waiters.length - 1; i >= 0; i--) {
        const waiter = waiters[i] as { bytes: number; resolve: (at: number) => void };
        if (total >= waiter.bytes) {
          waiters.splice(i, 1);
          waiter.resolve(performance.now());
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    total: () => total,
    received: (bytes) =>
      total >= bytes
        ? Promise.resolve(performance.now())
        : new Promise((resolve) => waiters.push({ bytes, resolve })),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Write `bytes` random bytes to `socket`, honouring backpressure. */
function upload(socket: net.Socket, bytes: number): void {
  const block = randomBytes(64 * 1024);
  let sent = 0;
  const more = (): void => {
    while (sent < bytes) {
      const size = Math.min(block.length, bytes - sent);
      sent += size;
      if (!socket.write(size === block.length ? block : block.subarray(0, size))) {
        socket.once('drain', more);
        return;
      }
    }
  };
  more();
}

interface UplinkFigures {
  goodputBytesPerSec: number;
  duplicatePercent: number;
  peakQueuedBytes: number;
  resends: number;
  seconds: number;
}

async function throttledUpload(
  rateBytesPerSec: number,
  bytes: number,
  timeoutMs: number,
): Promise<UplinkFigures> {
  const sink = await startSink();
  const emulator = await startEmulator({});
  const { forward, port } = await startForward(emulator, { remotePort: sink.port }, tuningWith());
  // Output messages as the agent receives them: every copy, and the distinct sequence numbers.
  let outputCopies = 0;
  const distinct = new Set<number>();
  emulator.on('handshakeComplete', (id: string) => {
    emulator.session(id).agent?.on('message', (event: AgentMessageEvent) => {
      if (event.direction !== 'in' || event.messageType !== 'input_stream_data') return;
      if (event.payloadType !== PayloadType.Output) return;
      outputCopies++;
      distinct.add(event.sequenceNumber);
    });
  });
  const socket = net.connect(port, '127.0.0.1');
  try {
    const session = await withTimeout(
      new Promise<TunnelSession>((resolve) => forward.once('session', resolve)),
      10_000,
      'the session',
    );
    emulator.faults.toAgentBytesPerSec = rateBytesPerSec;
    const startedAt = performance.now();
    upload(socket, bytes);
    const doneAt = await withTimeout(sink.received(bytes), timeoutMs, `${bytes} bytes at the sink`);
    const seconds = (doneAt - startedAt) / 1000;
    const channel = session.stats['channel'] as { resends: number; peakQueuedBytes?: number };
    return {
      goodputBytesPerSec: bytes / seconds,
      duplicatePercent: (100 * (outputCopies - distinct.size)) / Math.max(1, distinct.size),
      peakQueuedBytes: channel.peakQueuedBytes ?? Number.NaN,
      resends: channel.resends,
      seconds,
    };
  } finally {
    socket.destroy();
    await forward.stop(0);
    await emulator.close();
    await sink.close();
  }
}

/**
 * Largest WebSocket queue allowed: the queue limit for new messages, plus one copy of every message of the
 * window (256 × ≤ 1 KiB payload + header), plus the acks and pings that may sit behind them.
 */
const QUEUE_BOUND_BYTES = SEND_QUEUE_LIMIT_BYTES + 256 * 1200 + 64 * 1024;

for (const { rate, bytes, label } of [
  { rate: 256 * 1024, bytes: 4 * 1024 * 1024, label: '256 KiB/s uplink, 4 MiB upload' },
  { rate: 64 * 1024, bytes: 1024 * 1024, label: '64 KiB/s uplink, 1 MiB upload' },
]) {
  test.serial(
    `${label}: goodput ≥ 80 % of the link, ≤ 2 % duplicates, WebSocket queue bounded`,
    async (t) => {
      const seconds = bytes / rate;
      t.timeout(seconds * 1000 * 2 + 30_000);
      const f = await throttledUpload(rate, bytes, seconds * 1000 * 2);
      t.log(
        `${label}: ${f.seconds.toFixed(1)} s, goodput ${(f.goodputBytesPerSec / 1024).toFixed(1)} KiB/s ` +
          `(${((100 * f.goodputBytesPerSec) / rate).toFixed(1)} % of the link), duplicates ${f.duplicatePercent.toFixed(2)} %, ` +
          `resends ${f.resends}, peak WebSocket queue ${Math.round(f.peakQueuedBytes / 1024)} KiB`,
      );
      t.true(f.goodputBytesPerSec >= 0.8 * rate, 'goodput at least 80 % of the link rate');
      t.true(f.duplicatePercent <= 2, 'at most 2 % duplicate Output messages at the agent');
      t.true(f.peakQueuedBytes <= QUEUE_BOUND_BYTES, `WebSocket queue ≤ ${QUEUE_BOUND_BYTES} bytes`);
    },
  );
}
