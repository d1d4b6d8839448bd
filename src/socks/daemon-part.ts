/**
 * The daemon's SOCKS listeners (src/daemon.ts delegates here, so its own edit stays small): creates one
 * {@link SocksServer} per `socks:` entry, each with a keeper factory that builds a {@link SessionKeeper}
 * per destination (recorded in the session ledger like a forward's sessions), and starts, reloads and
 * stops them with the forwards. Ownership as in the daemon: every server created is in `owned` until its
 * stop finished, so a stop during a reload misses none.
 */
import { isDeepStrictEqual } from 'node:util';
import type { ForwardConfig, SocksConfig, TuningConfig } from '../config/types.js';
import { describeError } from '../errors.js';
import { SessionKeeper } from '../forward/keeper.js';
import { listenerKey } from '../forward/listen.js';
import type { SessionSpec } from '../forward/keeper.js';
import type { TunnelSession } from '../forward/session.js';
import type { Logger, RepeatFilter } from '../log.js';
import type { SpillStore } from '../mux/spill.js';
import type { SsmApi } from '../ssm/types.js';
import { failedSocksStats } from '../stats.js';
import type { SocksStats } from '../stats.js';
import type { ForwardTargets, TargetLocation } from '../targets/resolve.js';
import { SocksServer } from './server.js';

/** What the daemon lends its SOCKS listeners. */
export interface SocksDaemonDeps {
  logger: Logger;
  ssmFor: (where: Pick<ForwardConfig, 'region' | 'profile' | 'endpoint'>) => SsmApi;
  targetsFor?: (where: TargetLocation & Pick<ForwardConfig, 'pick'>) => ForwardTargets;
  userAgent: string;
  spill: SpillStore;
  repeats: RepeatFilter;
  /** Keep a granted session in the ledger until it is settled (the daemon's `record`). */
  record: (
    session: TunnelSession,
    where: Pick<ForwardConfig, 'target' | 'region' | 'profile' | 'endpoint'>,
  ) => void;
}

/** The SOCKS listeners of one daemon. */
export class SocksDaemonPart {
  /** Listening servers by name. */
  private readonly running = new Map<string, SocksServer>();
  /** Every server created and not yet stopped. */
  private readonly owned = new Set<SocksServer>();
  /** Configured entries whose listener could not be opened, with the reason. */
  private readonly notListening = new Map<string, string>();

  constructor(private readonly deps: SocksDaemonDeps) {}

  /** The listening server of `name`, if any (tests, status). */
  server(name: string): SocksServer | undefined {
    return this.running.get(name);
  }

  private create(config: SocksConfig, tuning: TuningConfig): SocksServer {
    const logger = this.deps.logger.child(`socks:${config.name}`, { forward: config.name });
    const ssm = this.deps.ssmFor(config);
    const targets = this.deps.targetsFor?.(config);
    const server = new SocksServer(config, {
      logger,
      repeats: this.deps.repeats,
      keeperFor: (spec: SessionSpec) => {
        const keeper = new SessionKeeper(spec, tuning, {
          ssm,
          logger: logger.child(spec.host ?? `localhost:${spec.remotePort}`),
          userAgent: this.deps.userAgent,
          ...(targets ? { targets } : {}),
          spill: this.deps.spill,
          repeats: this.deps.repeats,
        });
        keeper.on('sessionGranted', (session: TunnelSession) => this.deps.record(session, config));
        return keeper;
      },
    });
    this.owned.add(server);
    return server;
  }

  /**
   * Open every listener (start-up). A listener that cannot open is fatal, as for forwards.
   * @throws TunnelError `PF_ERR_LISTEN`
   */
  async start(entries: readonly SocksConfig[], tuning: TuningConfig): Promise<void> {
    for (const config of entries) {
      const server = this.create(config, tuning);
      try {
        await server.start();
      } catch (err) {
        this.owned.delete(server);
        throw err;
      }
      this.running.set(config.name, server);
    }
  }

  /**
   * Apply a reload: unchanged entries keep running; removed or changed ones stop accepting now (a changed
   * entry that keeps its address hands its listener to its successor; the others free their port) and
   * drain in the returned `drained` promise; added or changed ones start. A listener that fails to
   * start is logged and reported by {@link notReady}.
   */
  async reload(
    entries: readonly SocksConfig[],
    tuning: TuningConfig,
    restartAll: boolean,
  ): Promise<{ drained: Promise<void> }> {
    const wanted = new Map(entries.map((e) => [e.name, e]));
    const toStop: SocksServer[] = [];
    for (const [name, server] of this.running) {
      const next = wanted.get(name);
      if (!next || restartAll || !isDeepStrictEqual(next, server.config)) {
        toStop.push(server);
        this.running.delete(name);
      }
    }
    // A listener whose address a new or changed entry keeps is handed over; the others close first, so an
    // entry may bind a port a removed one held.
    const byAddress = new Map<string, SocksServer>();
    for (const old of toStop) {
      const key = listenerKey(old.config);
      if (key && entries.some((e) => !this.running.has(e.name) && listenerKey(e) === key)) {
        byAddress.set(key, old);
      } else {
        await old.stopAccepting();
      }
    }
    this.notListening.clear();
    for (const config of entries) {
      if (this.running.has(config.name)) continue;
      const key = listenerKey(config);
      const previous = key ? byAddress.get(key) : undefined;
      if (key) byAddress.delete(key);
      const server = this.create(config, tuning);
      try {
        await server.start(previous?.handOverListener());
        this.running.set(config.name, server);
      } catch (err) {
        this.owned.delete(server);
        this.notListening.set(config.name, describeError(err));
        this.deps.logger.error(`reload: socks ${config.name} not started: ${describeError(err)}`);
      }
    }
    // Old listeners nobody took over (their successor failed to start).
    for (const old of byAddress.values()) await old.stopAccepting();
    const drained = Promise.all(toStop.map((server) => this.stopOne(server, tuning.drainGraceMs)));
    return { drained: drained.then(() => undefined) };
  }

  private stopOne(server: SocksServer, graceMs: number): Promise<void> {
    return server.stop(graceMs).then(
      () => {
        this.owned.delete(server);
      },
      (err: unknown) =>
        this.deps.logger.warn(`socks ${server.config.name} did not stop cleanly: ${describeError(err)}`),
    );
  }

  /** Stop every server this daemon made (each once; shared with a reload's drain). */
  async stopAll(graceMs: number): Promise<void> {
    this.running.clear();
    await Promise.all([...this.owned].map((server) => this.stopOne(server, graceMs)));
  }

  /** The stop deadline passed: reset connections and abandon every keeper. */
  abandonAll(): void {
    for (const server of this.owned) server.abandon();
  }

  /** The stats of every configured entry, in config order. */
  stats(entries: readonly SocksConfig[]): SocksStats[] {
    return entries.map(
      (e) =>
        this.running.get(e.name)?.stats ??
        failedSocksStats(e, this.notListening.get(e.name) ?? 'not started'),
    );
  }

  /** One reason per configured entry that is not listening. */
  notReady(entries: readonly SocksConfig[]): string[] {
    return entries
      .filter((e) => !this.running.get(e.name)?.address)
      .map((e) => `socks ${e.name} is not listening: ${this.notListening.get(e.name) ?? 'not started'}`);
  }
}
