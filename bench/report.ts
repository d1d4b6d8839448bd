/**
 * The benchmark's result model, the issue-7 and issue-16 targets evaluated against it, and the printed table.
 * Units: MB = 10^6 bytes, MiB = 2^20 bytes, GiB = 2^30 bytes; rates in MB/s.
 */
import { REFERENCE_CEILING_BYTES_PER_SECOND } from './pace.js';

/** Concurrent connections the issue-7/16 memory target is stated for. */
const CONNECTIONS_TARGET = 1000;
/** Peak daemon RSS allowed for {@link CONNECTIONS_TARGET} connections, MB (issue 16; issue 7 said 150). */
const CONNECTIONS_RSS_MB = 120;
/** Connections of the `rr` measurement that the issue-16 CPU target is stated for. */
export const RR_TARGET_CONNECTIONS = 50;

/** Where a figure was measured. */
export type Path = 'direct' | 'tunnel' | 'reference';

/** Daemon (and emulator) resource use over one tunnel measurement. */
export interface Usage {
  /** Payload bytes that crossed the daemon during the measurement, both directions summed. */
  tunnelBytes: number;
  /** Bulk data; only these count toward CPU s/GiB (latency probes cost per message, not per byte). */
  bulk: boolean;
  /** Daemon user + system CPU time, s. */
  daemonCpuSeconds: number | null;
  /** {@link daemonCpuSeconds} per GiB of {@link tunnelBytes}, s/GiB. */
  daemonCpuSecondsPerGiB: number | null;
  /** Peak daemon RSS during the measurement (`VmHWM` after a reset, or sampled `VmRSS`), bytes. */
  daemonPeakRssBytes: number | null;
  /** CPU time of the emulator that carried the traffic, s (for context: it shares the 2 cores). */
  emulatorCpuSeconds: number | null;
  /**
   * Units of work the measurement moved, when it has one (1 KiB messages of a bulk transfer, request+reply
   * round trips of `rr`); null otherwise.
   */
  operations: number | null;
  /** {@link daemonCpuSeconds} per operation, µs. */
  daemonCpuUsPerOperation: number | null;
}

/** One measured figure. */
export interface Measurement {
  /** Stable id, e.g. `upload-unpaced` (the same id exists for `direct` and `tunnel`). */
  id: string;
  path: Path;
  /** Headline value in {@link unit}. */
  value: number;
  unit: 'MB/s' | 'µs' | 'ms' | 's' | 'ops/s';
  /** Supporting numbers (bytes, seconds, percentiles…), names carry their unit. */
  details: Record<string, number>;
  /** Set for tunnel measurements. */
  usage?: Usage;
}

/** Outcome of one named step. */
export interface StepResult {
  name: string;
  ok: boolean;
  /** Error message when `ok` is false. */
  error?: string;
  /** Wall time of the step, s. */
  seconds: number;
}

/** Verdict of one issue-7 target. */
export interface TargetResult {
  id: string;
  /** The target as the issue states it. */
  description: string;
  /** Measured value, or null when the figure was not measured. */
  value: number | null;
  /** Threshold in the same unit as {@link value}. */
  threshold: number;
  unit: string;
  /** null = not measured in this run. */
  pass: boolean | null;
}

/** Human labels and row order of the table. */
export const ROWS: ReadonlyArray<{ id: string; label: string }> = [
  { id: 'upload-unpaced', label: 'bulk upload, unpaced emulator' },
  { id: 'download-unpaced', label: 'bulk download, unpaced emulator' },
  { id: 'cpu-upload-unpaced', label: 'bulk upload, daemon CPU per 1 KiB message' },
  { id: 'cpu-download-unpaced', label: 'bulk download, daemon CPU per 1 KiB message' },
  { id: 'sender-1ms-per-kib', label: '1 ms-per-1024-byte sender, theoretical' },
  { id: 'emulator-paced-rate', label: "paced emulator's own rate (its pump)" },
  { id: 'upload-paced', label: 'bulk upload, paced emulator' },
  { id: 'download-paced', label: 'bulk download, paced emulator' },
  { id: 'ping-pong-p50', label: 'ping-pong 64 B, p50' },
  { id: 'ping-pong-p99', label: 'ping-pong 64 B, p99' },
  { id: 'ping-pong-added-p50', label: 'ping-pong 64 B, added p50' },
  { id: 'rr-50-rate', label: 'rr 64 B, 50 connections, rate' },
  { id: 'rr-50-p50', label: 'rr 64 B, 50 connections, p50' },
  { id: 'rr-50-p99', label: 'rr 64 B, 50 connections, p99' },
  { id: 'rr-50-cpu', label: 'rr 64 B, 50 conns, daemon CPU per req+reply' },
  { id: 'rr-8-rate', label: 'rr 64 B, 8 connections, rate' },
  { id: 'rr-8-p50', label: 'rr 64 B, 8 connections, p50' },
  { id: 'rr-8-p99', label: 'rr 64 B, 8 connections, p99' },
  { id: 'rr-8-cpu', label: 'rr 64 B, 8 conns, daemon CPU per req+reply' },
  { id: 'ping-pong-latency-p50', label: 'ping-pong 64 B, +20 ms/frame, p50' },
  { id: 'ping-pong-latency-p99', label: 'ping-pong 64 B, +20 ms/frame, p99' },
  { id: 'upload-latency', label: 'bulk upload, +20 ms/frame emulator' },
  { id: 'first-byte-cold', label: 'first byte, cold forward' },
  { id: 'first-byte-warm', label: 'first byte, warm forward (median)' },
  { id: 'connect-p50', label: 'connect → 16 B echo → close, median' },
  { id: 'connect-p99', label: 'connect → 16 B echo → close, p99' },
  { id: 'connect-added-p50', label: 'connect → 16 B echo → close, added median' },
  { id: 'connections', label: 'concurrent echo connections, time' },
];

/** The table label of a row; the connection row names its count and size. */
export function rowLabel(row: { id: string; label: string }, measurement: Measurement | undefined): string {
  const count = measurement?.details['connections'];
  if (row.id !== 'connections' || count === undefined) return row.label;
  const eachKiB = (measurement?.details['bytesEach'] ?? 0) / 1024;
  return `${count} echo connections × ${eachKiB} KiB both ways, time`;
}

/** Key of a measurement in the result map. */
export function key(id: string, path: Path): string {
  return `${id}:${path}`;
}

/** MB (10^6 bytes) per second of a transfer. */
export function megabytesPerSecond(bytes: number, seconds: number): number {
  return bytes / seconds / 1e6;
}

/** Evaluate the issue-7 targets (with the stricter issue-16 thresholds) and the issue-16 targets. */
export function evaluateTargets(measurements: ReadonlyMap<string, Measurement>): TargetResult[] {
  const get = (id: string, path: Path): number | null => measurements.get(key(id, path))?.value ?? null;
  const target = (
    id: string,
    description: string,
    value: number | null,
    threshold: number,
    unit: string,
    higherIsBetter: boolean,
  ): TargetResult => ({
    id,
    description,
    value,
    threshold,
    unit,
    pass: value === null ? null : higherIsBetter ? value >= threshold : value <= threshold,
  });
  const pacedDownload = get('download-paced', 'tunnel');
  const ownRate = get('emulator-paced-rate', 'reference');
  const connections = measurements.get(key('connections', 'tunnel'));
  return [
    target(
      'unpaced-upload',
      'unpaced tunnel upload ≥ 60 MB/s',
      get('upload-unpaced', 'tunnel'),
      60,
      'MB/s',
      true,
    ),
    target(
      'unpaced-download',
      'unpaced tunnel download ≥ 60 MB/s',
      get('download-unpaced', 'tunnel'),
      60,
      'MB/s',
      true,
    ),
    target(
      'paced-download',
      "paced download ≥ 90 % of the emulator's own paced rate",
      pacedDownload !== null && ownRate !== null ? (100 * pacedDownload) / ownRate : null,
      90,
      '%',
      true,
    ),
    target(
      'paced-upload',
      'paced upload ≥ 10× a 1 ms-per-1024-byte sender (10.24 MB/s)',
      get('upload-paced', 'tunnel'),
      (10 * REFERENCE_CEILING_BYTES_PER_SECOND) / 1e6,
      'MB/s',
      true,
    ),
    target(
      'added-latency',
      'added ping-pong p50 ≤ 150 µs',
      get('ping-pong-added-p50', 'tunnel'),
      150,
      'µs',
      false,
    ),
    target('warm-first-byte', 'warm first byte ≤ 5 ms', get('first-byte-warm', 'tunnel'), 5, 'ms', false),
    connectionsTarget(connections),
    target(
      'cpu-upload',
      'bulk upload ≤ 8 µs daemon CPU per 1 KiB message',
      get('cpu-upload-unpaced', 'tunnel'),
      8,
      'µs',
      false,
    ),
    target(
      'cpu-download',
      'bulk download ≤ 8 µs daemon CPU per 1 KiB message',
      get('cpu-download-unpaced', 'tunnel'),
      8,
      'µs',
      false,
    ),
    target(
      'cpu-rr',
      `rr (${RR_TARGET_CONNECTIONS} connections) ≤ 20 µs daemon CPU per request+reply`,
      get(`rr-${RR_TARGET_CONNECTIONS}-cpu`, 'tunnel'),
      20,
      'µs',
      false,
    ),
    target(
      'connect-added',
      'connect median ≤ direct + 1 ms',
      get('connect-added-p50', 'tunnel'),
      1,
      'ms',
      false,
    ),
  ];
}

/** 1000 connections, all verified, daemon peak RSS ≤ 120 MB; not judged on a run with fewer connections. */
function connectionsTarget(connections: Measurement | undefined): TargetResult {
  const count = connections?.details['connections'] ?? 0;
  const peak = connections?.usage?.daemonPeakRssBytes;
  const value = peak !== undefined && peak !== null ? peak / 1e6 : null;
  return {
    id: 'connections-rss',
    description: `${CONNECTIONS_TARGET} connections, all bytes verified, peak daemon RSS ≤ ${CONNECTIONS_RSS_MB} MB`,
    value,
    threshold: CONNECTIONS_RSS_MB,
    unit: 'MB',
    pass: value === null || count < CONNECTIONS_TARGET ? null : value <= CONNECTIONS_RSS_MB,
  };
}

/** A figure with 3 significant-ish digits; `—` when missing. */
export function format(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  const abs = Math.abs(value);
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** PASS, FAIL or n/a (not measured). */
export function verdict(pass: boolean | null): string {
  return pass === null ? 'n/a' : pass ? 'PASS' : 'FAIL';
}

/** The results as text: measurements (direct vs tunnel), daemon resource use, then the targets. */
export function renderTable(
  measurements: ReadonlyMap<string, Measurement>,
  targets: readonly TargetResult[],
  steps: readonly StepResult[],
): string {
  const lines: string[] = [];
  const pad = (cells: string[], widths: number[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ');
  const widths = [48, 12, 12, 6];
  lines.push(pad(['figure', 'direct/ref', 'tunnel', 'unit'], widths));
  lines.push('-'.repeat(widths.reduce((a, b) => a + b + 2, -2)));
  for (const row of ROWS) {
    const direct = measurements.get(key(row.id, 'direct')) ?? measurements.get(key(row.id, 'reference'));
    const tunnel = measurements.get(key(row.id, 'tunnel'));
    if (!direct && !tunnel) continue;
    const label = rowLabel(row, direct ?? tunnel);
    lines.push(
      pad([label, format(direct?.value), format(tunnel?.value), (direct ?? tunnel)?.unit ?? ''], widths),
    );
  }
  lines.push('');
  const usageWidths = [48, 8, 8, 12, 8];
  lines.push(pad(['daemon, per tunnel measurement', 'CPU s', 's/GiB', 'µs/op', 'peak MB'], usageWidths));
  lines.push('-'.repeat(92));
  for (const measurement of measurements.values()) {
    const usage = measurement.usage;
    if (!usage) continue;
    lines.push(
      pad(
        [
          measurement.id,
          format(usage.daemonCpuSeconds),
          usage.bulk ? format(usage.daemonCpuSecondsPerGiB) : '—',
          format(usage.daemonCpuUsPerOperation),
          format(usage.daemonPeakRssBytes === null ? null : usage.daemonPeakRssBytes / 1e6),
        ],
        usageWidths,
      ),
    );
  }
  lines.push('');
  lines.push('targets (issue 7, thresholds of issue 16; issue 16)');
  lines.push('-'.repeat(92));
  for (const t of targets) {
    lines.push(
      `${verdict(t.pass).padEnd(5)} ${t.description}: ${format(t.value)} ${t.unit} (threshold ${format(t.threshold)})`,
    );
  }
  const failed = steps.filter((step) => !step.ok);
  if (failed.length > 0) {
    lines.push('');
    for (const step of failed) lines.push(`step ${step.name} FAILED: ${step.error ?? ''}`);
  }
  return lines.join('\n');
}
