/**
 * When the data-channel pump of a mux session runs (issue 16): at once on an idle link, coalesced under load.
 *
 * Every local socket read is its own libuv callback, so a pump run right after each one (the smux session's
 * `'outgoing'` microtask) sends one data-channel message per read: with 50 connections doing small
 * request/response, one 72-byte smux frame per message, each with its own header, digest, WebSocket write
 * and, coming back, its own ack. The smux byte stream may pack frames of several streams into one message
 * (spec §9.4: message boundaries are unrelated to frame boundaries), so under load the gate holds the pump
 * until the check phase (`setImmediate`) of the current event-loop iteration: by then every socket that was
 * readable in this iteration's poll phase has been read, and their frames leave together in as few 1 KiB
 * messages as they fill.
 *
 * - **Idle** (nothing in flight): the pump runs at once, in the same turn as the read that asked for it (a
 *   ping-pong request pays no hop). The message it sends is then in flight, so a burst coming out of idle
 *   sends its first frame at once and packs the rest.
 * - **Under load** (messages in flight): one deferred run at the check phase, however many reads ask
 *   meanwhile. The wait is bounded by the rest of the iteration's
 *   callbacks, which are exactly the ones whose frames it packs.
 * - **A new stream** ({@link holdForFirstData}): its SYN waits one more poll pass, so a client that writes
 *   at once (most protocols) has its first data read and sent in the SYN's message instead of a second one.
 *   A client that waits for the server (SSH, SMTP) sees its SYN one iteration later; no timer is involved, and
 *   the poll of that pass does not block (an immediate is pending).
 *
 * No timers and no knowledge of smux or the channel: the session injects `busy`, `run` and `defer`.
 */

/** What a {@link PumpGate} needs (docs/architecture.md, Conventions: narrow dependencies). */
export interface PumpGateDeps {
  /** True while the link carries messages not yet acknowledged (the channel's `unacked > 0`). */
  busy: () => boolean;
  /** Run the pump: move whatever the smux session holds into messages, within the window. */
  run: () => void;
  /** Schedule a callback for the check phase of this iteration (`setImmediate`; injectable for tests). */
  defer: (callback: () => void) => void;
}

/** Decides, per request, between running the pump at once and one coalesced run later (module comment). */
export class PumpGate {
  /** A deferred run is scheduled. */
  private deferred = false;
  /** Passes still to wait for a new stream's first data (0, 1 or 2 check phases). */
  private holdPasses = 0;
  /** Pump runs made at once (idle link). */
  immediateRuns = 0;
  /** Pump runs deferred to the check phase (load, or a new stream's hold). */
  deferredRuns = 0;

  constructor(private readonly deps: PumpGateDeps) {}

  /** The smux session has bytes to send: run the pump now or once later (module comment). */
  request(): void {
    if (this.deferred) return;
    // A run that sent something leaves it in flight, so later requests of the same iteration are coalesced.
    if (this.holdPasses === 0 && !this.deps.busy()) {
      this.immediateRuns++;
      this.deps.run();
      return;
    }
    this.schedule();
  }

  /**
   * A stream was just opened (its SYN is queued): hold the pump one poll pass so the client's first bytes,
   * if it wrote at once, leave in the same message as the SYN.
   */
  holdForFirstData(): void {
    if (this.holdPasses > 0) return;
    // Two check phases: the first ends this iteration, the second comes after the next poll phase, in which
    // the new socket (read started in this iteration) is read.
    this.holdPasses = 2;
    this.schedule();
  }

  private schedule(): void {
    if (this.deferred) return;
    this.deferred = true;
    this.deps.defer(this.deferredRun);
  }

  private readonly deferredRun = (): void => {
    this.deferred = false;
    if (this.holdPasses > 0 && --this.holdPasses > 0) {
      this.schedule();
      return;
    }
    this.deferredRuns++;
    this.deps.run();
  };
}
