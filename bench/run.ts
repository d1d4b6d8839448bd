/**
 * `npm run bench`: the issue-7 benchmark. Starts the servers, three emulators (unpaced, paced like the real
 * agent, paced with 20 ms injected latency) and the daemon as separate processes, measures every figure
 * direct-to-server and through the tunnel in the same run, prints a table and writes
 * `bench/results/latest.json`. See bench/README.md for what each figure means.
 *
 * Options: `--quick` (small sizes, a smoke run), `--only <step…>`, `--cpu-prof` (daemon under
 * `node --cpu-prof`, profiles in bench/results/), `--send-window <messages>`, `--out <file>`.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  SocketScope,
  concurrentEcho,
  connectExchange,
  download,
  firstByte,
  percentile,
  pingPong,
  requestReply,
  upload,
} from './clients.js';
import { renderProfileSummary } from './profile.js';
import { REFERENCE_CEILING_BYTES_PER_SECOND, measureEmulatorPacedRate } from './pace.js';
import { cpuSeconds, memoryStatus, resetPeakRss, RssSampler } from './processes.js';
import { evaluateTargets, key, megabytesPerSecond, renderTable } from './report.js';
import type { Measurement, Path, StepResult, Usage } from './report.js';
import { describeSocksFirstByte, measureSocksFirstByte, medianMs } from './socks.js';
import { INJECTED_LATENCY_MS, startStack } from './stack.js';
import { STRIPING_STEPS, renderStripingTable, stripingForwards } from './striping.js';
import type { EmulatorName, ForwardName, Stack } from './stack.js';
import { patternBytes, sha256 } from './wire.js';

/** Repository root (this file runs as `dist/bench/run.js`). */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Where results and CPU profiles go. */
const RESULTS_DIR = join(ROOT, 'bench', 'results');
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Size of a ping-pong message, bytes (issue 7). */
const PING_BYTES = 64;
/** Size of an `rr` request and of its reply, bytes (issue 16). */
const RR_BYTES = 64;
/** Concurrent connections of the `rr` measurements (issue 16). */
const RR_CONNECTIONS = [50, 8] as const;
/** Bytes each `connect` connection exchanges (issue 16). */
const CONNECT_BYTES = 16;
/** Payload of one data-channel message in a bulk transfer, bytes (the per-message CPU figure's unit). */
const MESSAGE_BYTES = 1024;
/** Interval of the RSS sampler that backs up `VmHWM`, ms. */
const RSS_SAMPLE_MS = 50;
/** Pause before the warm first-byte samples, ms (our choice). */
const SETTLE_MS = 500;
/** Untimed connections before the warm first-byte samples. */
const WARM_UP_CONNECTIONS = 5;
/** Rows of the CPU profile summary printed after a `--cpu-prof` run. */
const PROFILE_SUMMARY_ROWS = 15;
/** Hard limit of the whole run, ms: after it everything is killed. */
const RUN_TIMEOUT_MS = 15 * 60_000;

/** Sizes and counts of a run. */
interface Sizes {
  /** Unpaced upload and download, direct and tunnel, bytes each. */
  bulkBytes: number;
  /** Upload through the paced emulator, bytes. */
  pacedUploadBytes: number;
  /** Download through the paced emulator, bytes (about 75 s per 64 MiB at the agent's pace). */
  pacedDownloadBytes: number;
  /** Upload through the latency emulator, bytes. */
  latencyUploadBytes: number;
  /** Unpaced ping-pong round trips. */
  pingRounds: number;
  /** Round trips with injected latency. */
  latencyRounds: number;
  /** Warm first-byte samples (median reported). */
  warmSamples: number;
  /** Duration of each `rr` measurement (per connection count and path), ms. */
  rrMs: number;
  /** Sequential connections of the `connect` step. */
  connectCount: number;
  /** Concurrent echo connections. */
  connections: number;
  /** Bytes each concurrent connection sends (and gets back). */
  connectionBytes: number;
  /** Bytes pushed through the in-process paced pump for the reference rate. */
  paceReferenceBytes: number;
  /** Bytes of each of the striping step's parallel downloads (bench/striping.ts). */
  stripingDownloadBytes: number;
}

const FULL: Sizes = {
  bulkBytes: 64 * MIB,
  pacedUploadBytes: 64 * MIB,
  pacedDownloadBytes: 64 * MIB,
  latencyUploadBytes: 8 * MIB,
  pingRounds: 10_000,
  latencyRounds: 300,
  warmSamples: 20,
  rrMs: 10_000,
  connectCount: 200,
  connections: 1000,
  connectionBytes: 64 * 1024,
  paceReferenceBytes: 2 * MIB,
  stripingDownloadBytes: 4 * MIB,
};

const QUICK: Sizes = {
  bulkBytes: 8 * MIB,
  pacedUploadBytes: 8 * MIB,
  pacedDownloadBytes: 1 * MIB,
  latencyUploadBytes: 1 * MIB,
  pingRounds: 1000,
  latencyRounds: 30,
  warmSamples: 20,
  rrMs: 2_000,
  connectCount: 50,
  connections: 100,
  connectionBytes: 64 * 1024,
  paceReferenceBytes: 256 * 1024,
  stripingDownloadBytes: 256 * 1024,
};

/** What {@link Context.observe} watches. */
interface Observed {
  /** The emulator carrying the traffic. */
  emulator: EmulatorName;
  /** Payload bytes crossing the daemon, both directions summed. */
  tunnelBytes: number;
  /** Bulk data (counts toward the run's CPU s/GiB), as opposed to latency probes. */
  bulk: boolean;
  /** Units of work of the measurement for the CPU-per-operation figure; omitted: 1 KiB messages if bulk. */
  operations?: number;
}

/** Everything a step needs. */
interface Context {
  stack: Stack;
  sizes: Sizes;
  scope: SocketScope;
  /** Record a figure. */
  record(measurement: Measurement): void;
  /** Pattern prefix of `bytes` bytes and its SHA-256 (computed before any clock starts). */
  payload(bytes: number): { data: Buffer; digest: Buffer };
  /**
   * Run `fn` while watching the daemon (CPU, peak RSS) and the emulator carrying the traffic; `count`
   * gives the operations of a result whose count is known only afterwards (`rr`).
   */
  observe<T>(
    what: Observed,
    fn: () => Promise<T>,
    count?: (result: T) => number,
  ): Promise<{ result: T; usage: Usage }>;
  /** Make sure the forward's session is up (untimed), so a measurement does not include StartSession. */
  warm(forward: ForwardName): Promise<void>;
}

/** One named part of the run. */
interface Step {
  name: string;
  /** Upper bound of the step's wall time, ms. */
  timeoutMs(sizes: Sizes): number;
  run(ctx: Context): Promise<void>;
}

/** Time budget of a transfer at a pessimistic rate, ms. */
function budgetMs(bytes: number, bytesPerSecond: number): number {
  return (bytes / bytesPerSecond) * 1000;
}

function median(values: readonly number[]): number {
  return percentile(Float64Array.from(values), 50);
}

const STEPS: readonly Step[] = [
  {
    // Issue 15: SOCKS5 cold/warm first byte, in processes of its own (bench/socks.ts).
    name: 'socks',
    timeoutMs: () => 180_000,
    async run(ctx) {
      const r = await measureSocksFirstByte({ coldSamples: 5, warmSamples: ctx.sizes.warmSamples });
      for (const [id, path, values] of [
        ['socks-first-byte-cold', 'tunnel', r.coldMs],
        ['socks-first-byte-cold-server-first', 'tunnel', r.coldServerFirstMs],
        ['socks-first-byte-warm', 'tunnel', r.warmMs],
        ['socks-first-byte-warm', 'direct', r.directMs],
      ] as const) {
        const details = { samples: values.length, minMs: Math.min(...values), maxMs: Math.max(...values) };
        ctx.record({ id, path, value: medianMs(values), unit: 'ms', details });
      }
      process.stderr.write(`${describeSocksFirstByte(r)}\n`);
    },
  },
  {
    name: 'first-byte',
    timeoutMs: () => 60_000,
    async run(ctx) {
      const { result: coldMs, usage } = await ctx.observe(
        { emulator: 'unpaced', tunnelBytes: 1, bulk: false },
        () => firstByte(ctx.scope, ctx.stack.forwardPorts['cold-echo']),
      );
      ctx.record({ id: 'first-byte-cold', path: 'tunnel', value: coldMs, unit: 'ms', details: {}, usage });
      for (const [path, port] of [
        ['direct', ctx.stack.serverPorts.echo],
        ['tunnel', ctx.stack.forwardPorts['cold-echo']],
      ] as const) {
        // The processes are still busy after the cold start (JIT, GC of the SDK load); let them settle.
        await delay(SETTLE_MS);
        for (let i = 0; i < WARM_UP_CONNECTIONS; i++) await firstByte(ctx.scope, port);
        const samples: number[] = [];
        for (let i = 0; i < ctx.sizes.warmSamples; i++) samples.push(await firstByte(ctx.scope, port));
        ctx.record({
          id: 'first-byte-warm',
          path,
          value: median(samples),
          unit: 'ms',
          details: { samples: samples.length, minMs: Math.min(...samples), maxMs: Math.max(...samples) },
        });
      }
    },
  },
  {
    name: 'pace-reference',
    timeoutMs: (sizes) => 10_000 + budgetMs(sizes.paceReferenceBytes, 200_000),
    async run(ctx) {
      ctx.record({
        id: 'sender-1ms-per-kib',
        path: 'reference',
        value: REFERENCE_CEILING_BYTES_PER_SECOND / 1e6,
        unit: 'MB/s',
        details: { bytesPerMessage: 1024, pacingMs: 1 },
      });
      const measured = await measureEmulatorPacedRate(ctx.sizes.paceReferenceBytes);
      ctx.record({
        id: 'emulator-paced-rate',
        path: 'reference',
        value: measured.bytesPerSecond / 1e6,
        unit: 'MB/s',
        details: { bytes: measured.bytes, seconds: measured.seconds, msPerMessage: measured.msPerMessage },
      });
    },
  },
  {
    name: 'throughput',
    timeoutMs: (sizes) => 30_000 + 2 * budgetMs(sizes.bulkBytes, 100e6) + 2 * budgetMs(sizes.bulkBytes, 1e6),
    async run(ctx) {
      const { data, digest } = ctx.payload(ctx.sizes.bulkBytes);
      const { serverPorts, forwardPorts } = ctx.stack;
      await ctx.warm('unpaced-sink');
      await ctx.warm('unpaced-source');
      const up = await upload(ctx.scope, serverPorts.sink, data, digest);
      ctx.record(transfer('upload-unpaced', 'direct', up.bytes, up.seconds));
      const down = await download(ctx.scope, serverPorts.source, data.length, digest);
      ctx.record(transfer('download-unpaced', 'direct', down.bytes, down.seconds));
      const tunnelUp = await ctx.observe({ emulator: 'unpaced', tunnelBytes: data.length, bulk: true }, () =>
        upload(ctx.scope, forwardPorts['unpaced-sink'], data, digest),
      );
      ctx.record(transfer('upload-unpaced', 'tunnel', data.length, tunnelUp.result.seconds, tunnelUp.usage));
      const tunnelDown = await ctx.observe(
        { emulator: 'unpaced', tunnelBytes: data.length, bulk: true },
        () => download(ctx.scope, forwardPorts['unpaced-source'], data.length, digest),
      );
      ctx.record(
        transfer('download-unpaced', 'tunnel', data.length, tunnelDown.result.seconds, tunnelDown.usage),
      );
      ctx.record(cpuPerOperation('cpu-upload-unpaced', tunnelUp.usage));
      ctx.record(cpuPerOperation('cpu-download-unpaced', tunnelDown.usage));
    },
  },
  {
    name: 'paced',
    timeoutMs: (sizes) =>
      30_000 + budgetMs(sizes.pacedUploadBytes, 0.5e6) + budgetMs(sizes.pacedDownloadBytes, 0.5e6),
    async run(ctx) {
      const { forwardPorts } = ctx.stack;
      await ctx.warm('paced-sink');
      await ctx.warm('paced-source');
      const up = ctx.payload(ctx.sizes.pacedUploadBytes);
      const tunnelUp = await ctx.observe({ emulator: 'paced', tunnelBytes: up.data.length, bulk: true }, () =>
        upload(ctx.scope, forwardPorts['paced-sink'], up.data, up.digest),
      );
      ctx.record(transfer('upload-paced', 'tunnel', up.data.length, tunnelUp.result.seconds, tunnelUp.usage));
      const down = ctx.payload(ctx.sizes.pacedDownloadBytes);
      const tunnelDown = await ctx.observe(
        { emulator: 'paced', tunnelBytes: down.data.length, bulk: true },
        () => download(ctx.scope, forwardPorts['paced-source'], down.data.length, down.digest),
      );
      ctx.record(
        transfer('download-paced', 'tunnel', down.data.length, tunnelDown.result.seconds, tunnelDown.usage),
      );
    },
  },
  {
    name: 'ping-pong',
    timeoutMs: (sizes) => 20_000 + 2 * sizes.pingRounds * 5,
    async run(ctx) {
      await ctx.warm('unpaced-echo');
      const rounds = ctx.sizes.pingRounds;
      const direct = await pingPong(ctx.scope, ctx.stack.serverPorts.echo, rounds, PING_BYTES);
      const tunnel = await ctx.observe(
        { emulator: 'unpaced', tunnelBytes: 2 * rounds * PING_BYTES, bulk: false },
        () => pingPong(ctx.scope, ctx.stack.forwardPorts['unpaced-echo'], rounds, PING_BYTES),
      );
      recordLatency(ctx, 'ping-pong', 'direct', direct, 'µs', 1);
      recordLatency(ctx, 'ping-pong', 'tunnel', tunnel.result, 'µs', 1, tunnel.usage);
      ctx.record({
        id: 'ping-pong-added-p50',
        path: 'tunnel',
        value: percentile(tunnel.result, 50) - percentile(direct, 50),
        unit: 'µs',
        details: {},
      });
    },
  },
  {
    name: 'rr',
    timeoutMs: (sizes) => 60_000 + 2 * RR_CONNECTIONS.length * sizes.rrMs,
    async run(ctx) {
      await ctx.warm('unpaced-echo');
      for (const connections of RR_CONNECTIONS) {
        const id = `rr-${connections}`;
        const details = { connections, bytes: RR_BYTES, durationMs: ctx.sizes.rrMs };
        const direct = await requestReply(
          ctx.scope,
          ctx.stack.serverPorts.echo,
          connections,
          ctx.sizes.rrMs,
          RR_BYTES,
        );
        const tunnel = await ctx.observe(
          { emulator: 'unpaced', tunnelBytes: 0, bulk: false },
          () =>
            requestReply(
              ctx.scope,
              ctx.stack.forwardPorts['unpaced-echo'],
              connections,
              ctx.sizes.rrMs,
              RR_BYTES,
            ),
          (result) => result.operations,
        );
        tunnel.usage.tunnelBytes = 2 * tunnel.result.operations * RR_BYTES;
        for (const [path, result, usage] of [
          ['direct', direct, undefined],
          ['tunnel', tunnel.result, tunnel.usage],
        ] as const) {
          const rate: Measurement = {
            id: `${id}-rate`,
            path,
            value: result.operations / result.seconds,
            unit: 'ops/s',
            details: { ...details, operations: result.operations, seconds: result.seconds },
          };
          if (usage) rate.usage = usage;
          ctx.record(rate);
          recordLatency(ctx, id, path, result.latenciesUs, 'µs', 1);
        }
        ctx.record(cpuPerOperation(`${id}-cpu`, tunnel.usage));
      }
    },
  },
  {
    name: 'connect',
    timeoutMs: (sizes) => 30_000 + 2 * sizes.connectCount * 100,
    async run(ctx) {
      await ctx.warm('unpaced-echo');
      const count = ctx.sizes.connectCount;
      const direct = await connectExchange(ctx.scope, ctx.stack.serverPorts.echo, count, CONNECT_BYTES);
      const tunnel = await ctx.observe(
        { emulator: 'unpaced', tunnelBytes: 2 * count * CONNECT_BYTES, bulk: false, operations: count },
        () => connectExchange(ctx.scope, ctx.stack.forwardPorts['unpaced-echo'], count, CONNECT_BYTES),
      );
      for (const [path, result, usage] of [
        ['direct', direct, undefined],
        ['tunnel', tunnel.result, tunnel.usage],
      ] as const) {
        const details = {
          connections: count,
          bytes: CONNECT_BYTES,
          p50Ms: percentile(result.exchangeMs, 50),
          p90Ms: percentile(result.exchangeMs, 90),
          p99Ms: percentile(result.exchangeMs, 99),
          maxMs: percentile(result.exchangeMs, 100),
          closedP50Ms: percentile(result.closedMs, 50),
          closedP99Ms: percentile(result.closedMs, 99),
        };
        const p50: Measurement = { id: 'connect-p50', path, value: details.p50Ms, unit: 'ms', details };
        if (usage) p50.usage = usage;
        ctx.record(p50);
        ctx.record({ id: 'connect-p99', path, value: details.p99Ms, unit: 'ms', details });
      }
      ctx.record({
        id: 'connect-added-p50',
        path: 'tunnel',
        value: percentile(tunnel.result.exchangeMs, 50) - percentile(direct.exchangeMs, 50),
        unit: 'ms',
        details: {},
      });
    },
  },
  {
    name: 'latency',
    timeoutMs: (sizes) =>
      30_000 +
      sizes.latencyRounds * (4 * INJECTED_LATENCY_MS + 20) +
      budgetMs(sizes.latencyUploadBytes, 0.2e6),
    async run(ctx) {
      await ctx.warm('latency-echo');
      await ctx.warm('latency-sink');
      const rounds = ctx.sizes.latencyRounds;
      const direct = await pingPong(ctx.scope, ctx.stack.serverPorts.echo, rounds, PING_BYTES);
      const tunnel = await ctx.observe(
        { emulator: 'latency', tunnelBytes: 2 * rounds * PING_BYTES, bulk: false },
        () => pingPong(ctx.scope, ctx.stack.forwardPorts['latency-echo'], rounds, PING_BYTES),
      );
      recordLatency(ctx, 'ping-pong-latency', 'direct', direct, 'ms', 1000);
      recordLatency(ctx, 'ping-pong-latency', 'tunnel', tunnel.result, 'ms', 1000, tunnel.usage);
      const { data, digest } = ctx.payload(ctx.sizes.latencyUploadBytes);
      const up = await ctx.observe({ emulator: 'latency', tunnelBytes: data.length, bulk: true }, () =>
        upload(ctx.scope, ctx.stack.forwardPorts['latency-sink'], data, digest),
      );
      ctx.record(transfer('upload-latency', 'tunnel', data.length, up.result.seconds, up.usage));
    },
  },
  {
    name: 'connections',
    timeoutMs: (sizes) => 30_000 + 2 * budgetMs(2 * sizes.connections * sizes.connectionBytes, 1e6),
    async run(ctx) {
      const { connections, connectionBytes } = ctx.sizes;
      const pattern = ctx.payload(Math.max(ctx.sizes.bulkBytes, connectionBytes)).data;
      await ctx.warm('unpaced-echo');
      const details = { connections, bytesEach: connectionBytes };
      const direct = await concurrentEcho(
        ctx.scope,
        ctx.stack.serverPorts.echo,
        connections,
        connectionBytes,
        pattern,
      );
      ctx.record({ id: 'connections', path: 'direct', value: direct.seconds, unit: 's', details });
      const tunnel = await ctx.observe(
        { emulator: 'unpaced', tunnelBytes: 2 * connections * connectionBytes, bulk: true },
        () =>
          concurrentEcho(
            ctx.scope,
            ctx.stack.forwardPorts['unpaced-echo'],
            connections,
            connectionBytes,
            pattern,
          ),
      );
      ctx.record({
        id: 'connections',
        path: 'tunnel',
        value: tunnel.result.seconds,
        unit: 's',
        details: { ...details, bytesVerified: tunnel.result.bytesBothWays },
        usage: tunnel.usage,
      });
    },
  },
  ...STRIPING_STEPS,
];

/** A throughput measurement. */
function transfer(id: string, path: Path, bytes: number, seconds: number, usage?: Usage): Measurement {
  const measurement: Measurement = {
    id,
    path,
    value: megabytesPerSecond(bytes, seconds),
    unit: 'MB/s',
    details: { bytes, seconds },
  };
  if (usage) measurement.usage = usage;
  return measurement;
}

/** The daemon's CPU per operation of a tunnel measurement as a figure of its own, µs. */
function cpuPerOperation(id: string, usage: Usage): Measurement {
  return {
    id,
    path: 'tunnel',
    value: usage.daemonCpuUsPerOperation ?? Number.NaN,
    unit: 'µs',
    details: { operations: usage.operations ?? 0, daemonCpuSeconds: usage.daemonCpuSeconds ?? Number.NaN },
  };
}

/** Record p50 and p99 (and details) of a round-trip sample in µs, shown in `unit`. */
function recordLatency(
  ctx: Context,
  id: string,
  path: Path,
  samplesUs: Float64Array,
  unit: 'µs' | 'ms',
  usPerUnit: number,
  usage?: Usage,
): void {
  const details = {
    rounds: samplesUs.length,
    p50Us: percentile(samplesUs, 50),
    p90Us: percentile(samplesUs, 90),
    p99Us: percentile(samplesUs, 99),
    maxUs: percentile(samplesUs, 100),
    meanUs: samplesUs.reduce((a, b) => a + b, 0) / samplesUs.length,
  };
  const p50: Measurement = { id: `${id}-p50`, path, value: details.p50Us / usPerUnit, unit, details };
  if (usage) p50.usage = usage;
  ctx.record(p50);
  ctx.record({ id: `${id}-p99`, path, value: details.p99Us / usPerUnit, unit, details });
}

/** Reject after `ms` with a message naming the step. */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  // A step that lost the race still settles later (its sockets are destroyed); that must not crash the run.
  promise.catch(() => undefined);
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${Math.round(ms / 1000)} s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Which WebSocket masking the daemon under test uses. `bufferutil` is an optional dependency
 * (package.json): without it `ws` masks in JavaScript, so results say which one was measured.
 */
function webSocketMasking(): string {
  if (process.env['WS_NO_BUFFER_UTIL']) return 'javascript (WS_NO_BUFFER_UTIL set)';
  try {
    createRequire(import.meta.url)('bufferutil');
    return 'bufferutil (native)';
  } catch {
    return 'javascript (bufferutil not installed)';
  }
}

/** Machine and code under test. */
function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  const git = (args: string[]): string | null => {
    try {
      return execFileSync('git', args, {
        cwd: ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      return null;
    }
  };
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    totalMemoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    webSocketMasking: webSocketMasking(),
    date: new Date().toISOString(),
    gitCommit: git(['rev-parse', 'HEAD']),
    srcUncommittedChanges: (git(['status', '--porcelain', '--', 'src']) ?? '') !== '',
  };
}

/** Command-line options. */
interface Args {
  quick: boolean;
  only: string[] | undefined;
  cpuProf: boolean;
  sendWindow: number | undefined;
  out: string | undefined;
}

function parseArgs(): Args {
  const names = STEPS.map((step) => step.name);
  const argv = yargs(hideBin(process.argv))
    .scriptName('npm run bench --')
    .usage('$0 [--quick] [--only step…] [--cpu-prof]')
    .options({
      quick: {
        type: 'boolean',
        default: false,
        description: 'small sizes and counts: a smoke run of about 30 s',
      },
      only: {
        type: 'string',
        array: true,
        choices: names,
        description: 'run only these steps (repeatable or space-separated)',
      },
      'cpu-prof': {
        type: 'boolean',
        default: false,
        description: 'run the daemon under node --cpu-prof; profiles go to bench/results/*.cpuprofile',
      },
      'send-window': {
        type: 'number',
        description: "daemon tuning.sendWindowMessages (default: the daemon's own default)",
      },
      out: {
        type: 'string',
        description: 'results file (default bench/results/latest.json; partial.json with --quick or --only)',
      },
    })
    .example('$0', 'full run, writes bench/results/latest.json')
    .example('$0 --quick --only throughput ping-pong', 'smoke run of two steps')
    .example('$0 --only throughput --cpu-prof', 'profile the daemon during the bulk transfers')
    .strict()
    .version(false)
    .help()
    .parseSync();
  return {
    quick: argv.quick,
    only: argv.only,
    cpuProf: argv['cpu-prof'],
    sendWindow: argv['send-window'],
    out: argv.out,
  };
}

async function main(): Promise<number> {
  const args = parseArgs();
  const sizes = args.quick ? QUICK : FULL;
  const steps = args.only ? STEPS.filter((step) => args.only?.includes(step.name)) : STEPS;
  const partial = args.quick || args.only !== undefined;
  const outPath = args.out ?? join(RESULTS_DIR, partial ? 'partial.json' : 'latest.json');
  mkdirSync(RESULTS_DIR, { recursive: true });
  const profilesBefore = new Set(readdirSync(RESULTS_DIR));
  const runStart = performance.now();

  const payloadCache = new Map<number, { data: Buffer; digest: Buffer }>();
  const pattern = patternBytes(Math.max(sizes.bulkBytes, sizes.pacedUploadBytes, sizes.pacedDownloadBytes));
  const payload = (bytes: number): { data: Buffer; digest: Buffer } => {
    let cached = payloadCache.get(bytes);
    if (!cached) {
      const data = bytes <= pattern.length ? pattern.subarray(0, bytes) : patternBytes(bytes);
      cached = { data, digest: sha256(data) };
      payloadCache.set(bytes, cached);
    }
    return cached;
  };
  for (const bytes of [
    sizes.bulkBytes,
    sizes.pacedUploadBytes,
    sizes.pacedDownloadBytes,
    sizes.latencyUploadBytes,
  ]) {
    payload(bytes);
  }

  process.stderr.write(
    `bench: starting servers, 3 emulators and the daemon${args.cpuProf ? ' (--cpu-prof)' : ''}\n`,
  );
  const stack = await startStack({
    cpuProfileDir: args.cpuProf ? RESULTS_DIR : undefined,
    sendWindowMessages: args.sendWindow,
    extraForwards: stripingForwards(),
  });
  const measurements = new Map<string, Measurement>();
  const results: StepResult[] = [];
  const warmed = new Set<ForwardName>();
  let peakRssSeen = 0;
  const totals = { tunnelBytes: 0, daemonCpuSeconds: 0 };
  const daemonPid = stack.daemon.pid;
  const daemonCpuAtStart = cpuSeconds(daemonPid);

  try {
    for (const step of steps) {
      const scope = new SocketScope();
      const ctx: Context = {
        stack,
        sizes,
        scope,
        payload,
        record(measurement) {
          measurements.set(key(measurement.id, measurement.path), measurement);
        },
        async observe({ emulator, tunnelBytes, bulk, operations }, fn, count) {
          const emulatorPid = stack.emulators[emulator].pid;
          const resetWorked = resetPeakRss(daemonPid);
          const sampler = new RssSampler(daemonPid, RSS_SAMPLE_MS);
          const cpuBefore = cpuSeconds(daemonPid);
          const emulatorCpuBefore = cpuSeconds(emulatorPid);
          let result: Awaited<ReturnType<typeof fn>>;
          let sampled = 0;
          try {
            result = await fn();
          } finally {
            sampled = sampler.stop();
          }
          const cpuAfter = cpuSeconds(daemonPid);
          const emulatorCpuAfter = cpuSeconds(emulatorPid);
          const hwm = resetWorked ? (memoryStatus(daemonPid)?.peakRssBytes ?? 0) : 0;
          const peak = Math.max(sampled, hwm) || null;
          const daemonCpu = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : null;
          if (peak !== null) peakRssSeen = Math.max(peakRssSeen, peak);
          if (daemonCpu !== null && bulk) {
            totals.daemonCpuSeconds += daemonCpu;
            totals.tunnelBytes += tunnelBytes;
          }
          const ops = count
            ? count(result)
            : (operations ?? (bulk ? Math.ceil(tunnelBytes / MESSAGE_BYTES) : null));
          const usage: Usage = {
            tunnelBytes,
            bulk,
            daemonCpuSeconds: daemonCpu,
            daemonCpuSecondsPerGiB: daemonCpu === null ? null : daemonCpu / (tunnelBytes / GIB),
            daemonPeakRssBytes: peak,
            emulatorCpuSeconds:
              emulatorCpuBefore !== undefined && emulatorCpuAfter !== undefined
                ? emulatorCpuAfter - emulatorCpuBefore
                : null,
            operations: ops,
            daemonCpuUsPerOperation: daemonCpu === null || !ops ? null : (daemonCpu / ops) * 1e6,
          };
          return { result, usage };
        },
        async warm(forward) {
          if (warmed.has(forward)) return;
          const port = stack.forwardPorts[forward];
          if (forward.endsWith('-echo')) await pingPong(scope, port, 1, PING_BYTES);
          else if (forward.endsWith('-sink'))
            await upload(scope, port, payload(1024).data, payload(1024).digest);
          else await download(scope, port, 1024, payload(1024).digest);
          warmed.add(forward);
        },
      };
      const started = performance.now();
      process.stderr.write(`bench: ${step.name}…\n`);
      try {
        if (stack.daemon.hasExited) throw new Error(`daemon is gone:\n${stack.daemon.recentOutput()}`);
        await withTimeout(step.run(ctx), step.timeoutMs(sizes), `step ${step.name}`);
        results.push({ name: step.name, ok: true, seconds: (performance.now() - started) / 1000 });
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        results.push({
          name: step.name,
          ok: false,
          error: message,
          seconds: (performance.now() - started) / 1000,
        });
        process.stderr.write(`bench: step ${step.name} failed: ${message}\n`);
      } finally {
        scope.destroyAll();
      }
    }
  } finally {
    const daemonCpuAtEnd = cpuSeconds(daemonPid);
    const finalMemory = memoryStatus(daemonPid);
    if (finalMemory) peakRssSeen = Math.max(peakRssSeen, finalMemory.peakRssBytes);
    const daemonOutput = stack.daemon.recentOutput();
    await stack.stop();

    const targets = evaluateTargets(measurements);
    const profiles = readdirSync(RESULTS_DIR).filter(
      (name) => name.endsWith('.cpuprofile') && !profilesBefore.has(name),
    );
    const report = {
      machine: machineInfo(),
      options: {
        quick: args.quick,
        only: args.only ?? null,
        cpuProf: args.cpuProf,
        sendWindow: args.sendWindow ?? null,
      },
      sizes,
      wallSeconds: (performance.now() - runStart) / 1000,
      steps: results,
      measurements: [...measurements.values()],
      daemon: {
        peakRssBytes: peakRssSeen || null,
        cpuSecondsTotal:
          daemonCpuAtStart !== undefined && daemonCpuAtEnd !== undefined
            ? daemonCpuAtEnd - daemonCpuAtStart
            : null,
        tunnelBytesMeasured: totals.tunnelBytes,
        cpuSecondsPerGiBMeasured:
          totals.tunnelBytes > 0 ? totals.daemonCpuSeconds / (totals.tunnelBytes / GIB) : null,
        warnings: daemonOutput.split('\n').filter((line) => /^(warn|error)/.test(line)),
      },
      targets,
      cpuProfiles: profiles.map((name) => relative(ROOT, join(RESULTS_DIR, name))),
    };
    mkdirSync(dirname(outPath), { recursive: true });
    writeFileSync(outPath, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`\n${renderTable(measurements, targets, results)}\n`);
    const striping = renderStripingTable(measurements);
    if (striping) process.stdout.write(`\n${striping}\n`);
    const d = report.daemon;
    process.stdout.write(
      `\ndaemon: peak RSS ${d.peakRssBytes === null ? '—' : (d.peakRssBytes / 1e6).toFixed(1)} MB over the run, ` +
        `${d.cpuSecondsPerGiBMeasured === null ? '—' : d.cpuSecondsPerGiBMeasured.toFixed(2)} CPU s/GiB over all tunnel measurements\n`,
    );
    process.stdout.write(
      `results: ${relative(process.cwd(), outPath)} (${report.wallSeconds.toFixed(0)} s)\n`,
    );
    for (const profile of profiles) {
      process.stdout.write(`\n${renderProfileSummary(join(RESULTS_DIR, profile), PROFILE_SUMMARY_ROWS)}\n`);
    }
  }
  return results.every((step) => step.ok) ? 0 : 1;
}

const hardLimit = setTimeout(() => {
  process.stderr.write(`bench: the run exceeded ${RUN_TIMEOUT_MS / 60_000} min; killing everything\n`);
  process.exit(2);
}, RUN_TIMEOUT_MS);
hardLimit.unref();

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
