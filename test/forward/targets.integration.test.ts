/**
 * Targets, documents and the agent's destination rules end to end: a Forward (listener → TunnelSession →
 * data channel) against the emulator, through the real SDK, asserting what the emulator's StartSession
 * received and that bytes arrive intact.
 */
import test from 'ava';
import net from 'node:net';
import type { ForwardConfig } from '../../src/config/types.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import type { TunnelSession } from '../../src/forward/session.js';
import type { Logger } from '../../src/log.js';
import { TargetResolver, targetResolverFactory } from '../../src/targets/resolve.js';
import type { ForwardTargets } from '../../src/targets/resolve.js';
import { echoExchange, refusingPort, startEchoServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import {
  credentials,
  emulatorLookup,
  instance,
  instanceId,
  recordingLogger,
  serviceTask,
  taskId,
} from '../targets/helpers.js';
import { startForwardRig } from './fixtures.js';
import type { ForwardRig } from './fixtures.js';

/** First agent version with the destination denylist. */
const DENYLIST_AGENT = '3.3.4851.0';

interface Rig extends ForwardRig<TestServer> {
  echo: TestServer;
  lines: ReturnType<typeof recordingLogger>['lines'];
  sessions: TunnelSession[];
}

async function rig(
  emulatorOptions: Partial<EmulatorOptions>,
  forward: Partial<ForwardConfig>,
  targets?: (logger: Logger, emulator: Emulator) => ForwardTargets,
): Promise<Rig> {
  const { logger, lines } = recordingLogger();
  const r = await startForwardRig({
    destination: startEchoServer,
    emulator: { agentPacingMs: 0, ...emulatorOptions },
    forward,
    deps: ({ emulator }) => ({ logger, ...(targets ? { targets: targets(logger, emulator) } : {}) }),
  });
  const sessions: TunnelSession[] = [];
  r.forward.on('session', (s: TunnelSession) => sessions.push(s));
  return { ...r, echo: r.destination, lines, sessions };
}

/** The resolver as the CLI wires it (`targetResolverFactory`), pointed at the emulator for SSM and ECS. */
function factoryResolver(pick?: 'any') {
  return (logger: Logger, emulator: Emulator) =>
    targetResolverFactory({ logger, credentials })({
      endpoint: emulator.endpoint,
      ecsEndpoint: emulator.endpoint,
      region: 'us-east-1',
      ...(pick ? { pick } : {}),
    });
}

/** A resolver on an injected clock, as the forward uses it. */
function clockedTargets(now: () => number) {
  return (logger: Logger, emulator: Emulator): ForwardTargets => {
    const resolver = new TargetResolver({ lookup: emulatorLookup(emulator), logger, now });
    return {
      resolve: async (target) => (await resolver.resolve(target)).id,
      forget: (target) => resolver.forget(target),
    };
  };
}

function onlySession(emulator: Emulator) {
  const all = [...emulator.sessions.values()];
  if (all.length !== 1) throw new Error(`expected one emulated session, got ${all.length}`);
  return all[0] as (typeof all)[number];
}

/** Open a connection, send a line, resolve with what came back before the connection closed (or reset). */
function refusedExchange(port: number): Promise<number> {
  return withTimeout(
    new Promise<number>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      let got = 0;
      socket.on('data', (c: Buffer) => (got += c.length));
      socket.on('error', () => undefined);
      socket.on('connect', () => socket.write('GET / HTTP/1.0\r\n\r\n'));
      socket.on('close', () => resolve(got));
    }),
    10_000,
    'refused connection to close',
  );
}

test('--target web-1: the session goes to the instance with that Name tag, bytes intact', async (t) => {
  const r = await rig(
    { inventory: { instances: [instance(1, 'web-1'), instance(2, 'web-2')] } },
    { target: 'web-1' },
    factoryResolver(),
  );
  try {
    const result = await echoExchange(r.port, 256 * 1024);
    t.is(result.receivedSha256, result.sentSha256);
    t.is(onlySession(r.emulator).target, instanceId(1));
    t.is(r.sessions[0]?.resolvedTarget, instanceId(1));
    t.true(
      r.lines.some((l) => l.level === 'info' && l.message === `target web-1 → ${instanceId(1)} (name:web-1)`),
    );
    t.true(r.lines.some((l) => l.message.includes(`started for ${instanceId(1)}:`)));
  } finally {
    await r.close();
  }
});

test('an ECS service target reaches the task container (ecs:<cluster>_<taskId>_<runtimeId>)', async (t) => {
  const r = await rig(
    { inventory: { tasks: [serviceTask('prod', 'api', 1)] } },
    { target: 'ecs:prod/api' },
    factoryResolver(),
  );
  try {
    const result = await echoExchange(r.port, 64 * 1024);
    t.is(result.receivedSha256, result.sentSha256);
    t.is(onlySession(r.emulator).target, `ecs:prod_${taskId(1)}_${taskId(1)}-1000`);
  } finally {
    await r.close();
  }
});

test('several matches fail the connection with the list; pick: any connects to one of them', async (t) => {
  const inventory = { instances: [instance(1, 'web'), instance(2, 'web'), instance(3, 'web')] };
  const strict = await rig({ inventory }, { target: 'name:web' }, factoryResolver());
  try {
    t.is(await refusedExchange(strict.port), 0);
    t.is(strict.emulator.sessions.size, 0, 'no StartSession for an ambiguous target');
    t.true(strict.lines.some((l) => /3 instances match name:web in us-east-1/.test(l.message)));
  } finally {
    await strict.close();
  }
  const any = await rig({ inventory }, { target: 'name:web' }, factoryResolver('any'));
  try {
    const result = await echoExchange(any.port, 1024);
    t.is(result.receivedSha256, result.sentSha256);
    t.true([1, 2, 3].map(instanceId).includes(onlySession(any.emulator).target));
  } finally {
    await any.close();
  }
});

test('the next session after the instance was replaced goes to the new instance', async (t) => {
  let now = 0;
  const r = await rig(
    { inventory: { instances: [instance(1, 'web-1')] } },
    { target: 'web-1', idleStopMs: 50 },
    clockedTargets(() => now),
  );
  try {
    const first = await echoExchange(r.port, 8 * 1024);
    t.is(first.receivedSha256, first.sentSha256);
    await withTimeout(r.sessions[0]?.closed ?? Promise.reject(new Error('no session')), 10_000, 'idle stop');
    // The Auto Scaling group replaced i-…1 by i-…2; the old one lost its agent connection.
    r.emulator.inventory.setPingStatus(instanceId(1), 'ConnectionLost');
    r.emulator.inventory.putInstance(instance(2, 'web-1'));
    now += 60_000;
    const second = await echoExchange(r.port, 8 * 1024);
    t.is(second.receivedSha256, second.sentSha256);
    t.deepEqual(
      [...r.emulator.sessions.values()].map((s) => s.target),
      [instanceId(1), instanceId(2)],
    );
    t.is(r.sessions[1]?.resolvedTarget, instanceId(2));
  } finally {
    await r.close();
  }
});

test('custom documentName and parameters arrive at StartSession as given', async (t) => {
  const r = await rig(
    {
      hostMap: { 'db.internal': '127.0.0.1' },
      documents: { 'Acme-PortForwardToRemoteHost': { base: 'remoteHost', parameters: ['team', 'ticket'] } },
    },
    {
      host: 'db.internal',
      documentName: 'Acme-PortForwardToRemoteHost',
      parameters: { team: 'payments', ticket: 'OPS-42' },
    },
  );
  try {
    const result = await echoExchange(r.port, 64 * 1024);
    t.is(result.receivedSha256, result.sentSha256);
    const session = onlySession(r.emulator);
    t.is(session.document, 'Acme-PortForwardToRemoteHost');
    t.deepEqual(session.parameters, {
      portNumber: [String(r.echo.port)],
      localPortNumber: [String(r.port)],
      host: ['db.internal'],
      team: ['payments'],
      ticket: ['OPS-42'],
    });
  } finally {
    await r.close();
  }
});

for (const host of ['127.0.0.1', '127.1', '::ffff:127.0.0.1']) {
  test(`host ${host} (loopback) uses AWS-StartPortForwardingSession and works on an agent with the denylist`, async (t) => {
    const r = await rig({ agentVersion: DENYLIST_AGENT }, { host });
    try {
      const result = await echoExchange(r.port, 64 * 1024);
      t.is(result.receivedSha256, result.sentSha256);
      const session = onlySession(r.emulator);
      t.is(session.document, 'AWS-StartPortForwardingSession');
      t.deepEqual(session.parameters, {
        portNumber: [String(r.echo.port)],
        localPortNumber: [String(r.port)],
      });
    } finally {
      await r.close();
    }
  });
}

test('a metadata address is refused by a new agent, and the warning names the denylist', async (t) => {
  // The emulator maps the metadata address onto the echo server, so an old agent connects.
  const hostMap = { '169.254.169.254': '127.0.0.1' };
  const denied = await rig(
    { agentVersion: DENYLIST_AGENT, hostMap },
    {
      host: '169.254.169.254',
    },
  );
  try {
    t.is(await refusedExchange(denied.port), 0);
    const warning = denied.lines.find(
      (l) => l.level === 'warn' && l.message.startsWith('the agent could not connect'),
    );
    t.truthy(warning);
    t.regex(
      warning?.message ?? '',
      /169\.254\.169\.254:\d+: SSM Agent 3\.3\.4851\.0 and later refuse the instance metadata/,
    );
    t.is(denied.echo.connections, 0, 'the agent never dialled');
    t.is(onlySession(denied.emulator).document, 'AWS-StartPortForwardingSessionToRemoteHost');
  } finally {
    await denied.close();
  }
  const old = await rig(
    { agentVersion: '3.3.4850.0', hostMap },
    {
      host: '169.254.169.254',
    },
  );
  try {
    const result = await echoExchange(old.port, 1024);
    t.is(result.receivedSha256, result.sentSha256, 'agents before 3.3.4851.0 have no denylist');
  } finally {
    await old.close();
  }
});

test('an explicit ToRemoteHost document with a loopback host is refused by a new agent (ConnectToPortError)', async (t) => {
  const r = await rig(
    { agentVersion: DENYLIST_AGENT },
    {
      host: '0x7f.1',
      documentName: 'AWS-StartPortForwardingSessionToRemoteHost',
    },
  );
  try {
    t.is(await refusedExchange(r.port), 0);
    t.deepEqual(onlySession(r.emulator).parameters['host'], ['0x7f.1']);
    t.true(
      r.lines.some(
        (l) =>
          l.level === 'warn' &&
          /0x7f\.1:\d+: SSM Agent 3\.3\.4851\.0 and later refuse loopback/.test(l.message),
      ),
    );
    t.is(r.echo.connections, 0);
  } finally {
    await r.close();
  }
});

test('replaced within the cache time: StartSession says TargetNotConnected, the next connection finds the new instance', async (t) => {
  const r = await rig(
    { inventory: { instances: [instance(1, 'web-1')] } },
    { target: 'web-1', idleStopMs: 50 },
    clockedTargets(() => 0),
  );
  try {
    const first = await echoExchange(r.port, 8 * 1024);
    t.is(first.receivedSha256, first.sentSha256);
    await withTimeout(r.sessions[0]?.closed ?? Promise.reject(new Error('no session')), 10_000, 'idle stop');
    r.emulator.inventory.setPingStatus(instanceId(1), 'ConnectionLost');
    r.emulator.inventory.putInstance(instance(2, 'web-1'));
    // The clock stands still: the cached i-…1 is used, and refused.
    t.is(await refusedExchange(r.port), 0);
    t.true(r.lines.some((l) => /not connected to SSM/.test(l.message)));
    const second = await echoExchange(r.port, 8 * 1024);
    t.is(second.receivedSha256, second.sentSha256);
    t.deepEqual(
      [...r.emulator.sessions.values()].map((s) => s.target),
      [instanceId(1), instanceId(2)],
    );
  } finally {
    await r.close();
  }
});

test('a loopback host with nothing listening: the warning blames the port, not the denylist', async (t) => {
  const closedPort = await refusingPort();
  const r = await rig(
    { agentVersion: DENYLIST_AGENT },
    {
      remotePort: closedPort,
      host: '127.0.0.1',
    },
  );
  try {
    t.is(await refusedExchange(r.port), 0);
    const warning = r.lines.find(
      (l) => l.level === 'warn' && l.message.startsWith('the agent could not connect'),
    );
    t.is(
      warning?.message,
      `the agent could not connect to 127.0.0.1:${closedPort}: nothing listens on port ${closedPort} on the instance, or a security group, NACL or host firewall blocks it`,
    );
    t.is(onlySession(r.emulator).document, 'AWS-StartPortForwardingSession');
  } finally {
    await r.close();
  }
});
