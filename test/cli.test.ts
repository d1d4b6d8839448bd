/**
 * `main()` in-process: help, usage errors, --forward parsing, check-config, config discovery, the run
 * loop with a fake daemon and fake signals (no real forwards are started), and sd_notify.
 */
import test from 'ava';
import { EventEmitter } from 'node:events';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OPTIONS, main } from '../src/cli.js';
import type { DaemonControl, HandledSignal, MainIo } from '../src/cli.js';
import type { DaemonConfig } from '../src/config/types.js';
import { TunnelError } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import type { Logger } from '../src/log.js';
import { createSdNotify } from '../src/sd-notify.js';
import type { SdNotifier } from '../src/sd-notify.js';

const T = 'i-0abc12345678';
const dir = mkdtempSync(join(tmpdir(), 'pf-cli-'));
const home = join(dir, 'home');
mkdirSync(home);

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Resolves the next time `fn` is called. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

interface Harness {
  io: MainIo;
  out: () => string;
  err: () => string;
  signals: EventEmitter;
  started: Promise<DaemonConfig>;
  reloaded: DaemonConfig[];
  reloadedOnce: Promise<DaemonConfig>;
  logErrors: string[];
  loggedError: Promise<string>;
  notes: string[];
}

function harness(
  options: { env?: NodeJS.ProcessEnv; start?: () => Promise<void>; stop?: () => Promise<void> } = {},
): Harness {
  let out = '';
  let err = '';
  const signals = new EventEmitter();
  const started = deferred<DaemonConfig>();
  const reloadedOnce = deferred<DaemonConfig>();
  const loggedError = deferred<string>();
  const reloaded: DaemonConfig[] = [];
  const logErrors: string[] = [];
  const notes: string[] = [];
  let config: DaemonConfig | undefined;
  const logger: Logger = {
    ...silentLogger,
    error: (message) => {
      logErrors.push(message);
      loggedError.resolve(message);
    },
    child: () => logger,
  };
  const notifier: SdNotifier = {
    enabled: true,
    ready: async (status) => {
      notes.push(`READY ${status ?? ''}`.trim());
      if (config) started.resolve(config);
    },
    reloading: async () => void notes.push('RELOADING'),
    stopping: async () => void notes.push('STOPPING'),
    status: async (text) => void notes.push(`STATUS ${text}`),
  };
  const io: MainIo = {
    stdout: { write: (text: string) => (out += text) },
    stderr: { write: (text: string) => (err += text) },
    env: { HOME: home, ...options.env },
    signals: signals as unknown as MainIo['signals'],
    logger,
    notifier,
    createDaemon: (built): DaemonControl => ({
      start: async () => {
        await options.start?.();
        config = built;
      },
      stop: options.stop ?? (async () => undefined),
      reload: async (next) => {
        reloaded.push(next);
        reloadedOnce.resolve(next);
      },
    }),
  };
  return {
    io,
    out: () => out,
    err: () => err,
    signals,
    started: started.promise,
    reloaded,
    reloadedOnce: reloadedOnce.promise,
    logErrors,
    loggedError: loggedError.promise,
    notes,
  };
}

function emit(h: Harness, signal: HandledSignal): void {
  h.signals.emit(signal);
}

/** Exactly one line on stderr, in the house format. */
function oneErrorLine(
  t: { is: (a: unknown, b: unknown, m?: string) => void; regex: (s: string, r: RegExp) => void },
  text: string,
): void {
  t.is(text.split('\n').length, 2, text);
  t.regex(text, /^pf-daemon: error: \S.*\n$/);
}

test('--help lists every flag, the commands and examples', async (t) => {
  const h = harness();
  t.is(await main(['--help'], h.io), 0);
  for (const flag of Object.keys(OPTIONS)) t.true(h.out().includes(`--${flag}`), flag);
  for (const word of [
    'check-config',
    'emulator',
    'Examples:',
    '--help',
    '--version',
    'PF_DAEMON_CONFIG',
    'XDG_CONFIG_HOME',
  ]) {
    t.true(h.out().includes(word), word);
  }
  t.is(h.err(), '');
});

test('an unknown flag is one line, exit 2, with a did-you-mean', async (t) => {
  const h = harness();
  t.is(await main(['--prot', '5432'], h.io), 2);
  oneErrorLine(t, h.err());
  t.regex(h.err(), /unknown option --prot \(did you mean --port\?\)/);
});

test('flag combination and value errors are one line, exit 2', async (t) => {
  for (const [args, pattern] of [
    [['--local-port', '1'], /--local-port needs --port, e\.g\./],
    [['--host', 'db', '--target', T], /--host needs --port/],
    [['--port', 'abc', '--target', T], /--port must be a number/],
    [['--log-level', 'loud', '--target', T, '--port', '1'], /Invalid values/],
    [['--target'], /--target needs a value/],
    [
      ['--target', 'i-bad', '--port', '1'],
      /defaults\.target: "i-bad" looks like a managed node id .* from --target/,
    ],
    [['--forward', 'nonsense'], /--forward "nonsense": .*expected/],
  ] as const) {
    const h = harness();
    t.is(await main([...args], h.io), 2, args.join(' '));
    oneErrorLine(t, h.err());
    t.regex(h.err(), pattern);
  }
});

test('missing target is a clear error', async (t) => {
  const h = harness();
  t.is(await main(['--port', '5432'], h.io), 2);
  oneErrorLine(t, h.err());
  t.regex(
    h.err(),
    /forwards\[0\]\.target: required: .*--target i-0123456789abcdef0.* from --port \[PF_ERR_CONFIG\]/,
  );
});

test('--forward specs become forwards', async (t) => {
  const h = harness();
  const exit = main(
    [
      '-L',
      `15432:db.internal:5432@${T}`,
      '--forward',
      '[::1]:2222:localhost:22@mi-0123456789abcdef0',
      '--region',
      'eu-west-1',
    ],
    h.io,
  );
  const config = await h.started;
  t.deepEqual(
    config.forwards.map((f) => [f.bind, f.localPort, f.host, f.remotePort, f.target, f.region]),
    [
      ['127.0.0.1', 15432, 'db.internal', 5432, T, 'eu-west-1'],
      ['::1', 2222, undefined, 22, 'mi-0123456789abcdef0', 'eu-west-1'],
    ],
  );
  emit(h, 'SIGTERM');
  t.is(await exit, 0);
});

test('--port uses defaults.target from the config file, and SIGTERM stops with exit 0', async (t) => {
  const path = file(
    'defaults.yaml',
    `defaults:\n  target: ${T}\n  profile: dev\nforwards:\n  - remotePort: 80\n`,
  );
  const h = harness();
  const exit = main(['--config', path, '--port', '5432'], h.io);
  const config = await h.started;
  t.is(config.forwards.length, 1);
  t.like(config.forwards[0], { target: T, profile: 'dev', remotePort: 5432, localPort: 5432 });
  t.deepEqual(h.notes, [`READY forwarding 1 port(s): 5432:localhost:5432@${T}`]);
  emit(h, 'SIGTERM');
  t.is(await exit, 0);
  t.deepEqual(h.notes.slice(1), ['STOPPING']);
  t.is(h.err(), '');
});

test('config discovery: $PF_DAEMON_CONFIG, then $XDG_CONFIG_HOME/pf-daemon/config.yaml', async (t) => {
  const path = file('env.yaml', `forwards:\n  - target: ${T}\n    remotePort: 1234\n`);
  const h = harness({ env: { PF_DAEMON_CONFIG: path } });
  const exit = main([], h.io);
  t.is((await h.started).forwards[0]?.remotePort, 1234);
  emit(h, 'SIGINT');
  t.is(await exit, 0);

  const xdg = join(dir, 'xdg');
  mkdirSync(join(xdg, 'pf-daemon'), { recursive: true });
  writeFileSync(join(xdg, 'pf-daemon', 'config.yaml'), `forwards:\n  - target: ${T}\n    remotePort: 4321\n`);
  const h2 = harness({ env: { XDG_CONFIG_HOME: xdg } });
  const exit2 = main([], h2.io);
  t.is((await h2.started).forwards[0]?.remotePort, 4321);
  emit(h2, 'SIGTERM');
  t.is(await exit2, 0);
});

test('check-config on a good file prints a summary, exit 0', async (t) => {
  const path = file(
    'good.yaml',
    `defaults:\n  target: ${T}\nforwards:\n  - name: db\n    host: db.internal\n    remotePort: 5432\n    localPort: 15432\n`,
  );
  const h = harness();
  t.is(await main(['check-config', path], h.io), 0);
  t.regex(h.out(), /: OK, 1 forward\(s\)/);
  t.regex(h.out(), /db: 127\.0\.0\.1:15432 -> db\.internal:5432 via i-0abc12345678/);
  t.is(h.err(), '');
});

test('check-config on a bad file: one line with line and column, exit 2', async (t) => {
  const path = file('bad.yaml', `forwards:\n  - target: ${T}\n    remotePort: abc\n    bogus: 1\n`);
  const h = harness();
  t.is(await main(['check-config', path], h.io), 2);
  oneErrorLine(t, h.err());
  t.regex(h.err(), /forwards\[0\]\.remotePort: must be an integer 1-65535 \(got "abc"\) at .*bad\.yaml:3:17/);
  t.regex(h.err(), /forwards\[0\]\.bogus: unknown key .* at .*bad\.yaml:4:5/);
  const syntax = file('syntax.yaml', 'forwards: [\n');
  const h2 = harness();
  t.is(await main(['check-config', syntax], h2.io), 2);
  oneErrorLine(t, h2.err());
  t.regex(h2.err(), /syntax\.yaml:\d+:\d+: YAML syntax error.*\[PF_ERR_CONFIG_FILE\]/);
});

test('check-config without any file says how to give one', async (t) => {
  const h = harness();
  t.is(await main(['check-config'], h.io), 2);
  t.regex(h.err(), /no config file to check: pass one/);
});

test('SIGHUP reloads the file; a bad file is logged and the daemon keeps running', async (t) => {
  const path = file('reload.yaml', `forwards:\n  - target: ${T}\n    remotePort: 1\n`);
  const h = harness();
  const exit = main(['--config', path], h.io);
  await h.started;
  writeFileSync(
    path,
    `forwards:\n  - target: ${T}\n    remotePort: 2\n  - target: ${T}\n    remotePort: 3\n`,
  );
  emit(h, 'SIGHUP');
  const next = await h.reloadedOnce;
  t.deepEqual(
    next.forwards.map((f) => f.remotePort),
    [2, 3],
  );
  writeFileSync(path, 'forwards: [\n');
  emit(h, 'SIGHUP');
  t.regex(await h.loggedError, /^reload failed, keeping the running configuration: .*YAML syntax error/);
  t.is(h.reloaded.length, 1);
  emit(h, 'SIGTERM');
  t.is(await exit, 0);
  t.true(h.notes.includes('RELOADING'));
});

test('a start-up failure is one line, exit 1', async (t) => {
  const h = harness({
    start: async () => {
      throw new TunnelError('PF_ERR_LISTEN', 'cannot listen on 127.0.0.1:5432: address in use');
    },
  });
  t.is(await main(['--target', T, '--port', '5432'], h.io), 1);
  oneErrorLine(t, h.err());
  t.regex(h.err(), /^pf-daemon: error: cannot listen on 127\.0\.0\.1:5432: address in use \[PF_ERR_LISTEN\]/);
});

test('a failing stop exits non-zero', async (t) => {
  const h = harness({
    stop: async () => {
      throw new Error('drain failed');
    },
  });
  const exit = main(['--target', T, '--port', '5432'], h.io);
  await h.started;
  emit(h, 'SIGTERM');
  t.is(await exit, 1);
  t.regex(h.logErrors[0] ?? '', /stop failed: drain failed/);
});

test('sd-notify: silent without NOTIFY_SOCKET', async (t) => {
  const calls: string[][] = [];
  const notify = createSdNotify({
    env: {},
    logger: silentLogger,
    run: async (args) => void calls.push([...args]),
  });
  await notify.ready('x');
  t.false(notify.enabled);
  t.deepEqual(calls, []);
});

test('sd-notify: sends READY/STATUS/RELOADING/STOPPING in order', async (t) => {
  const calls: string[][] = [];
  const env = { NOTIFY_SOCKET: '/run/notify' };
  const notify = createSdNotify({
    env,
    logger: silentLogger,
    run: async (args, runEnv) => {
      t.is(runEnv, env);
      calls.push([...args]);
    },
  });
  void notify.ready('forwarding 2\nports');
  void notify.reloading();
  void notify.status('x'.repeat(300));
  await notify.stopping();
  t.deepEqual(calls[0], ['READY=1', 'STATUS=forwarding 2 ports']);
  t.deepEqual(calls[1], ['RELOADING=1']);
  t.is(calls[2]?.[0]?.length, 'STATUS='.length + 200);
  t.deepEqual(calls[3], ['STOPPING=1']);
});

test('sd-notify: a failing systemd-notify disables it softly', async (t) => {
  let runs = 0;
  const notify = createSdNotify({
    env: { NOTIFY_SOCKET: '/run/notify' },
    logger: silentLogger,
    run: async () => {
      runs++;
      throw Object.assign(new Error('spawn systemd-notify ENOENT'), { code: 'ENOENT' });
    },
  });
  await t.notThrowsAsync(notify.ready());
  await t.notThrowsAsync(notify.stopping());
  t.false(notify.enabled);
  t.is(runs, 1);
});

test('a repeated SIGTERM is ignored while draining; a second SIGINT forces exit 1', async (t) => {
  const release = deferred();
  const h = harness({ stop: () => release.promise });
  const exit = main(['--target', T, '--port', '5432'], h.io);
  await h.started;
  emit(h, 'SIGTERM');
  emit(h, 'SIGTERM');
  release.resolve();
  t.is(await exit, 0);

  const never = deferred();
  const h2 = harness({ stop: () => never.promise });
  const exit2 = main(['--target', T, '--port', '5432'], h2.io);
  await h2.started;
  emit(h2, 'SIGINT');
  emit(h2, 'SIGINT');
  t.is(await exit2, 1);
  t.is(h2.signals.listenerCount('SIGINT'), 0);
});

test('--target web-1 --pick-any --document-name --parameter reach the config', async (t) => {
  const h = harness();
  const exit = main(
    [
      '--target',
      'web-1',
      '--port',
      '5432',
      '--pick-any',
      '--document-name',
      'Acme-PF',
      '--parameter',
      'team=payments',
      '--parameter',
      'ticket=OPS-1',
      '--ecs-endpoint',
      'http://127.0.0.1:4566',
    ],
    h.io,
  );
  const config = await h.started;
  const [f] = config.forwards;
  t.is(f?.target, 'web-1');
  t.is(f?.pick, 'any');
  t.is(f?.documentName, 'Acme-PF');
  t.deepEqual(f?.parameters, { team: 'payments', ticket: 'OPS-1' });
  t.is(f?.ecsEndpoint, 'http://127.0.0.1:4566');
  emit(h, 'SIGTERM');
  t.is(await exit, 0);
});

test('a bad target form or --parameter is one line, exit 2', async (t) => {
  for (const [args, pattern] of [
    [
      ['--target', 'i-123', '--port', '1'],
      /defaults\.target: "i-123" looks like a managed node id .* from --target/,
    ],
    [['--target', 'tag:Role', '--port', '1'], /tag targets are tag:<Key>=<Value>, e\.g\. tag:Role=db/],
    [['--target', 'web-1', '--port', '1', '--parameter', 'team'], /--parameter "team": expected key=value/],
    [['--target', 'web-1', '--port', '1', '--parameter', 'team=x'], /parameters need a custom documentName/],
    [
      ['--target', 'web-1', '--port', '1', '--document-name', 'x'],
      /must be an SSM document name .* from --document-name/,
    ],
  ] as const) {
    const h = harness();
    t.is(await main([...args], h.io), 2, args.join(' '));
    oneErrorLine(t, h.err());
    t.regex(h.err(), pattern);
  }
});
