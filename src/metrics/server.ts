/**
 * The metrics HTTP server (off by default): `GET /metrics` (Prometheus text format), `GET /healthz`
 * (200 while the event loop runs) and `GET /readyz` (200 when every forward listens, else 503 with one
 * reason per line). Anything else is 404 (unknown path) or 405 (not GET/HEAD).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from '../config/verify.js';
import { ControlError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DaemonStats, Readiness } from '../stats.js';
import type { DaemonMetrics } from './registry.js';

/** Longest a request may take to arrive (headers included), ms (our bound; scrapes send no body). */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;
/** Content type of the Prometheus text exposition format 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** What the server needs. */
export interface MetricsServerOptions {
  /** `host:port`, already validated by `src/config/verify.ts`. */
  listen: string;
  metrics: DaemonMetrics;
  stats: () => DaemonStats;
  readiness: () => Readiness;
  logger: Logger;
}

/** Whether `host` is a loopback address (only this machine can reach it). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A running metrics server. */
export class MetricsServer {
  private constructor(private readonly server: http.Server) {}

  /** The bound address (port 0 resolved). */
  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /**
   * Listen on `options.listen`; a non-loopback address gets a warning line.
   * @throws ControlError `PF_ERR_METRICS_LISTEN` naming the address and the fix.
   */
  static async start(options: MetricsServerOptions): Promise<MetricsServer> {
    const where = parseHostPort(options.listen);
    if (!where) {
      throw new ControlError(
        'PF_ERR_METRICS_LISTEN',
        `bad metrics address ${options.listen}; use e.g. 127.0.0.1:9464`,
      );
    }
    const log = options.logger;
    const server = http.createServer((req, res) => {
      handle(options, req, res).catch((err: unknown) => {
        log.warn(`metrics request failed: ${describeError(err)}`);
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('internal error\n');
      });
    });
    server.requestTimeout = METRICS_REQUEST_TIMEOUT_MS;
    server.headersTimeout = METRICS_REQUEST_TIMEOUT_MS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(where.port, where.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      const code = (err as NodeJS.ErrnoException).code;
      const hint =
        code === 'EADDRINUSE'
          ? 'another process holds it; choose another --metrics address'
          : code === 'EADDRNOTAVAIL'
            ? 'that address is not on this machine'
            : describeError(err);
      throw new ControlError('PF_ERR_METRICS_LISTEN', `cannot serve metrics on ${options.listen}: ${hint}`, {
        cause: err,
      });
    });
    server.on('error', (err) => log.warn(`metrics server error: ${err.message}`));
    const bound = server.address() as AddressInfo;
    const shown =
      bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
    if (!isLoopback(where.host)) {
      log.warn(
        `metrics on ${shown} are reachable from other machines (forward names and traffic figures); listen on 127.0.0.1 unless that is intended`,
      );
    }
    log.info(`metrics on http://${shown}/metrics (also /healthz, /readyz)`);
    return new MetricsServer(server);
  }

  /** Stop listening and close idle keep-alive connections. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

async function handle(
  options: MetricsServerOptions,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' });
    res.end('only GET and HEAD\n');
    return;
  }
  switch (path) {
    case '/metrics': {
      const body = await options.metrics.render(options.stats());
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    case '/healthz':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    case '/readyz': {
      const readiness = options.readiness();
      res.writeHead(readiness.ready ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(readiness.ready ? 'ready\n' : `${readiness.reasons.join('\n')}\n`);
      return;
    }
    default:
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found; try /metrics, /healthz or /readyz\n');
  }
}
