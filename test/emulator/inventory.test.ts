/**
 * The emulator's inventory through the real SDK clients: DescribeInstanceInformation filters and paging,
 * ECS ListTasks/DescribeTasks on the same endpoint, `ecs:` and ConnectionLost targets in StartSession,
 * custom documents, the agent's denylist by version, and the CLI's inventory flags.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ClusterNotFoundException,
  DescribeTasksCommand,
  ECSClient,
  ListTasksCommand,
  ServiceNotFoundException,
} from '@aws-sdk/client-ecs';
import {
  DescribeInstanceInformationCommand,
  InvalidFilterKey,
  InvalidNextToken,
  InvalidDocument,
  InvalidParameters,
  SSMClient,
  StartSessionCommand,
  TargetNotConnected,
  ValidationException,
} from '@aws-sdk/client-ssm';
import { emulatorOptionsFromArgs } from '../../src/emulator/cli.js';
import { destinationRefusal } from '../../src/emulator/denylist.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { ConfigError } from '../../src/errors.js';
import { fakeAgentFactory } from './service.helpers.js';

const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };
const id = (n: number): string => `i-${n.toString(16).padStart(17, '0')}`;
const task = (n: number): string => n.toString(16).padStart(32, '0');

async function withClients(
  options: Partial<EmulatorOptions>,
  run: (emulator: Emulator, ssm: SSMClient, ecs: ECSClient) => Promise<void>,
): Promise<void> {
  const emulator = await startEmulator({ agentFactory: fakeAgentFactory(), ...options });
  const config = { endpoint: emulator.endpoint, region: 'us-east-1', credentials, maxAttempts: 1 };
  const ssm = new SSMClient(config);
  const ecs = new ECSClient(config);
  try {
    await run(emulator, ssm, ecs);
  } finally {
    ssm.destroy();
    ecs.destroy();
    await emulator.close();
  }
}

const fleet = {
  instances: [
    ...Array.from({ length: 12 }, (_, i) => ({ instanceId: id(i + 1), tags: { Name: 'web', Role: 'web' } })),
    { instanceId: id(100), tags: { Name: 'web' }, pingStatus: 'ConnectionLost' as const },
    { instanceId: id(101), tags: { Name: 'db', Role: 'db' } },
  ],
};

test('DescribeInstanceInformation filters by tag and PingStatus and pages with MaxResults/NextToken', async (t) => {
  await withClients({ inventory: fleet }, async (_emulator, ssm) => {
    const Filters = [
      { Key: 'tag:Name', Values: ['web'] },
      { Key: 'PingStatus', Values: ['Online'] },
    ];
    const seen: string[] = [];
    const pageSizes: number[] = [];
    let NextToken: string | undefined;
    do {
      const out = await ssm.send(
        new DescribeInstanceInformationCommand({ Filters, MaxResults: 5, NextToken }),
      );
      pageSizes.push(out.InstanceInformationList?.length ?? 0);
      for (const i of out.InstanceInformationList ?? []) {
        t.is(i.PingStatus, 'Online');
        seen.push(i.InstanceId ?? '');
      }
      NextToken = out.NextToken;
    } while (NextToken);
    t.deepEqual(pageSizes, [5, 5, 2]);
    t.deepEqual(
      seen,
      Array.from({ length: 12 }, (_, i) => id(i + 1)),
    );
    const lost = await ssm.send(
      new DescribeInstanceInformationCommand({
        Filters: [{ Key: 'PingStatus', Values: ['ConnectionLost'] }],
      }),
    );
    t.deepEqual(
      lost.InstanceInformationList?.map((i) => i.InstanceId),
      [id(100)],
    );
    const byKey = await ssm.send(
      new DescribeInstanceInformationCommand({ Filters: [{ Key: 'tag:Role', Values: ['db', 'cache'] }] }),
    );
    t.deepEqual(
      byKey.InstanceInformationList?.map((i) => i.InstanceId),
      [id(101)],
    );
    const defaultPage = await ssm.send(new DescribeInstanceInformationCommand({}));
    t.is(defaultPage.InstanceInformationList?.length, 10, 'MaxResults defaults to 10');
  });
});

test('DescribeInstanceInformation rejects bad tokens, page sizes and filter keys like the service', async (t) => {
  await withClients({ inventory: fleet }, async (_emulator, ssm) => {
    const first = await ssm.send(new DescribeInstanceInformationCommand({ MaxResults: 5 }));
    await t.throwsAsync(
      ssm.send(
        new DescribeInstanceInformationCommand({
          MaxResults: 5,
          NextToken: first.NextToken,
          Filters: [{ Key: 'tag:Name', Values: ['db'] }],
        }),
      ),
      { instanceOf: InvalidNextToken },
      'a token belongs to its query',
    );
    await t.throwsAsync(ssm.send(new DescribeInstanceInformationCommand({ NextToken: 'garbage' })), {
      instanceOf: InvalidNextToken,
    });
    await t.throwsAsync(ssm.send(new DescribeInstanceInformationCommand({ MaxResults: 51 })), {
      instanceOf: ValidationException,
    });
    await t.throwsAsync(
      ssm.send(new DescribeInstanceInformationCommand({ Filters: [{ Key: 'Colour', Values: ['red'] }] })),
      { instanceOf: InvalidFilterKey },
    );
  });
});

test('ECS ListTasks and DescribeTasks are served on the same endpoint, with paging and failures', async (t) => {
  const tasks = Array.from({ length: 5 }, (_, i) => ({
    cluster: 'prod',
    service: 'api',
    taskId: task(i + 1),
    containers: [{ name: 'app' }, { name: 'envoy', execAgent: 'STOPPED' as const }],
  }));
  await withClients({ inventory: { tasks } }, async (emulator, _ssm, ecs) => {
    const arns: string[] = [];
    let nextToken: string | undefined;
    let pages = 0;
    do {
      const out = await ecs.send(
        new ListTasksCommand({ cluster: 'prod', serviceName: 'api', maxResults: 2, nextToken }),
      );
      arns.push(...(out.taskArns ?? []));
      nextToken = out.nextToken;
      pages++;
    } while (nextToken);
    t.is(pages, 3);
    t.deepEqual(
      arns,
      tasks.map((x) => `arn:aws:ecs:us-east-1:123456789012:task/prod/${x.taskId}`),
    );
    const described = await ecs.send(
      new DescribeTasksCommand({ cluster: 'prod', tasks: [arns[0] ?? '', task(99)] }),
    );
    t.is(described.tasks?.length, 1);
    t.deepEqual(described.failures, [{ arn: task(99), reason: 'MISSING' }]);
    const containers = described.tasks?.[0]?.containers ?? [];
    t.deepEqual(
      containers.map((c) => [
        c.name,
        c.runtimeId,
        c.managedAgents?.[0]?.name,
        c.managedAgents?.[0]?.lastStatus,
      ]),
      [
        ['app', `${task(1)}-1000`, 'ExecuteCommandAgent', 'RUNNING'],
        ['envoy', `${task(1)}-1001`, 'ExecuteCommandAgent', 'STOPPED'],
      ],
    );
    await t.throwsAsync(ecs.send(new ListTasksCommand({ cluster: 'nope' })), {
      instanceOf: ClusterNotFoundException,
    });
    await t.throwsAsync(ecs.send(new ListTasksCommand({ cluster: 'prod', serviceName: 'gone' })), {
      instanceOf: ServiceNotFoundException,
    });
    emulator.faults.failApi(
      'ListTasks',
      'AccessDeniedException',
      1,
      'not authorized to perform: ecs:ListTasks',
    );
    const denied = await t.throwsAsync(ecs.send(new ListTasksCommand({ cluster: 'prod' })));
    t.is(denied?.name, 'AccessDeniedException');
  });
});

const local = (target: string) =>
  new StartSessionCommand({
    Target: target,
    DocumentName: 'AWS-StartPortForwardingSession',
    Parameters: { portNumber: ['80'] },
  });

test('StartSession: ConnectionLost instances and ecs: targets without a running exec agent are not connected', async (t) => {
  const inventory = {
    instances: [
      { instanceId: id(1), tags: {} },
      { instanceId: id(2), tags: {}, pingStatus: 'ConnectionLost' as const },
    ],
    tasks: [
      {
        cluster: 'prod',
        service: 'api',
        taskId: task(1),
        containers: [{ name: 'app' }, { name: 'envoy', execAgent: 'STOPPED' as const }],
      },
    ],
  };
  await withClients({ inventory }, async (emulator, ssm) => {
    t.truthy((await ssm.send(local(id(1)))).SessionId);
    await t.throwsAsync(ssm.send(local(id(2))), { instanceOf: TargetNotConnected });
    t.truthy((await ssm.send(local(`ecs:prod_${task(1)}_${task(1)}-1000`))).SessionId);
    await t.throwsAsync(ssm.send(local(`ecs:prod_${task(1)}_${task(1)}-1001`)), {
      instanceOf: TargetNotConnected,
    });
    await t.throwsAsync(ssm.send(local(`ecs:prod_${task(2)}_${task(2)}-1000`)), {
      instanceOf: TargetNotConnected,
    });
    emulator.inventory.setPingStatus(id(2), 'Online');
    t.truthy((await ssm.send(local(id(2)))).SessionId);
  });
});

test('custom documents take their declared parameters; others are rejected', async (t) => {
  const documents = { 'Acme-PF': { base: 'local' as const, parameters: ['team'] } };
  await withClients({ documents }, async (emulator, ssm) => {
    const ok = await ssm.send(
      new StartSessionCommand({
        Target: id(1),
        DocumentName: 'Acme-PF',
        Parameters: { portNumber: ['80'], team: ['payments'] },
      }),
    );
    t.deepEqual(emulator.session(ok.SessionId ?? '').parameters, { portNumber: ['80'], team: ['payments'] });
    await t.throwsAsync(
      ssm.send(
        new StartSessionCommand({
          Target: id(1),
          DocumentName: 'Acme-PF',
          Parameters: { portNumber: ['80'], host: ['x'] },
        }),
      ),
      { instanceOf: InvalidParameters },
    );
    await t.throwsAsync(
      ssm.send(
        new StartSessionCommand({
          Target: id(1),
          DocumentName: 'Other-PF',
          Parameters: { portNumber: ['80'] },
        }),
      ),
      { instanceOf: InvalidDocument },
    );
    await t.throwsAsync(
      ssm.send(
        new StartSessionCommand({
          Target: id(1),
          DocumentName: 'AWS-StartPortForwardingSession',
          Parameters: { portNumber: ['80'], team: ['payments'] },
        }),
      ),
      { instanceOf: InvalidParameters },
      'the AWS documents take no custom parameters',
    );
  });
});

test('the agent denylist applies from 3.3.4851.0, to loopback in any form and the metadata endpoints', async (t) => {
  const NEW = '3.3.4851.0';
  for (const host of [
    'localhost',
    '127.0.0.1',
    '127.1',
    '0x7f.1',
    '017700000001',
    '::1',
    '[::1]',
    '::ffff:127.0.0.1',
  ]) {
    t.regex(
      (await destinationRefusal(host, NEW)) ?? '',
      /^Forwarding to IP address (127\.0\.0\.1|::1|::ffff:127\.0\.0\.1) is forbidden\.$/,
      host,
    );
  }
  for (const host of [
    '169.254.169.254',
    '169.254.170.2',
    '169.254.170.23',
    'fd00:ec2::254',
    'fd00:ec2::23',
  ]) {
    t.truthy(await destinationRefusal(host, NEW), host);
  }
  t.is(await destinationRefusal(undefined, NEW), undefined, 'the local document is never refused');
  t.is(await destinationRefusal('10.0.0.5', NEW), undefined);
  t.is(await destinationRefusal('db.internal', NEW), undefined);
  t.is(await destinationRefusal('127.0.0.1', '3.3.4850.9'), undefined);
  t.is(await destinationRefusal('169.254.169.254', '3.3.987.0'), undefined);
  t.truthy(await destinationRefusal('127.0.0.1', '3.3.4852.0'));
});

test('--instance, --inventory and --document flags build the inventory and documents; malformed ones name the fix', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pf-inventory-'));
  const file = join(dir, 'inventory.json');
  writeFileSync(
    file,
    JSON.stringify({
      instances: [{ instanceId: id(5), tags: { Name: 'db-1' } }],
      tasks: [
        { cluster: 'prod', service: 'api', taskId: task(1), containers: [{ name: 'app', execAgent: null }] },
      ],
    }),
  );
  const options = emulatorOptionsFromArgs({
    inventory: file,
    instance: [`${id(1)},Name=web-1,Role=web`, `${id(2)},Name=web-2,PingStatus=ConnectionLost`],
  });
  t.deepEqual(options.inventory?.instances, [
    { instanceId: id(5), tags: { Name: 'db-1' }, pingStatus: 'Online' },
    { instanceId: id(1), tags: { Name: 'web-1', Role: 'web' } },
    { instanceId: id(2), tags: { Name: 'web-2' }, pingStatus: 'ConnectionLost' },
  ]);
  t.deepEqual(options.inventory?.tasks?.[0]?.containers, [{ name: 'app', execAgent: null }]);
  const bad = (args: Parameters<typeof emulatorOptionsFromArgs>[0], pattern: RegExp): void => {
    const err = t.throws(() => emulatorOptionsFromArgs(args), { instanceOf: ConfigError });
    t.regex(err?.message ?? '', pattern);
  };
  t.deepEqual(
    emulatorOptionsFromArgs({ document: ['Acme-PF=remoteHost:team,ticket', 'Acme-Local=local'] }).documents,
    {
      'Acme-PF': { base: 'remoteHost', parameters: ['team', 'ticket'] },
      'Acme-Local': { base: 'local', parameters: [] },
    },
  );
  bad({ document: ['Acme-PF=elsewhere'] }, /--document Acme-PF=elsewhere: expected NAME=local\|remoteHost/);
  bad({ instance: ['web-1'] }, /is not an instance id, e\.g\. --instance i-0123456789abcdef0,Name=web-1/);
  bad({ instance: [`${id(1)},Name`] }, /"Name" is not Key=Value/);
  bad({ instance: [`${id(1)},PingStatus=Gone`] }, /PingStatus must be Online, ConnectionLost or Inactive/);
  writeFileSync(
    file,
    JSON.stringify({ tasks: [{ cluster: 'prod', taskId: 'short', containers: [{ name: 'a' }] }] }),
  );
  bad({ inventory: file }, /--inventory .*: inventory tasks\[0\]\.taskId: must be 32 hex digits/);
  bad({ inventory: join(dir, 'missing.json') }, /--inventory .*missing\.json/);
});
