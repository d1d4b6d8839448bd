/**
 * The import graph of `src/` and the layering rules it must keep (docs/architecture.md, "Who imports whom"),
 * for `test/architecture.test.ts`. Parsed with the TypeScript compiler, so `import`, `import type`,
 * `export … from` and `import('…')` are all seen, and comments or strings that look like imports are not.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, posix, relative, sep } from 'node:path';
import ts from 'typescript';

/** One import statement of one file. */
export interface ImportEdge {
  /** Importing file, relative to the repository root with `/` separators, e.g. `src/cli.ts`. */
  from: string;
  /**
   * What is imported: a repository path (`src/errors.ts`) for a relative import, `node:<name>` for a Node
   * built-in (bare `net` included), the package name otherwise.
   */
  to: string;
  /** The specifier as written. */
  specifier: string;
  /** `import type` / `export type` (erased at run time; still a dependency of the design). */
  typeOnly: boolean;
  /** `import('…')`. */
  dynamic: boolean;
  /** Names imported (`default` for a default import, `*` for a namespace or `export *`); empty for a side-effect import. */
  names: string[];
  /** 1-based line, for messages. */
  line: number;
}

/** A dynamic `import()` whose argument is not a string literal: the graph cannot follow it. */
export interface OpaqueImport {
  from: string;
  line: number;
  /** The argument's source text. */
  expression: string;
}

/** Every import of every `.ts` file under a root. */
export interface ImportGraph {
  /** Files, relative to the root's parent (`src/…`), sorted. */
  files: string[];
  edges: ImportEdge[];
  opaque: OpaqueImport[];
}

const BUILTINS = new Set(builtinModules);

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listTs(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

const toPosix = (path: string): string => path.split(sep).join('/');

function target(fromFile: string, specifier: string): string {
  if (specifier.startsWith('.')) {
    const joined = posix.normalize(posix.join(posix.dirname(fromFile), specifier));
    return joined.replace(/\.js$/, '.ts');
  }
  if (specifier.startsWith('node:')) return specifier;
  const bare = specifier.split('/')[0] ?? specifier;
  if (BUILTINS.has(specifier) || BUILTINS.has(bare)) return `node:${specifier}`;
  return specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : bare;
}

function namesOf(clause: ts.ImportClause | undefined): string[] {
  if (!clause) return [];
  const names: string[] = [];
  if (clause.name) names.push('default');
  const bindings = clause.namedBindings;
  if (bindings && ts.isNamespaceImport(bindings)) names.push('*');
  if (bindings && ts.isNamedImports(bindings)) {
    for (const element of bindings.elements) names.push((element.propertyName ?? element.name).text);
  }
  return names;
}

/**
 * Parse every `.ts` file under `root` (e.g. the repository's `src/`).
 * @param root - absolute path of the folder; paths in the result are relative to its parent
 */
export function importGraph(root: string): ImportGraph {
  const base = dirname(root);
  const files = listTs(root)
    .map((path) => toPosix(relative(base, path)))
    .sort();
  const edges: ImportEdge[] = [];
  const opaque: OpaqueImport[] = [];
  for (const file of files) {
    const text = readFileSync(join(base, file), 'utf8');
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
    const lineOf = (node: ts.Node): number =>
      source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    const add = (
      node: ts.Node,
      specifier: string,
      typeOnly: boolean,
      dynamic: boolean,
      names: string[],
    ): void => {
      edges.push({
        from: file,
        to: target(file, specifier),
        specifier,
        typeOnly,
        dynamic,
        names,
        line: lineOf(node),
      });
    };
    const visit = (node: ts.Node): void => {
      if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
        add(
          node,
          node.moduleSpecifier.text,
          node.importClause?.isTypeOnly ?? false,
          false,
          namesOf(node.importClause),
        );
      } else if (
        ts.isExportDeclaration(node) &&
        node.moduleSpecifier &&
        ts.isStringLiteral(node.moduleSpecifier)
      ) {
        const names =
          node.exportClause && ts.isNamedExports(node.exportClause)
            ? node.exportClause.elements.map((e) => (e.propertyName ?? e.name).text)
            : ['*'];
        add(node, node.moduleSpecifier.text, node.isTypeOnly, false, names);
      } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
        const [argument] = node.arguments;
        if (argument && ts.isStringLiteralLike(argument)) add(node, argument.text, false, true, ['*']);
        else opaque.push({ from: file, line: lineOf(node), expression: argument?.getText(source) ?? '' });
      } else if (
        ts.isImportTypeNode(node) &&
        ts.isLiteralTypeNode(node.argument) &&
        ts.isStringLiteral(node.argument.literal)
      ) {
        // `typeof import('…')` in a type position.
        add(node, node.argument.literal.text, true, false, ['*']);
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return { files, edges, opaque };
}

/**
 * Import cycles between files (every edge counts, type-only ones included): each as the list of files
 * around it, the first repeated at the end. Empty when the graph is acyclic.
 */
export function findCycles(graph: ImportGraph): string[][] {
  const next = new Map<string, string[]>();
  for (const edge of graph.edges) {
    if (!graph.files.includes(edge.to)) continue;
    const list = next.get(edge.from) ?? [];
    if (!list.includes(edge.to)) list.push(edge.to);
    next.set(edge.from, list);
  }
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (file: string): void => {
    state.set(file, 'open');
    stack.push(file);
    for (const to of next.get(file) ?? []) {
      const seen = state.get(to);
      if (seen === 'open') cycles.push([...stack.slice(stack.indexOf(to)), to]);
      else if (seen === undefined) visit(to);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.files) if (!state.has(file)) visit(file);
  return cycles;
}

/** One layering rule: edges from files matching `from` that it forbids, with why. */
export interface ImportRule {
  /** What the rule says, for the failure message. */
  name: string;
  /** Whether the rule applies to edges from this file. */
  from: (file: string) => boolean;
  /** Whether this edge breaks the rule. */
  forbids: (edge: ImportEdge) => boolean;
}

/** Every edge that breaks a rule, as one line each (`file:line imports 'specifier' — rule`). */
export function violations(graph: ImportGraph, rules: readonly ImportRule[]): string[] {
  const out: string[] = [];
  for (const rule of rules) {
    for (const edge of graph.edges) {
      if (rule.from(edge.from) && rule.forbids(edge)) {
        out.push(`${edge.from}:${edge.line} imports '${edge.specifier}' (${rule.name})`);
      }
    }
  }
  return out;
}

const under =
  (...folders: string[]) =>
  (file: string): boolean =>
    folders.some((folder) => file.startsWith(`${folder}/`));

/**
 * Modules of `src/` outside `src/emulator/` the emulator may import: the codecs it shares with the client
 * (the data-channel message, payload and constant modules, the smux frame codec, the neutral write
 * coalescer) and the logging and error modules. Nothing else: the emulator must not reuse client logic.
 */
export const EMULATOR_MAY_IMPORT = new Set([
  'src/datachannel/message.ts',
  'src/datachannel/payloads.ts',
  'src/datachannel/constants.ts',
  'src/transport/write-coalescer.ts',
  'src/mux/frame.ts',
  'src/log.ts',
  'src/errors.ts',
]);

/** The rules of docs/architecture.md, "Who imports whom". */
export const LAYER_RULES: readonly ImportRule[] = [
  {
    name: 'the data-channel layer knows no forwards, no mux, no SSM API, no SOCKS and no sockets',
    from: under('src/datachannel'),
    forbids: (edge) =>
      under('src/forward', 'src/mux', 'src/ssm', 'src/socks')(edge.to) || edge.to === 'node:net',
  },
  {
    name: 'smux knows no data channel, no forwards and no SSM API',
    from: under('src/mux'),
    forbids: (edge) => under('src/datachannel', 'src/forward', 'src/ssm')(edge.to),
  },
  {
    name: 'product code never imports the emulator (only the demo harness in src/harness/ may)',
    from: (file) => !under('src/emulator', 'src/harness')(file),
    forbids: (edge) => under('src/emulator')(edge.to),
  },
  {
    name: 'the emulator shares only the codecs, log.ts and errors.ts with the client',
    from: under('src/emulator'),
    forbids: (edge) => {
      if (!edge.to.startsWith('src/') || under('src/emulator')(edge.to)) return false;
      return !EMULATOR_MAY_IMPORT.has(edge.to);
    },
  },
];
