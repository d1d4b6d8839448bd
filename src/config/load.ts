/**
 * Find, read and parse the YAML configuration file (see docs/architecture.md, Conventions). Parsing
 * keeps the YAML document so every problem {@link verifyConfig} finds can name `file:line:column`.
 *
 * Discovery order ({@link resolveConfigPath}): `--config FILE`, then `$PF_DAEMON_CONFIG`, then
 * `$XDG_CONFIG_HOME/pf-daemon/config.yaml` (fallback `~/.config/pf-daemon/config.yaml`) when that file
 * exists. With none of them, the CLI runs from flags alone.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { Document } from 'yaml';
import { ConfigError } from '../errors.js';
import type { DaemonConfig } from './types.js';
import { verifyConfig } from './verify.js';
import type { ConfigPath, ConfigSource } from './verify.js';

/** Environment variable naming the config file (second in the discovery order). */
export const CONFIG_ENV = 'PF_DAEMON_CONFIG';
/** File name under `$XDG_CONFIG_HOME/pf-daemon/`. */
export const CONFIG_BASENAME = 'config.yaml';
/** Aliases the YAML parser expands before giving up (billion-laughs guard). */
const MAX_ALIAS_COUNT = 100;

/** A parsed (not yet validated) configuration file. */
export interface RawConfigFile {
  /** The path as given (kept relative so messages match what the user typed). */
  path: string;
  /** Plain JS value of the document (`null` for an empty file). */
  raw: unknown;
  /** Locates values in the file for error messages. */
  source: ConfigSource;
}

/** Where a config path came from in {@link resolveConfigPath}. */
export type ConfigOrigin = 'flag' | 'env' | 'xdg';

/** Inputs of {@link resolveConfigPath}; each is optional so tests need no real environment. */
export interface ConfigPathInputs {
  /** Value of `--config`. */
  flag?: string | undefined;
  /** Value of `$PF_DAEMON_CONFIG`. */
  env?: string | undefined;
  /** Value of `$XDG_CONFIG_HOME`. */
  xdg?: string | undefined;
  /** Home directory for the `~/.config` fallback. Default `os.homedir()`. */
  home?: string;
  /** File existence check for the XDG candidate. Default `fs.existsSync`. */
  exists?: (path: string) => boolean;
}

/**
 * Pick the configuration file: `--config`, then `$PF_DAEMON_CONFIG` (both used even if missing, so a
 * typo is reported), then the XDG location only if it exists.
 *
 * @returns the path and where it came from, or undefined when no file applies
 */
export function resolveConfigPath(
  inputs: ConfigPathInputs,
): { path: string; origin: ConfigOrigin } | undefined {
  if (inputs.flag) return { path: inputs.flag, origin: 'flag' };
  if (inputs.env) return { path: inputs.env, origin: 'env' };
  const base =
    inputs.xdg && inputs.xdg.startsWith('/') ? inputs.xdg : join(inputs.home ?? homedir(), '.config');
  const candidate = join(base, 'pf-daemon', CONFIG_BASENAME);
  return (inputs.exists ?? existsSync)(candidate) ? { path: candidate, origin: 'xdg' } : undefined;
}

/** A {@link ConfigSource} that maps paths to `at <file>:<line>:<column>` through the YAML document. */
export function yamlSource(file: string, doc: Document, lines: LineCounter): ConfigSource {
  return {
    locate(path: ConfigPath, what: 'value' | 'key'): string | undefined {
      let node: unknown = doc.contents;
      let offset: number | undefined = rangeStart(node);
      for (let i = 0; i < path.length; i++) {
        const part = path[i];
        const last = i === path.length - 1;
        if (isMap(node)) {
          const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === part);
          if (!pair) break;
          offset =
            (last && what === 'key' ? rangeStart(pair.key) : undefined) ?? rangeStart(pair.value) ?? offset;
          node = pair.value;
        } else if (isSeq(node) && typeof part === 'number') {
          const item: unknown = node.items[part];
          if (item === undefined) break;
          offset = rangeStart(item) ?? offset;
          node = item;
        } else {
          break;
        }
      }
      if (offset === undefined) return `in ${file}`;
      const { line, col } = lines.linePos(offset);
      return `at ${file}:${line}:${col}`;
    },
  };
}

function rangeStart(node: unknown): number | undefined {
  if (node === null || typeof node !== 'object' || !('range' in node)) return undefined;
  const range = (node as { range?: unknown }).range;
  return Array.isArray(range) && typeof range[0] === 'number' ? range[0] : undefined;
}

/**
 * Parse YAML text without validating it.
 *
 * @param text - file contents
 * @param file - name used in messages
 * @throws ConfigError `PF_ERR_CONFIG_FILE` on a YAML syntax error, naming `file:line:column`
 */
export function parseConfigText(text: string, file: string): RawConfigFile {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const [first] = doc.errors;
  if (first) {
    const pos = first.linePos?.[0];
    const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
    const what = (first.message.split('\n')[0] ?? first.code).replace(/ at line \d+, column \d+:?$/, '');
    const more = doc.errors.length > 1 ? ` (and ${doc.errors.length - 1} more)` : '';
    throw new ConfigError(
      'PF_ERR_CONFIG_FILE',
      `${where}: YAML syntax error: ${what}${more}: fix the file and retry`,
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new ConfigError(
      'PF_ERR_CONFIG_FILE',
      `${file}: cannot use the YAML document: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return { path: file, raw, source: yamlSource(file, doc, lines) };
}

/**
 * Read and parse a config file without validating it (the CLI overlays flags before validation).
 *
 * @throws ConfigError `PF_ERR_CONFIG_FILE` when the file cannot be read or parsed
 */
export async function readConfigFile(path: string): Promise<RawConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint =
      code === 'ENOENT'
        ? 'no such file: check --config / $PF_DAEMON_CONFIG, or copy config.example.yaml there'
        : code === 'EACCES'
          ? 'permission denied: make it readable by the user pf-daemon runs as'
          : code === 'EISDIR'
            ? 'it is a directory: point at the YAML file inside it'
            : `${code ?? 'read error'}: check the path`;
    throw new ConfigError('PF_ERR_CONFIG_FILE', `cannot read config file ${path}: ${hint}`, { cause: err });
  }
  return parseConfigText(text, path);
}

/**
 * Read, parse and validate a config file.
 *
 * @returns the deep-frozen resolved configuration
 * @throws ConfigError `PF_ERR_CONFIG_FILE` (unreadable/unparseable) or `PF_ERR_CONFIG` (invalid values,
 *   every problem listed with `file:line:column`)
 */
export async function loadConfigFile(path: string): Promise<DaemonConfig> {
  const file = await readConfigFile(path);
  return verifyConfig(file.raw, file.source);
}
