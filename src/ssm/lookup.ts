/**
 * The AWS look-ups that resolve name, tag and ECS targets (`src/targets/resolve.ts`):
 * SSM `DescribeInstanceInformation` (every page) through `@aws-sdk/client-ssm`, and ECS `ListTasks` /
 * `DescribeTasks` through `@aws-sdk/client-ecs`. Both clients get the same region, profile, credentials,
 * timeouts and proxy rules as the session client in `client.ts`; the SDK honours `AWS_ENDPOINT_URL_SSM`
 * and `AWS_ENDPOINT_URL_ECS` when no endpoint is configured.
 *
 * Every failure is rethrown as an `AwsSessionError` via {@link mapSsmError}; an AccessDenied names the
 * missing IAM action.
 */
import { DescribeTasksCommand, ECSClient, ListTasksCommand } from '@aws-sdk/client-ecs';
import type { ECSClientConfig } from '@aws-sdk/client-ecs';
import { DescribeInstanceInformationCommand, SSMClient } from '@aws-sdk/client-ssm';
import type { SSMClientConfig } from '@aws-sdk/client-ssm';
import { AwsSessionError } from '../errors.js';
import type { Logger } from '../log.js';
import { describeProxy, proxyAgentFor, proxyUrlFor } from '../proxy.js';
import { SSM_CONNECT_TIMEOUT_MS, SSM_REQUEST_TIMEOUT_MS } from './client.js';
import type { SsmApiOptions } from './client.js';
import { mapSsmError } from './errors.js';
import type { SsmErrorContext, SsmOperation } from './errors.js';

/** Instances asked for per DescribeInstanceInformation page (the API's maximum, SSM API reference). */
export const INSTANCES_PER_PAGE = 50;
/** Task ARNs asked for per ListTasks page (the API's maximum, ECS API reference). */
export const TASKS_PER_PAGE = 100;
/** Tasks per DescribeTasks call (the API's maximum, ECS API reference). */
export const TASKS_PER_DESCRIBE = 100;
/** Most pages read for one look-up (our own bound: 200 × 50 = 10 000 instances). */
export const MAX_LOOKUP_PAGES = 200;
/** ECS managed agent that must run in a container for ECS Exec sessions (ECS API reference). */
export const ECS_EXEC_AGENT = 'ExecuteCommandAgent';

/** One DescribeInstanceInformation filter (`tag:<Key>`, `PingStatus`, …). */
export interface InstanceFilter {
  key: string;
  values: string[];
}

/** The fields of one managed node the resolver reads. */
export interface InstanceSummary {
  /** `i-…` or `mi-…`. */
  instanceId: string;
  /** Host name the agent reported; '' when unknown. */
  computerName: string;
  /** `Online`, `ConnectionLost` or `Inactive`. */
  pingStatus: string;
}

/** The fields of one ECS container the resolver reads. */
export interface ContainerSummary {
  name: string;
  /** Container runtime id (part of the `ecs:` session target); '' when not yet known. */
  runtimeId: string;
  /** `lastStatus` of its ExecuteCommandAgent; undefined when the agent is absent (ECS Exec not enabled). */
  execAgentStatus: string | undefined;
}

/** The fields of one ECS task the resolver reads. */
export interface TaskSummary {
  taskArn: string;
  /** Last part of the ARN. */
  taskId: string;
  /** `RUNNING`, `PENDING`, `STOPPED`, … */
  lastStatus: string;
  containers: ContainerSummary[];
}

/** Calls made, per operation (for logs, tests and the report in docs). */
export interface LookupStats {
  describeInstanceInformation: number;
  listTasks: number;
  describeTasks: number;
}

/** The look-ups the target resolver needs. Errors are `AwsSessionError`s. */
export interface TargetLookupApi {
  /** Every managed node matching all filters, all pages read. */
  describeInstances(filters: readonly InstanceFilter[]): Promise<InstanceSummary[]>;
  /** ARNs of the service's running tasks, all pages read. */
  listServiceTasks(cluster: string, service: string): Promise<string[]>;
  /** The tasks (ids or ARNs) that exist; unknown ones are left out. */
  describeTasks(cluster: string, tasks: readonly string[]): Promise<TaskSummary[]>;
  /** Region the clients were configured with, if any (for messages). */
  readonly region: string | undefined;
  /** Calls made so far. */
  readonly stats: Readonly<LookupStats>;
}

/** Options of {@link createTargetLookup}: those of the session client plus the ECS endpoint. */
export interface TargetLookupOptions extends SsmApiOptions {
  /** ECS API endpoint URL. Default: `AWS_ENDPOINT_URL_ECS` / the regional endpoint. */
  ecsEndpoint?: string;
}

/** SDK client settings shared by both clients; `service` is the default host for NO_PROXY matching. */
function clientConfig(
  options: SsmApiOptions,
  endpoint: string | undefined,
  serviceUrl: string,
  log: Logger,
): SSMClientConfig & ECSClientConfig {
  // The SDK ignores HTTPS_PROXY; use the same proxy rules as the session client (client.ts).
  const proxyAgent = proxyAgentFor(endpoint ?? serviceUrl);
  if (proxyAgent)
    log.debug(`${serviceUrl} through proxy ${describeProxy(proxyUrlFor(endpoint ?? serviceUrl) ?? '')}`);
  const config: SSMClientConfig & ECSClientConfig = {
    requestHandler: {
      requestTimeout: options.requestTimeoutMs ?? SSM_REQUEST_TIMEOUT_MS,
      connectionTimeout: Math.min(SSM_CONNECT_TIMEOUT_MS, options.requestTimeoutMs ?? SSM_CONNECT_TIMEOUT_MS),
      throwOnRequestTimeout: true,
      ...(proxyAgent ? { httpAgent: proxyAgent, httpsAgent: proxyAgent } : {}),
    },
  };
  if (options.region) config.region = options.region;
  if (options.profile) config.profile = options.profile;
  if (endpoint) config.endpoint = endpoint;
  if (options.userAgent) config.customUserAgent = options.userAgent;
  if (options.credentials) config.credentials = { ...options.credentials };
  if (options.maxAttempts !== undefined) config.maxAttempts = options.maxAttempts;
  return config;
}

/** Error names of ECS meaning the cluster or service does not exist (ECS API reference). */
const ECS_NOT_FOUND_NAMES = new Set(['ClusterNotFoundException', 'ServiceNotFoundException']);

function errorName(err: unknown): string {
  if (err !== null && typeof err === 'object' && 'name' in err && typeof err.name === 'string')
    return err.name;
  return '';
}

function lastArnPart(arn: string): string {
  return arn.slice(arn.lastIndexOf('/') + 1);
}

/**
 * Build the look-up API on top of the AWS SDK.
 *
 * @param options - region/profile/endpoints (each optional), logger, test credentials
 */
export function createTargetLookup(options: TargetLookupOptions): TargetLookupApi {
  const log = options.logger.child('targets:aws');
  const ssm = new SSMClient(clientConfig(options, options.endpoint, 'https://ssm.amazonaws.com', log));
  const ecs = new ECSClient(clientConfig(options, options.ecsEndpoint, 'https://ecs.amazonaws.com', log));
  const stats: LookupStats = { describeInstanceInformation: 0, listTasks: 0, describeTasks: 0 };
  const baseContext: SsmErrorContext = {};
  if (options.region) baseContext.region = options.region;
  if (options.profile) baseContext.profile = options.profile;
  const inRegion = options.region ? ` in ${options.region}` : '';

  async function call<T>(op: SsmOperation, what: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      if (ECS_NOT_FOUND_NAMES.has(errorName(err))) {
        throw new AwsSessionError(
          'PF_ERR_TARGET_NOT_FOUND',
          `ECS ${op}: ${errorName(err) === 'ClusterNotFoundException' ? 'cluster' : 'service'} of ${what} not found${inRegion}: check the cluster and service names and --region`,
          { cause: err },
        );
      }
      const mapped = mapSsmError(err, op, baseContext);
      log.debug(`${op} failed`, { code: mapped.code, error: mapped.message });
      throw mapped;
    }
  }

  return {
    region: options.region,
    stats,

    async describeInstances(filters: readonly InstanceFilter[]): Promise<InstanceSummary[]> {
      const out: InstanceSummary[] = [];
      let nextToken: string | undefined;
      for (let page = 0; page < MAX_LOOKUP_PAGES; page++) {
        stats.describeInstanceInformation++;
        const response = await call('DescribeInstanceInformation', 'the filter', () =>
          ssm.send(
            new DescribeInstanceInformationCommand({
              Filters: filters.map((f) => ({ Key: f.key, Values: [...f.values] })),
              MaxResults: INSTANCES_PER_PAGE,
              ...(nextToken ? { NextToken: nextToken } : {}),
            }),
          ),
        );
        for (const item of response.InstanceInformationList ?? []) {
          if (!item.InstanceId) continue;
          out.push({
            instanceId: item.InstanceId,
            computerName: item.ComputerName ?? '',
            pingStatus: item.PingStatus ?? '',
          });
        }
        nextToken = response.NextToken || undefined;
        if (!nextToken) return out;
      }
      log.warn(
        `DescribeInstanceInformation: stopped after ${MAX_LOOKUP_PAGES} pages (${out.length} instances)`,
      );
      return out;
    },

    async listServiceTasks(cluster: string, service: string): Promise<string[]> {
      const out: string[] = [];
      let nextToken: string | undefined;
      for (let page = 0; page < MAX_LOOKUP_PAGES; page++) {
        stats.listTasks++;
        const response = await call('ListTasks', `ecs:${cluster}/${service}`, () =>
          ecs.send(
            new ListTasksCommand({
              cluster,
              serviceName: service,
              desiredStatus: 'RUNNING',
              maxResults: TASKS_PER_PAGE,
              ...(nextToken ? { nextToken } : {}),
            }),
          ),
        );
        out.push(...(response.taskArns ?? []));
        nextToken = response.nextToken || undefined;
        if (!nextToken) return out;
      }
      return out;
    },

    async describeTasks(cluster: string, tasks: readonly string[]): Promise<TaskSummary[]> {
      const out: TaskSummary[] = [];
      for (let i = 0; i < tasks.length; i += TASKS_PER_DESCRIBE) {
        stats.describeTasks++;
        const chunk = tasks.slice(i, i + TASKS_PER_DESCRIBE);
        const response = await call('DescribeTasks', `ecs:${cluster}`, () =>
          ecs.send(new DescribeTasksCommand({ cluster, tasks: [...chunk] })),
        );
        for (const task of response.tasks ?? []) {
          if (!task.taskArn) continue;
          out.push({
            taskArn: task.taskArn,
            taskId: lastArnPart(task.taskArn),
            lastStatus: task.lastStatus ?? '',
            containers: (task.containers ?? []).map((c) => ({
              name: c.name ?? '',
              runtimeId: c.runtimeId ?? '',
              execAgentStatus: c.managedAgents?.find((a) => a.name === ECS_EXEC_AGENT)?.lastStatus,
            })),
          });
        }
      }
      return out;
    },
  };
}
