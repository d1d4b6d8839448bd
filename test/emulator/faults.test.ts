import test from 'ava';
import { MessageType, PayloadType } from '../../src/datachannel/constants.js';
import {
  decodeMessage,
  encodeMessage,
  frameDigestMatches,
  newMessage,
} from '../../src/datachannel/message.js';
import { decodeChannelClosed, encodeAcknowledge } from '../../src/datachannel/payloads.js';
import { FaultPipe, Faults, createPrng } from '../../src/emulator/faults.js';
import type { Direction, FaultFate } from '../../src/emulator/faults.js';
import { waitFor } from '../../src/emulator/index.js';
import { RawClient, startLocalSession, withEmulator } from './service.helpers.js';
import type { Ctx, FakeAgent } from './service.helpers.js';

// ---------------------------------------------------------------------------------------------
// FaultPipe and Faults in isolation

function data(seq: number, text = `m${seq}`, type: string = MessageType.OutputStreamData): Buffer {
  return encodeMessage(
    newMessage({
      messageType: type,
      sequenceNumber: seq,
      flags: 0,
      payloadType: PayloadType.Output,
      payload: Buffer.from(text),
    }),
  );
}

function ack(seq: number): Buffer {
  return encodeMessage(
    newMessage({
      messageType: MessageType.Acknowledge,
      sequenceNumber: 0,
      flags: 3,
      payloadType: 0,
      payload: encodeAcknowledge({
        acknowledgedMessageType: MessageType.OutputStreamData,
        acknowledgedMessageId: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
        acknowledgedMessageSequenceNumber: seq,
        isSequentialMessage: true,
      }),
    }),
  );
}

function service(type: string): Buffer {
  return encodeMessage(
    newMessage({ messageType: type, sequenceNumber: 0, flags: 0, payloadType: 0, payload: Buffer.alloc(0) }),
  );
}

function pipe(faults: Faults, direction: Direction = 'toClient') {
  const out: Buffer[] = [];
  const fates: FaultFate[] = [];
  const p = new FaultPipe(
    direction,
    faults,
    (f) => out.push(f),
    (fate) => fates.push(fate),
  );
  const seqs = (): number[] => out.map((f) => decodeMessage(f, { verifyDigest: false }).sequenceNumber);
  return { p, out, fates, seqs };
}

test('createPrng is deterministic per seed and in [0, 1)', (t) => {
  const a = createPrng(42);
  const b = createPrng(42);
  const c = createPrng(43);
  const xs = Array.from({ length: 100 }, () => a());
  t.deepEqual(
    xs,
    Array.from({ length: 100 }, () => b()),
  );
  t.notDeepEqual(
    xs,
    Array.from({ length: 100 }, () => c()),
  );
  t.true(xs.every((x) => x >= 0 && x < 1));
});

test('dropRate 1 drops every sequenced message and ack but never service messages', (t) => {
  const { p, out, fates } = pipe(new Faults({ dropRate: { toAgent: 0, toClient: 1 } }));
  p.push(data(0));
  p.push(ack(0));
  p.push(service(MessageType.PausePublication));
  p.push(service(MessageType.ChannelClosed));
  t.is(out.length, 2);
  t.deepEqual(fates, ['dropped', 'dropped']);
});

test('dropRate applies per direction only', (t) => {
  const { p, out } = pipe(new Faults({ dropRate: { toAgent: 1, toClient: 0 } }), 'toClient');
  p.push(data(0));
  t.is(out.length, 1);
});

test('dropRate 0.3 with a seed is reproducible and roughly proportional', (t) => {
  const run = (): number[] => {
    const { p, seqs } = pipe(new Faults({ seed: 7, dropRate: { toAgent: 0, toClient: 0.3 } }));
    for (let i = 0; i < 1000; i++) p.push(data(i));
    return seqs();
  };
  const first = run();
  t.deepEqual(first, run());
  t.true(first.length > 620 && first.length < 780, `kept ${first.length}`);
  const other = pipe(new Faults({ seed: 8, dropRate: { toAgent: 0, toClient: 0.3 } }));
  for (let i = 0; i < 1000; i++) other.p.push(data(i));
  t.notDeepEqual(other.seqs(), first);
});

test('dupRate 1 delivers every sequenced frame twice', (t) => {
  const { p, seqs, fates } = pipe(new Faults({ dupRate: { toAgent: 0, toClient: 1 } }));
  p.push(data(0));
  p.push(data(1));
  t.deepEqual(seqs(), [0, 0, 1, 1]);
  t.deepEqual(fates, ['duplicated', 'duplicated']);
});

test('reorderWindow releases a shuffled permutation once the window is full', (t) => {
  const { p, seqs, fates } = pipe(new Faults({ seed: 3, reorderWindow: { toAgent: 0, toClient: 8 } }));
  for (let i = 0; i < 7; i++) p.push(data(i));
  t.deepEqual(seqs(), [], 'held until the window fills');
  p.push(data(7));
  const got = seqs();
  t.deepEqual(
    [...got].sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  t.notDeepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.is(fates.filter((f) => f === 'reordered').length, 8);
});

test('reorderWindow releases a partial window after reorderFlushMs', async (t) => {
  const faults = new Faults({ reorderWindow: { toAgent: 0, toClient: 10 }, reorderFlushMs: 30 });
  const out: Buffer[] = [];
  const delivered = new Promise<void>((resolve) => {
    const p = new FaultPipe(
      'toClient',
      faults,
      (f) => {
        out.push(f);
        if (out.length === 2) resolve();
      },
      () => undefined,
    );
    p.push(data(0));
    p.push(data(1));
  });
  await delivered;
  t.is(out.length, 2);
});

test('delay holds frames for ms (order kept without jitter)', async (t) => {
  const faults = new Faults({
    delay: { toAgent: { ms: 0, jitterMs: 0 }, toClient: { ms: 60, jitterMs: 0 } },
  });
  const started = Date.now();
  const out: number[] = [];
  await new Promise<void>((resolve) => {
    const p = new FaultPipe(
      'toClient',
      faults,
      (f) => {
        out.push(decodeMessage(f, { verifyDigest: false }).sequenceNumber);
        if (out.length === 5) resolve();
      },
      () => undefined,
    );
    for (let i = 0; i < 5; i++) p.push(data(i));
  });
  t.true(Date.now() - started >= 55);
  t.deepEqual(out, [0, 1, 2, 3, 4]);
});

test('close() cancels delayed frames', async (t) => {
  const faults = new Faults({
    delay: { toAgent: { ms: 0, jitterMs: 0 }, toClient: { ms: 20, jitterMs: 0 } },
  });
  const out: Buffer[] = [];
  const p = new FaultPipe(
    'toClient',
    faults,
    (f) => out.push(f),
    () => undefined,
  );
  p.push(data(0));
  t.is(p.heldFrames, 1);
  p.close();
  t.is(p.heldFrames, 0);
  t.is(out.length, 0);
});

test('corruptDigest flips the payload of one sequence number once', (t) => {
  const { p, out, fates } = pipe(new Faults({ corruptDigest: [{ seq: 2 }] }));
  for (let i = 0; i < 4; i++) p.push(data(i));
  p.push(data(2));
  t.deepEqual(out.map(frameDigestMatches), [true, true, false, true, true]);
  t.deepEqual(fates, ['corrupted']);
});

test('dropAck loses the ack of one sequence number once (toAgent by default)', (t) => {
  const faults = new Faults({ dropAck: [{ seq: 1 }] });
  const toClient = pipe(faults, 'toClient');
  toClient.p.push(ack(1));
  t.is(toClient.out.length, 1, 'other direction untouched');
  const toAgent = pipe(faults, 'toAgent');
  toAgent.p.push(ack(0));
  toAgent.p.push(ack(1));
  toAgent.p.push(ack(1));
  t.is(toAgent.out.length, 2);
  t.deepEqual(toAgent.fates, ['dropped']);
  t.deepEqual(faults.dropAck, []);
});

test('apiError counts down per operation; reset clears faults but keeps the seed', (t) => {
  const faults = new Faults({ seed: 9 });
  faults.failApi('StartSession', 'ThrottlingException', 2);
  faults.failApi('ResumeSession', 'InternalServerError');
  t.is(faults.takeApiError('TerminateSession'), undefined);
  t.is(faults.takeApiError('StartSession')?.code, 'ThrottlingException');
  t.is(faults.takeApiError('ResumeSession')?.code, 'InternalServerError');
  t.is(faults.takeApiError('ResumeSession'), undefined);
  t.is(faults.takeApiError('StartSession')?.code, 'ThrottlingException');
  t.is(faults.takeApiError('StartSession'), undefined);
  faults.dropRate.toClient = 0.5;
  faults.reset();
  t.is(faults.dropRate.toClient, 0);
  t.is(faults.seed, 9);
});

// ---------------------------------------------------------------------------------------------
// Knobs applied by a running emulator, measured through its counters

async function connected(ctx: Ctx): Promise<{ id: string; client: RawClient; agent: FakeAgent }> {
  const s = await startLocalSession(ctx.ssm);
  const client = await RawClient.open(s.url, s.token);
  await client.next((m) => m.messageType === MessageType.OutputStreamData);
  return { id: s.sessionId, client, agent: ctx.agents[ctx.agents.length - 1] as FakeAgent };
}

test('relay: dropRate and dupRate show in the session counters and frame log', async (t) => {
  await withEmulator({}, async (ctx) => {
    const { id, client, agent } = await connected(ctx);
    ctx.emulator.faults.dropRate.toClient = 1;
    agent.sendOutput(Buffer.from('lost'));
    ctx.emulator.faults.dropRate.toClient = 0;
    ctx.emulator.faults.dupRate.toClient = 1;
    agent.sendOutput(Buffer.from('twice'));
    ctx.emulator.faults.dupRate.toClient = 0;
    agent.sendOutput(Buffer.from('marker'));
    await client.next((m) => m.payload.toString() === 'marker');
    const payloads = client.messages.map((m) => m.payload.toString()).slice(1);
    t.deepEqual(payloads, ['twice', 'twice', 'marker']);
    const info = ctx.emulator.session(id);
    t.is(info.counters.droppedByFault.toClient, 1);
    t.is(info.counters.duplicatedByFault, 1);
    t.true(info.frames.some((f) => f.fate === 'dropped' && f.sequenceNumber === 1));

    ctx.emulator.faults.dropRate.toAgent = 1;
    const dropped = waitFor(
      ctx.emulator,
      'fault',
      (sid, dir, fate) => sid === id && dir === 'toAgent' && fate === 'dropped',
    );
    client.sendInput(0, Buffer.from('never'));
    await dropped;
    ctx.emulator.faults.dropRate.toAgent = 0;
    client.sendInput(1, Buffer.from('arrives'));
    await new Promise<void>((resolve) => agent.once('received', () => resolve()));
    t.deepEqual(
      agent.received.map((m) => m.sequenceNumber),
      [1],
    );
    t.is(info.counters.droppedByFault.toAgent, 1);
  });
});

test('dropWebSocket afterMessages closes the client with 1000 Bye, limited by times', async (t) => {
  await withEmulator(
    { faults: { dropWebSocket: { afterMessages: 3, mode: 'bye', times: 1 } } },
    async (ctx) => {
      const { id, client, agent } = await connected(ctx);
      const gone = waitFor(ctx.emulator, 'clientDisconnected', (sid) => sid === id);
      agent.sendOutput(Buffer.from('a'));
      agent.sendOutput(Buffer.from('b'));
      const { code, reason } = await client.closed;
      await gone;
      t.is(code, 1000);
      t.is(reason, 'Bye');
      t.deepEqual(
        client.messages.map((m) => m.sequenceNumber),
        [0, 1, 2],
      );
      const info = ctx.emulator.session(id);
      t.is(info.counters.webSocketDrops, 1);
      t.is(info.state, 'disconnected');
      // times: 1 — the next connection is not dropped.
      const { ResumeSessionCommand } = await import('@aws-sdk/client-ssm');
      const r = await ctx.ssm.send(new ResumeSessionCommand({ SessionId: id }));
      const again = await RawClient.open(r.StreamUrl ?? '', r.TokenValue ?? '');
      await waitFor(ctx.emulator, 'clientConnected', (sid) => sid === id);
      for (let i = 0; i < 5; i++) agent.sendOutput(Buffer.from(`x${i}`));
      await again.next((m) => m.payload.toString() === 'x4');
      t.is(info.counters.webSocketDrops, 1);
      t.is(info.state, 'connected');
    },
  );
});

test('dropWebSocket everyMs abrupt resets the client without a close frame', async (t) => {
  await withEmulator({ faults: { dropWebSocket: { everyMs: 80, mode: 'abrupt' } } }, async (ctx) => {
    const gone = waitFor(ctx.emulator, 'clientDisconnected');
    const { id, client } = await connected(ctx);
    const { code } = await client.closed;
    t.is(code, 1006);
    await gone;
    t.is(ctx.emulator.session(id).counters.webSocketDrops, 1);
  });
});

test('terminateAfterMs ends the session with channel_closed', async (t) => {
  await withEmulator({ faults: { terminateAfterMs: 100 } }, async (ctx) => {
    const { id, client } = await connected(ctx);
    const closed = await client.next((m) => m.messageType === MessageType.ChannelClosed, 3000);
    t.regex(decodeChannelClosed(closed.payload).output, /terminateAfterMs/);
    t.is(ctx.emulator.session(id).closeReason, 'terminateFault');
  });
});

test('pauseFor sends pause_publication, holds agent output, then start_publication and releases it', async (t) => {
  await withEmulator({}, async (ctx) => {
    const { id, client, agent } = await connected(ctx);
    ctx.emulator.pauseFor(id, 100);
    await client.next((m) => m.messageType === MessageType.PausePublication);
    agent.sendOutput(Buffer.from('held'));
    const info = ctx.emulator.session(id);
    t.is(info.counters.heldByPause, 1);
    const held = await client.next((m) => m.payload.toString() === 'held');
    const types = client.messages.map((m) => m.messageType);
    t.deepEqual(types, [
      MessageType.OutputStreamData,
      MessageType.PausePublication,
      MessageType.StartPublication,
      MessageType.OutputStreamData,
    ]);
    t.is(held.sequenceNumber, 1);
  });
});

test('agent knobs from faults override the emulator options when the agent is created', async (t) => {
  await withEmulator({ hostMap: { 'db.internal': '10.1.2.3' } }, async (ctx) => {
    ctx.emulator.faults.agent = {
      agentVersion: '3.0.196.0',
      chunkSize: 1,
      pacingMs: 0,
      notReadyWindowMs: 0,
      handshakeDelayMs: 20,
      skipHandshakeComplete: true,
      requestKmsAction: true,
      sessionType: 'InteractiveCommands',
      smuxKeepAlive: true,
      dialFailStreamIds: [5],
      dialFailCount: 2,
      dialDelayMs: 30,
      propertiesOverride: { type: 'Other' },
    };
    const { agent } = await connected(ctx);
    const o = agent.options;
    t.is(o.agentVersion, '3.0.196.0');
    t.is(o.chunkSize, 1);
    t.is(o.pacingMs, 0);
    t.is(o.notReadyWindowMs, 0);
    t.is(o.handshakeDelayMs, 20);
    t.true(o.skipHandshakeComplete);
    t.true(o.requestKmsAction);
    t.is(o.sessionType, 'InteractiveCommands');
    t.true(o.smuxKeepAlive);
    t.deepEqual(o.dialFailStreamIds, [5]);
    t.is(o.dialFailCount, 2);
    t.is(o.dialDelayMs, 30);
    t.is(o.properties['type'], 'Other');
    t.is(o.properties['portNumber'], '5432');
    t.is(o.resolveHost('db.internal'), '10.1.2.3');
    t.is(o.resolveHost('other.host'), 'other.host');
  });
});

test('stallReceive / releaseReceiveStall reach the agent', async (t) => {
  await withEmulator({}, async (ctx) => {
    const { id, agent } = await connected(ctx);
    ctx.emulator.stallReceive(id);
    ctx.emulator.releaseReceiveStall(id);
    t.deepEqual(agent.calls.slice(-2), ['stall', 'release']);
  });
});

test('rejectStaleUrl refuses a connect with an old cell-number even with the current token', async (t) => {
  await withEmulator({ faults: { resumeBehavior: 'rejectStaleUrl' } }, async (ctx) => {
    const s = await startLocalSession(ctx.ssm);
    const { ResumeSessionCommand } = await import('@aws-sdk/client-ssm');
    const r = await ctx.ssm.send(new ResumeSessionCommand({ SessionId: s.sessionId }));
    const stale = await RawClient.open(s.url, r.TokenValue ?? '');
    t.is((await stale.closed).code, 1008);
    const fresh = await RawClient.open(r.StreamUrl ?? '', r.TokenValue ?? '');
    await t.notThrowsAsync(fresh.next((m) => m.messageType === MessageType.OutputStreamData));
  });
});
