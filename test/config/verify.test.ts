import test from 'ava';
import { isPfError } from '../../src/errors.js';
import { defaultTuning, documentFor, parametersFor } from '../../src/config/types.js';
import { ConfigProblemsError, didYouMean, formatPath, verifyConfig } from '../../src/config/verify.js';

const T = 'i-0abc12345678';

function problemsOf(raw: unknown): readonly string[] {
  try {
    verifyConfig(raw);
  } catch (err) {
    if (err instanceof ConfigProblemsError) return err.problems;
    throw err;
  }
  return [];
}

test('a minimal forward resolves with every default applied', (t) => {
  const config = verifyConfig({ forwards: [{ target: T, remotePort: 5432 }] });
  t.deepEqual(config.forwards, [
    {
      name: `5432:localhost:5432@${T}`,
      target: T,
      remotePort: 5432,
      localPort: 5432,
      bind: '127.0.0.1',
      eager: false,
      idleStopMs: 600000,
      sessions: 1,
      keepAlive: false,
      halfCloseLingerMs: 2000,
      allowInsecureEndpoint: false,
    },
  ]);
  t.deepEqual(config.log, { level: 'info', format: 'auto' });
  t.deepEqual(config.tuning, { ...defaultTuning });
});

test('the result is deep-frozen', (t) => {
  const config = verifyConfig({ forwards: [{ target: T, remotePort: 5432 }] });
  t.true(Object.isFrozen(config));
  t.true(Object.isFrozen(config.forwards));
  t.true(Object.isFrozen(config.forwards[0]));
  t.true(Object.isFrozen(config.tuning));
  t.true(Object.isFrozen(config.log));
});

test('defaults apply to forwards lacking them, forward values win', (t) => {
  const config = verifyConfig({
    defaults: {
      target: T,
      region: 'eu-west-1',
      profile: 'dev',
      bind: '::1',
      reason: 'ops',
      idleStopMs: 0,
      keepAlive: true,
    },
    forwards: [
      { name: 'db', remotePort: 5432, host: 'db.internal', localPort: 15432 },
      { remotePort: 80, target: 'mi-0123456789abcdef0', region: 'us-east-1', eager: true, bind: '127.0.0.1' },
    ],
  });
  const [db, web] = config.forwards;
  t.like(db, {
    name: 'db',
    target: T,
    host: 'db.internal',
    region: 'eu-west-1',
    profile: 'dev',
    bind: '::1',
    reason: 'ops',
    idleStopMs: 0,
    keepAlive: true,
  });
  t.like(web, {
    target: 'mi-0123456789abcdef0',
    region: 'us-east-1',
    profile: 'dev',
    eager: true,
    bind: '127.0.0.1',
    localPort: 80,
  });
  t.is(web?.host, undefined);
});

test('host localhost uses the local document (no host field)', (t) => {
  const config = verifyConfig({ forwards: [{ target: T, remotePort: 22, host: 'localhost' }] });
  t.is(config.forwards[0]?.host, undefined);
});

test('every problem is listed with its path in one PF_ERR_CONFIG error', (t) => {
  const err = t.throws(() =>
    verifyConfig({
      log: { level: 'loud', format: 'json' },
      tuning: { sendWindowMessages: 0, connectTimeoutMs: -1, bogus: 1 },
      forwards: [
        { target: 'i-xyz', remotePort: 'abc' },
        { target: T, remotePort: 70000, localPort: -1, bind: 'everywhere', reason: '', endpoint: 'ftp://x' },
      ],
    }),
  );
  t.true(isPfError(err, 'PF_ERR_CONFIG'));
  const problems = (err as ConfigProblemsError).problems;
  t.true(
    problems.includes('log.level: must be one of error, warn, info, debug (got "loud")'),
    problems.join('\n'),
  );
  t.true(problems.includes('tuning.sendWindowMessages: must be an integer 1-10000 (got 0)'));
  t.true(problems.includes('tuning.connectTimeoutMs: must be an integer 1-2147483647 ms (got -1)'));
  t.true(problems.some((p) => p.startsWith('tuning.bogus: unknown key')));
  t.true(problems.includes('forwards[0].remotePort: must be an integer 1-65535 (got "abc")'));
  t.true(
    problems.some(
      (p) =>
        p.startsWith('forwards[0].target: "i-xyz" looks like a managed node id') &&
        p.endsWith('(got "i-xyz")'),
    ),
  );
  t.true(problems.includes('forwards[1].remotePort: must be an integer 1-65535 (got 70000)'));
  t.true(problems.some((p) => p.startsWith('forwards[1].localPort: must be an integer 0-65535')));
  t.true(problems.some((p) => p.startsWith('forwards[1].bind: must be an IP address')));
  t.true(problems.some((p) => p.startsWith('forwards[1].reason: must be a string of 1-256 characters')));
  t.true(problems.some((p) => p.startsWith('forwards[1].endpoint: must be an http(s) URL')));
  t.is(problems.length, 11);
  t.regex((err as Error).message, /^invalid configuration \(11 problems\): /);
  t.false((err as Error).message.includes('\n'));
});

test('unknown keys get a did-you-mean', (t) => {
  const problems = problemsOf({ forwards: [{ target: T, port: 5432, localport: 1 }], logs: {} });
  t.true(problems.includes('forwards[0].port: unknown key; did you mean "remotePort"?'), problems.join('\n'));
  t.true(problems.includes('forwards[0].localport: unknown key; did you mean "localPort"?'));
  t.true(problems.includes('logs: unknown key; did you mean "log"?'));
  t.true(problems.some((p) => p.startsWith('forwards[0].remotePort: required')));
});

test('a missing target names every way to set it', (t) => {
  const problems = problemsOf({ forwards: [{ remotePort: 5432 }] });
  t.is(problems.length, 1);
  t.regex(problems[0] ?? '', /^forwards\[0\]\.target: required: .*defaults\.target.*--target.*@i-/);
});

test('no forwards at all is a problem', (t) => {
  t.regex(problemsOf({})[0] ?? '', /^forwards: no forwards configured/);
  t.regex(problemsOf(null)[0] ?? '', /^forwards: no forwards configured/);
  t.regex(problemsOf({ forwards: {} })[0] ?? '', /^forwards: must be a list/);
  t.regex(problemsOf('text')[0] ?? '', /^\(top level\): must be a mapping/);
});

test('names must be unique, and duplicate unnamed forwards are caught', (t) => {
  const named = problemsOf({
    defaults: { target: T },
    forwards: [
      { name: 'db', remotePort: 1 },
      { name: 'db', remotePort: 2 },
    ],
  });
  t.deepEqual(named, ['forwards[1].name: name "db" is already used by forwards[0]; names must be unique']);
  const unnamed = problemsOf({ defaults: { target: T }, forwards: [{ remotePort: 1 }, { remotePort: 1 }] });
  t.is(unnamed.length, 1);
  t.regex(unnamed[0] ?? '', /^forwards\[1\]\.remotePort: same forward as forwards\[0\]/);
});

test('bind+localPort must be unique, except port 0; wildcards collide', (t) => {
  const base = { defaults: { target: T } };
  t.deepEqual(
    problemsOf({
      ...base,
      forwards: [
        { name: 'a', remotePort: 1, localPort: 9000 },
        { name: 'b', remotePort: 2, localPort: 9000 },
      ],
    }),
    [
      'forwards[1].localPort: 127.0.0.1:9000 is already used by forwards[0] ("a" on 127.0.0.1); pick another localPort or bind',
    ],
  );
  t.deepEqual(
    problemsOf({
      ...base,
      forwards: [
        { name: 'a', remotePort: 1, localPort: 0 },
        { name: 'b', remotePort: 2, localPort: 0 },
      ],
    }),
    [],
  );
  t.deepEqual(
    problemsOf({
      ...base,
      forwards: [
        { name: 'a', remotePort: 1, localPort: 9000 },
        { name: 'b', remotePort: 2, localPort: 9000, bind: '127.0.0.2' },
      ],
    }),
    [],
  );
  t.is(
    problemsOf({
      ...base,
      forwards: [
        { name: 'a', remotePort: 1, localPort: 9000, bind: '0.0.0.0' },
        { name: 'b', remotePort: 2, localPort: 9000 },
      ],
    }).length,
    1,
  );
  t.is(
    problemsOf({
      ...base,
      forwards: [
        { name: 'a', remotePort: 1, localPort: 9000, bind: '::' },
        { name: 'b', remotePort: 2, localPort: 9000, bind: '::1' },
      ],
    }).length,
    1,
  );
});

test('target pattern: i- and mi- with 8-17 hex digits', (t) => {
  for (const ok of ['i-0abc1234', 'i-0123456789abcdef0', 'mi-0123456789abcdef0']) {
    t.deepEqual(problemsOf({ forwards: [{ target: ok, remotePort: 1 }] }), [], ok);
  }
  // A bare word that is not an id is a Name tag (`db`, `x-0abc12345`); an almost-id is a typo.
  for (const bad of ['i-0ABC12345', 'i-1234567', 'i-0123456789abcdef01', 5]) {
    t.is(problemsOf({ forwards: [{ target: bad, remotePort: 1 }] }).length, 1, String(bad));
  }
});

test('target forms: names, tags and ECS targets validate their syntax, each with a reason', (t) => {
  const task = '0123456789abcdef0123456789abcdef';
  for (const ok of [
    'db',
    'web-1',
    'name:web server',
    'tag:Role=db',
    'ecs:prod/api',
    'ecs:prod/api/app',
    `ecs:prod/${task}`,
    `ecs:prod_${task}_${task}-123`,
  ]) {
    t.deepEqual(problemsOf({ forwards: [{ target: ok, remotePort: 1 }] }), [], ok);
  }
  const cases: [string, RegExp][] = [
    ['i-123', /forwards\[0\]\.target: "i-123" looks like a managed node id/],
    ['tag:Role', /forwards\[0\]\.target: tag targets are tag:<Key>=<Value>, e\.g\. tag:Role=db/],
    ['ecs:prod', /forwards\[0\]\.target: ecs targets are ecs:<cluster>\/<service>/],
    ['web 1', /forwards\[0\]\.target: "web 1" is not a target; use one of i-0123456789abcdef0/],
  ];
  for (const [target, pattern] of cases) {
    const problems = problemsOf({ forwards: [{ target, remotePort: 1 }] });
    t.is(problems.length, 1, target);
    t.regex(problems[0] ?? '', pattern);
  }
});

test('pick, ecsEndpoint, documentName and parameters: valid values resolve, defaults apply them', (t) => {
  const config = verifyConfig({
    defaults: {
      pick: 'any',
      ecsEndpoint: 'http://127.0.0.1:4566',
      documentName: 'Acme-PF',
      parameters: { team: 'ops' },
    },
    forwards: [
      { target: 'web-1', remotePort: 80 },
      {
        target: T,
        remotePort: 81,
        pick: 'one',
        documentName: 'Acme-PF2',
        parameters: { team: 'db', 'cost.centre': '42' },
      },
    ],
  });
  const [first, second] = config.forwards;
  t.is(first?.pick, 'any');
  t.is(first?.ecsEndpoint, 'http://127.0.0.1:4566');
  t.is(first?.documentName, 'Acme-PF');
  t.deepEqual(first?.parameters, { team: 'ops' });
  t.is(second?.pick, 'one');
  t.is(second?.documentName, 'Acme-PF2');
  t.deepEqual(second?.parameters, { team: 'db', 'cost.centre': '42' });
  t.true(Object.isFrozen(second?.parameters));
  const plain = verifyConfig({ forwards: [{ target: T, remotePort: 80 }] }).forwards[0];
  t.false(plain !== undefined && ('pick' in plain || 'documentName' in plain || 'parameters' in plain));
});

test('pick, ecsEndpoint, documentName and parameters: every bad value is a problem naming the fix', (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ pick: 'first' }, /forwards\[0\]\.pick: must be one \(several matches are an error\) or any/],
    [{ ecsEndpoint: 'ecs.local' }, /forwards\[0\]\.ecsEndpoint: must be an http\(s\) URL/],
    [{ documentName: 'AB' }, /forwards\[0\]\.documentName: must be an SSM document name/],
    [{ documentName: 'Acme PF' }, /documentName: must be an SSM document name/],
    [
      { documentName: 'Acme-PF', parameters: ['team=ops'] },
      /parameters: must be a mapping of parameter name: string value/,
    ],
    [
      { documentName: 'Acme-PF', parameters: { team: 42 } },
      /parameters: parameter team must be a string \(quote it in YAML, e\.g\. team: "42"\)/,
    ],
    [{ documentName: 'Acme-PF', parameters: { 'bad name': 'x' } }, /parameter name "bad name" is not valid/],
    [
      { documentName: 'Acme-PF', parameters: { portNumber: '1' } },
      /portNumber is set from the forward's remotePort; set remotePort instead/,
    ],
    [{ documentName: 'Acme-PF', parameters: { host: 'x' } }, /host is set from the forward's host/],
    [{ documentName: 'Acme-PF', parameters: { team: 'x'.repeat(4097) } }, /longer than 4096 characters/],
    [
      { parameters: { team: 'ops' } },
      /forwards\[0\]\.parameters: parameters need a custom documentName: the AWS port-forwarding documents/,
    ],
    [
      { documentName: 'AWS-StartPortForwardingSession', parameters: { team: 'ops' } },
      /parameters need a custom documentName: AWS-StartPortForwardingSession take only/,
    ],
    [
      { documentName: 'AWS-StartPortForwardingSession', host: 'db.internal' },
      /forwards\[0\]\.documentName: AWS-StartPortForwardingSession reaches only the instance's own ports/,
    ],
    [
      { documentName: 'AWS-StartPortForwardingSessionToRemoteHost' },
      /forwards\[0\]\.documentName: AWS-StartPortForwardingSessionToRemoteHost needs host/,
    ],
  ];
  for (const [fields, pattern] of cases) {
    const problems = problemsOf({ forwards: [{ target: T, remotePort: 1, ...fields }] });
    t.is(problems.length, 1, JSON.stringify(fields));
    t.regex(problems[0] ?? '', pattern, JSON.stringify(fields));
  }
  const unknown = problemsOf({ defaults: { document: 'x' }, forwards: [{ target: T, remotePort: 1 }] });
  t.regex(unknown[0] ?? '', /defaults\.document: unknown key; did you mean "documentName"\?/);
});

test('documentFor and parametersFor: loopback hosts use the local document with the same port', (t) => {
  for (const host of ['localhost', '127.0.0.1', '127.1', '::1', '::ffff:127.0.0.1']) {
    const f = verifyConfig({ forwards: [{ target: T, remotePort: 5432, host }] }).forwards[0];
    if (f === undefined) throw new Error('no forward');
    t.is(documentFor(f), 'AWS-StartPortForwardingSession', host);
    t.deepEqual(parametersFor(f, 15432), { portNumber: ['5432'], localPortNumber: ['15432'] }, host);
  }
  const remote = verifyConfig({ forwards: [{ target: T, remotePort: 5432, host: 'db.internal' }] })
    .forwards[0];
  if (remote === undefined) throw new Error('no forward');
  t.is(documentFor(remote), 'AWS-StartPortForwardingSessionToRemoteHost');
  t.deepEqual(parametersFor(remote, 1), {
    portNumber: ['5432'],
    localPortNumber: ['1'],
    host: ['db.internal'],
  });
  const custom = verifyConfig({
    forwards: [
      {
        target: T,
        remotePort: 5432,
        host: 'localhost',
        documentName: 'Acme-PF',
        parameters: { team: 'ops' },
      },
    ],
  }).forwards[0];
  if (custom === undefined) throw new Error('no forward');
  t.is(documentFor(custom), 'Acme-PF');
  t.deepEqual(
    parametersFor(custom, 1),
    { portNumber: ['5432'], localPortNumber: ['1'], host: ['localhost'], team: ['ops'] },
    'a custom document gets host as written',
  );
});

test('reason is 1-256 characters', (t) => {
  t.deepEqual(problemsOf({ forwards: [{ target: T, remotePort: 1, reason: 'x'.repeat(256) }] }), []);
  t.is(problemsOf({ forwards: [{ target: T, remotePort: 1, reason: 'x'.repeat(257) }] }).length, 1);
});

test('tuning cross-field rules', (t) => {
  const base = { forwards: [{ target: T, remotePort: 1 }] };
  t.deepEqual(problemsOf({ ...base, tuning: { pingIntervalMs: 60000 } }), [
    'tuning.pingIntervalMs: livenessTimeoutMs (60000) must be greater than pingIntervalMs (60000)',
  ]);
  t.deepEqual(problemsOf({ ...base, tuning: { sessionReceiveBufferBytes: 1048576 } }), [
    'tuning.sessionReceiveBufferBytes: sessionReceiveBufferBytes (1048576) must be at least streamReceiveBufferBytes (4194304)',
  ]);
  t.deepEqual(problemsOf({ ...base, tuning: { clientVersion: 'latest' } }).length, 1);
  t.deepEqual(problemsOf({ ...base, tuning: { sendWindowMessages: 10001 } }).length, 1);
  t.deepEqual(problemsOf({ ...base, tuning: { sendWindowMessages: 1.5 } }).length, 1);
  const tuned = verifyConfig({ ...base, tuning: { sendWindowMessages: 10000, drainGraceMs: 0 } });
  t.is(tuned.tuning.sendWindowMessages, 10000);
  t.is(tuned.tuning.drainGraceMs, 0);
});

test('a source locates each problem', (t) => {
  const err = t.throws(() =>
    verifyConfig(
      { forwards: [{ target: T, remotePort: 'x', bogus: 1 }] },
      { locate: (path, what) => `at ${path.join('/')}#${what}` },
    ),
  );
  const problems = (err as ConfigProblemsError).problems;
  t.true(
    problems.includes(
      'forwards[0].remotePort: must be an integer 1-65535 (got "x") at forwards/0/remotePort#value',
    ),
    problems.join('\n'),
  );
  t.true(problems.some((p) => p.endsWith('at forwards/0/bogus#key')));
});

test('formatPath and didYouMean', (t) => {
  t.is(formatPath(['forwards', 1, 'remotePort']), 'forwards[1].remotePort');
  t.is(formatPath([]), '(top level)');
  t.is(didYouMean('remote-port', ['remotePort', 'localPort']), 'remotePort');
  t.is(didYouMean('idleStop', ['idleStopMs', 'eager']), 'idleStopMs');
  t.is(didYouMean('completelydifferent', ['remotePort', 'localPort']), undefined);
});
