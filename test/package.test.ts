/**
 * Packaging (issue 11 item 12): the LICENSE package.json declares, `bufferutil` optional so an install
 * without a compiler or install scripts works, a tarball with what the README's install uses, and a
 * README that installs from a clone or tarball rather than from a registry name a stranger could own.
 * `.ci/run` performs the real `npm pack` + global install; this checks the pieces quickly.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('../..', import.meta.url));
const read = (name: string): string => readFileSync(join(root, name), 'utf8');
const pkg = JSON.parse(read('package.json')) as {
  license: string;
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  bin: Record<string, string>;
};

test('LICENSE is the Apache-2.0 text package.json declares', (t) => {
  t.is(pkg.license, 'Apache-2.0');
  const text = read('LICENSE');
  t.regex(text, /^\s*Apache License\s+Version 2\.0, January 2004/);
  t.regex(text, /TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION/);
  t.regex(text, /9\. Accepting Warranty or Additional Liability\./);
  t.regex(text, /END OF TERMS AND CONDITIONS/);
});

test('bufferutil is optional (ws falls back to JavaScript masking without it)', (t) => {
  t.is(pkg.dependencies['bufferutil'], undefined);
  t.truthy(pkg.optionalDependencies?.['bufferutil']);
  const lock = JSON.parse(read('package-lock.json')) as {
    packages: Record<string, { optional?: boolean; optionalDependencies?: Record<string, string> }>;
  };
  t.truthy(lock.packages['']?.optionalDependencies?.['bufferutil'], 'the lockfile was regenerated');
  t.true(lock.packages['node_modules/bufferutil']?.optional);
});

test('the packed tarball holds the binary, LICENSE, the example config and the units, not the tests', (t) => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const [info] = JSON.parse(out) as { files: { path: string }[] }[];
  const files = new Set((info?.files ?? []).map((f) => f.path));
  for (const name of [
    'LICENSE',
    'README.md',
    'package.json',
    'config.example.yaml',
    'systemd/pf-daemon.service',
    'systemd/pf-daemon@.service',
    pkg.bin['pf-daemon'] ?? '',
  ]) {
    t.true(files.has(name), name);
  }
  t.false(
    [...files].some((f) => f.startsWith('dist/test/')),
    'tests are not packed',
  );
});

test('the README installs from a clone or a packed tarball, never from a registry name', (t) => {
  const readme = read('README.md');
  t.notRegex(readme, /npm install -g (--prefix \S+ )?pf-daemon\b/);
  t.regex(readme, /npm ci && npm pack/);
  t.regex(readme, /npm install -g --prefix ~\/\.local \.\/pf-daemon-0\.1\.0\.tgz/);
});
