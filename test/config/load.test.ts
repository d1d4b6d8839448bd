import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPfError } from '../../src/errors.js';
import { loadConfigFile, parseConfigText, resolveConfigPath } from '../../src/config/load.js';
import { verifyConfig } from '../../src/config/verify.js';

const dir = mkdtempSync(join(tmpdir(), 'pf-config-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const BAD = `defaults:
  target: i-0abc12345678
forwards:
  - name: db
    remotePort: 5432
  - name: web
    remotePort: abc
    localprot: 8080
`;

test('problems name file:line:column', (t) => {
  const parsed = parseConfigText(BAD, 'config.yaml');
  const err = t.throws(() => verifyConfig(parsed.raw, parsed.source));
  t.true(isPfError(err, 'PF_ERR_CONFIG'));
  t.regex(
    err?.message ?? '',
    /forwards\[1\]\.remotePort: must be an integer 1-65535 \(got "abc"\) at config\.yaml:7:17/,
  );
  t.regex(
    err?.message ?? '',
    /forwards\[1\]\.localprot: unknown key; did you mean "localPort"\? at config\.yaml:8:5/,
  );
});

test('a missing field points at its forward', (t) => {
  const parsed = parseConfigText('forwards:\n  - name: db\n    remotePort: 1\n', 'c.yaml');
  const err = t.throws(() => verifyConfig(parsed.raw, parsed.source));
  t.regex(err?.message ?? '', /forwards\[0\]\.target: required: .* at c\.yaml:2:5$/);
});

test('YAML syntax errors are PF_ERR_CONFIG_FILE with line and column', (t) => {
  const err = t.throws(() => parseConfigText('forwards:\n  - remotePort: [1\n  x: y\n', 'bad.yaml'));
  t.true(isPfError(err, 'PF_ERR_CONFIG_FILE'));
  t.regex(err?.message ?? '', /^bad\.yaml:\d+:\d+: YAML syntax error: /);
  const dup = t.throws(() => parseConfigText('log:\n  level: info\n  level: debug\n', 'dup.yaml'));
  t.regex(dup?.message ?? '', /^dup\.yaml:3:3: YAML syntax error: Map keys must be unique/);
});

test('loadConfigFile returns the resolved config', async (t) => {
  const path = file(
    'good.yaml',
    'defaults:\n  target: i-0abc12345678\n  region: eu-west-1\nlog:\n  level: debug\n  format: json\nforwards:\n  - name: db\n    host: db.internal\n    remotePort: 5432\n    localPort: 15432\n',
  );
  const config = await loadConfigFile(path);
  t.like(config.forwards[0], {
    name: 'db',
    host: 'db.internal',
    remotePort: 5432,
    localPort: 15432,
    region: 'eu-west-1',
  });
  t.deepEqual(config.log, { level: 'debug', format: 'json' });
});

test('loadConfigFile: unreadable file is PF_ERR_CONFIG_FILE naming the fix', async (t) => {
  const err = await t.throwsAsync(loadConfigFile(join(dir, 'missing.yaml')));
  t.true(isPfError(err, 'PF_ERR_CONFIG_FILE'));
  t.regex(err?.message ?? '', /cannot read config file .*missing\.yaml: no such file/);
  const isDir = await t.throwsAsync(loadConfigFile(dir));
  t.regex(isDir?.message ?? '', /directory/);
});

test('loadConfigFile: an empty file says no forwards', async (t) => {
  const err = await t.throwsAsync(loadConfigFile(file('empty.yaml', '')));
  t.true(isPfError(err, 'PF_ERR_CONFIG'));
  t.regex(err?.message ?? '', /no forwards configured/);
});

test('the shipped config.example.yaml is valid', async (t) => {
  const config = await loadConfigFile(new URL('../../../config.example.yaml', import.meta.url).pathname);
  t.true(config.forwards.length >= 2);
});

test('resolveConfigPath: flag, then env, then XDG if it exists', (t) => {
  const never = (): boolean => false;
  const always = (): boolean => true;
  t.deepEqual(resolveConfigPath({ flag: 'a.yaml', env: 'b.yaml', exists: never }), {
    path: 'a.yaml',
    origin: 'flag',
  });
  t.deepEqual(resolveConfigPath({ env: 'b.yaml', exists: never }), { path: 'b.yaml', origin: 'env' });
  t.deepEqual(resolveConfigPath({ xdg: '/x', exists: always }), {
    path: '/x/pf-daemon/config.yaml',
    origin: 'xdg',
  });
  t.deepEqual(resolveConfigPath({ home: '/home/a', exists: always }), {
    path: '/home/a/.config/pf-daemon/config.yaml',
    origin: 'xdg',
  });
  t.deepEqual(
    resolveConfigPath({ xdg: 'relative', home: '/home/a', exists: always })?.path,
    '/home/a/.config/pf-daemon/config.yaml',
  );
  t.is(resolveConfigPath({ xdg: '/x', exists: never }), undefined);
  const xdg = join(dir, 'xdg');
  mkdirSync(join(xdg, 'pf-daemon'), { recursive: true });
  writeFileSync(join(xdg, 'pf-daemon', 'config.yaml'), '');
  t.is(resolveConfigPath({ xdg })?.path, join(xdg, 'pf-daemon', 'config.yaml'));
});
