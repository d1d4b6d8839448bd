/** The target forms (`src/targets/spec.ts`): every accepted form, and a clear problem for each bad one. */
import test from 'ava';
import { describeTarget, parseTarget } from '../../src/targets/spec.js';

const TASK = '0123456789abcdef0123456789abcdef';

test('ids and literal ECS targets are used as they are', (t) => {
  for (const id of [
    'i-0123456789abcdef0',
    'i-01234567',
    'mi-0123456789abcdef0',
    `ecs:prod_${TASK}_${TASK}-2531612879`,
  ]) {
    t.deepEqual(parseTarget(id), { kind: 'id', id });
  }
});

test('name:, bare words and tag: become tag look-ups', (t) => {
  t.deepEqual(parseTarget('name:web-1'), { kind: 'tag', key: 'Name', value: 'web-1' });
  t.deepEqual(parseTarget('name:web server 1'), { kind: 'tag', key: 'Name', value: 'web server 1' });
  t.deepEqual(parseTarget('web-1'), { kind: 'tag', key: 'Name', value: 'web-1' });
  t.deepEqual(parseTarget('tag:Role=db'), { kind: 'tag', key: 'Role', value: 'db' });
  t.deepEqual(parseTarget('tag:team:owner=ops@example.com'), {
    kind: 'tag',
    key: 'team:owner',
    value: 'ops@example.com',
  });
  t.deepEqual(parseTarget('tag:Env=a=b'), { kind: 'tag', key: 'Env', value: 'a=b' });
  // AWS-made tags are readable (only creating them is reserved): the usual way to find an ASG's instances.
  t.deepEqual(parseTarget('tag:aws:autoscaling:groupName=web-asg'), {
    kind: 'tag',
    key: 'aws:autoscaling:groupName',
    value: 'web-asg',
  });
});

test('ecs: service and task forms, with and without a container', (t) => {
  t.deepEqual(parseTarget('ecs:prod/api'), { kind: 'ecsService', cluster: 'prod', service: 'api' });
  t.deepEqual(parseTarget('ecs:prod/api/app'), {
    kind: 'ecsService',
    cluster: 'prod',
    service: 'api',
    container: 'app',
  });
  t.deepEqual(parseTarget(`ecs:prod/${TASK}`), { kind: 'ecsTask', cluster: 'prod', taskId: TASK });
  t.deepEqual(parseTarget(`ecs:prod/${TASK}/envoy`), {
    kind: 'ecsTask',
    cluster: 'prod',
    taskId: TASK,
    container: 'envoy',
  });
});

test('bad targets get a one-line reason naming the accepted form', (t) => {
  const cases: [string, RegExp][] = [
    ['i-123', /looks like a managed node id/],
    ['i-0123456789ABCDEF0', /looks like a managed node id/],
    ['name:', /empty Name tag value/],
    ['name: web', /starts or ends with a space/],
    ['name:web#1', /characters EC2 tags do not allow/],
    ['tag:Role', /tag:<Key>=<Value>/],
    ['tag:=db', /empty tag key/],
    [`tag:${'k'.repeat(129)}=v`, /longer than 128/],
    ['ecs:prod', /ecs:<cluster>\/<service>/],
    ['ecs:prod/a/b/c', /ecs:<cluster>\/<service>/],
    ['ecs:pr od/api', /not an ECS cluster name/],
    ['ecs:prod/ap i', /neither an ECS service name/],
    ['ecs:prod/api/ap.p', /not a container name/],
    ['web 1', /is not a target/],
    ['', /is not a target/],
  ];
  for (const [text, pattern] of cases) {
    const parsed = parseTarget(text);
    t.is(typeof parsed, 'string', text);
    t.regex(parsed as string, pattern, text);
  }
});

test('describeTarget renders the canonical form', (t) => {
  for (const text of [
    'name:web-1',
    'tag:Role=db',
    'ecs:prod/api/app',
    `ecs:prod/${TASK}`,
    'i-0123456789abcdef0',
  ]) {
    const parsed = parseTarget(text);
    if (typeof parsed === 'string') throw new Error(parsed);
    t.is(describeTarget(parsed), text);
  }
  const bare = parseTarget('web-1');
  if (typeof bare === 'string') throw new Error(bare);
  t.is(describeTarget(bare), 'name:web-1');
});
