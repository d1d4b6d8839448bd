/**
 * WriteCoalescer (issue 16) on real sockets on 127.0.0.1: a lone write on an idle link reaches the socket's
 * write path at once (no cork, no next-tick hop); a burst of one tick leaves as one `writev`; the writes made
 * while one read is handled leave together from the first. Kernel-level writes are counted by wrapping the
 * socket's own `_write`/`_writev` (each call is one write request to libuv); the peer checks every byte.
 */
import test from 'ava';
import { once } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { WriteCoalescer } from '../../src/transport/write-coalescer.js';

interface WriteCounts {
  /** `_write` calls: one chunk each. */
  single: number;
  /** `_writev` calls and their chunk counts. */
  vectored: number[];
}

/** Count the write requests `socket` makes to libuv (its own `_write`/`_writev`, wrapped on the instance). */
function countWrites(socket: net.Socket): WriteCounts {
  const counts: WriteCounts = { single: 0, vectored: [] };
  const internals = socket as unknown as {
    _write: (chunk: Buffer, encoding: string, cb: (err?: Error) => void) => void;
    _writev: (chunks: { chunk: Buffer }[], cb: (err?: Error) => void) => void;
  };
  const write = internals._write.bind(socket);
  const writev = internals._writev.bind(socket);
  internals._write = (chunk, encoding, cb) => {
    counts.single++;
    write(chunk, encoding, cb);
  };
  internals._writev = (chunks, cb) => {
    counts.vectored.push(chunks.length);
    writev(chunks, cb);
  };
  return counts;
}

/** A connected pair on 127.0.0.1: `local` (the writer) and `peer`, which collects what it reads. */
async function socketPair(): Promise<{
  local: net.Socket;
  peer: net.Socket;
  received: () => Buffer;
  waitFor: (bytes: number) => Promise<void>;
  close: () => void;
}> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const local = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await once(local, 'connect');
  const [peer] = await accepted;
  const chunks: Buffer[] = [];
  let total = 0;
  const waiters: { bytes: number; resolve: () => void }[] = [];
  peer.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    total += chunk.length;
    for (const w of waiters.splice(0)) {
      if (total >= w.bytes) w.resolve();
      else waiters.push(w);
    }
  });
  return {
    local,
    peer,
    received: () => Buffer.concat(chunks),
    waitFor: (bytes) =>
      total >= bytes ? Promise.resolve() : new Promise((resolve) => waiters.push({ bytes, resolve })),
    close: () => {
      local.destroy();
      peer.destroy();
      server.close();
    },
  };
}

/** Resolve after the current tick's `process.nextTick` queue (where the coalescer uncorks) has run. */
function afterTick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

test('a lone write on an idle link reaches the socket at once: no cork, no next-tick hop', async (t) => {
  const pair = await socketPair();
  t.teardown(pair.close);
  const counts = countWrites(pair.local);
  const coalescer = new WriteCoalescer(pair.local);
  coalescer.hold();
  pair.local.write(Buffer.from('ping'));
  t.is(pair.local.writableCorked, 0, 'not corked');
  t.is(counts.single, 1, 'handed to libuv inside write(), before the tick ends');
  t.is(coalescer.immediateWrites, 1);
  await pair.waitFor(4);
  t.is(pair.received().toString(), 'ping');
  // A later tick on the still idle link again writes at once.
  await afterTick();
  coalescer.hold();
  pair.local.write(Buffer.from('pong'));
  t.is(counts.single, 2);
  t.is(coalescer.bursts, 0);
  await pair.waitFor(8);
  t.is(pair.received().toString(), 'pingpong');
});

test('a burst of one tick: the first write goes at once, the rest leave as one writev after the tick', async (t) => {
  const pair = await socketPair();
  t.teardown(pair.close);
  const counts = countWrites(pair.local);
  const coalescer = new WriteCoalescer(pair.local);
  const frames = Array.from({ length: 10 }, (_, i) => Buffer.alloc(1024, i));
  for (const frame of frames) {
    coalescer.hold();
    pair.local.write(frame);
  }
  t.is(counts.single, 1, 'only the first is written inside the burst');
  t.true(pair.local.writableCorked > 0, 'the rest are held');
  await afterTick();
  t.is(pair.local.writableCorked, 0);
  t.deepEqual(counts.vectored, [9], 'one writev carries the other nine');
  t.is(counts.single, 1);
  await pair.waitFor(10 * 1024);
  t.true(pair.received().equals(Buffer.concat(frames)), 'every byte, in order');
});

test('writes made while one read is handled leave together from the first (watchReads)', async (t) => {
  const pair = await socketPair();
  t.teardown(pair.close);
  const counts = countWrites(pair.local);
  const coalescer = new WriteCoalescer(pair.local);
  // The reader's own 'data' listener comes first (like ws's), then the coalescer watches around it.
  let reads = 0;
  pair.local.on('data', (chunk: Buffer) => {
    reads++;
    for (let i = 0; i < 3; i++) {
      coalescer.hold();
      pair.local.write(Buffer.from(`${chunk.toString()}${i};`));
    }
  });
  coalescer.watchReads(pair.local);
  pair.peer.write('a');
  const expected = 'a0;a1;a2;';
  await pair.waitFor(expected.length);
  t.is(reads, 1);
  t.is(pair.received().toString(), expected);
  t.is(counts.single, 0, 'not even the first write of the read goes alone');
  t.deepEqual(counts.vectored, [3]);
  t.is(coalescer.immediateWrites, 0);
  // Outside a read the idle rule applies again.
  await afterTick();
  coalescer.hold();
  pair.local.write(Buffer.from('z'));
  t.is(counts.single, 1);
  coalescer.unwatchReads();
  t.is(pair.local.listenerCount('data'), 1, 'only the reader’s listener is left');
});

test('a write while the socket still holds unwritten bytes joins a corked burst', async (t) => {
  const pair = await socketPair();
  t.teardown(pair.close);
  // Fill the kernel buffers: the peer does not read, so the socket keeps bytes queued in user space.
  pair.peer.pause();
  const big = Buffer.alloc(8 * 1024 * 1024);
  pair.local.write(big);
  t.true(pair.local.writableLength > 0, 'bytes wait in the socket');
  const coalescer = new WriteCoalescer(pair.local);
  await afterTick();
  coalescer.hold();
  pair.local.write(Buffer.from('tail'));
  t.true(pair.local.writableCorked > 0, 'corked although it is the first write of the tick');
  t.is(coalescer.immediateWrites, 0);
  pair.peer.resume();
  await pair.waitFor(big.length + 4);
  t.is(pair.received().subarray(big.length).toString(), 'tail');
});

test('flush() writes a held burst out at once (before a terminate)', async (t) => {
  const pair = await socketPair();
  t.teardown(pair.close);
  const coalescer = new WriteCoalescer(pair.local);
  for (const text of ['x', 'y', 'z']) {
    coalescer.hold();
    pair.local.write(Buffer.from(text));
  }
  t.true(pair.local.writableCorked > 0);
  coalescer.flush();
  t.is(pair.local.writableCorked, 0);
  await pair.waitFor(3);
  t.is(pair.received().toString(), 'xyz');
});

test('without a socket (a ws lacking the private field) hold() and flush() do nothing', (t) => {
  const coalescer = new WriteCoalescer(undefined);
  coalescer.hold();
  coalescer.flush();
  coalescer.watchReads(undefined);
  t.is(coalescer.bursts, 0);
});

test('over a real ws client: the replies to every message of one read leave in one writev (watchReads around ws)', async (t) => {
  const { WebSocketServer, default: WebSocket } = await import('ws');
  const { underlyingSocketOf } = await import('../../src/transport/write-coalescer.js');
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.teardown(() => server.close());
  const messages = 10;
  const echoed = new Promise<Buffer[]>((resolve) => {
    server.on('connection', (peer) => {
      const got: Buffer[] = [];
      peer.on('message', (data: Buffer) => {
        if (data.toString() === 'go') {
          // All messages in one socket write: the client reads them in one 'data' event.
          const raw = underlyingSocketOf(peer);
          raw?.cork();
          for (let i = 0; i < messages; i++) peer.send(Buffer.from(`m${i}`));
          raw?.uncork();
          return;
        }
        got.push(data);
        if (got.length === messages) resolve(got);
      });
    });
  });
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => client.terminate());
  await once(client, 'open');
  const raw = underlyingSocketOf(client) as unknown as net.Socket;
  const counts = countWrites(raw);
  const coalescer = new WriteCoalescer(raw);
  coalescer.watchReads(raw);
  let received = 0;
  client.on('message', (data: Buffer) => {
    received++;
    coalescer.hold();
    client.send(Buffer.concat([Buffer.from('re:'), data]));
  });
  client.send('go');
  await new Promise<void>((resolve) => setImmediate(resolve));
  const baseline = { single: counts.single, vectored: counts.vectored.length };
  const got = await echoed;
  t.is(received, messages);
  t.deepEqual(
    got.map((b) => b.toString()),
    Array.from({ length: messages }, (_, i) => `re:m${i}`),
  );
  t.is(counts.single - baseline.single, 0, 'no reply went out alone');
  t.is(counts.vectored.length - baseline.vectored, 1, 'one writev for all replies of the read');
});
