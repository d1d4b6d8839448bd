/**
 * The session ledger (spec §10.4): sessions a killed daemon left open are terminated on the next start, and
 * a running daemon records exactly its open sessions (ids only, never tokens).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../../src/config/types.js';
import { defaultLog, defaultTuning } from '../../src/config/types.js';
import { Daemon } from '../../src/daemon.js';
import { startEmulator } from '../../src/emulator/index.js';
import { SessionLedger } from '../../src/forward/ledger.js';
import type { LedgerEntry } from '../../src/forward/ledger.js';
import { silentLogger } from '../../src/log.js';
import { echoExchange, startEchoServer } from '../helpers/net.js';
import { emulatorSsm, forwardConfig } from './fixtures.js';

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '0']);
  return child.pid ?? 2 ** 22 + 1;
}

test('findOrphans returns the entries of dead processes only and forgetOrphans deletes their files', async (t) => {
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
  const { entries, files } = await ledger.findOrphans();
  t.deepEqual(entries.map((e) => e.sessionId).sort(), ['dead-1', 'dead-2']);
  t.deepEqual(files, [join(dir, `${dead}.json`)]);
  await ledger.forgetOrphans(files);
  t.deepEqual((await readdir(dir)).sort(), [`${process.ppid}.json`, 'notes.txt'].sort());
});

test('add writes this process file with mode 0600; removing the last session deletes it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pf-ledger-'));
  const ledger = new SessionLedger(join(dir, 'sessions'), silentLogger);
  await ledger.add({ sessionId: 's-1', target: 'i-0123456789abcdef0', pid: process.pid, startedAt: 5 });
  const info = await stat(ledger.path);
  t.is(info.mode & 0o777, 0o600);
  t.deepEqual(JSON.parse(await readFile(ledger.path, 'utf8')), [
    { sessionId: 's-1', target: 'i-0123456789abcdef0', pid: process.pid, startedAt: 5 },
  ]);
  await ledger.remove('s-1');
  await t.throwsAsync(stat(ledger.path), { code: 'ENOENT' });
});

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
    const leftover = await ssm.startSession({
      target: 'i-0123456789abcdef0',
      documentName: 'AWS-StartPortForwardingSession',
      parameters: { portNumber: [String(echo.port)] },
    });
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
    const daemon = new Daemon(daemonConfig(echo.port, emulator.endpoint), {
      logger: silentLogger,
      ssmFor: () => ssm,
      ledgerDir: dir,
    });
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
    const file = join(dir, `${process.pid}.json`);
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
