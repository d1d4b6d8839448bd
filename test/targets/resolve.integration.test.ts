/**
 * Target resolution against the emulator through the real SDK clients (`@aws-sdk/client-ssm`,
 * `@aws-sdk/client-ecs`): name, tag and ECS forms with one, no and several matches, `pick: any`, paging over
 * several pages, the ≤ 60 s cache with an injected clock, AccessDenied naming the IAM action, and the API
 * calls (and their time) per resolution.
 */
import test from 'ava';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator, InventoryData } from '../../src/emulator/index.js';
import { AwsSessionError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { TARGET_CACHE_TTL_MS, TargetResolver } from '../../src/targets/resolve.js';
import {
  countCalls,
  emulatorLookup,
  instance,
  instanceId,
  recordingLogger,
  serviceTask,
  taskId,
} from './helpers.js';

async function withInventory(
  inventory: InventoryData,
  fn: (emulator: Emulator) => Promise<void>,
): Promise<void> {
  const emulator = await startEmulator({ inventory });
  try {
    await fn(emulator);
  } finally {
    await emulator.close();
  }
}

function resolverFor(emulator: Emulator, extra: { now?: () => number; random?: () => number } = {}) {
  const { logger, lines } = recordingLogger();
  const resolver = new TargetResolver({ lookup: emulatorLookup(emulator), logger, ...extra });
  return { resolver, lines };
}

async function rejection(promise: Promise<unknown>): Promise<AwsSessionError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AwsSessionError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

test('name: and a bare word resolve the one online instance with that Name tag, in one call', async (t) => {
  await withInventory(
    {
      instances: [
        instance(1, 'web-1'),
        instance(2, 'web-2'),
        { ...instance(3, 'web-1'), pingStatus: 'ConnectionLost' },
      ],
    },
    async (emulator) => {
      const { resolver, lines } = resolverFor(emulator);
      const { value, calls } = await countCalls(emulator, () => resolver.resolve('web-1'));
      t.is(value.id, instanceId(1));
      t.is(value.spec, 'name:web-1');
      t.deepEqual(calls, { DescribeInstanceInformation: 1 });
      t.true(
        lines.some((l) => l.level === 'info' && l.message === `target web-1 → ${instanceId(1)} (name:web-1)`),
      );
      t.is((await resolver.resolve('name:web-2')).id, instanceId(2));
    },
  );
});

test('tag: resolves by any tag key', async (t) => {
  await withInventory(
    { instances: [instance(1, 'a', { Role: 'db' }), instance(2, 'b', { Role: 'web' })] },
    async (emulator) => {
      const { resolver } = resolverFor(emulator);
      t.is((await resolver.resolve('tag:Role=db')).id, instanceId(1));
    },
  );
});

test('no match names the filter and the region', async (t) => {
  await withInventory(
    { instances: [{ ...instance(1, 'web-1'), pingStatus: 'ConnectionLost' }] },
    async (emulator) => {
      const { resolver } = resolverFor(emulator);
      const err = await rejection(resolver.resolve('web-1'));
      t.is(err.code, 'PF_ERR_TARGET_NOT_FOUND');
      t.regex(err.message, /no online managed instance matches name:web-1 in us-east-1/);
      t.regex(err.message, /tag:Name=web-1, PingStatus=Online/);
      t.false(err.message.includes('\n'));
    },
  );
});

test('several matches list up to five (id, computer name, ping status) unless pick: any', async (t) => {
  const instances = Array.from({ length: 7 }, (_, i) => instance(i + 1, 'web'));
  await withInventory({ instances }, async (emulator) => {
    const { resolver, lines } = resolverFor(emulator, { random: () => 0.99 });
    const err = await rejection(resolver.resolve('name:web'));
    t.is(err.code, 'PF_ERR_TARGET_AMBIGUOUS');
    t.regex(err.message, /^7 instances match name:web in us-east-1: /);
    t.regex(err.message, new RegExp(`${instanceId(1)} \\(web\\.internal, Online\\)`));
    t.is(err.message.match(/\(web\.internal, Online\)/g)?.length, 5);
    t.regex(err.message, /and 2 more; set pick: any \(--pick-any\)/);
    const picked = await resolver.resolve('name:web', 'any');
    t.is(picked.id, instanceId(7), 'random 0.99 of 7 picks the last');
    t.is(picked.matches, 7);
    t.true(
      lines.some(
        (l) =>
          l.level === 'info' &&
          /picked i-0+7 \(web\.internal, Online\) of 7 matching instances/.test(l.message),
      ),
    );
  });
});

test('paging: 120 matches over three pages of 50 are all seen (pick: any reaches the last page)', async (t) => {
  const instances = [
    ...Array.from({ length: 120 }, (_, i) => instance(i + 1, `n${i}`, { Role: 'web' })),
    ...Array.from({ length: 30 }, (_, i) => instance(500 + i, `o${i}`, { Role: 'db' })),
  ];
  await withInventory({ instances }, async (emulator) => {
    const { resolver } = resolverFor(emulator, { random: () => 0.999 });
    const { value, calls } = await countCalls(emulator, () => resolver.resolve('tag:Role=web', 'any'));
    t.deepEqual(calls, { DescribeInstanceInformation: 3 });
    t.is(value.matches, 120);
    t.is(value.id, instanceId(120), 'the last match is on page 3');
    const err = await rejection(resolver.resolve('tag:Role=web'));
    t.regex(err.message, /^120 instances match .* and 115 more/);
  });
});

test('ECS service: ListTasks then DescribeTasks give ecs:<cluster>_<taskId>_<runtimeId>', async (t) => {
  await withInventory(
    { tasks: [serviceTask('prod', 'api', 1), { ...serviceTask('prod', 'worker', 2) }] },
    async (emulator) => {
      const { resolver } = resolverFor(emulator);
      const { value, calls } = await countCalls(emulator, () => resolver.resolve('ecs:prod/api'));
      t.is(value.id, `ecs:prod_${taskId(1)}_${taskId(1)}-1000`);
      t.deepEqual(calls, { ListTasks: 1, DescribeTasks: 1 });
      const byTask = await countCalls(emulator, () => resolver.resolve(`ecs:prod/${taskId(2)}/app`));
      t.is(byTask.value.id, `ecs:prod_${taskId(2)}_${taskId(2)}-1000`);
      t.deepEqual(byTask.calls, { DescribeTasks: 1 });
    },
  );
});

test('ECS: several tasks need pick: any; several containers need a name; paging over 250 tasks', async (t) => {
  const tasks = Array.from({ length: 250 }, (_, i) => serviceTask('prod', 'api', i + 1));
  const sidecar = {
    cluster: 'prod',
    service: 'mesh',
    taskId: taskId(900),
    containers: [
      { name: 'app', execAgent: 'RUNNING' as const },
      { name: 'envoy', execAgent: 'RUNNING' as const },
    ],
  };
  await withInventory({ tasks: [...tasks, sidecar] }, async (emulator) => {
    const { resolver } = resolverFor(emulator, { random: () => 0.999 });
    const err = await rejection(resolver.resolve('ecs:prod/api'));
    t.is(err.code, 'PF_ERR_TARGET_AMBIGUOUS');
    t.regex(err.message, /^250 running tasks match ecs:prod\/api/);
    const { value, calls } = await countCalls(emulator, () => resolver.resolve('ecs:prod/api', 'any'));
    t.deepEqual(calls, { ListTasks: 3, DescribeTasks: 3 });
    t.is(value.id, `ecs:prod_${taskId(250)}_${taskId(250)}-1000`);
    const two = await rejection(resolver.resolve('ecs:prod/mesh'));
    t.is(two.code, 'PF_ERR_TARGET_NOT_FOUND');
    t.regex(two.message, /has 2 containers \(app, envoy\): name one, e\.g\. ecs:prod\/mesh\/app/);
    t.is((await resolver.resolve('ecs:prod/mesh/envoy')).id, `ecs:prod_${taskId(900)}_${taskId(900)}-1001`);
    const missing = await rejection(resolver.resolve('ecs:prod/mesh/db'));
    t.regex(missing.message, /has no container db \(it has app, envoy\)/);
  });
});

test('ECS: a container without a running ExecuteCommandAgent asks to enable ECS Exec', async (t) => {
  await withInventory(
    {
      tasks: [
        {
          cluster: 'prod',
          service: 'api',
          taskId: taskId(1),
          containers: [{ name: 'app', execAgent: null }],
        },
        {
          cluster: 'prod',
          service: 'batch',
          taskId: taskId(2),
          containers: [{ name: 'app', execAgent: 'STOPPED' }],
        },
      ],
    },
    async (emulator) => {
      const { resolver } = resolverFor(emulator);
      const err = await rejection(resolver.resolve('ecs:prod/api'));
      t.is(err.code, 'PF_ERR_ECS_EXEC_DISABLED');
      t.regex(
        err.message,
        /no ExecuteCommandAgent: enable ECS Exec for the service \(aws ecs update-service --cluster prod/,
      );
      const stopped = await rejection(resolver.resolve('ecs:prod/batch'));
      t.is(stopped.code, 'PF_ERR_ECS_EXEC_DISABLED');
      t.regex(stopped.message, /its ExecuteCommandAgent STOPPED/);
    },
  );
});

test('ECS: unknown cluster, service without tasks, unknown task', async (t) => {
  await withInventory({ tasks: [serviceTask('prod', 'api', 1)], clusters: ['empty'] }, async (emulator) => {
    const { resolver } = resolverFor(emulator);
    const cluster = await rejection(resolver.resolve('ecs:nope/api'));
    t.is(cluster.code, 'PF_ERR_TARGET_NOT_FOUND');
    t.regex(cluster.message, /cluster of ecs:nope\/api not found in us-east-1/);
    const service = await rejection(resolver.resolve('ecs:prod/gone'));
    t.is(service.code, 'PF_ERR_TARGET_NOT_FOUND');
    emulator.inventory.putTask({ ...serviceTask('prod', 'idle', 5), lastStatus: 'STOPPED' });
    const idle = await rejection(resolver.resolve('ecs:prod/idle'));
    t.regex(idle.message, /no running task in ECS service idle of cluster prod in us-east-1/);
    const task = await rejection(resolver.resolve(`ecs:prod/${taskId(77)}`));
    t.regex(task.message, /no ECS task 0+4d in cluster prod/);
  });
});

test('cache: reused for at most 60 s, then a replaced instance is found', async (t) => {
  await withInventory({ instances: [instance(1, 'web-1')] }, async (emulator) => {
    let now = 1_000_000;
    const { resolver } = resolverFor(emulator, { now: () => now });
    t.is((await resolver.resolve('web-1')).id, instanceId(1));
    // The Auto Scaling group replaces the instance.
    emulator.inventory.removeInstance(instanceId(1));
    emulator.inventory.putInstance(instance(2, 'web-1'));
    now += TARGET_CACHE_TTL_MS - 1;
    const cached = await countCalls(emulator, () => resolver.resolve('web-1'));
    t.is(cached.value.id, instanceId(1));
    t.deepEqual(cached.calls, {});
    now += 1;
    const fresh = await countCalls(emulator, () => resolver.resolve('web-1'));
    t.is(fresh.value.id, instanceId(2));
    t.deepEqual(fresh.calls, { DescribeInstanceInformation: 1 });
    t.deepEqual(resolver.stats, { resolutions: 3, cacheHits: 1, lookups: 2, cached: 1 });
  });
});

test('cache: concurrent resolutions share one look-up; failures are not cached', async (t) => {
  await withInventory({ instances: [] }, async (emulator) => {
    const { resolver } = resolverFor(emulator);
    const failed = await countCalls(emulator, () =>
      Promise.allSettled([resolver.resolve('web-1'), resolver.resolve('web-1'), resolver.resolve('web-1')]),
    );
    t.deepEqual(failed.calls, { DescribeInstanceInformation: 1 });
    t.true(failed.value.every((r) => r.status === 'rejected'));
    emulator.inventory.putInstance(instance(3, 'web-1'));
    t.is((await resolver.resolve('web-1')).id, instanceId(3));
  });
});

test('AccessDenied names the missing IAM action for each look-up', async (t) => {
  await withInventory(
    { instances: [instance(1, 'web-1')], tasks: [serviceTask('prod', 'api', 1)] },
    async (emulator) => {
      const { resolver } = resolverFor(emulator);
      const cases: [string, 'DescribeInstanceInformation' | 'ListTasks' | 'DescribeTasks', string][] = [
        ['web-1', 'DescribeInstanceInformation', 'ssm:DescribeInstanceInformation'],
        ['ecs:prod/api', 'ListTasks', 'ecs:ListTasks'],
        [`ecs:prod/${taskId(1)}`, 'DescribeTasks', 'ecs:DescribeTasks'],
      ];
      for (const [target, op, action] of cases) {
        emulator.faults.failApi(
          op,
          'AccessDeniedException',
          1,
          `User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ${action} because no identity-based policy allows the ${action} action`,
        );
        const err = await rejection(resolver.resolve(target));
        t.is(err.code, 'PF_ERR_ACCESS_DENIED', target);
        t.regex(
          err.message,
          new RegExp(`^IAM denied ${action} in us-east-1 .*: allow ${action} to resolve`),
          target,
        );
        t.false(err.retryable);
      }
    },
  );
});

test('ids make no API call', async (t) => {
  await withInventory({}, async (emulator) => {
    const { resolver } = resolverFor(emulator);
    const { value, calls } = await countCalls(emulator, () => resolver.resolve('i-0123456789abcdef0'));
    t.is(value.id, 'i-0123456789abcdef0');
    t.deepEqual(calls, {});
  });
});

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

test('cost per session start: calls and median time of 20 resolutions, with and without cache', async (t) => {
  const instances = [
    instance(1, 'web-1'),
    ...Array.from({ length: 120 }, (_, i) => instance(100 + i, `w${i}`, { Role: 'web' })),
  ];
  const tasks = [serviceTask('prod', 'api', 1)];
  await withInventory({ instances, tasks }, async (emulator) => {
    const lookup = emulatorLookup(emulator);
    const rows: string[] = [];
    for (const [target, pick] of [
      ['i-0123456789abcdef0', 'one'],
      ['web-1', 'one'],
      ['tag:Role=web', 'any'],
      ['ecs:prod/api', 'one'],
      [`ecs:prod/${taskId(1)}`, 'one'],
    ] as const) {
      const uncachedMs: number[] = [];
      let calls: Record<string, number> = {};
      for (let i = 0; i < 20; i++) {
        // TTL 0: every resolution looks up, as at a session start after the cache expired.
        const resolver = new TargetResolver({ lookup, logger: silentLogger, cacheTtlMs: 0 });
        const start = performance.now();
        calls = (await countCalls(emulator, () => resolver.resolve(target, pick))).calls;
        uncachedMs.push(performance.now() - start);
      }
      const cachedResolver = new TargetResolver({ lookup, logger: silentLogger });
      await cachedResolver.resolve(target, pick);
      const cachedMs: number[] = [];
      for (let i = 0; i < 20; i++) {
        const start = performance.now();
        await cachedResolver.resolve(target, pick);
        cachedMs.push(performance.now() - start);
      }
      const callText =
        Object.entries(calls)
          .map(([op, n]) => `${op}×${n}`)
          .join(' + ') || 'none';
      rows.push(
        `${target}: ${callText}; median ${median(uncachedMs).toFixed(2)} ms uncached, ${median(cachedMs).toFixed(3)} ms cached`,
      );
      t.true(median(cachedMs) <= median(uncachedMs) || callText === 'none');
    }
    for (const row of rows) t.log(row);
  });
});
