/**
 * systemd readiness notifications (sd_notify) that fail softly (docs/architecture.md,
 * Conventions: lifecycle).
 *
 * `$NOTIFY_SOCKET` is a unix *datagram* socket and Node has no unix datagram support without a native
 * addon. Rather than ship one, each notification runs `systemd-notify VAR=VALUE…` (part of systemd, so
 * present wherever `$NOTIFY_SOCKET` is set). Since systemd 246, `systemd-notify` waits until the manager
 * has processed the message (sd_notify_barrier), so a message from this short-lived child is not lost; the
 * units set `NotifyAccess=all` so the child is allowed to send it. Without `$NOTIFY_SOCKET`, or when
 * `systemd-notify` is missing or fails, the notifier logs at debug level and carries on.
 */
import { execFile } from 'node:child_process';
import type { Logger } from './log.js';

/** How long one `systemd-notify` run may take before it is killed, ms (our own bound). */
export const NOTIFY_TIMEOUT_MS = 5_000;
/** Longest STATUS= text sent, characters (keeps `systemctl status` readable). */
export const STATUS_MAX_CHARS = 200;

/** Runs `systemd-notify` with the given `VAR=VALUE` arguments; injectable for tests. */
export type NotifyRunner = (args: readonly string[], env: NodeJS.ProcessEnv) => Promise<void>;

/** Notifications to the service manager. Every method resolves, never rejects. */
export interface SdNotifier {
  /** True when `$NOTIFY_SOCKET` is set and no send has failed yet. */
  readonly enabled: boolean;
  /** `READY=1` (start-up finished, or a reload finished) with an optional `STATUS=`. */
  ready(status?: string): Promise<void>;
  /** `RELOADING=1`: a SIGHUP reload is in progress. */
  reloading(): Promise<void>;
  /** `STOPPING=1`: a graceful stop has begun. */
  stopping(): Promise<void>;
  /** `STATUS=<text>` shown by `systemctl status`. */
  status(text: string): Promise<void>;
}

/** Options for {@link createSdNotify}. */
export interface SdNotifyOptions {
  /** Environment holding `NOTIFY_SOCKET`; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Scoped logger; this module logs under `sd-notify`. */
  logger: Logger;
  /** Replaces the `systemd-notify` child process (tests). */
  run?: NotifyRunner;
}

/** Default runner: `systemd-notify` from `$PATH`, bounded by {@link NOTIFY_TIMEOUT_MS}. */
const runSystemdNotify: NotifyRunner = (args, env) =>
  new Promise((resolve, reject) => {
    execFile('systemd-notify', [...args], { env, timeout: NOTIFY_TIMEOUT_MS }, (err) =>
      err ? reject(err) : resolve(),
    );
  });

function statusArg(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return `STATUS=${line.length > STATUS_MAX_CHARS ? `${line.slice(0, STATUS_MAX_CHARS - 3)}...` : line}`;
}

/**
 * Create a notifier. Messages are sent one after another in call order.
 *
 * @returns a notifier; a no-op one when `$NOTIFY_SOCKET` is unset
 */
export function createSdNotify(options: SdNotifyOptions): SdNotifier {
  const env = options.env ?? process.env;
  const log = options.logger.child('sd-notify');
  const run = options.run ?? runSystemdNotify;
  let enabled = Boolean(env['NOTIFY_SOCKET']);
  if (!enabled) log.debug('NOTIFY_SOCKET not set; not notifying systemd');
  let queue: Promise<void> = Promise.resolve();

  const send = (args: string[]): Promise<void> => {
    queue = queue.then(async () => {
      if (!enabled) return;
      try {
        await run(args, env);
      } catch (err) {
        // Readiness is advisory for us: a unit without Type=notify must keep working.
        enabled = false;
        log.debug('systemd-notify failed; no further notifications', {
          error: err instanceof Error ? err.message : String(err),
        });
      }
    });
    return queue;
  };

  return {
    get enabled() {
      return enabled;
    },
    ready: (status) => send(status === undefined ? ['READY=1'] : ['READY=1', statusArg(status)]),
    reloading: () => send(['RELOADING=1']),
    stopping: () => send(['STOPPING=1']),
    status: (text) => send([statusArg(text)]),
  };
}
