/**
 * Basic mode keeps connections apart (issue 10 item 7): Output the agent sent for a local connection that
 * has ended is discarded, never handed to the next connection. Over the emulator's basic-mode agent with
 * its faithful pacing (1 KiB messages 1 ms apart) and a 50 ms delay each way, so a round trip's worth of
 * the first connection's response is still in flight when that connection closes.
 */
import test from 'ava';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startEmulator } from '../../src/emulator/index.js';
import { startForward, tuningWith, withTimeout } from './fixtures.js';

/** Bytes destination connection k sends back once it got its first byte: all of value k. */
const SECOND_BYTES = 256 * 1024;
const RESPONSE_BYTES: readonly number[] = [0, 2 * 1024 * 1024, SECOND_BYTES, SECOND_BYTES];

/** A destination whose k-th connection (1-based) answers its first data with RESPONSE_BYTES[k] bytes of k. */
async function startPatternServer(): Promise<{ port: number; connections: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { connections: 0 };
  const server = net.createServer((socket) => {
    const index = ++state.connections;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', () => {
      const size = RESPONSE_BYTES[index] ?? 1024;
      socket.write(Buffer.alloc(size, index));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return state.connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connect, send `hello`, read until `stopAfter` bytes came (then destroy) and return what was read. */
function readFrom(port: number, hello: string, stopAfter: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let received = 0;
    socket.on('error', reject);
    socket.on('connect', () => socket.write(hello));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= stopAfter) {
        socket.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** How many bytes of `data` are not `value`. */
function foreignBytes(data: Buffer, value: number): number {
  let count = 0;
  for (const byte of data) if (byte !== value) count++;
  return count;
}

test.serial(
  'basic mode: a large response cut short by its client never reaches the next connection',
  async (t) => {
    t.timeout(60_000);
    const destination = await startPatternServer();
    const emulator = await startEmulator({ agentVersion: '3.0.196.0' });
    emulator.faults.delay = { toAgent: { ms: 50, jitterMs: 0 }, toClient: { ms: 50, jitterMs: 0 } };
    const { forward, port } = await startForward(
      emulator,
      { remotePort: destination.port },
      tuningWith({ clientVersion: '1.1.69' }),
    );
    try {
      // Connection 1 reads 64 KiB of its 2 MiB response, then closes while the agent is still sending.
      const first = await withTimeout(readFrom(port, 'one', 64 * 1024), 20_000, 'connection 1');
      t.is(forward.currentSession?.mode, 'basic');
      t.is(foreignBytes(first, 1), 0, 'connection 1 got only its own bytes');
      // Connection 2 reads its whole response and must see only its own bytes.
      const second = await withTimeout(readFrom(port, 'two', SECOND_BYTES), 30_000, 'connection 2');
      t.is(destination.connections, 2, 'the agent redialled for connection 2');
      t.is(second.length, SECOND_BYTES, 'connection 2 got exactly its response');
      t.is(foreignBytes(second, 2), 0, 'not one byte of connection 1 reached connection 2');
      const discarded = forward.currentSession?.basicRelay?.discardedBytes ?? 0;
      t.log(`discarded ${discarded} bytes of connection 1 after it closed`);
      t.true(discarded > 0, 'connection 1 still had data in flight when it closed');
      // And a third connection is clean too (the boundary moves with every DisconnectToPort).
      const third = await withTimeout(readFrom(port, 'three', SECOND_BYTES), 30_000, 'connection 3');
      t.is(third.length, SECOND_BYTES);
      t.is(foreignBytes(third, 3), 0);
    } finally {
      await forward.stop(0);
      await emulator.close();
      await destination.close();
    }
  },
);
