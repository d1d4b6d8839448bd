/**
 * The text view of `pf-daemon status`: a header, one table row per forward with its target on the line
 * below, and one short block per session, never wider than {@link STATUS_WIDTH} columns. `--watch` adds a
 * rates line per forward, computed from two snapshots. Pure functions of the stats tree (`src/stats.ts`).
 */
import { formatDuration, summaryLine } from '../stats.js';
import type { DaemonStats, ForwardStats, SessionStats, SocksStats } from '../stats.js';

/** Widest line the text view writes, columns. */
export const STATUS_WIDTH = 100;

/** `0 B`, `999 B`, `1.5 kB`, `12.3 MB`, `4.00 GB` (decimal units, as `MB/s` rates use). */
export function formatBytes(bytes: number): string {
  if (bytes < 1_000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1_000;
  let unit = 0;
  while (value >= 1_000 && unit < units.length - 1) {
    value /= 1_000;
    unit++;
  }
  return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)} ${units[unit]}`;
}

/** Cut `text` to `width` characters, marking the cut with `…`. */
function fit(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

function pad(text: string, width: number): string {
  return fit(text, width).padEnd(width);
}

function padLeft(text: string, width: number): string {
  return fit(text, width).padStart(width);
}

/** `HH:MM:SS` UTC of an ISO time (status is read at a glance; `--json` has the full time). */
function clock(iso: string): string {
  return `${iso.slice(11, 19)}Z`;
}

/** Join `parts` with `, ` after `head` into lines of at most {@link STATUS_WIDTH} columns. */
function wrap(parts: readonly string[], head: string, indent: string): string[] {
  const lines: string[] = [];
  let line = head;
  let fresh = true;
  for (const part of parts) {
    // One column stays free for the comma that ends a wrapped line.
    if (!fresh && line.length + 2 + part.length > STATUS_WIDTH - 1) {
      lines.push(`${line},`);
      line = indent;
      fresh = true;
    }
    line += fresh ? part : `, ${part}`;
    fresh = false;
  }
  lines.push(line);
  return lines.map((l) => fit(l, STATUS_WIDTH));
}

const COLUMNS = [
  ['FORWARD', 18, 'left'],
  ['LISTEN', 23, 'left'],
  ['STATE', 10, 'left'],
  ['ACTIVE', 6, 'right'],
  ['TOTAL', 7, 'right'],
  ['FAILED', 6, 'right'],
  ['UP', 9, 'right'],
  ['DOWN', 9, 'right'],
] as const;

function row(cells: readonly string[]): string {
  return COLUMNS.map(([, width, align], i) =>
    align === 'left' ? pad(cells[i] ?? '', width) : padLeft(cells[i] ?? '', width),
  )
    .join(' ')
    .trimEnd();
}

function sessionLines(s: SessionStats): string[] {
  const reconnect =
    s.reconnects === 0
      ? '0 reconnects'
      : `${s.reconnects} reconnect${s.reconnects === 1 ? '' : 's'} (last ${s.lastReconnectAt ? clock(s.lastReconnectAt) : '?'}, took ${formatDuration(s.lastReconnectMs ?? 0)})`;
  const parts = [
    `age ${formatDuration(s.ageMs)}`,
    reconnect,
    `${s.resentMessages} resent`,
    `buffered up ${formatBytes(s.bufferedUpBytes)} + ${s.unackedMessages} unacked msgs, down ${formatBytes(s.bufferedDownBytes)}`,
  ];
  const head = `  session ${s.id ?? '(starting)'} ${s.mode ?? '-'} ${s.state}: `;
  const lines = wrap(parts, head, '    ');
  if (s.lastError) {
    lines.push(fit(`    last error ${clock(s.lastError.at)}: ${s.lastError.message}`, STATUS_WIDTH));
  }
  return lines;
}

/** Per-forward rates between two snapshots. */
export interface ForwardRates {
  /** Upload, bytes per second. */
  upBytesPerSecond: number;
  /** Download, bytes per second. */
  downBytesPerSecond: number;
  /** Connections accepted per second. */
  connectionsPerSecond: number;
}

/** Rates of each forward of `now` against `before` (matched by name; new forwards get none). */
export function ratesBetween(before: DaemonStats, now: DaemonStats): Map<string, ForwardRates> {
  const seconds = Math.max(0.001, (now.uptimeMs - before.uptimeMs) / 1_000);
  const old = new Map(before.forwards.map((f) => [f.name, f]));
  const rates = new Map<string, ForwardRates>();
  for (const f of now.forwards) {
    const b = old.get(f.name);
    // A forward restarted by a reload starts from zero again: no negative rates.
    if (!b || f.bytesUp < b.bytesUp || f.bytesDown < b.bytesDown) continue;
    rates.set(f.name, {
      upBytesPerSecond: (f.bytesUp - b.bytesUp) / seconds,
      downBytesPerSecond: (f.bytesDown - b.bytesDown) / seconds,
      connectionsPerSecond: Math.max(0, f.connectionsAccepted - b.connectionsAccepted) / seconds,
    });
  }
  return rates;
}

function rateLine(r: ForwardRates): string {
  const mbps = (bps: number): string => `${(bps / 1_000_000).toFixed(2)} MB/s`;
  return `  rate up ${mbps(r.upBytesPerSecond)}, down ${mbps(r.downBytesPerSecond)}, ${r.connectionsPerSecond.toFixed(1)} conn/s`;
}

function forwardLines(f: ForwardStats, rates: ForwardRates | undefined): string[] {
  const lines = [
    row([
      f.name,
      f.listen ?? `${f.bind}:${f.localPort}`,
      f.state,
      String(f.connectionsActive),
      String(f.connectionsAccepted),
      String(f.connectionsFailed),
      formatBytes(f.bytesUp),
      formatBytes(f.bytesDown),
    ]),
    fit(`  → ${f.host}:${f.remotePort} via ${f.target} (${f.document})`, STATUS_WIDTH),
  ];
  if (f.error) lines.push(fit(`  not listening: ${f.error}`, STATUS_WIDTH));
  if (rates) lines.push(rateLine(rates));
  for (const s of f.sessions) lines.push(...sessionLines(s));
  if (f.sessions.length === 0 && f.state === 'listening')
    lines.push('  no session (starts on the next connection)');
  return lines;
}

/** One row per SOCKS listener (same columns as forwards), then one line per live destination. */
function socksLines(s: SocksStats): string[] {
  const lines = [
    row([
      s.name,
      s.listen ?? `${s.bind}:${s.localPort}`,
      s.state,
      String(s.connectionsActive),
      String(s.connectionsAccepted),
      String(s.connectionsFailed),
      formatBytes(s.bytesUp),
      formatBytes(s.bytesDown),
    ]),
    ...wrap(
      [
        s.auth === 'username' ? 'username/password' : 'no auth',
        `${s.destinations.length}/${s.maxSessions} destinations`,
        `refused: ${s.notAllowed} by allow list, ${s.refused} by the agent, ${s.limitReached} at maxSessions, ${s.handshakeFailures} bad handshakes`,
      ],
      `  → SOCKS5/HTTP CONNECT via ${s.target}: `,
      '    ',
    ),
  ];
  if (s.error) lines.push(fit(`  not listening: ${s.error}`, STATUS_WIDTH));
  for (const d of s.destinations) {
    const where = d.host.includes(':') ? `[${d.host}]:${d.port}` : `${d.host}:${d.port}`;
    const sessions = d.sessions.map((x) => `${x.id ?? '(starting)'} ${x.state}`).join(', ') || 'no session';
    lines.push(
      fit(
        `  ${where}: ${d.connectionsActive} open, ${d.connectionsTotal} total; session ${sessions}`,
        STATUS_WIDTH,
      ),
    );
  }
  return lines;
}

/**
 * The status screen. With `before` (the previous snapshot, `--watch`) each forward gets a rates line.
 * @returns lines joined with `\n`, each at most {@link STATUS_WIDTH} columns, ending with `\n`
 */
export function renderStatus(stats: DaemonStats, before?: DaemonStats): string {
  const rates = before ? ratesBetween(before, stats) : new Map<string, ForwardRates>();
  const header = [
    `pf-daemon ${stats.version}`,
    `pid ${stats.pid}`,
    `up ${formatDuration(stats.uptimeMs)}`,
    stats.configFile ? `config ${stats.configFile}` : 'from flags',
  ].join(' · ');
  const lines = [
    fit(header, STATUS_WIDTH),
    fit(summaryLine(stats), STATUS_WIDTH),
    '',
    row(COLUMNS.map(([name]) => name)),
  ];
  for (const f of stats.forwards) lines.push(...forwardLines(f, rates.get(f.name)));
  for (const s of stats.socks ?? []) lines.push(...socksLines(s));
  return `${lines.join('\n')}\n`;
}
