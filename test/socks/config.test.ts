import test from 'ava';
import { isPfError } from '../../src/errors.js';
import { overlayFlags, parseDynamicSpec } from '../../src/config/flags.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigProblemsError, verifyConfig } from '../../src/config/verify.js';

const T = 'i-0abc12345678';

test('-D specs: port, bind:port, [v6]:port, with and without @target', (t) => {
  t.deepEqual(parseDynamicSpec(`1080@${T}`), { localPort: 1080, target: T });
  t.deepEqual(parseDynamicSpec('1080'), { localPort: 1080 });
  t.deepEqual(parseDynamicSpec(`0.0.0.0:1080@${T}`), { bind: '0.0.0.0', localPort: 1080, target: T });
  t.deepEqual(parseDynamicSpec(`[::1]:1080@name:bastion`), {
    bind: '::1',
    localPort: 1080,
    target: 'name:bastion',
  });
  for (const bad of ['', '@i-1', '10x80@i-1', '1:2:3@i-1', '1080@', '[::1:1080']) {
    const err = t.throws(() => parseDynamicSpec(bad));
    t.true(isPfError(err, 'PF_ERR_CONFIG'), bad);
    t.regex(err?.message ?? '', /expected \[bind:\]localPort\[@target\], e\.g\. -D 1080@/);
  }
});

test('-D alone is a complete configuration: loopback, no auth, allow-all, defaults applied', (t) => {
  const { raw, source } = overlayFlags(undefined, { dynamic: [`1080@${T}`, '1081'], target: T });
  const config = verifyConfig(raw, source);
  t.is(config.forwards.length, 0);
  t.is(config.socks?.length, 2);
  const [first] = config.socks ?? [];
  t.like(first, { name: `socks:1080@${T}`, bind: '127.0.0.1', localPort: 1080, maxSessions: 16, target: T });
  t.deepEqual(first?.allow, ['*']);
  t.is(first?.username, undefined);
  t.is(config.socks?.[1]?.target, T);
});

/** Problems of a YAML text, one string each. */
function problems(yaml: string): string[] {
  const file = parseConfigText(yaml, 'config.yaml');
  try {
    verifyConfig(file.raw, file.source);
  } catch (err) {
    if (err instanceof ConfigProblemsError) return [...err.problems];
    throw err;
  }
  return [];
}

test('a non-loopback bind needs allow and username/password: one clear line each, with the position', (t) => {
  const found = problems(`socks:\n  - target: ${T}\n    bind: 0.0.0.0\n`);
  t.is(found.length, 2);
  t.regex(
    found[0] ?? '',
    /^socks\[0\]\.allow: required when bind \(0\.0\.0\.0\) is not loopback: .*allow: \[/,
  );
  t.regex(
    found[1] ?? '',
    /^socks\[0\]\.username: required when bind \(0\.0\.0\.0\) is not loopback: set username and password, or bind 127\.0\.0\.1/,
  );
  t.regex(found[0] ?? '', /config\.yaml:2/);
  t.deepEqual(
    problems(
      `socks:\n  - target: ${T}\n    bind: 0.0.0.0\n    allow: ["10.0.0.0/8:5432"]\n    username: u\n    password: p\n`,
    ),
    [],
  );
});

test('-D on a non-loopback bind is refused the same way, naming the flag', (t) => {
  const { raw, source } = overlayFlags(undefined, { dynamic: [`0.0.0.0:1080@${T}`] });
  const err = t.throws(() => verifyConfig(raw, source), { instanceOf: ConfigProblemsError });
  t.regex(err?.message ?? '', /socks\[0\]\.allow: required .* from -D 0\.0\.0\.0:1080@/);
});

test('socks field checks: allow rules, maxSessions, credentials, names and ports shared with forwards', (t) => {
  const found = problems(
    [
      'forwards:',
      `  - { name: db, target: ${T}, remotePort: 5432, localPort: 1080 }`,
      'socks:',
      `  - { target: ${T}, allow: ["10.0.0.0/40"] }`,
      `  - { target: ${T}, maxSessions: 0 }`,
      `  - { target: ${T}, username: alice }`,
      `  - { target: ${T}, name: db, localPort: 1090 }`,
      `  - { target: ${T}, localPort: 1080 }`,
      `  - { target: ${T}, allow: [] }`,
      `  - { target: ${T}, localPort: 1091, socksPort: 1 }`,
    ].join('\n'),
  );
  t.is(found.length, 7, found.join('\n'));
  t.regex(found[0] ?? '', /socks\[0\]\.allow: rule "10\.0\.0\.0\/40": prefix \/40 is not 0-32/);
  t.regex(found[1] ?? '', /socks\[1\]\.maxSessions: must be an integer 1-256/);
  t.regex(found[2] ?? '', /socks\[2\]\.password: username and password go together/);
  t.true(found.some((p) => /socks\[6\]\.socksPort: unknown key/.test(p)));
  t.true(found.some((p) => /socks\[3\]\.name: name "db" is already used by forwards\[0\]/.test(p)));
  t.true(
    found.some((p) =>
      /socks\[4\]\.localPort: 127\.0\.0\.1:1080 is already used by forwards\[0\] \("db"\)/.test(p),
    ),
  );
  t.true(found.some((p) => /socks\[5\]\.allow: must be a non-empty list/.test(p)));
});

test('socks entries inherit the AWS context from defaults, and a file with only socks: is valid', (t) => {
  const file = parseConfigText(
    `defaults:\n  target: ${T}\n  region: eu-west-1\n  idleStopMs: 5000\nsocks:\n  - localPort: 1090\n`,
    'config.yaml',
  );
  const config = verifyConfig(file.raw, file.source);
  t.like(config.socks?.[0], { target: T, region: 'eu-west-1', idleStopMs: 5000, localPort: 1090 });
  t.true(Object.isFrozen(config.socks?.[0]));
});
