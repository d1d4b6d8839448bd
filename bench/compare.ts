/**
 * Render one or two result files (`bench/results/*.json`) as a Markdown table, for bench/README.md and for
 * before/after notes on optimisation work.
 *
 * Usage: `node dist/bench/compare.js AFTER.json` or `node dist/bench/compare.js BEFORE.json AFTER.json`.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ROWS, format, key, rowLabel, verdict } from './report.js';
import type { Measurement, TargetResult } from './report.js';

/** The parts of a results file this renderer reads. */
interface ResultsFile {
  machine: { cores: number; cpuModel: string; node: string; date: string; gitCommit: string | null };
  measurements: Measurement[];
  targets: TargetResult[];
  daemon: { peakRssBytes: number | null; cpuSecondsPerGiBMeasured: number | null };
}

function load(path: string): ResultsFile {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as ResultsFile;
  if (!Array.isArray(parsed.measurements) || !Array.isArray(parsed.targets)) {
    throw new Error(`${path} is not a bench results file`);
  }
  return parsed;
}

function index(results: ResultsFile): Map<string, Measurement> {
  return new Map(results.measurements.map((m) => [key(m.id, m.path), m]));
}

/** Markdown for `after` (and `before`, when given): figures, daemon resource use, targets. */
export function renderMarkdown(after: ResultsFile, before?: ResultsFile): string {
  const a = index(after);
  const b = before ? index(before) : undefined;
  const lines: string[] = [];
  const m = after.machine;
  lines.push(
    `${m.date.slice(0, 10)}, ${m.cores} cores (${m.cpuModel}), Node ${m.node}, commit ${(m.gitCommit ?? '?').slice(0, 7)}` +
      (before ? `; before: commit ${(before.machine.gitCommit ?? '?').slice(0, 7)}` : ''),
    '',
  );
  lines.push(
    before
      ? '| figure | direct / reference | tunnel before | tunnel after | unit |'
      : '| figure | direct / reference | tunnel | unit |',
  );
  lines.push(before ? '|---|---:|---:|---:|---|' : '|---|---:|---:|---|');
  for (const row of ROWS) {
    const direct = a.get(key(row.id, 'direct')) ?? a.get(key(row.id, 'reference'));
    const tunnel = a.get(key(row.id, 'tunnel'));
    if (!direct && !tunnel) continue;
    const unit = (direct ?? tunnel)?.unit ?? '';
    const old = b?.get(key(row.id, 'tunnel'));
    const label = rowLabel(row, direct ?? tunnel);
    lines.push(
      before
        ? `| ${label} | ${format(direct?.value)} | ${format(old?.value)} | ${format(tunnel?.value)} | ${unit} |`
        : `| ${label} | ${format(direct?.value)} | ${format(tunnel?.value)} | ${unit} |`,
    );
  }
  lines.push('');
  lines.push('| daemon, per tunnel measurement | CPU s | CPU s/GiB | CPU µs/op | peak RSS MB |');
  lines.push('|---|---:|---:|---:|---:|');
  for (const measurement of after.measurements) {
    const usage = measurement.usage;
    if (!usage) continue;
    const rss = usage.daemonPeakRssBytes === null ? null : usage.daemonPeakRssBytes / 1e6;
    const perGiB = usage.bulk ? format(usage.daemonCpuSecondsPerGiB) : '—';
    const perOp = format(usage.daemonCpuUsPerOperation);
    lines.push(
      `| ${measurement.id} | ${format(usage.daemonCpuSeconds)} | ${perGiB} | ${perOp} | ${format(rss)} |`,
    );
  }
  const d = after.daemon;
  lines.push(
    `| whole run (bulk measurements) | | ${format(d.cpuSecondsPerGiBMeasured)} | | ${format(d.peakRssBytes === null ? null : d.peakRssBytes / 1e6)} |`,
  );
  lines.push('');
  const oldTargets = new Map(before?.targets.map((t) => [t.id, t]));
  lines.push(before ? '| target | before | after | result |' : '| target | measured | result |');
  lines.push(before ? '|---|---:|---:|---|' : '|---|---:|---|');
  for (const t of after.targets) {
    const value = `${format(t.value)} ${t.unit}`;
    const old = oldTargets.get(t.id);
    lines.push(
      before
        ? `| ${t.description} | ${old ? `${format(old.value)} ${old.unit}` : '—'} | ${value} | ${verdict(t.pass)} |`
        : `| ${t.description} | ${value} | ${verdict(t.pass)} |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const files = process.argv.slice(2);
  if (files.length < 1 || files.length > 2) {
    process.stderr.write('usage: node dist/bench/compare.js [BEFORE.json] AFTER.json\n');
    process.exit(2);
  }
  const [first, second] = files.map(load);
  process.stdout.write(
    `${second && first ? renderMarkdown(second, first) : renderMarkdown(first as ResultsFile)}\n`,
  );
}
