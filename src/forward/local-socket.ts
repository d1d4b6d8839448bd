/**
 * Write batching for the local (accepted) sockets of a forward (issue 16): the smux stream of a connection
 * pushes one chunk per PSH frame, so one WebSocket read carrying many 1 KiB data messages would otherwise
 * become as many `write` syscalls on the local socket, each of which, on loopback, also runs the reader's
 * side of TCP. The first chunk of a tick is written at once (an idle link, e.g. one reply of a
 * request/response exchange, pays nothing extra); a second chunk for the same socket in the same tick corks
 * it, and the rest of the burst leaves as one `writev` on `process.nextTick`.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { currentTickEpoch } from '../transport/tick.js';

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
    const epoch = currentTickEpoch();
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

/**
 * The local side sent EOF. smux v1 has no half-close (spec §9.4), and basic mode's DisconnectToPort closes
 * the destination too: our FIN makes the agent close the destination completely, losing a reply it has not
 * sent yet. So the FIN waits until the remote ends the stream, or `lingerMs` pass without a byte from the
 * remote (each chunk restarts the wait); 0 = FIN at once. Used by both front ends (forward.ts, socks/server.ts).
 */
export function lingerHalfClose(stream: Duplex, lingerMs: number): void {
  if (lingerMs <= 0 || stream.readableEnded || stream.destroyed) {
    stream.end();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const finish = (): void => {
    clearTimeout(timer);
    stream.off('data', restart);
    stream.off('end', finish);
    stream.off('close', finish);
    if (!stream.destroyed && !stream.writableEnded) stream.end();
  };
  const restart = (): void => {
    clearTimeout(timer);
    timer = setTimeout(finish, lingerMs);
  };
  stream.on('data', restart);
  stream.once('end', finish);
  stream.once('close', finish);
  restart();
}

/**
 * The remote ended the stream: the destination is closed completely (v1 has no half-close, spec §9.4), so
 * nothing will ever read what the local client still sends. pipe() has ended the local socket's write side;
 * once that has flushed what the agent sent, destroy the socket, so a client still uploading gets an error
 * instead of blocking on a socket nobody reads, and the keeper's idle stop is no longer held up by it. Until
 * then the client's bytes are read and dropped: they keep our receive queue short, so the close is a FIN
 * rather than a reset that could cut off the tail of the response still in the kernel.
 */
export function closeAfterFlush(socket: Socket, stream: Duplex): void {
  if (socket.destroyed) return;
  socket.unpipe(stream);
  socket.resume();
  if (!socket.writableEnded) socket.end();
  if (socket.writableFinished) socket.destroy();
  else socket.once('finish', () => socket.destroy());
}
