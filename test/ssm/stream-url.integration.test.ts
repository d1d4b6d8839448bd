/**
 * The StreamUrl rules end to end (client.ts, stream-url.ts): an AWS-looking API endpoint (reached through an
 * HTTP CONNECT proxy that leads to the emulator) whose StreamUrl is a plain ws:// URL is refused before any
 * WebSocket is opened, so the token is never sent, and the session is terminated. Changes HTTP_PROXY;
 * ava runs each file in its own process.
 */
import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startEmulator, waitFor } from '../../src/emulator/index.js';
import { isPfError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';
import { credentials } from '../forward/fixtures.js';

test.serial(
  'a ws:// StreamUrl from an AWS endpoint is refused before dialling, and the session is ended',
  async (t) => {
    const emulator = await startEmulator({ agentPacingMs: 0 });
    // Every CONNECT leads to the emulator, so "ssm.eu-west-1.amazonaws.com" answers like the real API would.
    const sockets = new Set<net.Socket>();
    const proxy = http.createServer((_req, res) => res.writeHead(405).end());
    proxy.on('connect', (_req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      const upstream = net.connect(emulator.port, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) upstream.write(head);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
      }
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    process.env['HTTP_PROXY'] = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    let connects = 0;
    emulator.on('clientConnected', () => connects++);
    try {
      const api = createSsmApi({
        endpoint: 'http://ssm.eu-west-1.amazonaws.com',
        region: 'eu-west-1',
        credentials,
        logger: silentLogger,
      });
      const terminated = waitFor(emulator, 'sessionTerminated', undefined, 10_000);
      const err = await t.throwsAsync(
        api.startSession({
          target: 'i-0123456789abcdef0',
          documentName: 'AWS-StartPortForwardingSession',
          parameters: { portNumber: ['22'], localPortNumber: ['2222'] },
        }),
      );
      t.true(isPfError(err, 'PF_ERR_STREAM_URL'), String(err));
      t.regex(err?.message ?? '', /must be wss:\/\/.*the session token was not sent/);
      t.notRegex(
        err?.message ?? '',
        /role=|data-channel\/\S+\?/,
        'the StreamUrl itself is not in the message',
      );
      await terminated;
      t.is(connects, 0, 'no WebSocket was opened, so no token was sent');
    } finally {
      delete process.env['HTTP_PROXY'];
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
      await emulator.close();
    }
  },
);
