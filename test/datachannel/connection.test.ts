/**
 * The data-channel WebSocket's per-frame contract that the hot path relies on (issue 16): received frames go
 * to `onFrame` in order and whole; `send()` hands ws the caller's frame and ws masks a copy, so the frame the
 * reliable channel keeps for resends is never modified, even when the same buffer is sent again; the written
 * notification is ws's own callback, called once per frame without an error. Real sockets on 127.0.0.1.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import type { WebSocket as ServerSocket } from 'ws';
import { DataChannelConnection } from '../../src/datachannel/connection.js';
import { silentLogger } from '../../src/log.js';

/** A WebSocket server on an ephemeral port and the first socket that connects to it. */
async function serverAndConnection(): Promise<{
  wss: WebSocketServer;
  peer: ServerSocket;
  connection: DataChannelConnection;
  /** Binary messages the server received, in order. */
  received: Buffer[];
}> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const received: Buffer[] = [];
  const accepted = new Promise<ServerSocket>((resolve) =>
    wss.once('connection', (ws) => {
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) received.push(data);
      });
      resolve(ws);
    }),
  );
  const { port } = wss.address() as AddressInfo;
  const connection = new DataChannelConnection(
    {
      streamUrl: `ws://127.0.0.1:${port}/v1/data-channel/s-1?role=publish_subscribe`,
      tokenValue: 'token',
      clientId: 'c',
      clientVersion: '1.2.694.0',
      connectTimeoutMs: 5000,
      pingIntervalMs: 30_000,
      livenessTimeoutMs: 60_000,
      userAgent: 'pf-daemon-test',
    },
    silentLogger,
  );
  await connection.open();
  return { wss, peer: await accepted, connection, received };
}

/** Resolve once `predicate` holds, checked on every event-loop turn; reject after `ms`. */
async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test('received frames reach onFrame whole and in order', async (t) => {
  const { wss, peer, connection } = await serverAndConnection();
  try {
    const got: Buffer[] = [];
    connection.onFrame = (frame) => got.push(Buffer.from(frame));
    const frames = Array.from({ length: 300 }, (_, i) => randomBytes(120 + ((i * 131) % 1200)));
    for (const frame of frames) peer.send(frame);
    await until(() => got.length === frames.length, 10_000, '300 frames');
    for (let i = 0; i < frames.length; i++) t.true((got[i] as Buffer).equals(frames[i] as Buffer));
    t.is(connection.framesReceived, frames.length);
  } finally {
    connection.close();
    wss.close();
  }
});

test('send() never modifies the frame (ws masks a copy), also when one buffer is sent again; written once each', async (t) => {
  const { wss, connection, received } = await serverAndConnection();
  try {
    const frames = Array.from({ length: 200 }, (_, i) => randomBytes(1144 - (i % 7)));
    const copies = frames.map((f) => Buffer.from(f));
    const written: (Error | null | undefined)[][] = frames.map(() => []);
    // Every frame twice, like a resend of the same stored buffer.
    for (let round = 0; round < 2; round++) {
      frames.forEach((frame, i) => connection.send(frame, (err) => written[i]?.push(err)));
    }
    await until(() => received.length === 2 * frames.length, 10_000, '400 frames at the server');
    for (let i = 0; i < frames.length; i++) {
      t.true((frames[i] as Buffer).equals(copies[i] as Buffer), `frame ${i} unchanged after two sends`);
      t.true((received[i] as Buffer).equals(copies[i] as Buffer), `first copy of frame ${i} intact`);
      t.true((received[frames.length + i] as Buffer).equals(copies[i] as Buffer), `resend of ${i} intact`);
      t.deepEqual(
        (written[i] as unknown[]).map((err) => err ?? null),
        [null, null],
        `frame ${i}: one written notification per send, no error`,
      );
    }
  } finally {
    connection.close();
    wss.close();
  }
});
