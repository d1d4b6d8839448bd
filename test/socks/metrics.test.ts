/** The socks metrics: labelled by entry name, never by destination. */
import test from 'ava';
import { createDaemonMetrics } from '../../src/metrics/registry.js';
import { STATS_SCHEMA, failedSocksStats } from '../../src/stats.js';
import type { DaemonStats } from '../../src/stats.js';
import { socksConfig } from './fixtures.js';

test('socks entries appear as gauges and a counter by result, with no destination label', async (t) => {
  const entry = {
    ...failedSocksStats(socksConfig({ name: 'vpc' }), 'x'),
    connectionsAccepted: 7,
    notAllowed: 2,
    refused: 1,
    connectionsActive: 3,
  };
  entry.destinations = [
    {
      host: 'db.internal',
      port: 5432,
      document: 'd',
      connectionsActive: 3,
      connectionsTotal: 5,
      sessions: [],
    },
  ];
  const stats: DaemonStats = {
    schema: STATS_SCHEMA,
    version: 'test',
    pid: 1,
    startedAt: new Date(0).toISOString(),
    uptimeMs: 1,
    configFile: null,
    forwards: [],
    socks: [entry],
  };
  const text = await createDaemonMetrics('test', false).render(stats);
  t.regex(text, /^pf_daemon_socks_active_connections\{socks="vpc"\} 3$/m);
  t.regex(text, /^pf_daemon_socks_destinations\{socks="vpc"\} 1$/m);
  t.regex(text, /^pf_daemon_socks_connections_total\{socks="vpc",result="accepted"\} 7$/m);
  t.regex(text, /^pf_daemon_socks_connections_total\{socks="vpc",result="not_allowed"\} 2$/m);
  t.regex(text, /^pf_daemon_socks_connections_total\{socks="vpc",result="refused"\} 1$/m);
  t.notRegex(text, /db\.internal/);
});
