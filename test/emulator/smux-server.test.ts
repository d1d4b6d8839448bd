/**
 * The emulated agent's smux v1 server, driven directly with smux bytes and an injected dial function, over
 * real TCP destinations on 127.0.0.1.
 */
import test from 'ava';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { SmuxServer } from '../../src/emulator/smux-server.js';
import type { SmuxServerOptions } from '../../src/emulator/smux-server.js';
import { SmuxCommand, SmuxFrameDecoder, encodeFrame } from '../../src/mux/frame.js';
import type { SmuxFrame } from '../../src/mux/frame.js';
import { silentLogger } from '../../src/log.js';
import { poke, waitFor } from './bus.js';

interface Destination {
  port: number;
  sockets: net.Socket[];
  received: Buffer[];
  ended: number;
  closed: number;
  close(): Promise<void>;
}

/** Echo server recording what it got and how its sockets ended. */
async function startEcho(): Promise<Destination> {
  const dest: Destination = {
    port: 0,
    sockets: [],
    received: [],
    ended: 0,
    closed: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of dest.sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    dest.sockets.push(socket);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      dest.received.push(chunk);
      if (!socket.writableEnded) socket.write(chunk);
      poke();
    });
    socket.on('end', () => {
      dest.ended++;
      poke();
    });
    socket.on('close', () => {
      dest.closed++;
      poke();
    });
    poke();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  dest.port = (server.address() as AddressInfo).port;
  return dest;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('error', reject);
    socket.once('connect', () => resolve(socket));
  });
}

const OPTIONS: SmuxServerOptions = {
  keepAlive: false,
  keepAliveIntervalMs: 10_000,
  keepAliveTimeoutMs: 30_000,
  maxReceiveBufferBytes: 4 * 1024 * 1024,
};

/** A server plus everything it reported. */
class Harness {
  readonly server: SmuxServer;
  readonly out: SmuxFrame[] = [];
  readonly log: string[] = [];
  readonly dials: number[] = [];
  failure: string | undefined;
  unstallSignals = 0;
  private readonly decoder = new SmuxFrameDecoder();

  constructor(dial: (sid: number) => Promise<net.Socket>, options: Partial<SmuxServerOptions> = {}) {
    this.server = new SmuxServer(
      { ...OPTIONS, ...options },
      {
        dial: (sid) => {
          this.dials.push(sid);
          poke();
          return dial(sid);
        },
        writeOutbound: (bytes) => {
          for (const frame of this.decoder.push(bytes)) {
            this.out.push(frame);
            if (frame.cmd === SmuxCommand.FIN) this.log.push(`FIN ${frame.sid}`);
          }
          poke();
        },
        streamOpened: (sid) => this.log.push(`opened ${sid}`),
        dialFailed: (sid) => this.log.push(`dialFailed ${sid}`),
        destinationConnected: (sid) => this.log.push(`connected ${sid}`),
        streamClosed: (sid) => {
          this.log.push(`closed ${sid}`);
          poke();
        },
        bytes: () => undefined,
        maybeUnstalled: () => {
          this.unstallSignals++;
          poke();
        },
        failed: (reason) => {
          this.failure = reason;
          poke();
        },
      },
      silentLogger,
    );
  }

  feed(...frames: Buffer[]): void {
    this.server.feed(Buffer.concat(frames));
  }

  data(sid: number): string {
    return Buffer.concat(
      this.out.filter((f) => f.sid === sid && f.cmd === SmuxCommand.PSH).map((f) => f.data),
    ).toString('latin1');
  }

  fin(sid: number): boolean {
    return this.out.some((f) => f.sid === sid && f.cmd === SmuxCommand.FIN);
  }
}

const syn = (sid: number): Buffer => encodeFrame(SmuxCommand.SYN, sid);
const psh = (sid: number, text: string): Buffer => encodeFrame(SmuxCommand.PSH, sid, Buffer.from(text));
const fin = (sid: number): Buffer => encodeFrame(SmuxCommand.FIN, sid);
const nop = (): Buffer => encodeFrame(SmuxCommand.NOP, 0);

/** A dial whose outcome the test decides. */
function controlledDial(): {
  dial: (sid: number) => Promise<net.Socket>;
  pending: Map<number, { resolve: (s: net.Socket) => void; reject: (e: Error) => void }>;
} {
  const pending = new Map<number, { resolve: (s: net.Socket) => void; reject: (e: Error) => void }>();
  return {
    pending,
    dial: (sid) =>
      new Promise<net.Socket>((resolve, reject) => {
        pending.set(sid, { resolve, reject });
        poke();
      }),
  };
}

test('SYN without ack, then PSH is echoed; frames split byte by byte are reassembled', async (t) => {
  const dest = await startEcho();
  const h = new Harness(() => connect(dest.port));
  const bytes = Buffer.concat([syn(3), psh(3, 'hello'), nop()]);
  for (let i = 0; i < bytes.length; i++) h.server.feed(bytes.subarray(i, i + 1));
  await waitFor(() => h.data(3) === 'hello', 'echo');
  t.deepEqual(h.dials, [3]);
  t.false(
    h.out.some((f) => f.cmd === SmuxCommand.SYN),
    'the server never sends SYN',
  );
  h.server.close();
  await dest.close();
});

test('a SYN for a live id is ignored; PSH and FIN for unknown ids are dropped', async (t) => {
  const dest = await startEcho();
  const h = new Harness(() => connect(dest.port));
  h.feed(syn(3), psh(3, 'a'), syn(3), psh(3, 'b'), psh(9, 'ghost'), fin(11));
  await waitFor(() => h.data(3) === 'ab', 'echo of a and b');
  t.deepEqual(h.dials, [3]);
  t.is(h.server.streamCount, 1);
  t.is(Buffer.concat(dest.received).toString(), 'ab');
  t.is(h.failure, undefined);
  h.server.close();
  await dest.close();
});

for (const [name, bad] of [
  ['version 2', Buffer.from([2, 0, 0, 0, 3, 0, 0, 0])],
  ['command UPD (4)', Buffer.from([1, 4, 0, 0, 3, 0, 0, 0])],
] as const) {
  test(`a frame with ${name} kills the session and closes destinations`, async (t) => {
    const dest = await startEcho();
    const h = new Harness(() => connect(dest.port));
    h.feed(syn(3));
    await waitFor(() => dest.sockets.length === 1, 'destination connected');
    h.server.feed(bad);
    await waitFor(() => h.failure, 'failure');
    t.regex(h.failure ?? '', /smux protocol error/);
    t.true(h.server.isClosed);
    await waitFor(() => dest.closed === 1, 'destination closed');
    h.feed(syn(5));
    t.deepEqual(h.dials, [3]);
    await dest.close();
  });
}

test('dials are serial: stream 5 is not dialled before stream 3 settled; data waits for its dial', async (t) => {
  const dest = await startEcho();
  const control = controlledDial();
  const h = new Harness(control.dial);
  h.feed(syn(3), syn(5), psh(5, 'five'), psh(3, 'three'));
  await waitFor(() => control.pending.has(3), 'dial 3');
  t.deepEqual(h.dials, [3]);
  t.is(h.server.waitingBytes, 9);
  control.pending.get(3)?.resolve(await connect(dest.port));
  await waitFor(() => control.pending.has(5), 'dial 5');
  control.pending.get(5)?.resolve(await connect(dest.port));
  await waitFor(() => h.data(3) === 'three' && h.data(5) === 'five', 'both echoed');
  t.deepEqual(h.dials, [3, 5]);
  h.server.close();
  await dest.close();
});

test('receive stall: held data at the buffer limit stalls input; it clears once written out', async (t) => {
  const dest = await startEcho();
  const control = controlledDial();
  const h = new Harness(control.dial, { maxReceiveBufferBytes: 8 });
  h.feed(syn(3), psh(3, '1234'));
  t.false(h.server.receiveStalled);
  h.feed(psh(3, '5678'));
  t.true(h.server.receiveStalled);
  await waitFor(() => control.pending.has(3), 'dial 3');
  control.pending.get(3)?.resolve(await connect(dest.port));
  await waitFor(() => h.unstallSignals > 0 && !h.server.receiveStalled, 'stall cleared');
  await waitFor(() => h.data(3) === '12345678', 'echo');
  h.server.setForcedStall(true);
  t.true(h.server.receiveStalled);
  h.server.setForcedStall(false);
  t.false(h.server.receiveStalled);
  h.server.close();
  await dest.close();
});

test('FIN from the client: data written, destination closed fully, FIN back, later PSH dropped', async (t) => {
  const dest = await startEcho();
  const h = new Harness(() => connect(dest.port));
  h.feed(syn(3), psh(3, 'last words'), fin(3));
  await waitFor(() => h.fin(3), 'FIN back');
  await waitFor(() => dest.closed === 1, 'destination socket closed');
  t.is(Buffer.concat(dest.received).toString(), 'last words');
  t.is(dest.ended, 1);
  h.feed(psh(3, 'too late'));
  t.is(h.server.streamCount, 0);
  t.is(Buffer.concat(dest.received).toString(), 'last words');
  h.server.close();
  await dest.close();
});

test('FIN before the dial completes: held data is still written, then the stream is closed', async (t) => {
  const dest = await startEcho();
  const control = controlledDial();
  const h = new Harness(control.dial);
  h.feed(syn(3), psh(3, 'quick'), fin(3));
  await waitFor(() => control.pending.has(3), 'dial 3');
  control.pending.get(3)?.resolve(await connect(dest.port));
  await waitFor(() => h.fin(3) && dest.closed === 1, 'FIN back and destination closed');
  t.is(Buffer.concat(dest.received).toString(), 'quick');
  h.server.close();
  await dest.close();
});

test('destination closing first: its data, then FIN, and the stream is forgotten', async (t) => {
  const dest = await startEcho();
  const h = new Harness(() => connect(dest.port));
  h.feed(syn(3));
  await waitFor(() => dest.sockets.length === 1, 'connected');
  (dest.sockets[0] as net.Socket).end('goodbye');
  await waitFor(() => h.fin(3), 'FIN');
  t.is(h.data(3), 'goodbye');
  const finIndex = h.out.findIndex((f) => f.cmd === SmuxCommand.FIN);
  t.true(h.out.findIndex((f) => f.cmd === SmuxCommand.PSH) < finIndex);
  t.is(h.server.streamCount, 0);
  t.true(h.log.includes('closed 3'));
  h.server.close();
  await dest.close();
});

test('dial failure: the dialFailed hook runs before FIN is written, and the stream is forgotten', async (t) => {
  const h = new Harness(() => Promise.reject(new Error('refused')));
  h.feed(syn(3), psh(3, 'lost'));
  await waitFor(() => h.fin(3), 'FIN');
  t.deepEqual(h.log, ['opened 3', 'dialFailed 3', 'FIN 3', 'closed 3']);
  t.is(h.data(3), '');
  t.is(h.failure, undefined);
  h.server.close();
});

test('keep-alive on: NOPs are sent, and a session without incoming frames dies', async (t) => {
  const h = new Harness(() => Promise.reject(new Error('unused')), {
    keepAlive: true,
    keepAliveIntervalMs: 20,
    keepAliveTimeoutMs: 120,
  });
  await waitFor(() => h.out.some((f) => f.cmd === SmuxCommand.NOP), 'a NOP');
  await waitFor(() => h.failure, 'keep-alive death');
  t.regex(h.failure ?? '', /keep-alive/);
  t.true(h.server.isClosed);
});

test('keep-alive on: incoming frames keep the session alive', async (t) => {
  const h = new Harness(() => Promise.reject(new Error('unused')), {
    keepAlive: true,
    keepAliveIntervalMs: 20,
    keepAliveTimeoutMs: 60,
  });
  const feeder = setInterval(() => h.feed(nop()), 15);
  try {
    await waitFor(() => h.out.filter((f) => f.cmd === SmuxCommand.NOP).length >= 10, 'ten NOPs');
  } finally {
    clearInterval(feeder);
  }
  t.is(h.failure, undefined);
  h.server.close();
});
