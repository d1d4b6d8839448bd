/**
 * The session ledger (spec §10.4): sessions a killed daemon left open are terminated on the next start, and
 * a running daemon records exactly its open sessions (ids only, never tokens).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../src/config/types.js';
import { defaultLog, defaultTuning } from '../src/config/types.js';
import { Daemon } from '../src/daemon.js';
import { startEmulator } from '../src/emulator/index.js';
import { SessionLedger, readBootId, readStartTicks } from '../src/ledger.js';
import type { LedgerEntry } from '../src/ledger.js';
import { silentLogger } from '../src/log.js';
import { echoExchange, startEchoServer } from './helpers/net.js';
import { emulatorSsm, forwardConfig } from './forward/fixtures.js';

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '0']);
  return child.pid ?? 2 ** 22 + 1;
}

test('findOrphans returns the entries of dead processes only and sweepOrphans deletes their files', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const dead = deadPid();
  const entry = (sessionId: string, pid: number): LedgerEntry => ({
    sessionId,
    target: 'i-0123456789abcdef0',
    pid,
    startedAt: 1,
  });
  await writeFile(join(dir, `${dead}.json`), JSON.stringify([entry('dead-1', dead), entry('dead-2', dead)]));
  await writeFile(join(dir, `${process.ppid}.json`), JSON.stringify([entry('alive-1', process.ppid)]));
  await writeFile(join(dir, 'notes.txt'), 'not a ledger file');
  const ledger = new SessionLedger(dir, silentLogger);
  const orphans = await ledger.findOrphans();
  t.deepEqual(orphans.flatMap((o) => o.entries.map((e) => e.sessionId)).sort(), ['dead-1', 'dead-2']);
  t.deepEqual(
    orphans.map((o) => o.file),
    [join(dir, `${dead}.json`)],
  );
  const swept = await ledger.sweepOrphans(() => Promise.resolve());
  t.deepEqual(swept.terminated.sort(), ['dead-1', 'dead-2']);
  t.deepEqual((await readdir(dir)).sort(), [`${process.ppid}.json`, 'notes.txt'].sort());
});

test('add writes this process file with mode 0600; removing the last session deletes it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ledger = new SessionLedger(join(dir, 'sessions'), silentLogger);
  await ledger.add({ sessionId: 's-1', target: 'i-0123456789abcdef0', pid: process.pid, startedAt: 5 });
  const info = await stat(ledger.path);
  t.is(info.mode & 0o777, 0o600);
  const [recorded] = JSON.parse(await readFile(ledger.path, 'utf8')) as LedgerEntry[];
  t.like(recorded, { sessionId: 's-1', target: 'i-0123456789abcdef0', pid: process.pid, startedAt: 5 });
  await ledger.remove('s-1');
  await t.throwsAsync(stat(ledger.path), { code: 'ENOENT' });
});

/** A session started straight through the API, as a killed daemon would have left it. */
function startLeftover(ssm: ReturnType<typeof emulatorSsm>, remotePort: number) {
  return ssm.startSession({
    target: 'i-0123456789abcdef0',
    documentName: 'AWS-StartPortForwardingSession',
    parameters: { portNumber: [String(remotePort)] },
  });
}

/** A daemon on `config` whose SSM client is `ssm` and whose ledger lives in `ledgerDir`. */
function daemonOn(config: DaemonConfig, ssm: ReturnType<typeof emulatorSsm>, ledgerDir: string): Daemon {
  return new Daemon(config, { logger: silentLogger, ssmFor: () => ssm, ledgerDir });
}

function daemonConfig(remotePort: number, endpoint: string): DaemonConfig {
  return {
    forwards: [forwardConfig({ name: 'db', remotePort, endpoint })],
    log: { ...defaultLog },
    tuning: { ...defaultTuning },
  };
}

test('a session left open by a killed daemon is terminated when the next daemon starts', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const echo = await startEchoServer();
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ssm = emulatorSsm(emulator);
  try {
    const leftover = await startLeftover(ssm, echo.port);
    const dead = deadPid();
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, `${dead}.json`),
      JSON.stringify([
        {
          sessionId: leftover.sessionId,
          target: 'i-0123456789abcdef0',
          pid: dead,
          startedAt: 1,
          endpoint: emulator.endpoint,
        },
      ]),
    );
    const daemon = daemonOn(daemonConfig(echo.port, emulator.endpoint), ssm, dir);
    await daemon.start();
    try {
      await daemon.orphanSweep;
      t.is(emulator.session(leftover.sessionId).state, 'terminated');
      t.false((await readdir(dir)).includes(`${dead}.json`), 'the orphan file is gone');
    } finally {
      await daemon.stop();
    }
  } finally {
    await emulator.close();
    await echo.close();
  }
});

test('a running daemon records its open session without secrets and forgets it on stop', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const echo = await startEchoServer();
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const tokens: string[] = [];
  const base = emulatorSsm(emulator);
  const ssm = {
    ...base,
    startSession: async (request: Parameters<typeof base.startSession>[0]) => {
      const grant = await base.startSession(request);
      tokens.push(grant.tokenValue);
      return grant;
    },
  };
  const daemon = new Daemon(daemonConfig(echo.port, emulator.endpoint), {
    logger: silentLogger,
    ssmFor: () => ssm,
    ledgerDir: dir,
  });
  await daemon.start();
  try {
    const forward = daemon.running.get('db');
    const port = forward?.address?.port;
    if (!forward || !port) return t.fail('forward not listening');
    const result = await echoExchange(port, 1000);
    t.is(result.receivedSha256, result.sentSha256);
    const sessionId = forward.currentSession?.sessionId;
    const names = await readdir(dir);
    t.is(names.length, 1);
    t.regex(names[0] ?? '', new RegExp(`^${process.pid}-[0-9a-f]+\\.json$`));
    const file = join(dir, names[0] ?? '');
    const text = await readFile(file, 'utf8');
    t.deepEqual(
      (JSON.parse(text) as LedgerEntry[]).map((e) => [e.sessionId, e.endpoint, e.pid]),
      [[sessionId, emulator.endpoint, process.pid]],
    );
    for (const token of tokens) t.false(text.includes(token), 'no TokenValue in the ledger');
  } finally {
    await daemon.stop();
  }
  t.deepEqual(await readdir(dir), [], 'the closed session was forgotten');
  await emulator.close();
  await echo.close();
});

// ---- owner identity and failed terminates (issue 10 item 11) ----------------------------------------

const entryOf = (sessionId: string, pid: number, extra: Partial<LedgerEntry> = {}): LedgerEntry => ({
  sessionId,
  target: 'i-0123456789abcdef0',
  pid,
  startedAt: 1,
  ...extra,
});

test('after a reboot, the files of a predecessor with this very pid are orphans', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  // After a reboot a service often gets the same pid: the old daemon's file carries our pid.
  await writeFile(
    join(dir, `${process.pid}.json`),
    JSON.stringify([entryOf('legacy-same-pid', process.pid)]),
  );
  await writeFile(
    join(dir, `${process.pid}-0000beef.json`),
    JSON.stringify([entryOf('same-pid-old-boot', process.pid, { bootId: 'a-boot-before-this-one' })]),
  );
  // A live process now holds the pid the old daemon had before the reboot.
  await writeFile(
    join(dir, `${process.ppid}-0000cafe.json`),
    JSON.stringify([entryOf('live-pid-old-boot', process.ppid, { bootId: 'a-boot-before-this-one' })]),
  );
  const ledger = new SessionLedger(dir, silentLogger);
  const orphans = await ledger.findOrphans();
  t.deepEqual(orphans.flatMap((o) => o.entries.map((e) => e.sessionId)).sort(), [
    'legacy-same-pid',
    'live-pid-old-boot',
    'same-pid-old-boot',
  ]);
  await ledger.sweepOrphans(() => Promise.resolve());
  t.deepEqual(await readdir(dir), []);
});

test('a pid reused by another process (same boot, other start time) does not hide the orphans; a live owner does', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const bootId = readBootId();
  const ticks = readStartTicks(process.ppid);
  if (bootId === undefined || ticks === undefined) {
    t.pass('no /proc on this system');
    return;
  }
  await writeFile(
    join(dir, `${process.ppid}-00000001.json`),
    JSON.stringify([entryOf('reused-pid', process.ppid, { bootId, ownerStartTicks: ticks + 1 })]),
  );
  await writeFile(
    join(dir, `${process.ppid}-00000002.json`),
    JSON.stringify([entryOf('live-owner', process.ppid, { bootId, ownerStartTicks: ticks })]),
  );
  const orphans = await new SessionLedger(dir, silentLogger).findOrphans();
  t.deepEqual(
    orphans.flatMap((o) => o.entries.map((e) => e.sessionId)),
    ['reused-pid'],
  );
});

test('add records the boot id and start time of this process', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ledger = new SessionLedger(dir, silentLogger);
  await ledger.add(entryOf('s-1', process.pid));
  const [recorded] = JSON.parse(await readFile(ledger.path, 'utf8')) as LedgerEntry[];
  t.is(recorded?.bootId, readBootId());
  t.is(recorded?.ownerStartTicks, readStartTicks(process.pid));
});

test('a failed TerminateSession keeps the orphan; the next start terminates it', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const echo = await startEchoServer();
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ssm = emulatorSsm(emulator);
  try {
    const leftover = await startLeftover(ssm, echo.port);
    const dead = deadPid();
    await writeFile(
      join(dir, `${dead}.json`),
      JSON.stringify([entryOf(leftover.sessionId, dead, { endpoint: emulator.endpoint })]),
    );
    emulator.faults.apiErrors.push({ op: 'TerminateSession', code: 'AccessDeniedException', count: 1 });
    const first = daemonOn(daemonConfig(echo.port, emulator.endpoint), ssm, dir);
    await first.start();
    await first.orphanSweep;
    await first.stop();
    t.not(emulator.session(leftover.sessionId).state, 'terminated', 'the first attempt failed');
    t.deepEqual(
      (JSON.parse(await readFile(join(dir, `${dead}.json`), 'utf8')) as LedgerEntry[]).map(
        (e) => e.sessionId,
      ),
      [leftover.sessionId],
      'the entry is kept for a retry',
    );
    const second = daemonOn(daemonConfig(echo.port, emulator.endpoint), ssm, dir);
    await second.start();
    await second.orphanSweep;
    await second.stop();
    t.is(emulator.session(leftover.sessionId).state, 'terminated', 'the retry terminated it');
    t.deepEqual(await readdir(dir), [], 'and only then was it forgotten');
  } finally {
    await emulator.close();
    await echo.close();
  }
});

test('a session whose TerminateSession fails on stop stays in the ledger for the next start', async (t) => {
  // An agent without the TerminateSession flag (≤ 2.3.722.0, spec §9.5): stopping goes through the API.
  const emulator = await startEmulator({ agentPacingMs: 0, agentVersion: '2.3.722.0' });
  const echo = await startEchoServer();
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ssm = emulatorSsm(emulator);
  const config = daemonConfig(echo.port, emulator.endpoint);
  config.tuning = { ...config.tuning, clientVersion: '1.1.69' };
  const daemon = new Daemon(config, { logger: silentLogger, ssmFor: () => ssm, ledgerDir: dir });
  await daemon.start();
  let sessionId: string | undefined;
  try {
    const forward = daemon.running.get('db');
    const port = forward?.address?.port;
    if (!forward || !port) return t.fail('forward not listening');
    const result = await echoExchange(port, 1000);
    t.is(result.receivedSha256, result.sentSha256);
    sessionId = forward.currentSession?.sessionId;
    emulator.faults.apiErrors.push({ op: 'TerminateSession', code: 'AccessDeniedException', count: 1 });
  } finally {
    await daemon.stop();
  }
  try {
    t.truthy(sessionId);
    t.not(emulator.session(sessionId ?? '').state, 'terminated', 'the terminate on stop failed');
    const names = await readdir(dir);
    t.is(names.length, 1, 'the ledger file was kept');
    const kept = JSON.parse(await readFile(join(dir, names[0] ?? ''), 'utf8')) as LedgerEntry[];
    t.deepEqual(
      kept.map((e) => e.sessionId),
      [sessionId],
    );
    // The next daemon (this process plays it; the probe says the recorded owner has exited) retries.
    const next = new SessionLedger(dir, silentLogger, {
      isAlive: () => false,
      bootId: readBootId,
      startTicks: readStartTicks,
    });
    const swept = await next.sweepOrphans((entry) => ssm.terminateSession(entry.sessionId));
    t.deepEqual(swept.terminated, [sessionId]);
    t.is(emulator.session(sessionId ?? '').state, 'terminated');
    t.deepEqual(await readdir(dir), []);
  } finally {
    await emulator.close();
    await echo.close();
  }
});
