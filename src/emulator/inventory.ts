/**
 * The emulator's inventory: managed instances with tags and ping status, and ECS clusters with services,
 * tasks and containers. Serves SSM `DescribeInstanceInformation` (the `Filters` form: `tag:<Key>`,
 * `tag-key`, `PingStatus`, `InstanceIds`, `ResourceType`; `MaxResults` 5–50, opaque `NextToken`) and ECS
 * `ListTasks` / `DescribeTasks`, answering like the services do, and tells StartSession which targets are
 * connected (`ConnectionLost` instances and tasks without a running ExecuteCommandAgent are not).
 *
 * Mutable at run time (replace an instance, stop a task) so tests can change the world between sessions.
 */
import { createHash } from 'node:crypto';
import { ApiError } from './api-error.js';

/** Account id in the ARNs the emulator makes up. */
export const EMULATOR_ACCOUNT_ID = '123456789012';
/** Region in the ARNs the emulator makes up. */
export const EMULATOR_REGION = 'us-east-1';
/** DescribeInstanceInformation `MaxResults` bounds and default (SSM API reference). */
export const INSTANCE_PAGE = { MIN: 5, MAX: 50, DEFAULT: 10 } as const;
/** ListTasks `maxResults` bounds and default (ECS API reference). */
export const TASK_PAGE = { MIN: 1, MAX: 100, DEFAULT: 100 } as const;
/** Most tasks one DescribeTasks call may name (ECS API reference). */
export const DESCRIBE_TASKS_MAX = 100;
/** Most values in one DescribeInstanceInformation filter (SSM API reference). */
export const FILTER_VALUES_MAX = 100;
/** ECS Exec's managed agent name (ECS API reference). */
export const EXEC_AGENT_NAME = 'ExecuteCommandAgent';

/** SSM ping status of a managed node (SSM API reference, `InstanceInformation.PingStatus`). */
export type PingStatus = 'Online' | 'ConnectionLost' | 'Inactive';

/** One managed instance. */
export interface InventoryInstance {
  /** `i-…` or `mi-…`. */
  instanceId: string;
  /** Tags, key → value. */
  tags: Record<string, string>;
  /** Default `Online`. */
  pingStatus?: PingStatus;
  /** Default: the `Name` tag, else the id. */
  computerName?: string;
  /** Default `Linux`. */
  platformType?: string;
}

/** One container of an ECS task. */
export interface InventoryContainer {
  name: string;
  /** Default `<taskId>-<n>`. */
  runtimeId?: string;
  /** Status of the ExecuteCommandAgent; `null` = ECS Exec not enabled (no managed agent). Default `RUNNING`. */
  execAgent?: 'RUNNING' | 'PENDING' | 'STOPPED' | null;
}

/** One ECS task. */
export interface InventoryTask {
  cluster: string;
  /** 32 hex digits. */
  taskId: string;
  /** Service that started it, if any. */
  service?: string;
  /** Default `RUNNING`. */
  lastStatus?: string;
  containers: InventoryContainer[];
}

/** The whole inventory, as given to the emulator (`--inventory` file or the `inventory` option). */
export interface InventoryData {
  instances?: InventoryInstance[];
  tasks?: InventoryTask[];
  /** Clusters that exist even without tasks. */
  clusters?: string[];
}

type JsonObject = Record<string, unknown>;

function validation(message: string): ApiError {
  return new ApiError('ValidationException', message);
}

function pageToken(kind: string, query: string, offset: number): string {
  return Buffer.from(JSON.stringify({ k: kind, q: query, o: offset }), 'utf8').toString('base64url');
}

/** The offset a token encodes for the same query, or an error like the services' (`InvalidNextToken`). */
function readToken(kind: string, query: string, token: unknown, invalid: () => ApiError): number {
  if (token === undefined || token === null || token === '') return 0;
  if (typeof token !== 'string') throw invalid();
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (
      parsed !== null &&
      typeof parsed === 'object' &&
      'k' in parsed &&
      'q' in parsed &&
      'o' in parsed &&
      parsed.k === kind &&
      parsed.q === query &&
      typeof parsed.o === 'number' &&
      Number.isInteger(parsed.o) &&
      parsed.o >= 0
    ) {
      return parsed.o;
    }
  } catch {
    // fall through
  }
  throw invalid();
}

function maxResults(
  value: unknown,
  bounds: { MIN: number; MAX: number; DEFAULT: number },
  field: string,
): number {
  if (value === undefined || value === null) return bounds.DEFAULT;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < bounds.MIN || value > bounds.MAX) {
    throw validation(
      `1 validation error detected: Value '${String(value)}' at '${field}' failed to satisfy constraint: Member must have value between ${bounds.MIN} and ${bounds.MAX}`,
    );
  }
  return value;
}

/** A filter of DescribeInstanceInformation, checked. */
interface Filter {
  key: string;
  values: string[];
}

function readFilters(raw: unknown): Filter[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw validation('Filters must be a list.');
  return raw.map((item: unknown) => {
    if (item === null || typeof item !== 'object') throw validation('Each filter must be an object.');
    const key = (item as JsonObject)['Key'];
    const values = (item as JsonObject)['Values'];
    if (typeof key !== 'string' || key.length < 1 || key.length > 163)
      throw validation('Filter Key must have length between 1 and 163.');
    if (
      !Array.isArray(values) ||
      values.length < 1 ||
      values.length > FILTER_VALUES_MAX ||
      !values.every((v) => typeof v === 'string')
    ) {
      throw new ApiError(
        'InvalidInstanceInformationFilterValue',
        `The filter ${key} needs between 1 and ${FILTER_VALUES_MAX} string values.`,
      );
    }
    return { key, values: values as string[] };
  });
}

function lastArnPart(text: string): string {
  return text.slice(text.lastIndexOf('/') + 1);
}

function clusterName(raw: unknown): string {
  if (raw === undefined || raw === null || raw === '') return 'default';
  if (typeof raw !== 'string') throw new ApiError('InvalidParameterException', 'cluster must be a string.');
  return lastArnPart(raw);
}

/** Mutable inventory; the API dispatch in `api.ts` calls the `describe…`/`list…` methods with parsed bodies. */
export class Inventory {
  private readonly instances = new Map<string, InventoryInstance>();
  private readonly tasks = new Map<string, InventoryTask>();
  private readonly clusters = new Set<string>();

  constructor(data: InventoryData = {}) {
    for (const instance of data.instances ?? []) this.putInstance(instance);
    for (const task of data.tasks ?? []) this.putTask(task);
    for (const cluster of data.clusters ?? []) this.clusters.add(cluster);
  }

  /** Add or replace an instance. */
  putInstance(instance: InventoryInstance): void {
    this.instances.set(instance.instanceId, { ...instance, tags: { ...instance.tags } });
  }

  /** Remove an instance (terminated); true if it was there. */
  removeInstance(instanceId: string): boolean {
    return this.instances.delete(instanceId);
  }

  /** Change an instance's ping status. */
  setPingStatus(instanceId: string, status: PingStatus): void {
    const instance = this.instances.get(instanceId);
    if (instance === undefined) throw new Error(`no inventory instance ${instanceId}`);
    instance.pingStatus = status;
  }

  /** Add or replace a task (its cluster then exists). */
  putTask(task: InventoryTask): void {
    this.clusters.add(task.cluster);
    this.tasks.set(`${task.cluster}/${task.taskId}`, {
      ...task,
      containers: task.containers.map((c, i) => ({
        ...c,
        runtimeId: c.runtimeId ?? `${task.taskId}-${1000 + i}`,
        execAgent: c.execAgent === undefined ? 'RUNNING' : c.execAgent,
      })),
    });
  }

  /** Remove a task (stopped and gone); true if it was there. */
  removeTask(cluster: string, taskId: string): boolean {
    return this.tasks.delete(`${cluster}/${taskId}`);
  }

  /** Number of instances. */
  get instanceCount(): number {
    return this.instances.size;
  }

  /**
   * StartSession's view: undefined when the inventory does not know `target` (the emulator's target
   * patterns decide), else whether it is connected: an Online instance, or an `ecs:` target naming a
   * running task's container whose ExecuteCommandAgent runs.
   */
  isConnected(target: string): boolean | undefined {
    const instance = this.instances.get(target);
    if (instance !== undefined) return (instance.pingStatus ?? 'Online') === 'Online';
    if (!target.startsWith('ecs:')) return undefined;
    for (const task of this.tasks.values()) {
      for (const c of task.containers) {
        if (`ecs:${task.cluster}_${task.taskId}_${c.runtimeId ?? ''}` !== target) continue;
        return (task.lastStatus ?? 'RUNNING') === 'RUNNING' && c.execAgent === 'RUNNING';
      }
    }
    return false;
  }

  /** SSM DescribeInstanceInformation (the `Filters` form). */
  describeInstanceInformation(body: JsonObject): JsonObject {
    if (body['InstanceInformationFilterList'] !== undefined && body['Filters'] !== undefined) {
      throw validation('InstanceInformationFilterList and Filters cannot be used together.');
    }
    const filters = readFilters(body['Filters']);
    const limit = maxResults(body['MaxResults'], INSTANCE_PAGE, 'maxResults');
    const query = createHash('sha256').update(JSON.stringify(filters)).digest('hex').slice(0, 16);
    const offset = readToken(
      'ssm',
      query,
      body['NextToken'],
      () => new ApiError('InvalidNextToken', 'The specified token is not valid.'),
    );
    const matches = [...this.instances.values()].filter((i) => filters.every((f) => this.matches(i, f)));
    const page = matches.slice(offset, offset + limit);
    const out: JsonObject = {
      InstanceInformationList: page.map((i) => ({
        InstanceId: i.instanceId,
        PingStatus: i.pingStatus ?? 'Online',
        ComputerName: i.computerName ?? i.tags['Name'] ?? i.instanceId,
        PlatformType: i.platformType ?? 'Linux',
        ResourceType: i.instanceId.startsWith('mi-') ? 'ManagedInstance' : 'EC2Instance',
        AgentVersion: '3.3.987.0',
        IsLatestVersion: false,
      })),
    };
    if (offset + limit < matches.length) out['NextToken'] = pageToken('ssm', query, offset + limit);
    return out;
  }

  private matches(instance: InventoryInstance, filter: Filter): boolean {
    if (filter.key.startsWith('tag:')) {
      const value = instance.tags[filter.key.slice(4)];
      return value !== undefined && filter.values.includes(value);
    }
    switch (filter.key) {
      case 'tag-key':
        return filter.values.some((k) => k in instance.tags);
      case 'PingStatus':
        return filter.values.includes(instance.pingStatus ?? 'Online');
      case 'InstanceIds':
        return filter.values.includes(instance.instanceId);
      case 'ResourceType':
        return filter.values.includes(
          instance.instanceId.startsWith('mi-') ? 'ManagedInstance' : 'EC2Instance',
        );
      case 'PlatformTypes':
        return filter.values.includes(instance.platformType ?? 'Linux');
      default:
        throw new ApiError('InvalidFilterKey', `The filter key ${filter.key} is not valid.`);
    }
  }

  private requireCluster(name: string): void {
    if (!this.clusters.has(name)) throw new ApiError('ClusterNotFoundException', 'Cluster not found.');
  }

  private taskArn(task: InventoryTask): string {
    return `arn:aws:ecs:${EMULATOR_REGION}:${EMULATOR_ACCOUNT_ID}:task/${task.cluster}/${task.taskId}`;
  }

  /** ECS ListTasks (`cluster`, `serviceName`, `desiredStatus`, `maxResults`, `nextToken`). */
  listTasks(body: JsonObject): JsonObject {
    const cluster = clusterName(body['cluster']);
    this.requireCluster(cluster);
    const service = body['serviceName'];
    if (service !== undefined && typeof service !== 'string')
      throw new ApiError('InvalidParameterException', 'serviceName must be a string.');
    const desired = body['desiredStatus'] ?? 'RUNNING';
    if (desired !== 'RUNNING' && desired !== 'PENDING' && desired !== 'STOPPED')
      throw new ApiError('InvalidParameterException', `Invalid desiredStatus ${String(desired)}.`);
    const all = [...this.tasks.values()].filter((t) => t.cluster === cluster);
    if (typeof service === 'string' && !all.some((t) => t.service === lastArnPart(service))) {
      throw new ApiError('ServiceNotFoundException', 'Service not found.');
    }
    const limit = maxResults(body['maxResults'], TASK_PAGE, 'maxResults');
    const query = `${cluster}/${String(service)}/${String(desired)}`;
    const offset = readToken(
      'ecs',
      query,
      body['nextToken'],
      () => new ApiError('InvalidParameterException', 'Invalid nextToken.'),
    );
    const matches = all.filter(
      (t) =>
        (service === undefined || t.service === lastArnPart(service)) &&
        (desired === 'STOPPED' ? t.lastStatus === 'STOPPED' : (t.lastStatus ?? 'RUNNING') !== 'STOPPED'),
    );
    const out: JsonObject = { taskArns: matches.slice(offset, offset + limit).map((t) => this.taskArn(t)) };
    if (offset + limit < matches.length) out['nextToken'] = pageToken('ecs', query, offset + limit);
    return out;
  }

  /** ECS DescribeTasks (`cluster`, `tasks`: ids or ARNs, 1–100). */
  describeTasks(body: JsonObject): JsonObject {
    const cluster = clusterName(body['cluster']);
    this.requireCluster(cluster);
    const names = body['tasks'];
    if (
      !Array.isArray(names) ||
      names.length < 1 ||
      names.length > DESCRIBE_TASKS_MAX ||
      !names.every((n) => typeof n === 'string')
    ) {
      throw new ApiError(
        'InvalidParameterException',
        `tasks must list 1 to ${DESCRIBE_TASKS_MAX} task ids or ARNs.`,
      );
    }
    const tasks: JsonObject[] = [];
    const failures: JsonObject[] = [];
    for (const name of names as string[]) {
      const task = this.tasks.get(`${cluster}/${lastArnPart(name)}`);
      if (task === undefined) {
        failures.push({ arn: name, reason: 'MISSING' });
        continue;
      }
      const taskArn = this.taskArn(task);
      tasks.push({
        taskArn,
        clusterArn: `arn:aws:ecs:${EMULATOR_REGION}:${EMULATOR_ACCOUNT_ID}:cluster/${cluster}`,
        lastStatus: task.lastStatus ?? 'RUNNING',
        desiredStatus: 'RUNNING',
        enableExecuteCommand: task.containers.some((c) => c.execAgent !== null),
        ...(task.service !== undefined ? { group: `service:${task.service}` } : {}),
        containers: task.containers.map((c) => ({
          containerArn: `arn:aws:ecs:${EMULATOR_REGION}:${EMULATOR_ACCOUNT_ID}:container/${cluster}/${task.taskId}/${c.name}`,
          taskArn,
          name: c.name,
          runtimeId: c.runtimeId,
          lastStatus: task.lastStatus ?? 'RUNNING',
          managedAgents:
            c.execAgent === null || c.execAgent === undefined
              ? []
              : [{ name: EXEC_AGENT_NAME, lastStatus: c.execAgent }],
        })),
      });
    }
    return { tasks, failures };
  }
}

/**
 * Check a parsed inventory file (`--inventory`), naming the first problem.
 * @throws Error with the path of the bad field
 */
export function parseInventory(raw: unknown): InventoryData {
  const fail = (path: string, what: string): never => {
    throw new Error(`inventory ${path}: ${what}`);
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('(top level)', 'must be an object');
  const top = raw as JsonObject;
  const data: InventoryData = {};
  const instances = top['instances'] ?? [];
  if (!Array.isArray(instances)) fail('instances', 'must be a list');
  data.instances = (instances as unknown[]).map((item, i) => {
    if (item === null || typeof item !== 'object') return fail(`instances[${i}]`, 'must be an object');
    const o = item as JsonObject;
    if (typeof o['instanceId'] !== 'string' || !/^(i|mi)-[0-9a-f]{8,17}$/.test(o['instanceId']))
      fail(`instances[${i}].instanceId`, 'must be an id like i-0123456789abcdef0');
    const tags = o['tags'] ?? {};
    if (tags === null || typeof tags !== 'object' || !Object.values(tags).every((v) => typeof v === 'string'))
      fail(`instances[${i}].tags`, 'must map tag keys to string values');
    const ping = o['pingStatus'] ?? 'Online';
    if (ping !== 'Online' && ping !== 'ConnectionLost' && ping !== 'Inactive')
      fail(`instances[${i}].pingStatus`, 'must be Online, ConnectionLost or Inactive');
    return {
      instanceId: o['instanceId'] as string,
      tags: tags as Record<string, string>,
      pingStatus: ping as PingStatus,
    };
  });
  const tasks = top['tasks'] ?? [];
  if (!Array.isArray(tasks)) fail('tasks', 'must be a list');
  data.tasks = (tasks as unknown[]).map((item, i) => {
    if (item === null || typeof item !== 'object') return fail(`tasks[${i}]`, 'must be an object');
    const o = item as JsonObject;
    if (typeof o['cluster'] !== 'string') fail(`tasks[${i}].cluster`, 'must be a cluster name');
    if (typeof o['taskId'] !== 'string' || !/^[0-9a-f]{32}$/.test(o['taskId']))
      fail(`tasks[${i}].taskId`, 'must be 32 hex digits');
    if (!Array.isArray(o['containers']) || o['containers'].length === 0)
      fail(`tasks[${i}].containers`, 'must list at least one container');
    const containers = (o['containers'] as unknown[]).map((c, j) => {
      if (c === null || typeof c !== 'object' || typeof (c as JsonObject)['name'] !== 'string')
        return fail(`tasks[${i}].containers[${j}].name`, 'must be a container name');
      const cc = c as JsonObject;
      const exec = cc['execAgent'] === undefined ? 'RUNNING' : cc['execAgent'];
      if (exec !== null && exec !== 'RUNNING' && exec !== 'PENDING' && exec !== 'STOPPED')
        fail(`tasks[${i}].containers[${j}].execAgent`, 'must be RUNNING, PENDING, STOPPED or null');
      return { name: cc['name'] as string, execAgent: exec as InventoryContainer['execAgent'] };
    });
    const task: InventoryTask = {
      cluster: o['cluster'] as string,
      taskId: o['taskId'] as string,
      containers,
    };
    if (typeof o['service'] === 'string') task.service = o['service'];
    if (typeof o['lastStatus'] === 'string') task.lastStatus = o['lastStatus'];
    return task;
  });
  return data;
}
