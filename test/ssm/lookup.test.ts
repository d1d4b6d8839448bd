/**
 * The SDK-backed target look-ups (`src/ssm/lookup.ts`) against the emulator: endpoints from
 * `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_ECS` when none is configured, an explicit `ecsEndpoint` over
 * the environment, and the per-operation call counters.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import { silentLogger } from '../../src/log.js';
import { createTargetLookup } from '../../src/ssm/lookup.js';

const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };
const task = (n: number): string => n.toString(16).padStart(32, '0');

test.serial(
  'AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL_ECS are honoured; ecsEndpoint wins over the environment',
  async (t) => {
    const emulator = await startEmulator({
      inventory: {
        instances: [{ instanceId: 'i-0123456789abcdef0', tags: { Name: 'web-1' } }],
        tasks: [{ cluster: 'prod', service: 'api', taskId: task(1), containers: [{ name: 'app' }] }],
      },
    });
    const saved = { ssm: process.env['AWS_ENDPOINT_URL_SSM'], ecs: process.env['AWS_ENDPOINT_URL_ECS'] };
    try {
      process.env['AWS_ENDPOINT_URL_SSM'] = emulator.endpoint;
      process.env['AWS_ENDPOINT_URL_ECS'] = emulator.endpoint;
      const fromEnv = createTargetLookup({
        region: 'us-east-1',
        credentials,
        logger: silentLogger,
        maxAttempts: 1,
      });
      const found = await fromEnv.describeInstances([{ key: 'tag:Name', values: ['web-1'] }]);
      t.deepEqual(
        found.map((i) => i.instanceId),
        ['i-0123456789abcdef0'],
      );
      const arns = await fromEnv.listServiceTasks('prod', 'api');
      t.is(arns.length, 1);
      const tasks = await fromEnv.describeTasks('prod', arns);
      t.deepEqual(
        tasks.map((x) => [x.taskId, x.lastStatus, x.containers[0]?.execAgentStatus]),
        [[task(1), 'RUNNING', 'RUNNING']],
      );
      t.deepEqual(fromEnv.stats, { describeInstanceInformation: 1, listTasks: 1, describeTasks: 1 });

      // The environment points ECS at a closed port; the configured ecsEndpoint must win.
      process.env['AWS_ENDPOINT_URL_ECS'] = 'http://127.0.0.1:9';
      const configured = createTargetLookup({
        region: 'us-east-1',
        ecsEndpoint: emulator.endpoint,
        credentials,
        logger: silentLogger,
        maxAttempts: 1,
      });
      t.is((await configured.listServiceTasks('prod', 'api')).length, 1);
      const unreachable = createTargetLookup({
        region: 'us-east-1',
        credentials,
        logger: silentLogger,
        maxAttempts: 1,
      });
      const err = await t.throwsAsync(unreachable.listServiceTasks('prod', 'api'));
      t.regex(
        err?.message ?? '',
        /cannot reach the ECS endpoint for ListTasks in us-east-1 \(ECONNREFUSED\): .*--ecs-endpoint/,
      );
    } finally {
      for (const [key, value] of [
        ['AWS_ENDPOINT_URL_SSM', saved.ssm],
        ['AWS_ENDPOINT_URL_ECS', saved.ecs],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await emulator.close();
    }
  },
);
