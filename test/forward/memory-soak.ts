/**
 * Memory soak (issue 6, issue 10, spec §9.6): pipe N bytes (default 2 GiB) through one forwarded connection
 * whose local reader stalls and resumes, and whose remote side stalls and resumes, while a second connection
 * on the same forward asks for a flood of `--flood-bytes` (default 256 MiB) and does not read it for
 * `--stall-seconds` (default 60); record the daemon's peak RSS. The stalled connection's bytes go to the
 * daemon's spill file, so RSS must stay flat; afterwards it reads every byte and checks SHA-256.
 * Not an ava test (no `.test.` in the name): run it by hand after `npx tsc -p .`:
 *
 *     node dist/test/forward/memory-soak.js --bytes 2GiB --flood-bytes 256MiB --stall-seconds 60
 *
 * The parent process runs the emulator (agent, unpaced) and an echo destination; the daemon side (a Forward)
 * runs in a forked child so its RSS is measured alone. The local client is an echo client with an 8 MiB
 * in-flight window that checks SHA-256 both ways. Every 1/16 of the volume it stalls: alternately its own
 * reader (→ smux stream cap → receive blocked → deliveries refused, no acks) until the daemon reports refused
 * deliveries, or the agent's receive (→ no acks → send window full → local socket paused) until the daemon's
 * send window is full; each stall is then held for 1 s and released. Prints one JSON line with the figures.
 */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../../src/emulator/index.js';
import { Forward } from '../../src/forward/forward.js';
import { silentLogger } from '../../src/log.js';
import { SpillStore } from '../../src/mux/spill.js';
import { createSsmApi } from '../../src/ssm/client.js';
import { StreamingEcho, credentials, forwardConfig, tuningWith } from './fixtures.js';
import { StalledReader, startFloodOrEcho } from './stall.helpers.js';

/** Parse `2GiB`, `256MiB`, `1048576`. */
function parseBytes(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(GiB|MiB|KiB|B)?$/i.exec(text);
  if (!match) throw new Error(`--bytes: cannot parse ${text}`);
  const unit = (match[2] ?? 'B').toLowerCase();
  const scale = unit === 'gib' ? 2 ** 30 : unit === 'mib' ? 2 ** 20 : unit === 'kib' ? 2 ** 10 : 1;
  return Math.round(Number(match[1]) * scale);
}

function arg(name: string, fallback: string): string {
  const index = process.argv.indexOf(name);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

interface ChildStats {
  peakRssBytes: number;
  maxRssResourceUsageBytes: number;
  rssBytes: number;
  refusedDeliveries: number;
  unacked: number;
  receiveBufferedBytes: number;
  receiveSpilledBytes: number;
  peakSpilledBytes: number;
  spillFilesOpen: number;
  reorderBuffered: number;
  sessionId: string | undefined;
}

const tuning = tuningWith();

/** The daemon side: a Forward in this (child) process, answering stats requests over IPC. */
async function child(): Promise<void> {
  const spill = new SpillStore({ directory: os.tmpdir(), limitBytes: tuning.spillLimitBytes });
  const forward = new Forward(forwardConfig({ remotePort: Number(arg('--remote-port', '0')) }), tuning, {
    spill,
    ssm: createSsmApi({
      endpoint: arg('--endpoint', ''),
      region: 'us-east-1',
      credentials,
      logger: silentLogger,
    }),
    logger: silentLogger,
    userAgent: 'pf-daemon-soak',
  });
  const address = await forward.start();
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 50);
  const stats = (): ChildStats => {
    const session = forward.currentSession;
    const s = session?.stats as
      | {
          channel: { refusedDeliveries: number };
          mux?: { receiveBufferedBytes: number; receiveSpilledBytes: number };
        }
      | undefined;
    const internals = session as unknown as
      { channel?: { unacked: number; reorderBuffered: number } } | undefined;
    const rss = process.memoryUsage().rss;
    peak = Math.max(peak, rss);
    return {
      peakRssBytes: peak,
      maxRssResourceUsageBytes: process.resourceUsage().maxRSS * 1024,
      rssBytes: rss,
      refusedDeliveries: s?.channel.refusedDeliveries ?? 0,
      unacked: internals?.channel?.unacked ?? 0,
      receiveBufferedBytes: s?.mux?.receiveBufferedBytes ?? 0,
      receiveSpilledBytes: s?.mux?.receiveSpilledBytes ?? 0,
      peakSpilledBytes: spill.stats.peakSpilledBytes,
      spillFilesOpen: spill.stats.filesOpen,
      reorderBuffered: internals?.channel?.reorderBuffered ?? 0,
      sessionId: session?.sessionId,
    };
  };
  process.on('message', (message: { op: string }) => {
    if (message.op === 'stats') process.send?.({ op: 'stats', stats: stats() });
    if (message.op === 'stop') {
      clearInterval(sampler);
      void forward.stop(0).then(() => {
        process.send?.({ op: 'stopped', stats: stats() });
        process.disconnect();
      });
    }
  });
  process.send?.({ op: 'ready', port: address.port });
}

function request(worker: ChildProcess, op: string): Promise<ChildStats> {
  return new Promise((resolve) => {
    const onMessage = (message: { op: string; stats: ChildStats }): void => {
      if (message.op !== (op === 'stop' ? 'stopped' : op)) return;
      worker.off('message', onMessage);
      resolve(message.stats);
    };
    worker.on('message', onMessage);
    worker.send({ op });
  });
}

/** Poll the child (this is a script, not a test: a 20 ms poll over IPC is the simplest observer). */
async function untilChild(
  worker: ChildProcess,
  predicate: (s: ChildStats) => boolean,
  timeoutMs: number,
): Promise<ChildStats> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const stats = await request(worker, 'stats');
    if (predicate(stats)) return stats;
    if (performance.now() > deadline) throw new Error('soak: the expected stall state never came');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function parent(): Promise<void> {
  const totalBytes = parseBytes(arg('--bytes', '2GiB'));
  const windowBytes = Number(arg('--window-mib', '12')) * 2 ** 20;
  const floodBytes = parseBytes(arg('--flood-bytes', '256MiB'));
  const stallMs = Number(arg('--stall-seconds', '60')) * 1000;
  // Plain echo for the echo client (its first byte is never `F`), a flood for the connection that stalls.
  const echo = await startFloodOrEcho(floodBytes);
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const worker = fork(fileURLToPath(import.meta.url), [
    '--child',
    '--endpoint',
    emulator.endpoint,
    '--remote-port',
    String(echo.port),
  ]);
  const port = await new Promise<number>((resolve) =>
    worker.once('message', (m: { port: number }) => resolve(m.port)),
  );
  const startedAt = performance.now();
  const client = new StreamingEcho(port, { totalBytes, windowBytes, chunkBytes: 64 * 1024 });
  const floodStarted = echo.nextFlood();
  const stalled = new StalledReader(port);
  const flood = await floodStarted;
  let maxSpilled = 0;
  const stalledRead = new Promise<void>((resolve) =>
    setTimeout(() => {
      void request(worker, 'stats').then((s) => {
        maxSpilled = Math.max(maxSpilled, s.receiveSpilledBytes);
        process.stderr.write(
          `soak: ${stallMs / 1000} s stall over, ${flood.written} flood bytes written, ${s.receiveSpilledBytes} spilled; reading\n`,
        );
        stalled.read();
        resolve();
      });
    }, stallMs),
  );
  const stalls = 16;
  let localStalls = 0;
  let blockedStalls = 0;
  let windowFullStalls = 0;
  let remoteStalls = 0;
  let maxReceiveBuffered = 0;
  let maxReorder = 0;
  let maxUnacked = 0;
  for (let i = 1; i < stalls; i++) {
    await client.receivedAtLeast(Math.floor((totalBytes * i) / stalls));
    process.stderr.write(
      `soak: ${client.received} bytes back; stall ${i} (${i % 2 === 1 ? 'local' : 'remote'})\n`,
    );
    if (i % 2 === 1) {
      const before = (await request(worker, 'stats')).refusedDeliveries;
      client.pauseReading();
      // The 8 MiB window may end up in kernel socket buffers before the 4 MiB stream cap is reached.
      const s = await untilChild(worker, (x) => x.refusedDeliveries > before, 5_000).catch(() =>
        request(worker, 'stats'),
      );
      if (s.refusedDeliveries > before) blockedStalls++;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const held = await request(worker, 'stats');
      maxReceiveBuffered = Math.max(maxReceiveBuffered, s.receiveBufferedBytes, held.receiveBufferedBytes);
      maxReorder = Math.max(maxReorder, s.reorderBuffered, held.reorderBuffered);
      client.resumeReading();
      localStalls++;
    } else {
      const id = (await request(worker, 'stats')).sessionId as string;
      emulator.stallReceive(id);
      const s = await untilChild(worker, (x) => x.unacked >= tuning.sendWindowMessages, 5_000).catch(() =>
        request(worker, 'stats'),
      );
      if (s.unacked >= tuning.sendWindowMessages) windowFullStalls++;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      maxUnacked = Math.max(maxUnacked, s.unacked, (await request(worker, 'stats')).unacked);
      emulator.releaseReceiveStall(id);
      remoteStalls++;
    }
  }
  const result = await client.done;
  const seconds = (performance.now() - startedAt) / 1000;
  await stalledRead;
  const written = await flood.done;
  const floodResult = await stalled.done;
  const floodVerified = floodResult.bytes === written.bytes && floodResult.sha256 === written.sha256;
  const final = await request(worker, 'stop');
  await emulator.close();
  await echo.close();
  const mib = (n: number): number => Math.round((n / 2 ** 20) * 10) / 10;
  process.stdout.write(
    `${JSON.stringify({
      bytesEachWay: totalBytes,
      verified: result.receivedSha256 === result.sentSha256,
      stalledConnection: {
        stallSeconds: stallMs / 1000,
        floodBytes: written.bytes,
        verified: floodVerified,
        spilledAtEndOfStallMiB: mib(maxSpilled),
        daemonPeakSpilledMiB: mib(final.peakSpilledBytes),
        spillFilesOpenAtEnd: final.spillFilesOpen,
      },
      seconds: Math.round(seconds),
      mibPerSecondEachWay: mib(totalBytes / seconds),
      localStalls,
      localStallsThatBlockedReceive: blockedStalls,
      remoteStalls,
      remoteStallsThatFilledSendWindow: windowFullStalls,
      daemonPeakRssMiB: mib(final.peakRssBytes),
      daemonMaxRssResourceUsageMiB: mib(final.maxRssResourceUsageBytes),
      maxReceiveBufferedMiB: mib(maxReceiveBuffered),
      maxReorderMessages: maxReorder,
      maxUnackedMessages: maxUnacked,
      streamReceiveCapMiB: mib(tuning.streamReceiveBufferBytes),
      sendWindowMessages: tuning.sendWindowMessages,
      emulatorProcessPeakRssMiB: mib(process.resourceUsage().maxRSS * 1024),
    })}\n`,
  );
  process.exitCode = result.receivedSha256 === result.sentSha256 && floodVerified ? 0 : 1;
}

if (process.argv.includes('--child')) await child();
else await parent();
