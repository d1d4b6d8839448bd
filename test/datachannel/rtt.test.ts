import test from 'ava';
import { RTT, RttEstimator } from '../../src/datachannel/rtt.js';

test('initial values: RTT 100 ms, variation 0, RTO 200 ms (spec 7.3)', (t) => {
  const e = new RttEstimator();
  t.is(e.srttMs, 100);
  t.is(e.rttVariationMs, 0);
  t.is(e.rtoMs, 200);
});

test('one sample of 300 ms: variation uses the previous RTT (hand computed)', (t) => {
  const e = new RttEstimator();
  e.sample(300);
  // var = 3/4·0 + 1/4·|100 − 300| = 50; rtt = 7/8·100 + 1/8·300 = 125; RTO = 125 + max(10, 200) = 325.
  // Had var used the new rtt (125) it would be 43.75 and RTO 300.
  t.is(e.rttVariationMs, 50);
  t.is(e.srttMs, 125);
  t.is(e.rtoMs, 325);
  e.sample(125);
  // var = 3/4·50 + 1/4·0 = 37.5; rtt = 125; RTO = 125 + 150 = 275.
  t.is(e.rttVariationMs, 37.5);
  t.is(e.srttMs, 125);
  t.is(e.rtoMs, 275);
});

test('a sequence of samples follows the formulas step by step (hand computed)', (t) => {
  const e = new RttEstimator();
  e.sample(180);
  // var = 1/4·80 = 20; rtt = 87.5 + 22.5 = 110; RTO = 110 + 80 = 190 → floor 200.
  t.is(e.rttVariationMs, 20);
  t.is(e.srttMs, 110);
  t.is(e.rtoMs, 200);
  e.sample(500);
  // var = 15 + 1/4·390 = 112.5; rtt = 96.25 + 62.5 = 158.75; RTO = 158.75 + 450 = 608.75.
  t.is(e.rttVariationMs, 112.5);
  t.is(e.srttMs, 158.75);
  t.is(e.rtoMs, 608.75);
});

test('G = 10 ms bounds the variation term and the 200 ms floor applies', (t) => {
  const e = new RttEstimator();
  e.sample(100);
  // var = 0, rtt = 100, raw RTO = 100 + max(10, 0) = 110 → floor.
  t.is(e.rttVariationMs, 0);
  t.is(e.rtoMs, RTT.MIN_RTO_MS);
  for (let i = 0; i < 200; i++) e.sample(300);
  // Converged: rtt ≈ 300, var ≈ 0 → raw RTO ≈ 310 (G dominates 4·var).
  t.true(Math.abs(e.srttMs - 300) < 1e-6);
  t.true(e.rttVariationMs < 1e-6);
  t.true(Math.abs(e.rtoMs - 310) < 1e-6);
});

test('RTO is capped at 1 s', (t) => {
  const e = new RttEstimator();
  e.sample(5000);
  // var = 1225, rtt = 712.5, raw = 712.5 + 4900 → 1000.
  t.is(e.srttMs, 712.5);
  t.is(e.rttVariationMs, 1225);
  t.is(e.rtoMs, RTT.MAX_RTO_MS);
});

test('non-finite samples are ignored, negative ones count as 0', (t) => {
  const e = new RttEstimator();
  e.sample(Number.NaN);
  e.sample(Number.POSITIVE_INFINITY);
  t.is(e.srttMs, 100);
  t.is(e.rtoMs, 200);
  e.sample(-40);
  // as sample 0: var = 25, rtt = 87.5, RTO = 87.5 + 100 = 187.5 → 200.
  t.is(e.rttVariationMs, 25);
  t.is(e.srttMs, 87.5);
  t.is(e.rtoMs, 200);
});
