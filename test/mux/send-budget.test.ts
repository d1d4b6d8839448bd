/**
 * The session-wide send budget (`src/mux/send-budget.ts`, issue 16): its accounting on its own (reserves,
 * holds in arrival order, lapsing after a full poll, leaving), a random-operation property, and the Node
 * stream semantics a session gives its streams (writableNeedDrain / write() false / 'drain').
 */
import test from 'ava';
import fc from 'fast-check';
import { SendBudget } from '../../src/mux/send-budget.js';
import type { BudgetMember } from '../../src/mux/send-budget.js';
import { KiB, newSession } from './helpers.js';

const RESERVE = 64 * KiB;

/** A budget whose "after the next poll" callbacks the test runs by hand. */
function budgetOf(limitBytes: number) {
  const polls: (() => void)[] = [];
  const budget = new SendBudget({ limitBytes, readReserveBytes: RESERVE, afterPoll: (fn) => polls.push(fn) });
  const poll = (): void => {
    for (const fn of polls.splice(0)) fn();
  };
  return { budget, poll, pending: () => polls.length };
}

test('reserves go to the first members while they fit; the rest are held and let go in arrival order', (t) => {
  const { budget } = budgetOf(4 * RESERVE);
  const resumed: number[] = [];
  const members = Array.from({ length: 6 }, (_, i) => budget.join(() => resumed.push(i)));
  t.deepEqual(
    members.map((m) => m.held),
    [false, false, false, false, true, true],
  );
  t.is(budget.reservedBytes, 4 * RESERVE);
  t.is(budget.heldStreams, 2);
  // Member 0 reads one chunk: its reserve becomes queued bytes, and it cannot renew with others waiting.
  const m0 = members[0] as BudgetMember;
  t.false(budget.wrote(m0, 60 * KiB));
  t.is(budget.queuedBytes, 60 * KiB);
  t.is(budget.reservedBytes, 3 * RESERVE);
  t.true(m0.held, 'a member that wrote goes to the back of the line');
  t.deepEqual(resumed, [], 'nobody fits yet: 60 KiB queued + 3 reserves + one more > 4 reserves');
  budget.done(m0, 60 * KiB);
  t.deepEqual(resumed, [4], 'the first held member goes first');
  t.is(budget.queuedBytes, 0);
  t.deepEqual(
    members.map((m) => m.held),
    [true, false, false, false, false, true],
  );
  t.is(budget.stats.sendHolds, 3);
  t.is(budget.stats.sendPeakQueuedBytes, 60 * KiB);
});

test('a member alone keeps its reserve across writes while the budget has room', (t) => {
  const { budget } = budgetOf(4 * RESERVE);
  let resumed = 0;
  const m = budget.join(() => resumed++);
  for (let i = 0; i < 3; i++) t.true(budget.wrote(m, RESERVE));
  t.is(budget.queuedBytes, 3 * RESERVE);
  t.is(budget.reservedBytes, RESERVE);
  t.false(budget.wrote(m, 1), 'queued + reserve would pass the limit: held');
  t.is(budget.reservedBytes, 0);
  t.is(resumed, 0);
  budget.done(m, 1);
  t.is(resumed, 1, 'one byte pulled: room for a reserve again');
  t.false(m.held);
  t.is(budget.queuedBytes + budget.reservedBytes, 4 * RESERVE);
});

test('while streams wait, an unused reserve lapses after a full poll and lets one go; nobody waiting, nothing lapses', (t) => {
  const { budget, poll, pending } = budgetOf(2 * RESERVE);
  const resumed: string[] = [];
  const idle = budget.join(() => resumed.push('idle'));
  const busy = budget.join(() => resumed.push('busy'));
  t.is(pending(), 0, 'no contention: no sweep');
  const waiting = budget.join(() => resumed.push('waiting'));
  t.true(waiting.held);
  t.is(pending(), 1, 'someone waits: a sweep after the next poll');
  poll(); // the poll in which the reserves were granted ends: they may still be used in the next one
  t.is(budget.reservedBytes, 2 * RESERVE);
  t.false(budget.wrote(busy, 10), 'busy reads with waiters in line: it goes to the back');
  budget.done(busy, 10);
  t.deepEqual(resumed, ['waiting'], "busy's freed reserve goes to the first in line");
  poll(); // a full poll has passed: idle's reserve lapses, and busy gets the room
  t.is(idle.reservedBytes, 0);
  t.false(idle.held, 'a lapsed member is not held: it may still read');
  t.is(waiting.reservedBytes, RESERVE, 'granted after the first sweep: survives this one');
  t.deepEqual(resumed, ['waiting', 'busy']);
  t.is(pending(), 0, 'nobody waits any more: no sweep');
  const late = budget.join(() => resumed.push('late'));
  t.true(late.held);
  poll(); // waiting's reserve is older than the previous sweep: it lapses; busy's is not
  t.is(waiting.reservedBytes, 0);
  t.is(busy.reservedBytes, RESERVE);
  t.deepEqual(resumed, ['waiting', 'busy', 'late']);
  t.is(budget.reservedBytes, 2 * RESERVE);
  t.is(pending(), 0);
});

test('leaving frees exactly the member’s share and takes it out of the line; later calls are ignored', (t) => {
  const { budget } = budgetOf(2 * RESERVE);
  const a = budget.join(() => undefined);
  const b = budget.join(() => undefined);
  const c = budget.join(() => undefined);
  budget.wrote(a, 10 * KiB);
  budget.wrote(b, 20 * KiB);
  t.deepEqual([a.held, b.held, c.held], [true, true, true], 'a and b wrote with c waiting: behind it');
  budget.leave(c);
  t.deepEqual([a.held, b.held], [false, true], '30 KiB queued leaves room for one reserve: a, first in line');
  t.is(budget.heldStreams, 1);
  budget.leave(a);
  t.false(b.held, "a's reserve is free again: b goes");
  t.is(budget.queuedBytes, 20 * KiB);
  budget.done(a, 10 * KiB);
  budget.wrote(a, 5);
  budget.leave(a);
  t.is(budget.queuedBytes, 20 * KiB);
  budget.done(b, 1_000_000);
  t.is(budget.queuedBytes, 0, 'done() is clamped to what the member queued');
});

test('property: the sums match the members, and writes within reserves never pass the limit', (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('join' as const) }),
    fc.record({
      kind: fc.constant('write' as const),
      who: fc.nat(),
      bytes: fc.integer({ min: 1, max: RESERVE }),
    }),
    fc.record({
      kind: fc.constant('done' as const),
      who: fc.nat(),
      bytes: fc.integer({ min: 1, max: 3 * RESERVE }),
    }),
    fc.record({ kind: fc.constant('leave' as const), who: fc.nat() }),
    fc.record({ kind: fc.constant('poll' as const) }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 200 }), (reserves, ops) => {
      const limit = reserves * RESERVE;
      const { budget, poll } = budgetOf(limit);
      const members: BudgetMember[] = [];
      for (const o of ops) {
        const m = members.length > 0 ? members[('who' in o ? o.who : 0) % members.length] : undefined;
        if (o.kind === 'join') members.push(budget.join(() => undefined));
        else if (o.kind === 'poll') poll();
        else if (m === undefined) continue;
        // A source reads only with a reserve (held or lapsed ones stay paused in this model).
        else if (o.kind === 'write' && m.reservedBytes >= o.bytes) budget.wrote(m, o.bytes);
        else if (o.kind === 'done') budget.done(m, o.bytes);
        else if (o.kind === 'leave') budget.leave(m);
        const live = members.filter((x) => !x.left);
        if (budget.queuedBytes !== live.reduce((s, x) => s + x.queuedBytes, 0)) return false;
        if (budget.reservedBytes !== live.reduce((s, x) => s + x.reservedBytes, 0)) return false;
        if (budget.heldStreams !== live.filter((x) => x.held).length) return false;
        if (budget.queuedBytes + budget.reservedBytes > limit) return false;
        if (budget.queuedBytes < 0 || budget.reservedBytes < 0) return false;
      }
      return true;
    }),
  );
  t.pass();
});

test('session: a held stream reports writableNeedDrain, its write() returns false, and drain comes when pulls free room', async (t) => {
  const session = newSession({ sendBudgetBytes: 2 * RESERVE, streamWriteBufferBytes: 64 * KiB });
  const streams = [session.openStream(), session.openStream(), session.openStream()];
  for (const s of streams) s.on('error', () => undefined);
  const [a, b, c] = streams as [(typeof streams)[0], (typeof streams)[0], (typeof streams)[0]];
  t.false(a.writableNeedDrain);
  t.false(b.writableNeedDrain);
  t.true(c.writableNeedDrain, 'the third stream waits for room');
  t.is(session.stats.sendHeldStreams, 1);
  let drained = false;
  c.once('drain', () => (drained = true));
  t.false(a.write(Buffer.alloc(64 * KiB, 1)), 'the stream that wrote is held behind c');
  t.is(session.stats.sendQueuedBytes, 64 * KiB);
  t.false(drained);
  // Pull everything a's batch holds: its bytes leave the budget and c may read.
  while (session.hasOutgoing) session.pullOutgoing(1024);
  t.true(drained, "c's drain after a's bytes were pulled");
  t.false(c.writableNeedDrain);
  t.is(session.stats.sendQueuedBytes, 0);
  t.is(session.stats.sendPeakQueuedBytes, 64 * KiB);
  // Destroying a stream gives back what it still holds.
  b.write(Buffer.alloc(1000));
  b.destroy();
  await new Promise<void>((resolve) => setImmediate(resolve));
  t.is(session.stats.sendQueuedBytes, 0);
  session.destroy();
});
