/**
 * Region and credentials at start (client.ts checkSetup, daemon.ts start): resolved without StartSession,
 * reported once as a warning naming the fix, the daemon keeps running, and the first connection does not
 * log the same failure again. AWS_DEFAULT_REGION applies as with the AWS CLI (AWS_REGION first). These
 * tests change process.env (AWS config files, HOME); ava runs each file in its own process.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../src/daemon.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator } from '../../src/emulator/index.js';
import { silentLogger } from '../../src/log.js';
import { createSsmApi } from '../../src/ssm/client.js';
import { credentials, forwardConfig, tuningWith, withTimeout } from '../forward/fixtures.js';
import { captureLog } from '../helpers/log.js';

const home = mkdtempSync(join(tmpdir(), 'pf-aws-home-'));
const awsConfig = join(home, 'aws-config');
writeFileSync(
  awsConfig,
  [
    '[profile dev]',
    'sso_start_url = https://example.awsapps.com/start',
    'sso_region = us-east-1',
    'sso_account_id = 123456789012',
    'sso_role_name = Developer',
    'region = eu-west-1',
    '',
    '[profile noregion]',
    'aws_access_key_id = AKIDEXAMPLE',
    'aws_secret_access_key = example-secret',
    '',
  ].join('\n'),
);
writeFileSync(join(home, 'aws-credentials'), '');
const AWS_VARS = [
  'AWS_REGION',
  'AWS_DEFAULT_REGION',
  'AWS_PROFILE',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
];
for (const name of AWS_VARS) delete process.env[name];
// No SSO token cache under this HOME: the dev profile needs `aws sso login`.
process.env['HOME'] = home;
process.env['AWS_CONFIG_FILE'] = awsConfig;
process.env['AWS_SHARED_CREDENTIALS_FILE'] = join(home, 'aws-credentials');

function startCalls(emulator: Emulator): { count: number } {
  const counter = { count: 0 };
  emulator.on('apiCall', (op: string) => {
    if (op === 'StartSession') counter.count++;
  });
  return counter;
}

test.serial(
  'an SSO profile without a login: one warning at start naming aws sso login, not repeated by the first connection',
  async (t) => {
    const emulator = await startEmulator({ agentPacingMs: 0 });
    const starts = startCalls(emulator);
    const log = captureLog('debug');
    const ssm = createSsmApi({ endpoint: emulator.endpoint, profile: 'dev', logger: silentLogger });
    const daemon = new Daemon(
      {
        forwards: [forwardConfig({ name: 'db', remotePort: 5432, profile: 'dev' })],
        log: { level: 'debug', format: 'plain' },
        tuning: tuningWith({ drainGraceMs: 0 }),
      },
      { logger: log.logger, ssmFor: () => ssm },
    );
    try {
      await daemon.start();
      const warnings = log.matching('warn', /aws sso login --profile dev/);
      t.is(warnings.length, 1, 'one warning at start');
      t.regex(
        warnings[0]?.message ?? '',
        /^forward db: .*run `aws sso login --profile dev`.*listening anyway/,
      );
      const running = log.lines.findIndex((l) => /forward\(s\) running/.test(l.message));
      t.true(log.lines.indexOf(warnings[0] as never) < running, 'reported before the daemon says it runs');
      t.is(starts.count, 0, 'no StartSession at start');
      t.truthy(daemon.running.get('db')?.address, 'still listening');
      // The first connection meets the same failure: reported at debug only.
      const socket = net.connect(daemon.running.get('db')?.address?.port ?? 0, '127.0.0.1');
      socket.on('error', () => undefined);
      await withTimeout(
        new Promise((resolve) => socket.once('close', resolve)),
        15_000,
        'the connection to fail',
      );
      await log.waitFor('debug', /closed after .*aws sso login --profile dev.*\(repeated\)/, 5_000);
      t.is(log.matching('warn', /aws sso login/).length + log.matching('error', /aws sso login/).length, 1);
    } finally {
      await daemon.stop();
      await emulator.close();
    }
  },
);

test.serial('no region anywhere: one warning at start naming --region', async (t) => {
  const emulator = await startEmulator({ agentPacingMs: 0 });
  const log = captureLog('info');
  const ssm = createSsmApi({ endpoint: emulator.endpoint, profile: 'noregion', logger: silentLogger });
  const daemon = new Daemon(
    {
      forwards: [forwardConfig({ name: 'db', remotePort: 5432 })],
      log: { level: 'info', format: 'plain' },
      tuning: tuningWith({ drainGraceMs: 0 }),
    },
    { logger: log.logger, ssmFor: () => ssm },
  );
  try {
    await daemon.start();
    const warnings = log.matching('warn', /pass --region/);
    t.is(warnings.length, 1);
    t.is(log.matching('warn', /./).length, 1, 'nothing else warned');
  } finally {
    await daemon.stop();
    await emulator.close();
  }
});

/** The region an API signs for, read from the SigV4 scope of a signed data-channel upgrade. */
async function signedRegion(env: Record<string, string>): Promise<string | undefined> {
  for (const name of AWS_VARS) delete process.env[name];
  Object.assign(process.env, env);
  try {
    const api = createSsmApi({ endpoint: 'http://127.0.0.1:1', credentials, logger: silentLogger });
    const headers =
      (await api.signStreamUrl?.('wss://ssmmessages.example.amazonaws.com/v1/data-channel/s')) ?? {};
    const authorization = Object.entries(headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
    return /Credential=[^/]+\/\d{8}\/([a-z0-9-]+)\/ssmmessages\//.exec(authorization ?? '')?.[1];
  } finally {
    for (const name of AWS_VARS) delete process.env[name];
  }
}

test.serial(
  'AWS_DEFAULT_REGION applies when AWS_REGION is unset; AWS_REGION wins when both are set',
  async (t) => {
    t.is(await signedRegion({ AWS_DEFAULT_REGION: 'eu-north-1' }), 'eu-north-1');
    t.is(await signedRegion({ AWS_DEFAULT_REGION: 'eu-north-1', AWS_REGION: 'ap-south-1' }), 'ap-south-1');
  },
);
