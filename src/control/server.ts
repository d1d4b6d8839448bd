/**
 * The control socket server: a unix socket that answers `pf-daemon status` with the stats tree.
 *
 * Wire format (documented in `docs/status.md`): the client writes one line of JSON,
 * `{"request":"status"}\n`, at most {@link CONTROL_REQUEST_MAX_BYTES} bytes; the server writes one line,
 * `{"ok":true,"status":<DaemonStats>}\n` or `{"ok":false,"error":{"code":"PF_ERR_…","message":"…"}}\n`,
 * and closes. Nothing else is accepted: every other input gets an error line and the connection is
 * closed; nothing a client sends can throw out of this module. Who may connect is decided by the file
 * system (`src/control/paths.ts`).
 */
import net from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ControlError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DaemonStats } from '../stats.js';
import { CONTROL_SOCKET_MODE, preparePrivateDir } from './paths.js';

/** Longest request accepted, bytes, newline included (our bound; a status request is ~21 bytes). */
export const CONTROL_REQUEST_MAX_BYTES = 1024;
/** A connection that sends no complete request within this time gets an error and is closed, ms. */
export const CONTROL_REQUEST_TIMEOUT_MS = 5_000;
/** Connections served at once; more are refused by the kernel backlog/Node (our bound). */
export const CONTROL_MAX_CONNECTIONS = 32;
/** The one request the socket understands. */
export const STATUS_REQUEST = 'status';

/** A reply line, as sent. */
export type ControlReply =
  { ok: true; status: DaemonStats } | { ok: false; error: { code: string; message: string } };

/** What the server needs. */
export interface ControlServerOptions {
  /** Socket path; its directory is created 0700 if missing and must be private. */
  path: string;
  /** The stats tree, read once per request. */
  stats: () => DaemonStats;
  logger: Logger;
}

/**
 * Decide the reply to one request line (bytes before the newline). Pure, so the fuzz test can drive it
 * directly as well as through the socket.
 */
export function answerRequest(line: string, stats: () => DaemonStats): ControlReply {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    return refusal('the request is not JSON; send {"request":"status"}');
  }
  if (
    request === null ||
    typeof request !== 'object' ||
    Array.isArray(request) ||
    !('request' in request) ||
    Object.keys(request).length !== 1
  ) {
    return refusal('the request must be {"request":"status"}');
  }
  if (request.request !== STATUS_REQUEST) {
    return refusal(
      `unknown request ${JSON.stringify(request.request).slice(0, 40)}; only "status" is served`,
    );
  }
  return { ok: true, status: stats() };
}

function refusal(message: string): ControlReply {
  return { ok: false, error: { code: 'PF_ERR_CONTROL_REQUEST', message } };
}

/** Whether something answers on a unix socket path (a running daemon). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** A running control socket. */
export class ControlServer {
  private readonly server: net.Server;
  private readonly open = new Set<net.Socket>();
  private socketIno = -1;

  private constructor(
    private readonly options: ControlServerOptions,
    private readonly log: Logger,
  ) {
    this.server = net.createServer((socket) => this.serve(socket));
    this.server.maxConnections = CONTROL_MAX_CONNECTIONS;
    this.server.on('error', (err) => this.log.warn(`control socket error: ${err.message}`));
  }

  /** The socket path. */
  get path(): string {
    return this.options.path;
  }

  /**
   * Prepare the directory, clear a stale socket and listen.
   * @throws ControlError `PF_ERR_CONTROL_SOCKET` when another daemon answers on the path, the path holds
   *   something else, or the directory is not private.
   */
  static async start(options: ControlServerOptions): Promise<ControlServer> {
    const socketPath = options.path;
    await preparePrivateDir(path.dirname(socketPath));
    const existing = await lstat(socketPath).catch(() => undefined);
    if (existing) {
      if (!existing.isSocket()) {
        throw new ControlError(
          'PF_ERR_CONTROL_SOCKET',
          `${socketPath} exists and is not a socket; remove it or pass --control-socket PATH`,
        );
      }
      if (await answers(socketPath)) {
        throw new ControlError(
          'PF_ERR_CONTROL_SOCKET',
          `another pf-daemon already answers on ${socketPath}; stop it, or give this one --control-socket PATH`,
        );
      }
      // Left by a daemon that was killed: nobody listens on it any more.
      await unlink(socketPath);
    }
    const control = new ControlServer(options, options.logger);
    await new Promise<void>((resolve, reject) => {
      control.server.once('error', reject);
      control.server.listen(socketPath, () => {
        control.server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      throw new ControlError(
        'PF_ERR_CONTROL_SOCKET',
        `cannot listen on ${socketPath}: ${describeError(err)}; pass --control-socket PATH`,
        { cause: err },
      );
    });
    // The directory is already private, so the moment between listen() and chmod() exposes nothing.
    await chmod(socketPath, CONTROL_SOCKET_MODE);
    control.socketIno = (await lstat(socketPath)).ino;
    control.log.debug(`control socket listening on ${socketPath}`);
    return control;
  }

  private serve(socket: net.Socket): void {
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    socket.on('error', (err) => this.log.debug(`control connection: ${err.message}`));
    socket.setTimeout(CONTROL_REQUEST_TIMEOUT_MS, () =>
      this.reply(socket, refusal(`no request within ${CONTROL_REQUEST_TIMEOUT_MS} ms`)),
    );
    const chunks: Buffer[] = [];
    let length = 0;
    let done = false;
    socket.on('data', (chunk: Buffer) => {
      if (done) return;
      const newline = chunk.indexOf(0x0a);
      const take = newline < 0 ? chunk.length : newline;
      if (length + take + (newline < 0 ? 0 : 1) > CONTROL_REQUEST_MAX_BYTES) {
        done = true;
        this.reply(socket, refusal(`the request is longer than ${CONTROL_REQUEST_MAX_BYTES} bytes`));
        return;
      }
      chunks.push(chunk.subarray(0, take));
      length += take;
      if (newline < 0) return;
      done = true;
      const line = Buffer.concat(chunks, length).toString('utf8');
      let answer: ControlReply;
      try {
        answer = answerRequest(line, this.options.stats);
      } catch (err) {
        this.log.warn(`control request failed: ${describeError(err)}`);
        answer = {
          ok: false,
          error: { code: 'PF_ERR_CONTROL_SOCKET', message: 'the daemon failed to answer' },
        };
      }
      this.reply(socket, answer);
    });
    socket.once('end', () => {
      if (done) return;
      done = true;
      this.reply(socket, refusal('the request must end with a newline'));
    });
  }

  private reply(socket: net.Socket, answer: ControlReply): void {
    socket.setTimeout(0);
    // Nothing more is read: a client that keeps writing cannot grow our buffers.
    socket.removeAllListeners('data');
    socket.resume();
    if (socket.writable) socket.end(`${JSON.stringify(answer)}\n`);
    else socket.destroy();
  }

  /** Stop listening, drop open connections and remove the socket file (if it is still ours). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.open) socket.destroy();
    await closed;
    const now = await lstat(this.options.path).catch(() => undefined);
    if (now && now.ino === this.socketIno) await unlink(this.options.path).catch(() => undefined);
  }
}
