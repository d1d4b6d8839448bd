import test from 'ava';
import { ResumeSessionCommand, TerminateSessionCommand } from '@aws-sdk/client-ssm';
import { once } from 'node:events';
import WebSocket from 'ws';
import { MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { decodeChannelClosed } from '../../src/datachannel/payloads.js';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import type { FakeAgent } from './service.helpers.js';
import { RawClient, fakeAgentFactory, ssmFor, startLocalSession, withEmulator } from './service.helpers.js';

const isType = (type: string) => (m: { messageType: string }) => m.messageType === type;

test('a valid OpenDataChannel is recorded, the agent is created and started, frames are relayed both ways', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm, 8080);
    const connected = waitFor(emulator, 'clientConnected', (id) => id === s.sessionId);
    const client = await RawClient.open(s.url, s.token, '11111111-2222-4333-8444-555555555555', '1.2.694.0');
    await connected;
    const info = emulator.session(s.sessionId);
    t.is(info.state, 'connected');
    t.deepEqual(info.clientIds, ['11111111-2222-4333-8444-555555555555']);
    t.deepEqual(info.clientVersions, ['1.2.694.0']);
    t.is(info.requestIds.length, 1);
    t.is(agents.length, 1);
    const agent = agents[0] as FakeAgent;
    t.deepEqual(agent.calls, ['start']);
    t.deepEqual(agent.options.properties, {
      portNumber: '8080',
      type: 'LocalPortForwarding',
      localPortNumber: '',
    });
    t.is(agent.options.agentVersion, '3.3.987.0');
    t.is(agent.options.chunkSize, 1024);
    t.is(agent.options.pacingMs, 1);
    t.is(agent.options.notReadyWindowMs, 50);
    t.is(agent.options.resolveHost('localhost'), '127.0.0.1');

    const request = await client.next(isType(MessageType.OutputStreamData));
    t.is(request.payloadType, PayloadType.HandshakeRequest);
    t.is(request.sequenceNumber, 0);
    client.sendInput(0, Buffer.from('hello'));
    const ack = await client.next(isType(MessageType.Acknowledge));
    t.is(ack.flags, 3);
    t.is(agent.received[0]?.payload.toString(), 'hello');
    t.is(info.counters.clientFramesIn, 1);
    t.is(info.counters.clientFramesOut, 2);
    t.true(info.counters.clientBytesIn > 120);
    const log = info.frames.map((f) => `${f.direction}:${f.messageType}:${f.sequenceNumber}:${f.fate}`);
    t.deepEqual(log, [
      'toClient:output_stream_data:0:relayed',
      'toAgent:input_stream_data:0:relayed',
      'toClient:acknowledge:0:relayed',
    ]);
    t.is(info.frames[2]?.ackedSequenceNumber, 0);
    t.is(info.frames[1]?.payloadLength, 5);
    client.close();
  });
});

test('a wrong token closes the socket with 1008', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm);
    const client = await RawClient.open(s.url, 'not-the-token');
    const { code } = await client.closed;
    t.is(code, 1008);
    t.is(emulator.session(s.sessionId).state, 'waiting');
    t.is(agents.length, 0);
  });
});

test('a binary first frame, invalid JSON or an unknown session closes the socket with 1008', async (t) => {
  await withEmulator({}, async ({ emulator, ssm }) => {
    const s = await startLocalSession(ssm);
    const binary = new RawClient(s.url);
    await binary.opened;
    binary.ws.send(Buffer.from(JSON.stringify({ TokenValue: s.token })));
    t.is((await binary.closed).code, 1008);
    const garbage = new RawClient(s.url);
    await garbage.opened;
    garbage.ws.send('{not json');
    t.is((await garbage.closed).code, 1008);
    const unknown = await RawClient.open(s.url.replace(s.sessionId, 'emulator-00000000000000000'), s.token);
    t.is((await unknown.closed).code, 1008);
    t.is(emulator.session(s.sessionId).clientIds.length, 0);
  });
});

test('no OpenDataChannel within openTimeoutMs closes the socket', async (t) => {
  await withEmulator({ openTimeoutMs: 100 }, async ({ ssm }) => {
    const s = await startLocalSession(ssm);
    const client = new RawClient(s.url);
    await client.opened;
    t.is((await client.closed).code, 1008);
  });
});

test('a non-data-channel upgrade URL is refused with 404', async (t) => {
  await withEmulator({}, async ({ emulator }) => {
    const ws = new WebSocket(`ws://127.0.0.1:${emulator.port}/elsewhere`);
    const [err] = (await once(ws, 'error')) as [Error];
    t.regex(err.message, /404/);
  });
});

test('resume: new token and cell; old token refused; agent paused while away and restarted on reconnect', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm);
    const first = await RawClient.open(s.url, s.token, 'c0a80000-0000-4000-8000-000000000001');
    await first.next(isType(MessageType.OutputStreamData));
    const agent = agents[0] as FakeAgent;
    const gone = waitFor(emulator, 'clientDisconnected', (id) => id === s.sessionId);
    first.ws.terminate();
    await gone;
    t.is(emulator.session(s.sessionId).state, 'disconnected');
    t.deepEqual(agent.calls, ['start', 'pause']);

    // While away, agent output is discarded (spec 8 [inferred]).
    agent.sendOutput(Buffer.from('lost'));
    t.is(emulator.session(s.sessionId).counters.discardedWhileAway, 1);

    const r = await ssm.send(new ResumeSessionCommand({ SessionId: s.sessionId }));
    t.not(r.TokenValue, s.token);
    t.not(r.StreamUrl, s.url);
    t.regex(r.StreamUrl ?? '', /cell-number=2$/);

    const stale = await RawClient.open(s.url, s.token);
    t.is((await stale.closed).code, 1008);

    const connected = waitFor(emulator, 'clientConnected', (id) => id === s.sessionId);
    const second = await RawClient.open(
      r.StreamUrl ?? '',
      r.TokenValue ?? '',
      'c0a80000-0000-4000-8000-000000000001',
    );
    await connected;
    t.is(agents.length, 1, 'no second agent');
    t.deepEqual(agent.calls, ['start', 'pause', 'start_publication']);
    const info = emulator.session(s.sessionId);
    t.is(info.state, 'connected');
    t.is(info.counters.reconnects, 1);
    t.is(info.counters.resumes, 1);
    t.deepEqual(info.clientIds, [
      'c0a80000-0000-4000-8000-000000000001',
      'c0a80000-0000-4000-8000-000000000001',
    ]);
    t.not(info.requestIds[0], info.requestIds[1]);
    agent.sendOutput(Buffer.from('after'));
    const m = await second.next((x) => x.payload.toString() === 'after');
    t.is(m.sequenceNumber, 2);
    second.close();
  });
});

test('a second valid connect replaces the first socket', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm);
    const first = await RawClient.open(s.url, s.token);
    await first.next(isType(MessageType.OutputStreamData));
    const second = await RawClient.open(s.url, s.token);
    const { code } = await first.closed;
    t.is(code, 1000);
    t.is(emulator.session(s.sessionId).state, 'connected');
    (agents[0] as FakeAgent).sendOutput(Buffer.from('to-second'));
    await t.notThrowsAsync(second.next((m) => m.payload.toString() === 'to-second'));
    second.close();
  });
});

test('TerminateSession sends channel_closed to the connected client and closes the agent; later connects are refused', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm);
    const client = await RawClient.open(s.url, s.token);
    await client.next(isType(MessageType.OutputStreamData));
    await ssm.send(new TerminateSessionCommand({ SessionId: s.sessionId }));
    const closed = await client.next(isType(MessageType.ChannelClosed));
    const payload = decodeChannelClosed(closed.payload);
    t.is(payload.sessionId, s.sessionId);
    t.is(payload.output, 'Session terminated by TerminateSession');
    await client.closed;
    t.true((agents[0] as FakeAgent).calls.some((c) => c.startsWith('close:')));
    const again = await RawClient.open(s.url, s.token);
    const refused = await again.closed;
    t.is(refused.code, 1008);
    t.is(refused.reason, 'Session is already terminated');
    t.is(emulator.session(s.sessionId).state, 'terminated');
  });
});

test('idle timeout ends the session with channel_closed; WebSocket pings do not count as activity', async (t) => {
  await withEmulator({ idleTimeoutMs: 500 }, async ({ emulator, ssm }) => {
    const ended = waitFor(emulator, 'sessionTerminated', undefined, 5000);
    const s = await startLocalSession(ssm);
    const client = await RawClient.open(s.url, s.token);
    await client.next(isType(MessageType.OutputStreamData));
    const pinger = setInterval(() => client.ws.ping('keepalive'), 50);
    const started = Date.now();
    const [, reason] = await ended;
    clearInterval(pinger);
    t.is(reason, 'idleTimeout');
    t.true(Date.now() - started < 2000);
    const closed = await client.next(isType(MessageType.ChannelClosed));
    t.is(decodeChannelClosed(closed.payload).output, 'Session idle timeout reached');
    t.is(emulator.session(s.sessionId).closeReason, 'idleTimeout');
    const r = await ssm.send(new ResumeSessionCommand({ SessionId: s.sessionId }));
    t.falsy(r.TokenValue);
  });
});

test('data-channel messages reset the idle timer', async (t) => {
  await withEmulator({ idleTimeoutMs: 600 }, async ({ emulator, ssm, agents }) => {
    const ended = waitFor(emulator, 'sessionTerminated', undefined, 5000);
    const s = await startLocalSession(ssm);
    const client = await RawClient.open(s.url, s.token);
    await client.next(isType(MessageType.OutputStreamData));
    let seq = 0;
    const agent = agents[0] as FakeAgent;
    const done = new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        client.sendInput(seq++, Buffer.from('x'));
        if (seq === 12) {
          clearInterval(timer);
          resolve();
        }
      }, 100);
    });
    await done;
    t.is(emulator.session(s.sessionId).state, 'connected', 'still alive after 1.2 s of traffic');
    t.true(agent.received.length >= 11);
    const [, reason] = await ended;
    t.is(reason, 'idleTimeout');
  });
});

test('maximum duration ends the session even with traffic', async (t) => {
  await withEmulator({ maxDurationMs: 800 }, async ({ emulator, ssm }) => {
    const ended = waitFor(emulator, 'sessionTerminated', undefined, 5000);
    const s = await startLocalSession(ssm);
    const client = await RawClient.open(s.url, s.token);
    const [, reason] = await ended;
    t.is(reason, 'maxDuration');
    const closed = await client.next(isType(MessageType.ChannelClosed));
    t.is(decodeChannelClosed(closed.payload).output, 'Session maximum duration reached');
  });
});

test("agent 'failed' and 'terminateRequested' end the session with channel_closed", async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const a = await startLocalSession(ssm);
    const ca = await RawClient.open(a.url, a.token);
    await ca.next(isType(MessageType.OutputStreamData));
    (agents[0] as FakeAgent).emit('failed', 'handshake timeout');
    const closedA = await ca.next(isType(MessageType.ChannelClosed));
    t.is(decodeChannelClosed(closedA.payload).output, 'Session failed on the agent: handshake timeout');
    t.is(emulator.session(a.sessionId).closeReason, 'agentFailed');

    const b = await startLocalSession(ssm);
    const cb = await RawClient.open(b.url, b.token);
    await cb.next(isType(MessageType.OutputStreamData));
    (agents[1] as FakeAgent).emit('terminateRequested');
    await cb.next(isType(MessageType.ChannelClosed));
    t.is(emulator.session(b.sessionId).closeReason, 'agentTerminated');
  });
});

test('handshakeComplete from the agent is re-emitted with the mode', async (t) => {
  await withEmulator({}, async ({ emulator, ssm, agents }) => {
    const s = await startLocalSession(ssm);
    await RawClient.open(s.url, s.token);
    await waitFor(emulator, 'clientConnected');
    const seen = waitFor(emulator, 'handshakeComplete', (id) => id === s.sessionId);
    (agents[0] as FakeAgent).emit('handshakeComplete', { mode: 'mux', clientVersion: '1.2.694.0' });
    const [, mode] = await seen;
    t.is(mode, 'mux');
    t.is(emulator.session(s.sessionId).mode, 'mux');
  });
});

test('close() ends every session with channel_closed and closes client sockets', async (t) => {
  const agents: FakeAgent[] = [];
  const emulator = await startEmulator({ agentFactory: fakeAgentFactory(agents) });
  const ssm = ssmFor(emulator);
  const s = await startLocalSession(ssm);
  const client = await RawClient.open(s.url, s.token);
  await client.next(isType(MessageType.OutputStreamData));
  ssm.destroy();
  await emulator.close();
  await client.closed;
  t.true(client.messages.some((m) => m.messageType === MessageType.ChannelClosed));
  t.is(emulator.session(s.sessionId).closeReason, 'emulatorClosed');
});
