/**
 * When the mux pump sends (issue 16, src/forward/pump-gate.ts), seen on real sockets through the emulator's
 * faithful agent (1 KiB messages 1 ms apart, head-only resend): under load the small frames of several
 * streams share one data-channel message, and every byte still arrives in order per stream; a new stream's
 * SYN shares its message with the client's first bytes; a lone write on an idle link is written to the
 * WebSocket in the turn that read it.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import { PayloadType } from '../../src/datachannel/constants.js';
import type { AgentMessageEvent } from '../../src/emulator/agent.js';
import type { TunnelSession } from '../../src/forward/session.js';
import { SMUX_HEADER_BYTES } from '../../src/mux/frame.js';
import { startForwardRig, withTimeout } from './fixtures.js';
import type { ForwardRig, PausableEchoServer } from './fixtures.js';

/**
 * `net.Socket`'s internal write entry (node:net `_writeGeneric`, used by `_write` and `_writev`), wrapped to
 * see when the daemon writes its WebSocket; not in the public typings.
 */
const SOCKET_PROTOTYPE = net.Socket.prototype as net.Socket & {
  _writeGeneric: (...args: unknown[]) => unknown;
};

/** Bytes each stream writes per round (a small request). */
const REQUEST_BYTES = 64;

/** Payload lengths of the Output messages the agent receives from the client, in order. */
function recordOutputs(rig: ForwardRig<PausableEchoServer>): number[] {
  const lengths: number[] = [];
  rig.emulator.on('handshakeComplete', (id: string) => {
    rig.emulator.session(id).agent?.on('message', (event: AgentMessageEvent) => {
      if (event.direction !== 'in' || event.payloadType !== PayloadType.Output) return;
      lengths.push(event.payloadLength);
    });
  });
  return lengths;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    socket.once('error', reject);
    socket.once('connect', () => resolve(socket));
  });
}

/** Resolve with the next `bytes` bytes `socket` receives. */
function readExactly(socket: net.Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got < bytes) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(Buffer.concat(chunks));
    };
    const onClose = (): void => reject(new Error(`closed after ${got} of ${bytes} bytes`));
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

/** One stream's request of round `round`: bytes unique to the stream and the round. */
function request(stream: number, round: number): Buffer {
  const message = Buffer.alloc(REQUEST_BYTES);
  for (let i = 0; i < REQUEST_BYTES; i++) message[i] = (stream * 31 + round * 7 + i) & 0xff;
  message.writeUInt16BE(stream, 0);
  message.writeUInt16BE(round, 2);
  return message;
}

test('under load, the small frames of several streams share one message and every byte arrives in order', async (t) => {
  t.timeout(60_000);
  const rig = await startForwardRig();
  const outputs = recordOutputs(rig);
  const sockets: net.Socket[] = [];
  try {
    const STREAMS = 20;
    const ROUNDS = 10;
    for (let i = 0; i < STREAMS; i++) sockets.push(await connect(rig.port));
    // One warm-up round opens every stream (SYNs) before counting.
    await Promise.all(
      sockets.map(async (socket, i) => {
        const reply = readExactly(socket, REQUEST_BYTES);
        socket.write(request(i, 0xffff));
        t.deepEqual(await reply, request(i, 0xffff));
      }),
    );
    const before = outputs.length;
    for (let round = 0; round < ROUNDS; round++) {
      // Every stream writes in the same turn: the daemon finds them all readable in one poll phase.
      const replies = sockets.map((socket) => readExactly(socket, REQUEST_BYTES));
      sockets.forEach((socket, i) => socket.write(request(i, round)));
      const got = await withTimeout(Promise.all(replies), 20_000, `round ${round} echoes`);
      got.forEach((reply, i) => t.deepEqual(reply, request(i, round), `stream ${i} round ${round}`));
    }
    const counted = outputs.slice(before);
    const frameBytes = SMUX_HEADER_BYTES + REQUEST_BYTES;
    // One message per request would be STREAMS × ROUNDS messages of one frame each.
    t.true(
      counted.length <= (STREAMS * ROUNDS) / 2,
      `${counted.length} Output messages for ${STREAMS * ROUNDS} requests`,
    );
    t.true(
      Math.max(...counted) >= 4 * frameBytes,
      `largest message ${Math.max(...counted)} bytes (one frame is ${frameBytes})`,
    );
    // Every request went out once: its frame, cut in two at most where a message is full.
    const total = counted.reduce((sum, length) => sum + length, 0);
    t.true(total >= STREAMS * ROUNDS * frameBytes, `${total} payload bytes`);
    t.true(
      total <= STREAMS * ROUNDS * frameBytes + counted.length * SMUX_HEADER_BYTES,
      `${total} payload bytes`,
    );
  } finally {
    for (const socket of sockets) socket.destroy();
    await rig.close();
  }
});

test("a new stream's SYN shares its message with the client's first bytes", async (t) => {
  t.timeout(30_000);
  const rig = await startForwardRig();
  const outputs = recordOutputs(rig);
  try {
    const warm = await connect(rig.port);
    const warmReply = readExactly(warm, 4);
    warm.write('warm');
    await warmReply;
    const session = idleSession(t, rig);
    const agent = rig.emulator.session(session.sessionId ?? '').agent;
    if (agent === undefined) throw new Error('no agent');
    for (let i = 0; i < 5; i++) {
      const before = outputs.length;
      const first = Buffer.from(`hello, stream ${i}!`);
      // Written as soon as the connection is up, as most clients do.
      const socket = net.connect({ port: rig.port, host: '127.0.0.1', noDelay: true });
      socket.write(first);
      t.deepEqual(await readExactly(socket, first.length), first);
      t.is(
        outputs[before],
        SMUX_HEADER_BYTES + SMUX_HEADER_BYTES + first.length,
        `connection ${i}: first message = SYN + PSH of the first bytes`,
      );
      // Our FIN for it is the next message: let it reach the agent before the next connection is counted.
      const closed = new Promise<void>((resolve) => agent.once('streamClosed', () => resolve()));
      socket.destroy();
      await withTimeout(closed, 5_000, `stream ${i} closed at the agent`);
    }
    // A client that waits for the server still gets its stream opened (no data ever comes to wait for).
    const connected = new Promise<void>((resolve) => agent.once('destinationConnected', () => resolve()));
    const silent = await connect(rig.port);
    await withTimeout(connected, 5_000, 'the silent client’s stream at the destination');
    silent.destroy();
    warm.destroy();
  } finally {
    await rig.close();
  }
});

test('a lone small write on an idle link reaches the WebSocket in the turn that read it', async (t) => {
  t.timeout(30_000);
  const rig = await startForwardRig();
  const socket = await connect(rig.port);
  const originalWrite = SOCKET_PROTOTYPE._writeGeneric;
  try {
    const warmReply = readExactly(socket, 4);
    socket.write('warm');
    await warmReply;
    for (let i = 0; i < 5; i++) {
      idleSession(t, rig);
      // Order of: writes on the daemon's WebSocket (to the emulator's port), and a marker that runs at the
      // check phase of the iteration after this one, i.e. after the poll phase that reads our bytes.
      const order: string[] = [];
      const emulatorPort = rig.emulator.port;
      SOCKET_PROTOTYPE._writeGeneric = function (this: net.Socket, ...args: unknown[]) {
        if (this.remotePort === emulatorPort) order.push('ws write');
        return originalWrite.apply(this, args);
      };
      const reply = readExactly(socket, REQUEST_BYTES);
      socket.write(request(1, i));
      setImmediate(() => setImmediate(() => order.push('next check phase')));
      t.deepEqual(await reply, request(1, i));
      SOCKET_PROTOTYPE._writeGeneric = originalWrite;
      t.is(order[0], 'ws write', `round ${i}: ${order.join(', ')}`);
    }
  } finally {
    SOCKET_PROTOTYPE._writeGeneric = originalWrite;
    socket.destroy();
    await rig.close();
  }
});

/** The forward's session, once open; its own requests all acked (the agent acks before the echo returns). */
function idleSession(t: ExecutionContext, rig: ForwardRig<PausableEchoServer>): TunnelSession {
  const session = rig.forward.currentSession;
  if (session === undefined) throw new Error('no session');
  t.is(session.stats.unackedMessages, 0, 'nothing in flight');
  return session;
}
