/**
 * Summarise a V8 `.cpuprofile` (written by `npm run bench -- --cpu-prof`): self time per function and per
 * file, busiest first, so an optimiser sees where the daemon spends its CPU without opening DevTools.
 *
 * Usage: `node dist/bench/profile.js bench/results/CPU.….cpuprofile [--top N]`.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Rows printed per table unless `--top` says otherwise. */
const DEFAULT_TOP = 25;
/** Repository root, to shorten script URLs. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The parts of the V8 CPU profile format this summary reads (Chrome DevTools protocol `Profiler.Profile`). */
interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }>;
  /** Node id of each sample. */
  samples: number[];
  /** Time since the previous sample, µs. */
  timeDeltas: number[];
}

function isCpuProfile(value: unknown): value is CpuProfile {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Record<string, unknown>;
  return Array.isArray(v['nodes']) && Array.isArray(v['samples']) && Array.isArray(v['timeDeltas']);
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/** One row of the summary. */
export interface ProfileRow {
  name: string;
  /** Self time, ms. */
  selfMs: number;
  /** Share of all sampled time, %. */
  percent: number;
}

/** Self time by function and by file, busiest first. */
export function summariseProfile(profile: CpuProfile): {
  totalMs: number;
  functions: ProfileRow[];
  files: ProfileRow[];
} {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let totalUs = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    totalUs += us;
    const frame = frames.get(id);
    if (!frame) return;
    const file = shortUrl(frame.url);
    const fn = `${frame.functionName || '(anonymous)'}${file ? ` ${file}:${frame.lineNumber + 1}` : ''}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    const fileKey = file || frame.functionName || '(native)';
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
  });
  const rows = (map: Map<string, number>): ProfileRow[] =>
    [...map.entries()]
      .map(([name, us]) => ({ name, selfMs: us / 1000, percent: totalUs > 0 ? (100 * us) / totalUs : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs);
  return { totalMs: totalUs / 1000, functions: rows(byFunction), files: rows(byFile) };
}

/** The summary as text, `top` rows per table. */
export function renderProfileSummary(path: string, top: number = DEFAULT_TOP): string {
  const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
  if (!isCpuProfile(parsed)) throw new Error(`${path} is not a V8 .cpuprofile`);
  const summary = summariseProfile(parsed);
  const table = (title: string, rows: ProfileRow[]): string[] => [
    `${title}`,
    ...rows
      .slice(0, top)
      .map((r) => `${r.percent.toFixed(1).padStart(6)} %  ${r.selfMs.toFixed(0).padStart(8)} ms  ${r.name}`),
  ];
  return [
    `${path}: ${(summary.totalMs / 1000).toFixed(1)} s sampled (idle included)`,
    ...table('self time by function', summary.functions),
    '',
    ...table('self time by file', summary.files),
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const topIndex = args.indexOf('--top');
  const top = topIndex >= 0 ? Number(args[topIndex + 1]) : DEFAULT_TOP;
  const files = args.filter((_arg, i) => topIndex < 0 || (i !== topIndex && i !== topIndex + 1));
  if (files.length === 0 || !Number.isInteger(top) || top <= 0) {
    process.stderr.write('usage: node dist/bench/profile.js FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  for (const file of files) process.stdout.write(`${renderProfileSummary(file, top)}\n\n`);
}
