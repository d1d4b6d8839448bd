/**
 * A small strict parser of the Prometheus text exposition format 0.0.4, for the metrics tests: it throws
 * on anything a Prometheus server would reject (bad names, bad label syntax or escapes, values that are
 * not floats, samples before their `# TYPE`, families split in two, duplicate series, histogram buckets
 * that are not cumulative or miss `+Inf`, `_count` differing from the `+Inf` bucket).
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One metric family: `# HELP`, `# TYPE` and its samples. */
export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** A sample value as Prometheus reads it (Go `strconv.ParseFloat`: Inf and NaN in any letter case). */
function parseValue(text: string, line: number): number {
  const lower = text.toLowerCase();
  if (lower === '+inf' || lower === 'inf') return Infinity;
  if (lower === '-inf') return -Infinity;
  if (lower === 'nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text))
    throw new Error(`line ${line}: bad value ${text}`);
  return Number(text);
}

/** Parse `{a="x",b="y"}` starting at `text[0] === '{'`; returns labels and the rest after `}`. */
function parseLabels(text: string, line: number): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  for (;;) {
    if (text[i] === '}') return { labels, rest: text.slice(i + 1) };
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without =`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name ${name}`);
    if (name in labels) throw new Error(`line ${line}: duplicate label ${name}`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let value = '';
    let j = eq + 2;
    for (;;) {
      const c = text[j];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const next = text[j + 1];
        if (next === '\\') value += '\\';
        else if (next === '"') value += '"';
        else if (next === 'n') value += '\n';
        else throw new Error(`line ${line}: bad escape \\${next}`);
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`line ${line}: expected , or } after a label`);
  }
}

/** The family a sample name belongs to (histogram and summary suffixes). */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const family = families.get(name.slice(0, -suffix.length));
    if (family && (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket'))) {
      return family;
    }
  }
  return undefined;
}

/** Parse an exposition; throws naming the line of the first problem. */
export function parsePrometheusText(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, Family>();
  const finished = new Set<string>();
  const seen = new Set<string>();
  let current: Family | undefined;
  text
    .slice(0, -1)
    .split('\n')
    .forEach((raw, index) => {
      const line = index + 1;
      if (raw === '') return;
      if (raw.startsWith('#')) {
        const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
        if (!match) return; // a plain comment
        const [, kind, name = '', rest = ''] = match;
        if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
        if (finished.has(name)) throw new Error(`line ${line}: family ${name} appears twice`);
        let family = families.get(name);
        if (!family) {
          if (current) finished.add(current.name);
          family = { name, type: 'untyped', help: '', samples: [] };
          families.set(name, family);
          current = family;
        } else if (family !== current) {
          throw new Error(`line ${line}: ${kind} for ${name} outside its family`);
        }
        if (kind === 'TYPE') {
          if (!TYPES.has(rest)) throw new Error(`line ${line}: bad type ${rest}`);
          if (family.samples.length > 0) throw new Error(`line ${line}: TYPE after samples of ${name}`);
          family.type = rest as Family['type'];
        } else {
          family.help = rest;
        }
        return;
      }
      const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw);
      if (!nameMatch) throw new Error(`line ${line}: bad sample line ${raw}`);
      const name = nameMatch[0];
      let rest = raw.slice(name.length);
      let labels: Record<string, string> = {};
      if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, line));
      const fields = rest.trim().split(/\s+/);
      if (!rest.startsWith(' ') || fields.length < 1 || fields.length > 2) {
        throw new Error(`line ${line}: expected "value [timestamp]" after ${name}`);
      }
      const value = parseValue(fields[0] ?? '', line);
      if (fields[1] !== undefined && !/^-?\d+$/.test(fields[1]))
        throw new Error(`line ${line}: bad timestamp`);
      const family = familyOf(name, families);
      if (!family || family !== current)
        throw new Error(`line ${line}: sample ${name} outside a declared family`);
      const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      if (seen.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
      seen.add(key);
      if (family.type === 'counter' && !(value >= 0))
        throw new Error(`line ${line}: negative counter ${name}`);
      family.samples.push({ name, labels, value });
    });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

function checkHistogram(family: Family): void {
  const groups = new Map<string, Sample[]>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    if (s.name.endsWith('_bucket') && le === undefined) throw new Error(`${family.name}: bucket without le`);
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const samples of groups.values()) {
    const buckets = samples.filter((s) => s.name.endsWith('_bucket'));
    let last = -Infinity;
    let lastCount = 0;
    for (const b of buckets) {
      const le = parseValue(b.labels['le'] ?? '', 0);
      if (le <= last) throw new Error(`${family.name}: buckets not in increasing le order`);
      if (b.value < lastCount) throw new Error(`${family.name}: buckets not cumulative`);
      last = le;
      lastCount = b.value;
    }
    if (last !== Infinity) throw new Error(`${family.name}: no +Inf bucket`);
    const count = samples.find((s) => s.name === `${family.name}_count`);
    if (!count || count.value !== lastCount)
      throw new Error(`${family.name}: _count differs from the +Inf bucket`);
  }
}

/** The value of the one sample of `family` whose labels include `labels`; throws if not exactly one. */
export function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
  sampleName = name,
): number {
  const family = families.get(name);
  if (!family) throw new Error(`no family ${name}`);
  const matches = family.samples.filter(
    (s) => s.name === sampleName && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (matches.length !== 1)
    throw new Error(`${matches.length} samples of ${sampleName} match ${JSON.stringify(labels)}`);
  return (matches[0] as Sample).value;
}
