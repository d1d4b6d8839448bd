/**
 * The client side of the control socket (`pf-daemon status`): one request, one reply line, errors as one
 * line naming the fix. Wire format: `src/control/server.ts`.
 */
import net from 'node:net';
import { ControlError } from '../errors.js';
import type { DaemonStats } from '../stats.js';
import { STATUS_REQUEST } from './server.js';
import type { ControlReply } from './server.js';

/** Longest wait for the daemon's reply, ms (our bound; the daemon answers from memory). */
export const STATUS_TIMEOUT_MS = 5_000;
/** Longest reply accepted, bytes (our bound; a daemon with 100 forwards answers in ~200 KiB). */
export const STATUS_REPLY_MAX_BYTES = 16 * 1024 * 1024;

/** The one line printed when no daemon answers on any of `paths`. */
export function noDaemonMessage(paths: readonly string[]): string {
  const where = paths.length === 1 ? paths[0] : `any of ${paths.join(', ')}`;
  return `no pf-daemon is running (nothing answers on ${where}): start one (pf-daemon --config FILE, or systemctl --user start pf-daemon), or pass --control-socket PATH`;
}

/** Whether a connect error means "nobody is there" (as opposed to a real failure). */
function isAbsent(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTDIR';
}

/**
 * Ask the daemon at `socketPath` for its stats tree.
 * @throws ControlError `PF_ERR_CONTROL_SOCKET` (no daemon, no permission, timeout, bad reply) or
 *   `PF_ERR_CONTROL_REQUEST` (the daemon refused the request).
 */
export function requestStatus(socketPath: string, timeoutMs = STATUS_TIMEOUT_MS): Promise<DaemonStats> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const chunks: Buffer[] = [];
    let length = 0;
    const fail = (err: ControlError): void => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () =>
      fail(
        new ControlError(
          'PF_ERR_CONTROL_SOCKET',
          `the daemon on ${socketPath} did not answer within ${timeoutMs} ms`,
        ),
      ),
    );
    socket.once('connect', () => socket.end(`${JSON.stringify({ request: STATUS_REQUEST })}\n`));
    socket.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length > STATUS_REPLY_MAX_BYTES) {
        fail(
          new ControlError(
            'PF_ERR_CONTROL_SOCKET',
            `the reply on ${socketPath} is larger than ${STATUS_REPLY_MAX_BYTES} bytes`,
          ),
        );
        return;
      }
      chunks.push(chunk);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (isAbsent(err)) {
        fail(new ControlError('PF_ERR_CONTROL_SOCKET', noDaemonMessage([socketPath]), { cause: err }));
      } else if (err.code === 'EACCES' || err.code === 'EPERM') {
        fail(
          new ControlError(
            'PF_ERR_CONTROL_SOCKET',
            `permission denied on ${socketPath}: the daemon runs as another user; run status as that user`,
            { cause: err },
          ),
        );
      } else {
        fail(
          new ControlError('PF_ERR_CONTROL_SOCKET', `control socket ${socketPath}: ${err.message}`, {
            cause: err,
          }),
        );
      }
    });
    socket.once('end', () => {
      socket.setTimeout(0);
      const text = Buffer.concat(chunks, length).toString('utf8').trim();
      let reply: ControlReply;
      try {
        reply = JSON.parse(text) as ControlReply;
      } catch {
        reject(
          new ControlError(
            'PF_ERR_CONTROL_SOCKET',
            `the reply on ${socketPath} is not JSON; is it a pf-daemon socket?`,
          ),
        );
        return;
      }
      if (reply.ok) resolve(reply.status);
      else reject(new ControlError('PF_ERR_CONTROL_REQUEST', `the daemon refused: ${reply.error.message}`));
    });
  });
}

/**
 * Ask the first of `paths` that has a daemon. Paths where nobody answers are skipped; any other error
 * (permission, timeout) is thrown at once.
 */
export async function requestStatusAny(
  paths: readonly string[],
  timeoutMs = STATUS_TIMEOUT_MS,
): Promise<DaemonStats> {
  for (const socketPath of paths) {
    try {
      return await requestStatus(socketPath, timeoutMs);
    } catch (err) {
      const cause =
        err instanceof ControlError ? (err.cause as NodeJS.ErrnoException | undefined) : undefined;
      if (cause && isAbsent(cause)) continue;
      throw err;
    }
  }
  throw new ControlError('PF_ERR_CONTROL_SOCKET', noDaemonMessage(paths));
}
