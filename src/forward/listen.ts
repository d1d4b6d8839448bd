/**
 * Binding a front end's listener (forward.ts, socks/server.ts): one place that turns the bind errors users
 * meet into a `PF_ERR_LISTEN` line naming the address and the fix.
 */
import type net from 'node:net';
import type { Socket } from 'node:net';
import { TunnelError } from '../errors.js';

/**
 * The address a listener keeps across a reload, or undefined for an ephemeral port (0), which no successor
 * can ask for: a forward or SOCKS entry replaced by one with the same key takes the old listener over
 * (`src/daemon.ts`, `src/socks/daemon-part.ts`), so the port never refuses a connection during the reload.
 */
export function listenerKey(entry: { bind: string; localPort: number }): string | undefined {
  return entry.localPort === 0 ? undefined : `${entry.bind}|${entry.localPort}`;
}

/** How the user names the port and the bind address of this listener, for the fix in the error line. */
export interface ListenFix {
  /** e.g. `another --local-port`, `another port (-D PORT)`. */
  port: string;
  /** e.g. `--bind`, `bind`. */
  bind: string;
}

/**
 * Listen on `bind:port` (0 = any free port).
 * @throws TunnelError `PF_ERR_LISTEN` naming the address and the fix.
 */
export function listenOn(server: net.Server, port: number, bind: string, fix: ListenFix): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const hint =
        err.code === 'EADDRINUSE'
          ? `another process holds it; choose ${fix.port} or stop that process`
          : err.code === 'EACCES'
            ? 'ports below 1024 need privileges; choose a port >= 1024'
            : err.code === 'EADDRNOTAVAIL'
              ? `that address is not on this machine; check ${fix.bind}`
              : err.message;
      reject(new TunnelError('PF_ERR_LISTEN', `cannot listen on ${bind}:${port}: ${hint}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, bind, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Take a front end's listeners off `server` so the entry that replaces it on reload can adopt it (the
 * listening socket stays open: the port never refuses a connection). Returns `server`.
 */
export function detachListener(
  server: net.Server,
  onConnection: (socket: Socket) => void,
  onError: (err: Error) => void,
): net.Server {
  server.off('connection', onConnection);
  server.off('error', onError);
  return server;
}

/**
 * Stop accepting on `server` now and free its port (a reload about to bind a colliding address); its open
 * connections are the front end's to drain. close() drops the listening handle at once but its callback waits
 * for those connections, so this resolves one turn later instead.
 */
export async function closeListenerNow(
  server: net.Server,
  onConnection: (socket: Socket) => void,
): Promise<void> {
  server.off('connection', onConnection);
  server.close();
  await new Promise<void>((resolve) => setImmediate(resolve));
}
