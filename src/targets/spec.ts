/**
 * The target forms a forward may name (`--target`, `-L …@target`, `target:` in the config) and their pure
 * parser. Nothing here talks to AWS: `resolve.ts` turns the non-literal forms into a concrete target id at
 * each session start.
 *
 * | form                                   | meaning                                                   |
 * | -------------------------------------- | --------------------------------------------------------- |
 * | `i-0123456789abcdef0`, `mi-…`          | a managed node id, used as it is                          |
 * | `ecs:<cluster>_<taskId>_<runtimeId>`   | an ECS container target, used as it is                    |
 * | `name:<value>` or a bare word (`web-1`) | the online instance whose `Name` tag is `<value>`         |
 * | `tag:<Key>=<Value>`                    | the online instance whose tag `<Key>` is `<Value>`        |
 * | `ecs:<cluster>/<service>[/<container>]` | a running task of the service, the named (or only) container |
 * | `ecs:<cluster>/<taskId>[/<container>]` | that task, the named (or only) container                  |
 */

/** Managed node ids: EC2 instances (`i-`) and hybrid managed nodes (`mi-`) (SSM API reference, `Target`). */
export const INSTANCE_ID_PATTERN = /^(i|mi)-[0-9a-f]{8,17}$/;
/** Something that was meant as an instance id but is not one (wrong length or digits). */
const ALMOST_INSTANCE_ID = /^m?i-[0-9a-z]*$/i;
/** A literal ECS Exec target `ecs:<cluster>_<taskId>_<runtimeId>` (as `aws ecs execute-command` builds it). */
export const ECS_LITERAL_PATTERN =
  /^ecs:[A-Za-z0-9][A-Za-z0-9_-]{0,254}_([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_[0-9a-f][0-9a-f-]{7,99}$/;
/**
 * ECS cluster and service names: letters, digits, hyphens and underscores, 1–255 characters (ECS API
 * reference, `CreateCluster`/`CreateService`).
 */
const ECS_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$/;
/** Container names: 1–255 letters, digits, hyphens, underscores (ECS task definition reference). */
const CONTAINER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$/;
/** ECS task ids: 32 hex digits (current ARN format) or a UUID (the older format). */
const TASK_ID_PATTERN = /^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
/** Characters EC2 allows in tag keys and values: letters, digits, spaces and `_ . : / = + - @` (EC2 tagging rules). */
const TAG_TEXT_PATTERN = /^[\p{L}\p{N} _.:/=+\-@]+$/u;
/** Longest tag key, characters (EC2 tagging rules). */
export const TAG_KEY_MAX_CHARS = 128;
/** Longest tag value, characters (EC2 tagging rules). */
export const TAG_VALUE_MAX_CHARS = 256;
/** A bare word taken as a `Name` tag: no colon (that would be a prefix), no spaces (use `name:` for those). */
const BARE_NAME_PATTERN = /^[\p{L}\p{N}][\p{L}\p{N}_.=+\-@/]*$/u;

/** A parsed target. */
export type TargetSpec =
  /** Used as it is (`i-…`, `mi-…`, `ecs:<cluster>_<taskId>_<runtimeId>`). */
  | { kind: 'id'; id: string }
  /** DescribeInstanceInformation with `tag:<key>` = value and `PingStatus` = Online. `key` is `Name` for `name:`. */
  | { kind: 'tag'; key: string; value: string }
  /** ECS ListTasks for the service, then DescribeTasks. */
  | { kind: 'ecsService'; cluster: string; service: string; container?: string }
  /** ECS DescribeTasks of one task. */
  | { kind: 'ecsTask'; cluster: string; taskId: string; container?: string };

/** The accepted forms, for messages. */
export const TARGET_FORMS =
  'i-0123456789abcdef0, mi-…, name:web-1 (or just web-1), tag:Role=db, ecs:<cluster>/<service>[/<container>], ecs:<cluster>/<taskId>[/<container>] or ecs:<cluster>_<taskId>_<runtimeId>';

function tagText(what: string, text: string, max: number): string | undefined {
  if (text.length === 0) return `empty ${what}`;
  if (text.length > max) return `${what} longer than ${max} characters`;
  if (text !== text.trim()) return `${what} starts or ends with a space`;
  return TAG_TEXT_PATTERN.test(text)
    ? undefined
    : `${what} ${JSON.stringify(text)} has characters EC2 tags do not allow (letters, digits, spaces and _ . : / = + - @)`;
}

function parseEcs(rest: string): TargetSpec | string {
  if (ECS_LITERAL_PATTERN.test(`ecs:${rest}`)) return { kind: 'id', id: `ecs:${rest}` };
  const parts = rest.split('/');
  if (parts.length < 2 || parts.length > 3) {
    return 'ecs targets are ecs:<cluster>/<service>[/<container>], ecs:<cluster>/<taskId>[/<container>] or ecs:<cluster>_<taskId>_<runtimeId>, e.g. ecs:prod/api/app';
  }
  const [cluster = '', middle = '', container] = parts;
  if (!ECS_NAME_PATTERN.test(cluster))
    return `cluster ${JSON.stringify(cluster)} is not an ECS cluster name (letters, digits, - and _)`;
  if (container !== undefined && !CONTAINER_NAME_PATTERN.test(container))
    return `container ${JSON.stringify(container)} is not a container name (letters, digits, - and _)`;
  const withContainer = container !== undefined ? { container } : {};
  if (TASK_ID_PATTERN.test(middle)) return { kind: 'ecsTask', cluster, taskId: middle, ...withContainer };
  if (!ECS_NAME_PATTERN.test(middle))
    return `${JSON.stringify(middle)} is neither an ECS service name (letters, digits, - and _) nor a task id (32 hex digits)`;
  return { kind: 'ecsService', cluster, service: middle, ...withContainer };
}

/**
 * Parse a target as written by the user.
 *
 * @param text - the `target` value
 * @returns the parsed form, or a one-line description of what is wrong (without the field name)
 */
export function parseTarget(text: string): TargetSpec | string {
  if (INSTANCE_ID_PATTERN.test(text)) return { kind: 'id', id: text };
  if (text.startsWith('ecs:')) return parseEcs(text.slice(4));
  if (text.startsWith('name:')) {
    const value = text.slice(5);
    return tagText('Name tag value', value, TAG_VALUE_MAX_CHARS) ?? { kind: 'tag', key: 'Name', value };
  }
  if (text.startsWith('tag:')) {
    const body = text.slice(4);
    const eq = body.indexOf('=');
    if (eq < 0) return 'tag targets are tag:<Key>=<Value>, e.g. tag:Role=db';
    const key = body.slice(0, eq);
    const value = body.slice(eq + 1);
    const problem =
      tagText('tag key', key, TAG_KEY_MAX_CHARS) ?? tagText('tag value', value, TAG_VALUE_MAX_CHARS);
    if (problem !== undefined) return problem;
    return { kind: 'tag', key, value };
  }
  if (ALMOST_INSTANCE_ID.test(text))
    return `${JSON.stringify(text)} looks like a managed node id but is not one (i- or mi- and 8 or 17 lowercase hex digits)`;
  if (text.length > 0 && text.length <= TAG_VALUE_MAX_CHARS && BARE_NAME_PATTERN.test(text))
    return { kind: 'tag', key: 'Name', value: text };
  return `${JSON.stringify(text)} is not a target; use one of ${TARGET_FORMS}`;
}

/** Render a parsed target the way a user writes it (`name:web-1`, `tag:Role=db`, `ecs:prod/api`). */
export function describeTarget(spec: TargetSpec): string {
  switch (spec.kind) {
    case 'id':
      return spec.id;
    case 'tag':
      return spec.key === 'Name' ? `name:${spec.value}` : `tag:${spec.key}=${spec.value}`;
    case 'ecsService':
      return `ecs:${spec.cluster}/${spec.service}${spec.container !== undefined ? `/${spec.container}` : ''}`;
    case 'ecsTask':
      return `ecs:${spec.cluster}/${spec.taskId}${spec.container !== undefined ? `/${spec.container}` : ''}`;
  }
}
