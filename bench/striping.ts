/**
 * Striping (issue 12 item 3): how a forward's throughput grows with its `sessions` (1, 2, 4, 8) through the
 * `paced` emulator, whose agent sends one ≤ 1024-byte Output message per ms per session (spec §9.2), so one
 * session tops out near 1 MB/s and ~1000 replies/s whatever the daemon does. Two workloads, each direct and
 * through a forward of its own per session count (`striped-<server>-<N>`, added to the daemon config by
 * {@link stripingForwards}):
 *
 * - `striping-download`: {@link DOWNLOADS} parallel downloads of `sizes.stripingDownloadBytes` each
 *   (SHA-256 verified), aggregate MB/s from the first connect to the last byte;
 * - `striping-rr`: {@link RR_CONNECTIONS} connections at once, each a loop of 64-byte request → 64-byte
 *   reply for `sizes.rrMs`, ops/s and round-trip p50/p99.
 *
 * Before a measurement the forward's N sessions are opened untimed, the way a connection pool opens them: a
 * burst of N idle connections at once (the sessions the burst started is reported, `burst`), then one more
 * idle connection at a time until N sessions are open (each new connection finds every session carrying
 * one, so the forward starts another). The daemon's own stats tree, read over its control socket, is the
 * condition waited on, and is sampled during the measurement to report how many sessions carried
 * connections. The target is aggregate ≥ 0.85 × N × the one-session figure.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { requestStatus } from '../src/control/client.js';
import { connect, download, percentile, requestReply } from './clients.js';
import type { RequestReplyResult, SocketScope } from './clients.js';
import { megabytesPerSecond, format, verdict } from './report.js';
import type { Measurement, Usage } from './report.js';
import type { EmulatorName, ExtraForward, ServerName, Stack } from './stack.js';

/** The `sessions` values measured (issue 12 item 3). */
export const STRIPING_SESSIONS = [1, 2, 4, 8] as const;
/** Parallel downloads of the download workload (issue 12 item 3). */
const DOWNLOADS = 8;
/** Concurrent connections of the request/reply workload (issue 12 item 3). */
const RR_CONNECTIONS = 50;
/** Size of a request and of its reply, bytes (issue 12 item 3). */
const RR_BYTES = 64;
/** Aggregate target: this fraction of N × the one-session figure (issue 12 item 3). */
export const TARGET_EFFICIENCY = 0.85;
/** The emulator both workloads go through: the real agent's pace. */
const EMULATOR: EmulatorName = 'paced';
/** Rate of one session the download step's timeout is sized from, bytes per second (the pace is ~1 MB/s). */
const PESSIMISTIC_BYTES_PER_SECOND = 0.4e6;
/** How often the stats tree is read while waiting for the sessions to open, ms (our choice). */
const WARM_POLL_MS = 50;
/** Longest wait for the sessions to open (N StartSession calls and handshakes), ms. */
const WARM_TIMEOUT_MS = 60_000;
/** How often the stats tree is read during a measurement, ms (our choice: cheap next to the traffic). */
const SAMPLE_MS = 500;

/** The two workloads and the server each one talks to. */
const WORKLOADS = { download: 'source', rr: 'echo' } as const satisfies Record<string, ServerName>;
type Workload = keyof typeof WORKLOADS;

/** Name of the forward of `workload` striped across `sessions` sessions. */
function forwardName(workload: Workload, sessions: number): string {
  return `striped-${WORKLOADS[workload]}-${sessions}`;
}

/** The forwards the striping steps use, for `StackOptions.extraForwards`. */
export function stripingForwards(): ExtraForward[] {
  return (Object.keys(WORKLOADS) as Workload[]).flatMap((workload) =>
    STRIPING_SESSIONS.map((sessions) => ({
      name: forwardName(workload, sessions),
      emulator: EMULATOR,
      server: WORKLOADS[workload],
      sessions,
    })),
  );
}

/** Sizes the striping steps read (fields of run.ts's `Sizes`). */
export interface StripingSizes {
  /** Bytes of each parallel download, bytes. */
  stripingDownloadBytes: number;
  /** Duration of each request/reply measurement, ms. */
  rrMs: number;
}

/** What the striping steps need of run.ts's step context. */
export interface StripingContext {
  stack: Pick<Stack, 'serverPorts' | 'extraPorts' | 'controlSocket'>;
  sizes: StripingSizes;
  scope: SocketScope;
  record(measurement: Measurement): void;
  payload(bytes: number): { data: Buffer; digest: Buffer };
  observe<T>(
    what: { emulator: EmulatorName; tunnelBytes: number; bulk: boolean },
    fn: () => Promise<T>,
    count?: (result: T) => number,
  ): Promise<{ result: T; usage: Usage }>;
}

/** A step of run.ts, in the shape its `Step` has. */
export interface StripingStep {
  name: string;
  timeoutMs(sizes: StripingSizes): number;
  run(ctx: StripingContext): Promise<void>;
}

/** The parts of the daemon's stats tree (`src/stats.ts`) read here. */
interface ForwardView {
  name: string;
  connectionsActive: number;
  sessions: { state: string; connections: number }[];
}

/** The forward's branch of the daemon's stats tree, read over the control socket. */
async function forwardStats(ctx: StripingContext, name: string): Promise<ForwardView> {
  const status = await requestStatus(ctx.stack.controlSocket);
  const forwards: ForwardView[] = status.forwards;
  const forward = forwards.find((f) => f.name === name);
  if (!forward) throw new Error(`the daemon has no forward ${name}`);
  return forward;
}

function openSessions(view: ForwardView): number {
  return view.sessions.filter((s) => s.state === 'open').length;
}

function assignedConnections(view: ForwardView): number {
  return view.sessions.reduce((sum, s) => sum + s.connections, 0);
}

/** Read the forward's stats until `predicate` holds; the last view. */
async function waitForForward(
  ctx: StripingContext,
  name: string,
  predicate: (view: ForwardView) => boolean,
  what: string,
): Promise<ForwardView> {
  const deadline = performance.now() + WARM_TIMEOUT_MS;
  for (;;) {
    const view = await forwardStats(ctx, name);
    if (predicate(view)) return view;
    if (performance.now() > deadline) {
      throw new Error(
        `${name}: ${what} did not happen within ${WARM_TIMEOUT_MS} ms (${openSessions(view)} sessions open, ` +
          `${assignedConnections(view)} of ${view.connectionsActive} connections assigned)`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, WARM_POLL_MS));
  }
}

/**
 * Open the forward's `sessions` sessions (untimed) and let its connections go again.
 * @returns the sessions a burst of `sessions` connections at once started by itself
 */
async function openStripes(ctx: StripingContext, name: string, sessions: number): Promise<number> {
  const port = ctx.stack.extraPorts[name] ?? 0;
  const held: Socket[] = [];
  try {
    held.push(...(await Promise.all(Array.from({ length: sessions }, () => connect(ctx.scope, port)))));
    let view = await waitForForward(
      ctx,
      name,
      (v) => assignedConnections(v) === held.length,
      `a burst of ${sessions} connections to be assigned`,
    );
    const burst = openSessions(view);
    while (openSessions(view) < sessions) {
      const before = openSessions(view);
      held.push(await connect(ctx.scope, port));
      view = await waitForForward(
        ctx,
        name,
        (v) => assignedConnections(v) === held.length && openSessions(v) > before,
        `session ${before + 1} of ${sessions} to open`,
      );
    }
    return burst;
  } finally {
    for (const socket of held) socket.destroy();
    // The measurement starts from idle sessions, so the forward spreads it from zero.
    await waitForForward(ctx, name, (v) => v.connectionsActive === 0, 'the warm-up connections to close');
  }
}

/** What the stats samples during a measurement showed. */
interface Spread {
  /** Sessions open at the end. */
  sessionsOpen: number;
  /** Most sessions seen carrying a connection at once. */
  sessionsCarrying: number;
  /** Connections of the busiest and the idlest open session at that moment. */
  maxPerSession: number;
  minPerSession: number;
}

/** Samples the forward's spread of connections over its sessions while a measurement runs. */
class SpreadSampler {
  private readonly spread: Spread = {
    sessionsOpen: 0,
    sessionsCarrying: 0,
    maxPerSession: 0,
    minPerSession: 0,
  };
  private readonly timer: NodeJS.Timeout;
  private inFlight: Promise<void> = Promise.resolve();
  /** Connections assigned in the sample {@link spread} was taken from. */
  private assigned = 0;

  constructor(
    private readonly ctx: StripingContext,
    private readonly name: string,
  ) {
    this.timer = setInterval(() => {
      this.inFlight = this.inFlight.then(() => this.sample());
    }, SAMPLE_MS);
  }

  private async sample(): Promise<void> {
    // A late or failed read costs one sample, never the measurement.
    const view = await forwardStats(this.ctx, this.name).catch(() => undefined);
    if (!view) return;
    const open = view.sessions.filter((s) => s.state === 'open');
    this.spread.sessionsOpen = open.length;
    const carrying = open.filter((s) => s.connections > 0).length;
    const assigned = assignedConnections(view);
    // The sample that shows the most connections at once (ties: the most sessions carrying them) is the
    // spread of the whole workload; later ones see connections that already finished.
    if (assigned > this.assigned || (assigned === this.assigned && carrying > this.spread.sessionsCarrying)) {
      const counts = open.map((s) => s.connections);
      this.assigned = assigned;
      this.spread.sessionsCarrying = carrying;
      this.spread.maxPerSession = Math.max(0, ...counts);
      this.spread.minPerSession = counts.length > 0 ? Math.min(...counts) : 0;
    }
  }

  /** Stop sampling; the spread seen (and the sessions open now). */
  async stop(): Promise<Spread> {
    clearInterval(this.timer);
    await this.inFlight;
    await this.sample();
    return { ...this.spread };
  }
}

/** `count` downloads at once; aggregate payload bytes and the wall time from the first connect to the last byte. */
async function parallelDownloads(
  scope: SocketScope,
  port: number,
  count: number,
  payload: { data: Buffer; digest: Buffer },
): Promise<{ bytes: number; seconds: number }> {
  const start = performance.now();
  await Promise.all(
    Array.from({ length: count }, () => download(scope, port, payload.data.length, payload.digest)),
  );
  return { bytes: count * payload.data.length, seconds: (performance.now() - start) / 1000 };
}

/** Details of a request/reply result: counts and percentiles, ms. */
function rrDetails(result: RequestReplyResult): Record<string, number> {
  return {
    connections: RR_CONNECTIONS,
    bytes: RR_BYTES,
    operations: result.operations,
    seconds: result.seconds,
    p50Ms: percentile(result.latenciesUs, 50) / 1000,
    p99Ms: percentile(result.latenciesUs, 99) / 1000,
  };
}

/**
 * One tunnel measurement of `workload` per session count: open the stripes, measure while sampling the
 * spread, record the figure with the scaling against the one-session figure.
 */
async function measureScaling<T>(
  ctx: StripingContext,
  workload: Workload,
  measure: (port: number) => Promise<{ result: T; usage: Usage }>,
  figure: (result: T) => { value: number; details: Record<string, number> },
): Promise<void> {
  let base: number | undefined;
  for (const sessions of STRIPING_SESSIONS) {
    const name = forwardName(workload, sessions);
    const burstSessions = await openStripes(ctx, name, sessions);
    const sampler = new SpreadSampler(ctx, name);
    let measured: { result: T; usage: Usage };
    let spread: Spread;
    try {
      measured = await measure(ctx.stack.extraPorts[name] ?? 0);
    } finally {
      spread = await sampler.stop();
    }
    const { value, details } = figure(measured.result);
    base ??= value;
    ctx.record({
      id: `striping-${workload}-s${sessions}`,
      path: 'tunnel',
      value,
      unit: workload === 'download' ? 'MB/s' : 'ops/s',
      details: {
        ...details,
        sessions,
        burstSessions,
        ...spread,
        scaling: value / base,
        targetScaling: TARGET_EFFICIENCY * sessions,
      },
      usage: measured.usage,
    });
  }
}

/** The striping steps, in the shape of run.ts's `Step`. */
export const STRIPING_STEPS: readonly StripingStep[] = [
  {
    name: 'striping-download',
    // The one-session run is the slowest; the others take 1/2, 1/4, 1/8 of it: 2× the first in all.
    timeoutMs: (sizes) =>
      60_000 +
      (2 * 1000 * DOWNLOADS * sizes.stripingDownloadBytes) / PESSIMISTIC_BYTES_PER_SECOND +
      STRIPING_SESSIONS.length * 20_000,
    async run(ctx) {
      const payload = ctx.payload(ctx.sizes.stripingDownloadBytes);
      const direct = await parallelDownloads(ctx.scope, ctx.stack.serverPorts.source, DOWNLOADS, payload);
      ctx.record({
        id: 'striping-download',
        path: 'direct',
        value: megabytesPerSecond(direct.bytes, direct.seconds),
        unit: 'MB/s',
        details: { connections: DOWNLOADS, bytesEach: payload.data.length, seconds: direct.seconds },
      });
      await measureScaling(
        ctx,
        'download',
        (port) =>
          ctx.observe({ emulator: EMULATOR, tunnelBytes: DOWNLOADS * payload.data.length, bulk: true }, () =>
            parallelDownloads(ctx.scope, port, DOWNLOADS, payload),
          ),
        (result) => ({
          value: megabytesPerSecond(result.bytes, result.seconds),
          details: { connections: DOWNLOADS, bytesEach: payload.data.length, seconds: result.seconds },
        }),
      );
    },
  },
  {
    name: 'striping-rr',
    timeoutMs: (sizes) => 60_000 + (STRIPING_SESSIONS.length + 1) * (sizes.rrMs + 20_000),
    async run(ctx) {
      const { rrMs } = ctx.sizes;
      const direct = await requestReply(
        ctx.scope,
        ctx.stack.serverPorts.echo,
        RR_CONNECTIONS,
        rrMs,
        RR_BYTES,
      );
      ctx.record({
        id: 'striping-rr',
        path: 'direct',
        value: direct.operations / direct.seconds,
        unit: 'ops/s',
        details: rrDetails(direct),
      });
      await measureScaling(
        ctx,
        'rr',
        async (port) => {
          const measured = await ctx.observe(
            { emulator: EMULATOR, tunnelBytes: 0, bulk: false },
            () => requestReply(ctx.scope, port, RR_CONNECTIONS, rrMs, RR_BYTES),
            (result) => result.operations,
          );
          measured.usage.tunnelBytes = 2 * measured.result.operations * RR_BYTES;
          return measured;
        },
        (result) => ({ value: result.operations / result.seconds, details: rrDetails(result) }),
      );
    },
  },
];

/** Rows of the striping table: workload label, measurement id prefix, unit. */
const TABLE_ROWS = [
  { workload: 'download', label: (m: Measurement) => `${DOWNLOADS} × ${mib(m)} MiB downloads` },
  { workload: 'rr', label: () => `${RR_CONNECTIONS} conns × ${RR_BYTES} B req/reply` },
] as const;

function mib(m: Measurement): string {
  return format((m.details['bytesEach'] ?? 0) / 2 ** 20);
}

/**
 * The striping figures as a table: per workload and session count the aggregate, its scaling against one
 * session and the 0.85 × N target, the sessions that carried connections, daemon and emulator CPU.
 * @returns undefined when no striping step ran
 */
export function renderStripingTable(measurements: ReadonlyMap<string, Measurement>): string | undefined {
  const all = [...measurements.values()].filter((m) => m.id.startsWith('striping-'));
  if (all.length === 0) return undefined;
  const widths = [30, 4, 9, 9, 6, 6, 6, 5, 6, 9, 9, 7, 9];
  const pad = (cells: string[]): string =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' ');
  const lines = [
    `striping (issue 12 item 3): ${EMULATOR} emulator (1 KiB per message, 1 ms apart, per session); target aggregate ≥ ${TARGET_EFFICIENCY} × N × the N = 1 figure`,
    pad([
      'workload',
      'N',
      'direct',
      'tunnel',
      'unit',
      '× N=1',
      'target',
      'pass',
      'burst',
      'carrying',
      'p50/p99ms',
      'dCPU s',
      'dCPU %',
    ]),
    '-'.repeat(widths.reduce((a, b) => a + b + 1, -1)),
  ];
  for (const row of TABLE_ROWS) {
    const direct = measurements.get(`striping-${row.workload}:direct`);
    for (const sessions of STRIPING_SESSIONS) {
      const m = measurements.get(`striping-${row.workload}-s${sessions}:tunnel`);
      if (!m) continue;
      const d = m.details;
      const scaling = d['scaling'] ?? Number.NaN;
      const target = d['targetScaling'] ?? Number.NaN;
      const seconds = d['seconds'] ?? Number.NaN;
      const cpu = m.usage?.daemonCpuSeconds ?? null;
      const latency = d['p50Ms'] === undefined ? '' : `${format(d['p50Ms'])}/${format(d['p99Ms'])}`;
      lines.push(
        pad([
          row.label(m),
          String(sessions),
          format(direct?.value),
          format(m.value),
          m.unit,
          format(scaling),
          sessions === 1 ? '—' : format(target),
          sessions === 1 ? '' : verdict(scaling >= target),
          String(d['burstSessions'] ?? '—'),
          `${d['sessionsCarrying'] ?? '—'} (${d['minPerSession'] ?? '?'}–${d['maxPerSession'] ?? '?'})`,
          latency,
          format(cpu),
          cpu === null ? '—' : format((100 * cpu) / seconds),
        ]),
      );
    }
  }
  lines.push(
    'burst: sessions a burst of N connections at once started by itself (the rest were opened one connection at a time);',
    'carrying: most sessions seen carrying connections during the measurement (connections on the idlest–busiest one);',
    'dCPU: daemon CPU time over the measurement, and as % of one core.',
  );
  const emulatorCpu = all
    .filter((m) => m.usage?.emulatorCpuSeconds !== undefined && m.usage.emulatorCpuSeconds !== null)
    .map((m) => `${m.id} ${format(m.usage?.emulatorCpuSeconds)} s`);
  if (emulatorCpu.length > 0) lines.push(`emulator CPU: ${emulatorCpu.join(', ')}`);
  return lines.join('\n');
}
