/**
 * `Carrier.opened()` (src/forward/keeper.ts, `TunnelSession.whenStreamOpened` in src/forward/session.ts): it
 * resolves only once the agent has consumed the message carrying the stream's smux SYN (spec §6.4, §9.4), which
 * is what lets the SOCKS front end confirm a first connection without a fixed wait. Driven through the emulator
 * at the real agent's pace with a 300 ms post-handshake not-ready window, in which the agent neither acks nor
 * consumes; ordering is checked with the emulated agent's own events, not with wall-clock bounds.
 */
import test from 'ava';
import type { Duplex } from 'node:stream';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import type { EmulatedAgent } from '../../src/emulator/agent.js';
import { isPfError } from '../../src/errors.js';
import { SessionKeeper } from '../../src/forward/keeper.js';
import { silentLogger } from '../../src/log.js';
import { refusingPort, startEchoServer } from '../helpers/net.js';
import { emulatorSsm, forwardConfig, tuningWith, withTimeout } from './fixtures.js';

/** The agent's post-handshake window used here, ms: long enough that every SYN is sent inside it. */
const NOT_READY_WINDOW_MS = 300;

function keeperFor(emulator: Emulator, remotePort: number): SessionKeeper {
  return new SessionKeeper(forwardConfig({ remotePort }), tuningWith(), {
    ssm: emulatorSsm(emulator),
    logger: silentLogger,
    userAgent: 'pf-daemon-test',
  });
}

/** The one live session's emulated agent. */
function agentOf(emulator: Emulator): EmulatedAgent {
  const sessions = [...emulator.sessions.values()];
  const agent = sessions[0]?.agent;
  if (sessions.length !== 1 || agent === undefined) throw new Error('expected one session with an agent');
  return agent;
}

const sidOf = (stream: Duplex): number => (stream as Duplex & { id: number }).id;

/**
 * Runs `body` against a keeper whose sessions go to an emulator with the not-ready window above, forwarding to
 * `destination` (an echo server started here, or a given port); everything is stopped afterwards.
 */
async function withKeeper(
  destination: 'echo' | number,
  body: (keeper: SessionKeeper, emulator: Emulator) => Promise<void>,
): Promise<void> {
  const echo = destination === 'echo' ? await startEchoServer() : undefined;
  const emulator = await startEmulator({ notReadyWindowMs: NOT_READY_WINDOW_MS });
  const keeper = keeperFor(emulator, echo?.port ?? (destination as number));
  try {
    await body(keeper, emulator);
  } finally {
    await keeper.stop(0);
    await emulator.close();
    await echo?.close();
  }
}

test.serial(
  'mux: opened() resolves only after the agent consumed the SYN, which it holds back during its not-ready window',
  async (t) => {
    t.timeout(60_000);
    await withKeeper('echo', async (keeper, emulator) => {
      const carrier = await withTimeout(keeper.acquire(), 20_000, 'the carrier');
      t.is(carrier.session.mode, 'mux');
      const agent = agentOf(emulator);
      const events: string[] = [];
      agent.on('streamOpened', (sid: number) => events.push(`agent consumed SYN ${sid}`));
      t.is(
        agent.stats.streamsOpened,
        0,
        'handed out inside the not-ready window: the SYN is not consumed yet',
      );
      const sid = sidOf(carrier.stream);
      const opened = carrier.opened();
      t.is(carrier.opened(), opened, 'one promise per carrier');
      await withTimeout(opened, 10_000, 'opened()');
      events.push('opened');
      t.deepEqual(events, [`agent consumed SYN ${sid}`, 'opened']);
      t.false(carrier.takeDestinationRefusal());
      carrier.stream.destroy();
    });
  },
);

test.serial(
  'mux: a SYN queued behind a full send window (1 MiB upload inside the not-ready window) is opened only after the agent consumed it, not when what was sent before it is acked',
  async (t) => {
    t.timeout(60_000);
    await withKeeper('echo', async (keeper, emulator) => {
      const bulk = await withTimeout(keeper.acquire(), 20_000, 'the bulk carrier');
      const agent = agentOf(emulator);
      const events: string[] = [];
      agent.on('streamOpened', (sid: number) => events.push(`agent consumed SYN ${sid}`));
      // 1 MiB fills the 256-message window while the agent takes nothing; the echo is read and dropped.
      bulk.stream.resume();
      bulk.stream.write(Buffer.alloc(1024 * 1024, 0x61));
      const late = await withTimeout(keeper.acquire(), 20_000, 'the second carrier');
      t.is(late.session, bulk.session, 'one session');
      t.is(agent.stats.streamsOpened, 0);
      const bulkOpened = bulk.opened().then(() => events.push(`opened ${sidOf(bulk.stream)}`));
      const lateOpened = late.opened().then(() => events.push(`opened ${sidOf(late.stream)}`));
      await withTimeout(Promise.all([bulkOpened, lateOpened]), 30_000, 'both opened()');
      const [first, second] = [sidOf(bulk.stream), sidOf(late.stream)];
      t.true(
        events.indexOf(`agent consumed SYN ${second}`) >= 0 &&
          events.indexOf(`agent consumed SYN ${second}`) < events.indexOf(`opened ${second}`),
        `the late SYN is consumed before its carrier opens: ${events.join(', ')}`,
      );
      t.true(
        events.indexOf(`agent consumed SYN ${first}`) < events.indexOf(`opened ${first}`),
        events.join(', '),
      );
      bulk.stream.destroy();
      late.stream.destroy();
    });
  },
);

test.serial(
  'mux: opened() of a refused destination resolves once the agent took the SYN, and the refusal follows; a stream closed first rejects with PF_ERR_STREAM_RESET',
  async (t) => {
    t.timeout(60_000);
    await withKeeper(await refusingPort(), async (keeper, emulator) => {
      const carrier = await withTimeout(keeper.acquire(), 20_000, 'the carrier');
      const agent = agentOf(emulator);
      const events: string[] = [];
      agent.on('streamOpened', () => events.push('agent consumed SYN'));
      const ended = new Promise<void>((resolve) => carrier.stream.once('end', resolve));
      carrier.stream.resume();
      await withTimeout(
        carrier.opened().then(() => events.push('opened')),
        10_000,
        'opened()',
      );
      t.deepEqual(events, ['agent consumed SYN', 'opened']);
      await withTimeout(ended, 10_000, 'the FIN of the refused dial');
      t.true(carrier.takeDestinationRefusal(), 'ConnectToPortError paired with the FIN');

      const gone = await withTimeout(keeper.acquire(), 20_000, 'the second carrier');
      gone.stream.destroy();
      const error = await t.throwsAsync(gone.opened());
      t.true(isPfError(error, 'PF_ERR_STREAM_RESET'), String(error));
    });
  },
);
