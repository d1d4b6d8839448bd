/**
 * The import rules of docs/architecture.md, checked on the source: no cycles, the data-channel layer knows no
 * mux, forwards, SSM API or sockets, smux knows no data channel, nothing but the demo harness imports the
 * emulator, and the emulator imports only the codecs (plus log and errors) from the client.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { LAYER_RULES, findCycles, importGraph, violations } from './helpers/imports.js';
import type { ImportGraph } from './helpers/imports.js';

// dist/test/architecture.test.js → the repository's src/ (the TypeScript source, not the build output).
const SRC = fileURLToPath(new URL('../../src', import.meta.url));
const graph: ImportGraph = importGraph(SRC);

test('the graph covers the source tree', (t) => {
  t.true(graph.files.includes('src/cli.ts'));
  t.true(graph.files.includes('src/datachannel/handshake.ts'));
  t.true(graph.files.includes('src/emulator/agent.ts'));
  t.true(graph.edges.length > 100, `${graph.edges.length} import statements`);
  // The parser sees every form: a type-only import, an export-from and a literal dynamic import.
  t.true(graph.edges.some((e) => e.typeOnly));
  t.true(graph.edges.some((e) => e.dynamic && e.to === 'src/emulator/agent.ts'));
});

test('no import cycles between files (type-only imports included)', (t) => {
  const cycles = findCycles(graph);
  t.deepEqual(
    cycles.map((cycle) => cycle.join(' → ')),
    [],
  );
});

for (const rule of LAYER_RULES) {
  test(`rule: ${rule.name}`, (t) => {
    t.deepEqual(violations(graph, [rule]), []);
  });
}

test('the only import() the graph cannot follow is the daemon handing `emulator …` to the emulator', (t) => {
  // A computed import would be a way around every rule above; each one must be known and argued for.
  t.deepEqual(
    graph.opaque.map((o) => o.from),
    ['src/cli.ts'],
  );
});

test('the rules catch what they forbid (the checker itself)', (t) => {
  const edge = (from: string, to: string, names: string[] = ['x']) => ({
    from,
    to,
    specifier: to,
    typeOnly: false,
    dynamic: false,
    names,
    line: 1,
  });
  const bad: ImportGraph = {
    files: ['src/a.ts', 'src/b.ts'],
    edges: [
      edge('src/datachannel/reliable.ts', 'src/mux/session.ts'),
      edge('src/datachannel/connection.ts', 'node:net'),
      edge('src/mux/session.ts', 'src/datachannel/constants.ts'),
      edge('src/cli.ts', 'src/emulator/cli.ts'),
      edge('src/emulator/agent.ts', 'src/datachannel/version.ts'),
      edge('src/emulator/agent.ts', 'src/datachannel/connection.ts', ['DataChannelConnection']),
      edge('src/a.ts', 'src/b.ts'),
      edge('src/b.ts', 'src/a.ts'),
    ],
    opaque: [],
  };
  t.is(violations(bad, LAYER_RULES).length, 6);
  t.deepEqual(findCycles(bad), [['src/a.ts', 'src/b.ts', 'src/a.ts']]);
  const fine: ImportGraph = {
    files: [],
    edges: [
      edge('src/emulator/session.ts', 'src/transport/write-coalescer.ts', [
        'WriteCoalescer',
        'underlyingSocketOf',
      ]),
      edge('src/emulator/smux-server.ts', 'src/mux/frame.ts'),
      edge('src/harness/demo.ts', 'src/emulator/index.ts'),
      edge('src/forward/session.ts', 'src/mux/session.ts'),
    ],
    opaque: [],
  };
  t.deepEqual(violations(fine, LAYER_RULES), []);
});
