import test from 'ava';
import { isPfError } from '../../src/errors.js';
import { overlayFlags, parseForwardSpec, parseParameterFlags } from '../../src/config/flags.js';
import { parseConfigText } from '../../src/config/load.js';
import { verifyConfig } from '../../src/config/verify.js';

const T = 'i-0abc12345678';

const valid: [string, Record<string, unknown>][] = [
  [`15432:5432@${T}`, { localPort: 15432, remotePort: 5432, target: T }],
  [`15432:db.internal:5432@${T}`, { localPort: 15432, host: 'db.internal', remotePort: 5432, target: T }],
  [
    `0.0.0.0:15432:10.0.0.5:5432@${T}`,
    { bind: '0.0.0.0', localPort: 15432, host: '10.0.0.5', remotePort: 5432, target: T },
  ],
  [
    `[::1]:15432:[fd00::5]:5432@${T}`,
    { bind: '::1', localPort: 15432, host: 'fd00::5', remotePort: 5432, target: T },
  ],
  ['8080:80', { localPort: 8080, remotePort: 80 }],
  [
    '0:localhost:22@mi-0123456789abcdef0',
    { localPort: 0, host: 'localhost', remotePort: 22, target: 'mi-0123456789abcdef0' },
  ],
];
for (const [spec, expected] of valid) {
  test(`--forward ${spec}`, (t) => {
    t.deepEqual(parseForwardSpec(spec), expected);
  });
}

const invalid = [
  '5432',
  `a:b:c:d:e@${T}`,
  `abc:5432@${T}`,
  `15432:db:port@${T}`,
  '15432:5432@',
  `:5432@${T}`,
  `[::1:15432:db:5432@${T}`,
  '',
];
for (const spec of invalid) {
  test(`--forward ${JSON.stringify(spec)} is rejected`, (t) => {
    const err = t.throws(() => parseForwardSpec(spec));
    t.true(isPfError(err, 'PF_ERR_CONFIG'));
    t.true(err?.message.startsWith(`--forward ${JSON.stringify(spec)}: `));
    t.regex(
      err?.message ?? '',
      /expected \[bind:\]localPort:host:remotePort\[@target\] or localPort:remotePort\[@target\], e\.g\. /,
    );
  });
}

test('flags set defaults and --port replaces the file forwards', (t) => {
  const file = parseConfigText(
    `defaults:\n  target: ${T}\n  region: eu-west-1\nforwards:\n  - name: web\n    remotePort: 80\n`,
    'c.yaml',
  );
  const { raw, source } = overlayFlags(file, {
    port: 5432,
    localPort: 15432,
    profile: 'dev',
    logLevel: 'debug',
  });
  const config = verifyConfig(raw, source);
  t.is(config.forwards.length, 1);
  t.like(config.forwards[0], {
    target: T,
    region: 'eu-west-1',
    profile: 'dev',
    remotePort: 5432,
    localPort: 15432,
  });
  t.is(config.log.level, 'debug');
});

test('without forward flags the file forwards stay, flags still override defaults', (t) => {
  const file = parseConfigText(`defaults:\n  target: ${T}\nforwards:\n  - remotePort: 80\n`, 'c.yaml');
  const config = verifyConfig(
    ...(Object.values(overlayFlags(file, { region: 'us-west-2', eager: true })) as [unknown]),
  );
  t.like(config.forwards[0], { remotePort: 80, region: 'us-west-2', eager: true });
});

test('problems in flag values name the flag, file problems keep their position', (t) => {
  const file = parseConfigText(
    `defaults:\n  target: ${T}\nlog:\n  format: fancy\nforwards:\n  - remotePort: 80\n`,
    'c.yaml',
  );
  const { raw, source } = overlayFlags(file, { forward: ['1:70000'], region: 'Not A Region' });
  const err = t.throws(() => verifyConfig(raw, source));
  t.regex(err?.message ?? '', /defaults\.region: .* \(got "Not A Region"\) from --region/);
  t.regex(
    err?.message ?? '',
    /forwards\[0\]\.remotePort: must be an integer 1-65535 \(got 70000\) from --forward 1:70000/,
  );
  t.regex(err?.message ?? '', /log\.format: must be one of .* at c\.yaml:4:11/);
});

test('flags alone, without a file', (t) => {
  const { raw, source } = overlayFlags(undefined, { target: T, port: 22, host: 'bastion' });
  const config = verifyConfig(raw, source);
  t.like(config.forwards[0], { target: T, host: 'bastion', remotePort: 22, localPort: 22 });
});

test('--document-name, --parameter, --pick-any and --ecs-endpoint set defaults for every forward', (t) => {
  const { raw, source } = overlayFlags(undefined, {
    target: 'web-1',
    port: 5432,
    documentName: 'Acme-PF',
    parameter: ['team=payments', 'ticket=OPS-1=2'],
    pickAny: true,
    ecsEndpoint: 'http://127.0.0.1:4566',
  });
  const config = verifyConfig(raw, source);
  const [f] = config.forwards;
  t.is(f?.target, 'web-1');
  t.is(f?.documentName, 'Acme-PF');
  t.deepEqual(f?.parameters, { team: 'payments', ticket: 'OPS-1=2' });
  t.is(f?.pick, 'any');
  t.is(f?.ecsEndpoint, 'http://127.0.0.1:4566');
  const off = overlayFlags(undefined, { target: 'web-1', port: 1, pickAny: false });
  t.is(verifyConfig(off.raw, off.source).forwards[0]?.pick, 'one');
});

test('bad --parameter, --document-name and --pick-any combinations name the flag', (t) => {
  for (const [entries, pattern] of [
    [['team'], /--parameter "team": expected key=value, e\.g\. --parameter team=payments/],
    [['=x'], /--parameter "=x": expected key=value/],
    [['a=1', 'a=2'], /--parameter a given twice/],
  ] as const) {
    const err = t.throws(() => parseParameterFlags(entries));
    t.true(isPfError(err, 'PF_ERR_CONFIG'));
    t.regex(err?.message ?? '', pattern);
  }
  const noDoc = overlayFlags(undefined, { target: 'i-0123456789abcdef0', port: 1, parameter: ['team=x'] });
  const err = t.throws(() => verifyConfig(noDoc.raw, noDoc.source));
  t.regex(
    err?.message ?? '',
    /defaults\.parameters: parameters need a custom documentName.* from --parameter/,
  );
  const badDoc = overlayFlags(undefined, { target: 'i-0123456789abcdef0', port: 1, documentName: 'x' });
  t.regex(t.throws(() => verifyConfig(badDoc.raw, badDoc.source))?.message ?? '', /from --document-name/);
  const badTarget = overlayFlags(undefined, { target: 'tag:Role', port: 1 });
  t.regex(
    t.throws(() => verifyConfig(badTarget.raw, badTarget.source))?.message ?? '',
    /defaults\.target: tag targets are tag:<Key>=<Value>.* from --target/,
  );
});

test('-L takes every target form after the first @, including tags holding @', (t) => {
  t.deepEqual(parseForwardSpec('15432:db:5432@tag:Owner=ops@example.com'), {
    localPort: 15432,
    host: 'db',
    remotePort: 5432,
    target: 'tag:Owner=ops@example.com',
  });
  t.deepEqual(parseForwardSpec('8080:80@web-1'), { localPort: 8080, remotePort: 80, target: 'web-1' });
  t.deepEqual(parseForwardSpec('8080:80@ecs:prod/api/app'), {
    localPort: 8080,
    remotePort: 80,
    target: 'ecs:prod/api/app',
  });
});
