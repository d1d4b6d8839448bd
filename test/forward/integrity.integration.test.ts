/**
 * Byte integrity against hostile-but-recoverable wire faults, end to end through a Forward: corrupted
 * payloads (the daemon must drop them unacked, spec §4.1) and lost acks (the daemon must re-ack the
 * agent's resend, spec §7.2 / weakness #1 — the reference client stalls here forever).
 */
import test from 'ava';
import { EventEmitter } from 'node:events';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import { echoExchange, startEchoServer } from '../helpers/net.js';
import { startForward, tuningWith, until } from './fixtures.js';

test('corrupted agent payloads are dropped unacked and recovered by the agent resend; data stays intact', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  // Agent sequence 0 and 1 are the handshake; later ones carry the echoed bytes.
  emulator.faults.corruptDigest.push({ direction: 'toClient', seq: 4 }, { direction: 'toClient', seq: 9 });
  const { forward, port } = await startForward(emulator, { remotePort: echo.port }, tuningWith());
  try {
    const result = await echoExchange(port, 32 * 1024, 30_000);
    t.is(result.receivedSha256, result.sentSha256);
    t.is(emulator.faults.corruptDigest.length, 0, 'both corruptions were applied');
    const protocolErrors = forward.currentSession?.stats.channel.protocolErrors ?? 0;
    t.true(protocolErrors >= 2, `digest mismatches dropped: ${protocolErrors}`);
    const agent = [...emulator.sessions.values()][0]?.agent;
    t.true((agent?.stats.resends ?? 0) >= 2, 'the agent resent what we refused to ack');
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});

test('a lost ack makes the agent resend; the daemon re-acks the duplicate and delivers it once', async (t) => {
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  // Lose our ack of agent message 5 on its way to the agent.
  emulator.faults.dropAck.push({ direction: 'toAgent', seq: 5 });
  const dropped = waitFor(emulator, 'fault', (_id, _direction, fate) => fate === 'dropped', 10_000);
  const { forward, port } = await startForward(emulator, { remotePort: echo.port }, tuningWith());
  try {
    const result = await echoExchange(port, 32 * 1024, 30_000);
    t.is(result.receivedSha256, result.sentSha256);
    await dropped;
    const agent = [...emulator.sessions.values()][0]?.agent;
    const channel = (): Record<string, number> =>
      (forward.currentSession?.stats['channel'] ?? {}) as Record<string, number>;
    if (!agent) return t.fail('no agent');
    // The agent resends its head after an RTO; our re-ack of the duplicate must clear it (weakness #1).
    // 'message' fires before the agent applies the frame, so the check runs on the following microtask.
    const settled = new EventEmitter();
    const onMessage = (): void => queueMicrotask(() => settled.emit('check'));
    agent.on('message', onMessage);
    try {
      await until(
        settled,
        'check',
        () => (channel()['duplicatesReceived'] ?? 0) >= 1 && agent.unackedCount === 0,
        10_000,
        'the resent message to be re-acked',
      );
    } finally {
      agent.off('message', onMessage);
    }
    t.true(agent.stats.resends >= 1, 'the agent resent the message whose ack was lost');
    t.is(emulator.faults.dropAck.length, 0);
  } finally {
    await forward.stop(0);
    await emulator.close();
    await echo.close();
  }
});
