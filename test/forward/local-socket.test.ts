import test from 'ava';
import net from 'node:net';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { corkPerTick } from '../../src/forward/local-socket.js';

/** A connected pair on 127.0.0.1: the client end and the accepted end. */
async function socketPair(): Promise<{ client: Socket; accepted: Socket; close: () => void }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as net.AddressInfo;
  const client = net.connect(address.port, '127.0.0.1');
  const [accepted] = (await once(server, 'connection')) as [Socket];
  await once(client, 'connect');
  return {
    client,
    accepted,
    close: () => {
      client.destroy();
      accepted.destroy();
      server.close();
    },
  };
}

/** Collect `bytes` bytes from `socket`. */
function receive(socket: Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    socket.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (have >= bytes) resolve(Buffer.concat(parts));
    });
    socket.once('error', reject);
  });
}

/** Count the kernel-bound writes a socket issues (`_write` for one chunk, `_writev` for a batch). */
function countWrites(socket: Socket): { single: number; batched: number; chunks: number } {
  const counts = { single: 0, batched: 0, chunks: 0 };
  const target = socket as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (chunks: unknown[], cb: unknown) => void;
  };
  const write = target._write.bind(socket);
  const writev = target._writev.bind(socket);
  target._write = (...args: unknown[]) => {
    counts.single++;
    counts.chunks++;
    write(...args);
  };
  target._writev = (chunks: unknown[], cb: unknown) => {
    counts.batched++;
    counts.chunks += chunks.length;
    writev(chunks, cb);
  };
  return counts;
}

test('corkPerTick: of 200 writes in one tick the first goes out at once, the other 199 as one writev, in order', async (t) => {
  const { client, accepted, close } = await socketPair();
  t.teardown(close);
  const counts = countWrites(accepted);
  const hold = corkPerTick(accepted);
  const chunks = Array.from({ length: 200 }, (_, i) => Buffer.alloc(1024, i & 0xff));
  const expected = Buffer.concat(chunks);
  const got = receive(client, expected.length);
  for (const chunk of chunks) {
    hold();
    accepted.write(chunk);
  }
  t.is(accepted.writableCorked, 1, 'corked once for the rest of the burst');
  t.is(counts.single, 1, 'the first chunk is written at once');
  t.is(counts.batched, 0, 'the rest waits for the end of the tick');
  await new Promise<void>((resolve) => process.nextTick(resolve));
  t.is(accepted.writableCorked, 0);
  t.true((await got).equals(expected));
  t.is(counts.batched, 1);
  t.is(counts.single, 1);
  t.is(counts.chunks, 200);
});

test('corkPerTick: each tick starts afresh; end() while corked delivers everything before the FIN', async (t) => {
  const { client, accepted, close } = await socketPair();
  t.teardown(close);
  const hold = corkPerTick(accepted);
  const first = Buffer.alloc(3000, 1);
  const second = Buffer.alloc(5000, 2);
  const all: Buffer[] = [];
  client.on('data', (chunk: Buffer) => all.push(chunk));
  hold();
  accepted.write(first);
  hold();
  accepted.write(first);
  await new Promise<void>((resolve) => setImmediate(resolve));
  hold();
  t.is(accepted.writableCorked, 0, 'the first write of a new tick is not held');
  accepted.write(second);
  hold();
  t.is(accepted.writableCorked, 1, 'its second write is');
  accepted.write(second);
  accepted.end();
  await once(client, 'end');
  t.true(Buffer.concat(all).equals(Buffer.concat([first, first, second, second])));
});

test('corkPerTick: a destroyed socket is not corked and the scheduled uncork does not throw', async (t) => {
  const { accepted, close } = await socketPair();
  t.teardown(close);
  const hold = corkPerTick(accepted);
  hold();
  accepted.write(Buffer.alloc(10));
  hold();
  accepted.write(Buffer.alloc(10));
  accepted.destroy();
  hold();
  await new Promise<void>((resolve) => setImmediate(resolve));
  t.true(accepted.destroyed);
});
