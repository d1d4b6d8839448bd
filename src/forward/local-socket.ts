/**
 * Write batching for the local (accepted) sockets of a forward (issue 16): the smux stream of a connection
 * pushes one chunk per PSH frame, so one WebSocket read carrying many 1 KiB data messages would otherwise
 * become as many `write` syscalls on the local socket, each of which, on loopback, also runs the reader's
 * side of TCP. Corking the socket on the first chunk of a burst and uncorking it on `process.nextTick` turns
 * the burst into one `writev`; on an idle link a burst is one chunk and goes out in the same tick, so no
 * latency is added.
 */
import type { Socket } from 'node:net';

/**
 * A function to call before each write of a burst to `socket`: the first call of a tick corks the socket and
 * schedules the uncork for `process.nextTick`; later calls in the same tick do nothing. `end()` and
 * `destroy()` while corked are safe (`end()` flushes corked data itself).
 */
export function corkPerTick(socket: Socket): () => void {
  let corked = false;
  const release = (): void => {
    corked = false;
    if (socket.writableCorked > 0) socket.uncork();
  };
  return () => {
    if (corked || socket.destroyed) return;
    corked = true;
    socket.cork();
    process.nextTick(release);
  };
}
