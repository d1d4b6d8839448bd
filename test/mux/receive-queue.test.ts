/**
 * The per-stream receive queue and its spill files (issue 10 item 1, spec §9.6): order across memory → file →
 * memory transitions, bounds, the daemon-wide budget, and what a spill file looks like on disk (mode 0600,
 * already unlinked, no folder left behind). Real files in a private test folder, a real Node Readable as the
 * reader.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { isPfError } from '../../src/errors.js';
import type { TunnelError } from '../../src/errors.js';
import { StreamReceiveQueue } from '../../src/mux/receive-queue.js';
import type { ReceiveMemory, StreamReceiveLimits } from '../../src/mux/receive-queue.js';
import { SPILL_FOLDER_PREFIX, SpillStore } from '../../src/mux/spill.js';
import { withTimeout } from '../helpers/net.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-spill-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A seeded PRNG (mulberry32), so a failing run can be repeated. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Harness {
  queue: StreamReceiveQueue;
  reader: Readable;
  memory: ReceiveMemory;
  failures: TunnelError[];
}

/** A queue feeding a real Readable (highWaterMark 16 KiB) whose `_read()` resumes the queue. */
function harness(
  limits: StreamReceiveLimits,
  store: SpillStore | undefined,
  memory?: ReceiveMemory,
): Harness {
  const failures: TunnelError[] = [];
  const shared = memory ?? { bytes: 0, limitBytes: 64 * MiB };
  const ref: { queue?: StreamReceiveQueue } = {};
  const reader = new Readable({
    highWaterMark: 16 * KiB,
    read: () => ref.queue?.resume(),
  });
  const queue = new StreamReceiveQueue(limits, {
    memory: shared,
    spill: store,
    push: (chunk) => reader.push(chunk),
    readableBytes: () => reader.readableLength,
    end: () => reader.push(null),
    fail: (error) => failures.push(error),
  });
  ref.queue = queue;
  return { queue, reader, memory: shared, failures };
}

/** Random bytes in chunks of random sizes (1 B … 40 KiB, mostly small), `total` in all. */
function randomChunks(random: () => number, total: number): Buffer[] {
  const chunks: Buffer[] = [];
  let left = total;
  while (left > 0) {
    const size = Math.min(left, 1 + Math.floor(random() ** 3 * 40 * KiB));
    chunks.push(randomBytes(size));
    left -= size;
  }
  return chunks;
}

const sha = (chunks: Buffer[]): string => {
  const hash = createHash('sha256');
  for (const c of chunks) hash.update(c);
  return hash.digest('hex');
};

for (const seed of [1, 2, 3, 4]) {
  test(`seed ${seed}: random chunks, a reader that stops and starts: bytes come out intact and in order across memory → file → memory`, async (t) => {
    t.timeout(60_000);
    const random = prng(seed);
    const store = new SpillStore({ directory: tempDir(t), limitBytes: 64 * MiB });
    const h = harness({ memoryBytes: 256 * KiB, backlogLimitBytes: 32 * MiB }, store);
    const input = randomChunks(random, 12 * MiB);
    const output: Buffer[] = [];
    let received = 0;
    let inSpill = false;
    let spillEpisodes = 0;
    let memoryAfterSpill = false;
    let peakMemory = 0;
    h.reader.pause();
    h.reader.on('data', (chunk: Buffer) => {
      output.push(chunk);
      received += chunk.length;
    });
    const ended = new Promise<void>((resolve) => h.reader.once('end', resolve));
    let index = 0;
    const appendBytes = (bytes: number): void => {
      for (let sum = 0; sum < bytes && index < input.length;) {
        const chunk = input[index++] as Buffer;
        h.queue.append(chunk);
        sum += chunk.length;
        const stats = h.queue.stats;
        peakMemory = Math.max(peakMemory, stats.memoryBytes);
        if (stats.spillFilesOpen > 0) {
          if (!inSpill) spillEpisodes++;
          inSpill = true;
        } else {
          inSpill = false;
          if (spillEpisodes > 0 && stats.memoryBytes > 0) memoryAfterSpill = true;
        }
      }
    };
    while (index < input.length) {
      // Stall: the reader stops while 0.5–2 MiB arrive (beyond 256 KiB they spill), in bursts with I/O between.
      h.reader.pause();
      const stall = Math.floor((0.5 + random() * 1.5) * MiB);
      for (let done = 0; done < stall; done += 64 * KiB) {
        appendBytes(64 * KiB);
        await new Promise((resolve) => setImmediate(resolve));
      }
      // Read: the reader runs while a little more arrives, until the files are drained (or not, at random).
      h.reader.resume();
      const waitForDrain = random() < 0.75;
      // A trickle keeps arriving meanwhile (about 1 KiB per 10 turns), so the return to memory happens under load.
      for (let rounds = 0, started = Date.now(); Date.now() - started < 10_000; rounds++) {
        if (rounds % 10 === 0) appendBytes(Math.floor(random() * 2 * KiB));
        await new Promise((resolve) => setImmediate(resolve));
        if (!waitForDrain || h.queue.stats.spillFilesOpen === 0) break;
      }
    }
    h.queue.end();
    h.reader.resume();
    await withTimeout(ended, 30_000, 'the reader to end');
    t.deepEqual(h.failures, []);
    t.is(received, 12 * MiB);
    t.is(sha(output), sha(input), 'every byte, in order');
    t.true(spillEpisodes >= 2, `the file path was used (${spillEpisodes} times)`);
    t.true(memoryAfterSpill, 'memory was used again after a file was drained');
    t.true(peakMemory <= 256 * KiB + 40 * KiB + 16 * MiB, `memory ${peakMemory} stays bounded`);
    t.like(store.stats, { spilledBytes: 0, filesOpen: 0, refusals: 0 });
    t.true(store.stats.filesCreated >= 1);
    t.is(h.memory.bytes, 0);
  });
}

test('a spill file is mode 0600, already unlinked, and its private folder is gone', async (t) => {
  const dir = tempDir(t);
  const store = new SpillStore({ directory: dir, limitBytes: 8 * MiB });
  const file = store.open(
    () => undefined,
    () => undefined,
  );
  const stat = fs.fstatSync(file.fd);
  t.is(stat.mode & 0o777, 0o600);
  t.is(stat.nlink, 0, 'deleted on creation: gone on close and on crash');
  t.deepEqual(
    fs.readdirSync(dir).filter((name) => name.startsWith(SPILL_FOLDER_PREFIX)),
    [],
    'no folder left behind',
  );
  t.true(file.append(Buffer.from('spilled bytes')));
  await new Promise<void>((resolve) => {
    const poll = (): void => (file.readableBytes > 0 ? resolve() : void setImmediate(poll));
    poll();
  });
  const back = await new Promise<Buffer>((resolve, reject) =>
    file.read(1024, (err, bytes) => (err ? reject(err) : resolve(bytes))),
  );
  t.is(back.toString(), 'spilled bytes');
  t.like(store.stats, { spilledBytes: 13, filesOpen: 1 });
  file.close();
  t.like(store.stats, { spilledBytes: 0, filesOpen: 0 });
  // The descriptor closes asynchronously; it must not stay open.
  await withTimeout(
    new Promise<void>((resolve) => {
      const poll = (): void => {
        try {
          fs.fstatSync(file.fd);
          setTimeout(poll, 5);
        } catch {
          resolve();
        }
      };
      poll();
    }),
    2_000,
    'the descriptor to close',
  );
  t.pass();
});

test('past the per-connection bound the queue fails once with PF_ERR_STREAM_BACKLOG naming the bytes waiting', (t) => {
  const store = new SpillStore({ directory: tempDir(t), limitBytes: 64 * MiB });
  const h = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 1 * MiB }, store);
  h.reader.pause();
  for (let i = 0; i < 100; i++) h.queue.append(Buffer.alloc(16 * KiB, i));
  t.is(h.failures.length, 1);
  const error = h.failures[0] as TunnelError;
  t.true(isPfError(error, 'PF_ERR_STREAM_BACKLOG'));
  t.regex(
    error.message,
    /1\.0 MiB waiting .* per-connection bound of 1\.0 MiB \(tuning\.streamBacklogLimitBytes\)/,
  );
  t.true(h.queue.waitingBytes <= 1 * MiB);
  h.queue.destroy();
  t.like(store.stats, { spilledBytes: 0, filesOpen: 0 });
  t.is(h.memory.bytes, 0);
});

test('memory never exceeds its cap: beyond it bytes go to the file, and the session-wide account holds', (t) => {
  const store = new SpillStore({ directory: tempDir(t), limitBytes: 64 * MiB });
  const memory: ReceiveMemory = { bytes: 0, limitBytes: 96 * KiB };
  const a = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 32 * MiB }, store, memory);
  const b = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 32 * MiB }, store, memory);
  a.reader.pause();
  b.reader.pause();
  for (let i = 0; i < 64; i++) {
    a.queue.append(Buffer.alloc(8 * KiB, 1));
    b.queue.append(Buffer.alloc(8 * KiB, 2));
    t.true(memory.bytes <= 96 * KiB);
  }
  t.true(a.queue.stats.spilledBytes + a.queue.stats.memoryBytes > 0);
  t.is(memory.bytes, 96 * KiB, 'a took 64 KiB, b the 32 KiB left');
  t.is(store.stats.filesOpen, 2, 'both spill beyond it');
  a.queue.destroy();
  b.queue.destroy();
  t.is(memory.bytes, 0);
  t.like(store.stats, { spilledBytes: 0, filesOpen: 0 });
});

test('the daemon-wide budget is shared: when it is spent the next stream to spill fails, the others keep theirs', async (t) => {
  const store = new SpillStore({ directory: tempDir(t), limitBytes: 1 * MiB });
  const a = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 32 * MiB }, store);
  const b = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 32 * MiB }, store);
  a.reader.pause();
  b.reader.pause();
  // a: 16 KiB Readable + 64 KiB memory + 768 KiB spilled.
  for (let i = 0; i < 53; i++) a.queue.append(Buffer.alloc(16 * KiB, 1));
  t.deepEqual(a.failures, []);
  t.is(store.stats.spilledBytes, 768 * KiB);
  for (let i = 0; i < 40; i++) b.queue.append(Buffer.alloc(16 * KiB, 2));
  t.is(b.failures.length, 1);
  t.regex((b.failures[0] as Error).message, /daemon-wide spill limit of 1\.0 MiB is spent/);
  t.deepEqual(a.failures, [], 'a keeps its bytes');
  t.is(store.stats.refusals, 1);
  b.queue.destroy();
  t.is(store.stats.spilledBytes, 768 * KiB, "b's file gave its bytes back");
  // a reads everything back intact; its file is closed once drained.
  const got: Buffer[] = [];
  a.reader.on('data', (chunk: Buffer) => got.push(chunk));
  const ended = new Promise<void>((resolve) => a.reader.once('end', resolve));
  a.queue.end();
  a.reader.resume();
  await withTimeout(ended, 10_000, 'a to end');
  t.is(Buffer.concat(got).length, 53 * 16 * KiB);
  t.true(got.every((c) => c.every((byte) => byte === 1)));
  t.like(store.stats, { spilledBytes: 0, filesOpen: 0 });
});

test('with no spill store (or a 0 limit) a full memory resets the stream with a clear reason', (t) => {
  for (const store of [undefined, new SpillStore({ directory: tempDir(t), limitBytes: 0 })]) {
    const h = harness({ memoryBytes: 64 * KiB, backlogLimitBytes: 32 * MiB }, store);
    h.reader.pause();
    for (let i = 0; i < 10; i++) h.queue.append(Buffer.alloc(16 * KiB));
    t.is(h.failures.length, 1);
    t.regex((h.failures[0] as Error).message, /spilling is off \(tuning\.spillLimitBytes\)/);
  }
});

test('a spill folder that cannot be created resets the stream, naming the folder', (t) => {
  const store = new SpillStore({ directory: path.join(tempDir(t), 'missing'), limitBytes: 8 * MiB });
  const h = harness({ memoryBytes: 16 * KiB, backlogLimitBytes: 32 * MiB }, store);
  h.reader.pause();
  for (let i = 0; i < 4; i++) h.queue.append(Buffer.alloc(16 * KiB));
  t.is(h.failures.length, 1);
  t.regex((h.failures[0] as Error).message, /cannot create a spill file in .*missing/);
});
