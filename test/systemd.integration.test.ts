/**
 * The systemd units and the session ledger under their sandbox. The system template sets
 * `ProtectHome=read-only`, so the ledger must go to a state directory: the units are checked for it (and
 * with `systemd-analyze verify` when the tool is present), and the real CLI is run with a read-only home.
 *
 * How the home is made read-only: we run as root in CI, and root ignores file modes, so a chmod 0555
 * would prove nothing. When `unshare -m` works, the daemon runs in its own mount namespace with its home
 * bind-mounted read-only (EROFS, as under ProtectHome=). Otherwise HOME points at a regular file, so
 * every write below it fails (ENOTDIR) even for root.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmulator } from '../src/emulator/index.js';
import { StreamingEcho, TARGET, startPausableEcho, withTimeout } from './forward/fixtures.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist', 'src', 'cli.js');
const unitText = (name: string): string => readFileSync(join(root, 'systemd', name), 'utf8');
/** `Key=value` lines of a unit (comments dropped). */
const directives = (text: string): string[] => text.split('\n').filter((line) => /^[A-Za-z]+=/.test(line));

test('the system template gives the ledger a writable state directory and reserves a runtime directory', (t) => {
  const lines = directives(unitText('pf-daemon@.service'));
  t.true(lines.includes('ProtectHome=read-only'));
  t.true(lines.includes('StateDirectory=pf-daemon/%i'));
  t.true(lines.includes('Environment=XDG_STATE_HOME=%S/pf-daemon/%i'));
  t.true(lines.includes('RuntimeDirectory=pf-daemon/%i'));
  for (const name of ['pf-daemon.service', 'pf-daemon@.service']) {
    const text = unitText(name);
    // The package is not on the registry: the install comments use the packed tarball.
    t.notRegex(text, /npm install -g (--prefix \S+ )?pf-daemon\b/, name);
    t.regex(text, /npm pack/, name);
  }
});

test('systemd-analyze verify accepts both units (when the tool is present)', (t) => {
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
    t.log('systemd-analyze not installed: skipped');
    t.pass();
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'pf-units-'));
  // verify checks that ExecStart exists: point it at an executable of ours.
  const home = join(dir, 'home');
  mkdirSync(join(home, '.local', 'bin'), { recursive: true });
  const bin = join(home, '.local', 'bin', 'pf-daemon');
  writeFileSync(bin, '#!/bin/sh\n');
  chmodSync(bin, 0o755);
  const system = join(dir, 'pf-daemon@root.service');
  writeFileSync(system, unitText('pf-daemon@.service').replace('/usr/local/bin/pf-daemon', bin));
  const user = join(dir, 'pf-daemon.service');
  copyFileSync(join(root, 'systemd', 'pf-daemon.service'), user);
  const runtime = join(dir, 'run');
  mkdirSync(runtime, { mode: 0o700 });
  for (const [args, env] of [
    [['verify', system], {}],
    [['--user', 'verify', user], { HOME: home, XDG_RUNTIME_DIR: runtime }],
  ] as const) {
    const r = spawnSync('systemd-analyze', args, { env: { ...process.env, ...env }, encoding: 'utf8' });
    t.is(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    t.is(r.stderr.trim(), '', args.join(' '));
  }
});

/**
 * Whether this machine lets us bind-mount a directory read-only in a private mount namespace
 * (`PF_TEST_NO_UNSHARE=1` forces the file-in-place-of-a-directory fallback).
 */
const canUnshare =
  process.env['PF_TEST_NO_UNSHARE'] !== '1' &&
  spawnSync('unshare', ['-m', 'sh', '-c', 'mount --bind / /mnt && mount -o remount,ro,bind /mnt'], {
    stdio: 'ignore',
  }).status === 0;

interface Daemon {
  child: ChildProcess;
  log: string[];
  /** Resolves with the `nth` (1-based) line matching `pattern`. */
  waitLine(pattern: RegExp, ms: number, nth?: number): Promise<RegExpExecArray>;
  exit: Promise<number | null>;
}

/** Run the real CLI with `home` read-only (see the module comment) and the given extra environment. */
function runDaemon(home: string, env: Record<string, string>, args: string[]): Daemon {
  const command = canUnshare
    ? [
        'unshare',
        '-m',
        'sh',
        '-c',
        'mount --bind "$HOME" "$HOME" && mount -o remount,ro,bind "$HOME" && exec "$@"',
        'sh',
        process.execPath,
        cli,
        ...args,
      ]
    : [process.execPath, cli, ...args];
  const child = spawn(command[0] as string, command.slice(1), {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: home,
      AWS_ACCESS_KEY_ID: 'AKIDEMULATOR',
      AWS_SECRET_ACCESS_KEY: 'emulator-secret',
      AWS_REGION: 'us-east-1',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log: string[] = [];
  const waiters: { pattern: RegExp; left: number; resolve: (m: RegExpExecArray) => void }[] = [];
  let buffered = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      log.push(line);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        const m = w?.pattern.exec(line);
        if (w && m && --w.left === 0) {
          waiters.splice(i, 1);
          w.resolve(m);
        }
      }
    }
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    log,
    exit,
    waitLine: (pattern, ms, nth = 1) => {
      let left = nth;
      for (const line of log) {
        const m = pattern.exec(line);
        if (m && --left === 0) return Promise.resolve(m);
      }
      return withTimeout(
        new Promise((resolve) => waiters.push({ pattern, left, resolve })),
        ms,
        `log line ${pattern} #${nth}`,
      );
    },
  };
}

/** A home directory the daemon cannot write below (read-only mount, or a file in place of a directory). */
function readOnlyHome(dir: string): string {
  if (canUnshare) {
    const home = join(dir, 'home');
    mkdirSync(home);
    return home;
  }
  const home = join(dir, 'home-is-a-file');
  writeFileSync(home, '');
  return home;
}

/** Resolves once a `.json` file exists anywhere below `dir`. */
function jsonAppears(dir: string, ms: number): Promise<string> {
  const find = (): string | undefined =>
    readdirSync(dir, { recursive: true })
      .map(String)
      .find((f) => f.endsWith('.json'));
  return withTimeout(
    new Promise<string>((resolve) => {
      const watcher = watch(dir, { recursive: true }, () => {
        const found = find();
        if (found) {
          watcher.close();
          resolve(found);
        }
      });
      const found = find();
      if (found) {
        watcher.close();
        resolve(found);
      }
    }),
    ms,
    'a ledger file',
  );
}

test.serial(
  'read-only home, writable state directory: the ledger is recorded there, no warning',
  async (t) => {
    t.timeout(40_000);
    t.log(canUnshare ? 'home bind-mounted read-only (unshare -m)' : 'home is a regular file (no unshare)');
    const dir = mkdtempSync(join(tmpdir(), 'pf-rohome-'));
    const home = readOnlyHome(dir);
    const state = join(dir, 'state');
    mkdirSync(state);
    const echo = await startPausableEcho();
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const daemon = runDaemon(home, { XDG_STATE_HOME: state }, [
      '--endpoint',
      emulator.endpoint,
      '--target',
      TARGET,
      '--port',
      String(echo.port),
      '--local-port',
      '0',
      '--log-format',
      'plain',
    ]);
    try {
      const [, port] = await daemon.waitLine(/listening on 127\.0\.0\.1:(\d+)/, 15_000);
      const e = new StreamingEcho(Number(port), { totalBytes: 8 * 1024, windowBytes: 8 * 1024 });
      const recorded = jsonAppears(state, 15_000);
      await withTimeout(e.done, 15_000, 'echo through the daemon');
      t.regex(await recorded, /^pf-daemon\/sessions\/\d+-[0-9a-f]+\.json$/);
      daemon.child.kill('SIGTERM');
      t.is(await withTimeout(daemon.exit, 20_000, 'exit'), 0);
      t.false(existsSync(join(state, await recorded)), 'the ledger is emptied on a clean stop');
      t.deepEqual(
        daemon.log.filter((l) => /ledger/.test(l)),
        [],
      );
    } finally {
      daemon.child.kill('SIGKILL');
      await emulator.close();
      await echo.close();
    }
  },
);

test.serial('read-only home and no state directory: one ledger warning, with the real errno', async (t) => {
  t.timeout(40_000);
  const dir = mkdtempSync(join(tmpdir(), 'pf-rohome-'));
  const home = readOnlyHome(dir);
  const echo = await startPausableEcho();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const daemon = runDaemon(home, {}, [
    '--endpoint',
    emulator.endpoint,
    '--target',
    TARGET,
    '--port',
    String(echo.port),
    '--local-port',
    '0',
    '--idle-stop-ms',
    '100',
    '--log-format',
    'plain',
  ]);
  try {
    const [, port] = await daemon.waitLine(/listening on 127\.0\.0\.1:(\d+)/, 15_000);
    // Two sessions (the idle stop ends the first), so two failed ledger writes.
    for (let i = 1; i <= 2; i++) {
      const e = new StreamingEcho(Number(port), { totalBytes: 4 * 1024, windowBytes: 4 * 1024 });
      await withTimeout(e.done, 15_000, `echo ${i}`);
      await daemon.waitLine(/ ended \(idle\) after /, 15_000, i);
      if (i === 1) await daemon.waitLine(/cannot write session ledger/, 15_000);
    }
    daemon.child.kill('SIGTERM');
    t.is(await withTimeout(daemon.exit, 20_000, 'exit'), 0);
    t.is(daemon.log.filter((l) => / ended \(idle\) after /.test(l)).length, 2, 'two sessions');
    const warnings = daemon.log.filter((l) => /cannot write session ledger/.test(l));
    t.is(warnings.length, 1, warnings.join('\n'));
    t.regex(warnings[0] ?? '', canUnshare ? /: EROFS \(mkdir / : /: ENOTDIR /);
    t.regex(warnings[0] ?? '', /XDG_STATE_HOME/);
  } finally {
    daemon.child.kill('SIGKILL');
    await emulator.close();
    await echo.close();
  }
});
