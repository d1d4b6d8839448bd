/**
 * The pump gate's decisions (src/forward/pump-gate.ts), with the check phase driven by hand: at once on an
 * idle link, one coalesced run under load, and a new stream's one-pass hold.
 */
import test from 'ava';
import { PumpGate } from '../../src/forward/pump-gate.js';

/**
 * A gate whose `defer` queue the test runs phase by phase (one call of `checkPhase` = one iteration's). A run
 * sends a message, which stays in flight (busy) until the test acks it.
 */
function rig(busy = false): {
  gate: PumpGate;
  runs: () => number;
  checkPhase: () => void;
  state: { busy: boolean };
} {
  const state = { busy };
  let runs = 0;
  let queue: (() => void)[] = [];
  const gate = new PumpGate({
    busy: () => state.busy,
    run: () => {
      runs++;
      state.busy = true;
    },
    defer: (callback) => queue.push(callback),
  });
  return {
    gate,
    runs: () => runs,
    state,
    checkPhase: () => {
      const now = queue;
      queue = [];
      for (const callback of now) callback();
    },
  };
}

test('idle: a request runs the pump at once', (t) => {
  const { gate, runs, checkPhase, state } = rig();
  gate.request();
  t.is(runs(), 1);
  checkPhase();
  t.is(runs(), 1, 'nothing left for the check phase');
  state.busy = false;
  gate.request();
  t.is(runs(), 2, 'acked: idle again');
  t.is(gate.immediateRuns, 2);
});

test('a burst out of idle: the first at once, the rest in one run at the check phase', (t) => {
  const { gate, runs, checkPhase } = rig();
  gate.request();
  gate.request();
  gate.request();
  gate.request();
  t.is(runs(), 1);
  checkPhase();
  t.is(runs(), 2, 'one coalesced run');
  t.is(gate.deferredRuns, 1);
});

test('messages in flight: even the first request of an iteration is coalesced', (t) => {
  const { gate, runs, checkPhase, state } = rig(true);
  gate.request();
  gate.request();
  t.is(runs(), 0);
  checkPhase();
  t.is(runs(), 1);
  state.busy = false;
  gate.request();
  t.is(runs(), 2, 'idle again: at once');
});

test("a new stream's hold lasts one more poll pass, then runs once", (t) => {
  const { gate, runs, checkPhase, state } = rig();
  gate.holdForFirstData();
  gate.request();
  t.is(runs(), 0);
  checkPhase();
  t.is(runs(), 0, 'still held through the next poll phase');
  gate.request();
  t.is(runs(), 0);
  checkPhase();
  t.is(runs(), 1, 'released after it');
  state.busy = false;
  gate.holdForFirstData();
  gate.holdForFirstData();
  checkPhase();
  checkPhase();
  t.is(runs(), 2, 'opens within one hold share it');
});
