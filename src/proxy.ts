/**
 * Outbound proxy support for both connections pf-daemon makes: the SSM API (HTTPS) and the data-channel
 * WebSocket (wss://). The official plugin ignores proxies for the WebSocket (spec §11 #14); we honour the
 * usual variables: `HTTPS_PROXY`/`https_proxy` for https and wss, `HTTP_PROXY`/`http_proxy` for http and
 * ws, `ALL_PROXY`, and `NO_PROXY` exclusions (matching by `proxy-from-env`). Tunnelling is HTTP CONNECT
 * (`https-proxy-agent`), so TLS stays end to end.
 */
import type { Agent } from 'node:http';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { getProxyForUrl } from 'proxy-from-env';

/** WebSocket schemes resolve like the HTTP scheme they upgrade from. */
const SCHEME_FOR_PROXY: Record<string, string> = { 'wss:': 'https:', 'ws:': 'http:' };

/** The proxy URL to use for `target`, or undefined for a direct connection. */
export function proxyUrlFor(target: string): string | undefined {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return undefined;
  }
  const scheme = SCHEME_FOR_PROXY[url.protocol];
  if (scheme) {
    // Keep the port explicit: changing the scheme would otherwise change the default port NO_PROXY sees.
    const port = url.port || (url.protocol === 'wss:' ? '443' : '80');
    url = new URL(
      `${scheme}//${url.hostname.includes(':') ? `[${url.hostname}]` : url.hostname}:${port}${url.pathname}`,
    );
  }
  const proxy = getProxyForUrl(url);
  return proxy === '' ? undefined : proxy;
}

/**
 * An agent that tunnels through the configured proxy for `target`, or undefined for a direct connection.
 * `signal`, when given, destroys the agent's socket to the proxy on abort: a CONNECT the proxy never
 * answers would otherwise keep that socket open after the request gave up (it is handed to the request
 * only once CONNECT succeeded). Give a per-dial signal only to single-use agents.
 */
export function proxyAgentFor(target: string, signal?: AbortSignal): Agent | undefined {
  const proxy = proxyUrlFor(target);
  if (proxy === undefined) return undefined;
  return signal === undefined ? new HttpsProxyAgent(proxy) : new HttpsProxyAgent(proxy, { signal });
}

/** Proxy URL with credentials removed, for logs. */
export function describeProxy(proxy: string): string {
  try {
    const url = new URL(proxy);
    return `${url.protocol}//${url.host}`;
  } catch {
    return '<invalid proxy url>';
  }
}
