/**
 * Bulk integrity under resends (issue 16): the hot path keeps every outgoing frame for resends and shares
 * records across messages (one header record for every seal, ws's send callback passed through, frames handed
 * to one function), so a frame reused or changed while still referenced would corrupt data only when it is
 * sent again. These transfers force that: loss, duplication and reordering both ways plus WebSocket drops
 * (every un-acked frame is resent on the new link), against the agent at its real pace (1 KiB Output
 * messages 1 ms apart, head-only resend). Every byte is checked by SHA-256 per connection, and the agent
 * checks the digest of every frame it receives.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { TunnelSession } from '../../src/forward/session.js';
import { StreamingEcho, startForward, startPausableEcho, withTimeout } from './fixtures.js';

/** Fault and volume totals over every emulated session. */
function totals(emulator: Emulator): {
  drops: number;
  lost: number;
  duplicated: number;
  reordered: number;
  digestMismatches: number;
} {
  const sum = { drops: 0, lost: 0, duplicated: 0, reordered: 0, digestMismatches: 0 };
  for (const info of emulator.sessions.values()) {
    sum.drops += info.counters.webSocketDrops;
    sum.lost += info.counters.droppedByFault.toAgent + info.counters.droppedByFault.toClient;
    sum.duplicated += info.counters.duplicatedByFault;
    sum.reordered += info.counters.reorderedByFault;
    sum.digestMismatches += info.agent?.stats.digestMismatches ?? 0;
  }
  return sum;
}

test.serial(
  'bulk both ways with loss, duplicates, reordering and WebSocket drops: every byte intact, every resent frame sealed right',
  async (t) => {
    t.timeout(100_000);
    const echo = await startPausableEcho();
    const emulator = await startEmulator({
      faults: {
        seed: 16,
        dropWebSocket: { everyMs: 2_500, mode: 'bye' },
        dropRate: { toAgent: 0.03, toClient: 0.01 },
        dupRate: { toAgent: 0.03, toClient: 0.03 },
        reorderWindow: { toAgent: 6, toClient: 6 },
      },
    });
    const { forward, port } = await startForward(emulator, { remotePort: echo.port });
    const sessions: TunnelSession[] = [];
    forward.on('session', (session: TunnelSession) => sessions.push(session));
    try {
      // An odd chunk size: smux frames and 1 KiB messages never line up, so each message mixes two writes.
      const transfers = Array.from(
        { length: 3 },
        () => new StreamingEcho(port, { totalBytes: 1024 * 1024, windowBytes: 256 * 1024, chunkBytes: 3001 }),
      );
      const results = await withTimeout(
        Promise.all(transfers.map((e) => e.done)),
        90_000,
        '3 echoes of 1 MiB each way under faults',
      );
      for (const r of results) t.is(r.receivedSha256, r.sentSha256);
      const sum = totals(emulator);
      const resends = sessions.reduce((n, s) => n + s.stats.channel.resends, 0);
      t.is(
        sum.digestMismatches,
        0,
        'every frame the agent got, first copy or resend, carried its own digest',
      );
      t.true(sum.drops > 0, 'the WebSocket was dropped (un-acked frames resent on a new link)');
      t.true(sum.lost > 0 && sum.duplicated > 0 && sum.reordered > 0, 'faults were really applied');
      t.true(resends > 0, 'stored frames were really sent again');
      t.log(
        `3 × 1 MiB each way intact; ${resends} resends, drops ${sum.drops}, lost ${sum.lost}, duplicated ${sum.duplicated}, reordered ${sum.reordered}`,
      );
    } finally {
      await forward.stop(0);
      await emulator.close();
      await echo.close();
    }
  },
);
