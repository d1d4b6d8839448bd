import test from 'ava';
import yargs from 'yargs';
import { ConfigError } from '../../src/errors.js';
import {
  emulatorOptionsFromArgs,
  endpointLine,
  emulatorCommandBuilder,
  emulatorMain,
  runEmulatorCommand,
} from '../../src/emulator/cli.js';
import type { EmulatorArgs } from '../../src/emulator/cli.js';

test('flags map onto emulator options and faults; unset flags are left to the emulator defaults', async (t) => {
  const argv = (await emulatorCommandBuilder(yargs([]))
    .exitProcess(false)
    .parseAsync([
      '--port',
      '0',
      '--agent-version',
      '3.0.196.0',
      '--pacing-ms',
      '0',
      '--idle-timeout-ms',
      '5000',
      '--drop-rate',
      '0.1',
      '--drop-websocket-every-ms',
      '30000',
      '--delay-ms',
      '5',
      '--terminate-after-ms',
      '9000',
      '--throttle-start',
      '2',
      '--host-map',
      'db.internal=127.0.0.1',
      'cache=127.0.0.2',
    ])) as unknown as EmulatorArgs;
  const o = emulatorOptionsFromArgs(argv);
  t.is(o.agentVersion, '3.0.196.0');
  t.is(o.agentPacingMs, 0);
  t.is(o.idleTimeoutMs, 5000);
  t.deepEqual(o.hostMap, { 'db.internal': '127.0.0.1', cache: '127.0.0.2' });
  t.deepEqual(o.faults?.dropRate, { toAgent: 0.1, toClient: 0.1 });
  t.deepEqual(o.faults?.dropWebSocket, { mode: 'bye', everyMs: 30000 });
  t.deepEqual(o.faults?.delay?.toClient, { ms: 5, jitterMs: 0 });
  t.is(o.faults?.terminateAfterMs, 9000);
  t.deepEqual(o.faults?.apiErrors, [
    { op: 'StartSession', code: 'ThrottlingException', count: 2, message: 'Rate exceeded' },
  ]);
  t.is(o.chunkSize, undefined);
  t.deepEqual(emulatorOptionsFromArgs({}), {});
});

test('malformed flag values are config errors with an example', (t) => {
  const err = t.throws(() => emulatorOptionsFromArgs({ 'host-map': ['nohost'] }), {
    instanceOf: ConfigError,
  });
  t.is(err?.code, 'PF_ERR_CONFIG');
  t.regex(err?.message ?? '', /db\.internal=127\.0\.0\.1/);
  t.throws(() => emulatorOptionsFromArgs({ 'drop-rate': 2 }), { instanceOf: ConfigError });
});

test('runEmulatorCommand prints the endpoint line, serves until the stop signal, then closes', async (t) => {
  let stop: (signal: string) => void = () => undefined;
  const lines: string[] = [];
  let printedResolve: () => void = () => undefined;
  const printed = new Promise<void>((resolve) => (printedResolve = resolve));
  const running = runEmulatorCommand(
    {},
    {
      write: (line) => {
        lines.push(line);
        printedResolve();
      },
      stopSignal: new Promise((r) => (stop = r)),
    },
  );
  await printed;
  const match =
    /^SSM emulator listening: endpoint (http:\/\/127\.0\.0\.1:(\d+)) \(use --endpoint \1 or AWS_ENDPOINT_URL_SSM=\1\)\n$/.exec(
      lines[0] ?? '',
    );
  t.truthy(match, lines[0]);
  const response = await fetch(`${match?.[1]}/`, {
    method: 'POST',
    headers: { 'X-Amz-Target': 'AmazonSSM.Nope', 'Content-Type': 'application/x-amz-json-1.1' },
    body: '{}',
  });
  t.is(response.status, 400);
  stop('SIGTERM');
  const emulator = await running;
  await t.throwsAsync(fetch(`${emulator.endpoint}/`, { method: 'POST', body: '{}' }));
  t.is(
    endpointLine('http://127.0.0.1:1'),
    'SSM emulator listening: endpoint http://127.0.0.1:1 (use --endpoint http://127.0.0.1:1 or AWS_ENDPOINT_URL_SSM=http://127.0.0.1:1)',
  );
});

test('emulatorMain --help lists the emulator options under the name it was started as', async (t) => {
  let out = '';
  let err = '';
  const io = {
    stdout: { write: (text: string) => (out += text) },
    stderr: { write: (text: string) => (err += text) },
  };
  t.is(await emulatorMain(['--help'], io, { program: 'pf-emulator' }), 0);
  t.regex(out, /--drop-websocket-every-ms/);
  t.regex(out, /--host-map/);
  t.regex(out, /--throttle-start/);
  t.regex(out, /pf-emulator --port 4566/);
  t.is(err, '');
});

test('emulatorMain: bad flags are one error line naming the fix, exit 2', async (t) => {
  for (const [argv, pattern] of [
    [['--prot', '1'], /^pf-emulator: error: unknown option --prot: see pf-emulator --help\n$/],
    [['--port', 'abc'], /^pf-emulator: error: --port needs a number, e\.g\. --port 4566/],
    [['--drop-rate', '2'], /^pf-emulator: error: --drop-rate 2: expected a probability from 0 to 1/],
  ] as const) {
    let err = '';
    const io = { stdout: { write: () => true }, stderr: { write: (text: string) => (err += text) } };
    t.is(await emulatorMain([...argv], io, { program: 'pf-emulator' }), 2, argv.join(' '));
    t.regex(err, pattern);
    t.is(err.split('\n').length, 2, err);
  }
});
