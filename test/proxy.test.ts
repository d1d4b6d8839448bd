/**
 * Proxy support: which proxy applies to which URL, and real traffic through an HTTP CONNECT proxy on
 * 127.0.0.1. Tests mutate process.env, so they run serially (ava runs each file in its own process).
 */
import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { defaultTuning } from '../src/config/types.js';
import { startEmulator } from '../src/emulator/index.js';
import { Forward } from '../src/forward/forward.js';
import { silentLogger } from '../src/log.js';
import { describeProxy, proxyUrlFor } from '../src/proxy.js';
import { createSsmApi } from '../src/ssm/client.js';
import { echoExchange, startEchoServer } from './helpers/net.js';

const PROXY_VARS = [
  'HTTPS_PROXY',
  'https_proxy',
  'HTTP_PROXY',
  'http_proxy',
  'ALL_PROXY',
  'all_proxy',
  'NO_PROXY',
  'no_proxy',
];

function withEnv(vars: Record<string, string>): () => void {
  const saved = new Map(PROXY_VARS.map((k) => [k, process.env[k]]));
  for (const k of PROXY_VARS) delete process.env[k];
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

/** A minimal HTTP CONNECT proxy that records the targets it tunnelled to. */
async function startConnectProxy(): Promise<{
  url: string;
  targets: string[];
  firstLines: string[];
  close(): Promise<void>;
}> {
  const targets: string[] = [];
  const firstLines: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const target = req.url ?? '';
    targets.push(target);
    const [host, port] = target.split(':');
    const upstream = net.connect(Number(port), host ?? '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      // Record the first request line carried by the tunnel (API POST or WebSocket upgrade GET).
      client.once('data', (chunk: Buffer) =>
        firstLines.push(chunk.toString('latin1').split('\r\n')[0] ?? ''),
      );
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://user:pass@127.0.0.1:${port}`,
    targets,
    firstLines,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

test.serial('wss and https use HTTPS_PROXY, ws and http use HTTP_PROXY, NO_PROXY excludes', (t) => {
  const restore = withEnv({
    HTTPS_PROXY: 'http://secure-proxy:3128',
    HTTP_PROXY: 'http://plain-proxy:3128',
    NO_PROXY: 'internal.example,.corp.example',
  });
  try {
    t.is(
      proxyUrlFor('wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s?role=x'),
      'http://secure-proxy:3128',
    );
    t.is(proxyUrlFor('https://ssm.eu-west-1.amazonaws.com'), 'http://secure-proxy:3128');
    t.is(proxyUrlFor('ws://127.0.0.1:4566/v1/data-channel/s'), 'http://plain-proxy:3128');
    t.is(proxyUrlFor('wss://internal.example/x'), undefined);
    t.is(proxyUrlFor('wss://ssm.corp.example/x'), undefined);
    t.is(proxyUrlFor('not a url'), undefined);
  } finally {
    restore();
  }
});

test.serial('no proxy variables means direct connections', (t) => {
  const restore = withEnv({});
  try {
    t.is(proxyUrlFor('wss://ssmmessages.eu-west-1.amazonaws.com/'), undefined);
  } finally {
    restore();
  }
});

test.serial('proxy credentials never appear in the description used for logs', (t) => {
  t.is(describeProxy('http://alice:s3cret@proxy.corp:3128'), 'http://proxy.corp:3128');
});

test.serial('the SSM API goes through HTTP_PROXY with a CONNECT tunnel', async (t) => {
  const proxy = await startConnectProxy();
  const emulator = await startEmulator({});
  const restore = withEnv({ HTTP_PROXY: proxy.url });
  try {
    const ssm = createSsmApi({
      endpoint: emulator.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDPROXYTEST', secretAccessKey: 'x' },
      logger: silentLogger,
    });
    const grant = await ssm.startSession({
      target: 'i-0123456789abcdef0',
      documentName: 'AWS-StartPortForwardingSession',
      parameters: { portNumber: ['22'] },
    });
    t.truthy(grant.sessionId);
    t.true(proxy.targets.includes(`127.0.0.1:${emulator.port}`), `proxy saw ${proxy.targets.join(', ')}`);
  } finally {
    restore();
    await emulator.close();
    await proxy.close();
  }
});

test.serial('a whole forward (API and data-channel WebSocket) goes through HTTP_PROXY', async (t) => {
  const proxy = await startConnectProxy();
  const echo = await startEchoServer();
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const restore = withEnv({ HTTP_PROXY: proxy.url });
  const forward = new Forward(
    {
      name: 'proxied',
      target: 'i-0123456789abcdef0',
      remotePort: echo.port,
      localPort: 0,
      bind: '127.0.0.1',
      eager: false,
      idleStopMs: 0,
      sessions: 1,
      keepAlive: false,
      halfCloseLingerMs: 0,
      allowInsecureEndpoint: false,
    },
    defaultTuning,
    {
      ssm: createSsmApi({
        endpoint: emulator.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'AKIDPROXYTEST', secretAccessKey: 'x' },
        logger: silentLogger,
      }),
      logger: silentLogger,
      userAgent: 'pf-daemon-test',
    },
  );
  try {
    const { port } = await forward.start();
    const result = await echoExchange(port, 64 * 1024);
    t.is(result.receivedSha256, result.sentSha256);
    t.true(
      proxy.firstLines.some((line) => line.startsWith('GET /v1/data-channel/')),
      `WebSocket upgrade went through the proxy; tunnels carried: ${proxy.firstLines.join(' | ')}`,
    );
    t.true(
      proxy.firstLines.some((line) => line.startsWith('POST /')),
      'the API went through the proxy',
    );
  } finally {
    await forward.stop(0);
    restore();
    await emulator.close();
    await echo.close();
    await proxy.close();
  }
});
