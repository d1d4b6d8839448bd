/**
 * Write batching for the local (accepted) sockets of a forward (issue 16): the smux stream of a connection
 * pushes one chunk per PSH frame, so one WebSocket read carrying many 1 KiB data messages would otherwise
 * become as many `write` syscalls on the local socket, each of which, on loopback, also runs the reader's
 * side of TCP. The first chunk of a tick is written at once (an idle link, e.g. one reply of a
 * request/response exchange, pays nothing extra); a second chunk for the same socket in the same tick corks
 * it, and the rest of the burst leaves as one `writev` on `process.nextTick`.
 */
import type { Socket } from 'node:net';

/** Identity of the current tick: advanced by one shared `process.nextTick`, not one per socket. */
let tickEpoch = 0;
let epochAdvanceScheduled = false;

function advanceEpoch(): void {
  tickEpoch++;
  epochAdvanceScheduled = false;
}

function currentEpoch(): number {
  if (!epochAdvanceScheduled) {
    epochAdvanceScheduled = true;
    process.nextTick(advanceEpoch);
  }
  return tickEpoch;
}

/**
 * A function to call before each write to `socket`: the first call of a tick does nothing (the write goes
 * out at once), the second corks the socket and schedules the uncork for `process.nextTick`, later calls in
 * the same tick do nothing. `end()` and `destroy()` while corked are safe (`end()` flushes corked data).
 */
export function corkPerTick(socket: Socket): () => void {
  let lastEpoch = -1;
  let corked = false;
  const release = (): void => {
    corked = false;
    if (socket.writableCorked > 0) socket.uncork();
  };
  return () => {
    const epoch = currentEpoch();
    if (epoch !== lastEpoch) {
      lastEpoch = epoch;
      return;
    }
    if (corked || socket.destroyed) return;
    corked = true;
    socket.cork();
    process.nextTick(release);
  };
}
