/**
 * Turn a forward's target (any form of `spec.ts`) into the concrete id StartSession takes, at each session
 * start, so an instance replaced by its Auto Scaling group or a redeployed ECS task is found by the next
 * session. Results are cached for at most {@link TARGET_CACHE_TTL_MS}; concurrent resolutions of one target
 * share one look-up.
 *
 * API calls per resolution (nothing for ids, nothing while cached):
 * - `name:`/`tag:`: DescribeInstanceInformation, one call per page of 50 instances;
 * - `ecs:<cluster>/<service>`: ListTasks (one per 100 tasks), then DescribeTasks (one per 100 tasks);
 * - `ecs:<cluster>/<taskId>`: DescribeTasks once.
 */
import { AwsSessionError } from '../errors.js';
import type { ForwardConfig, TargetPick } from '../config/types.js';
import type { Logger } from '../log.js';
import type { SsmApiOptions } from '../ssm/client.js';
import { ECS_EXEC_AGENT, createTargetLookup } from '../ssm/lookup.js';
import type { InstanceSummary, TargetLookupApi, TaskSummary } from '../ssm/lookup.js';
import { describeTarget, parseTarget } from './spec.js';
import type { TargetSpec } from './spec.js';

/** Longest time a resolved target is reused before it is looked up again, ms (issue 14: at most 60 s). */
export const TARGET_CACHE_TTL_MS = 60_000;
/** Matches listed in an ambiguity error (our own bound: one readable line). */
export const AMBIGUOUS_LISTED_MAX = 5;
/** Cached targets per resolver before the oldest is evicted (our own bound). */
export const TARGET_CACHE_MAX_ENTRIES = 1000;

/** A resolved target. */
export interface ResolvedTarget {
  /** The id StartSession takes: `i-…`, `mi-…` or `ecs:<cluster>_<taskId>_<runtimeId>`. */
  id: string;
  /** The target as the user wrote it, canonical form (`name:web-1`). */
  spec: string;
  /** How many online instances or running tasks matched (1 for ids). */
  matches: number;
}

/** Counters of one resolver. */
export interface TargetResolverStats {
  /** Calls of {@link TargetResolver.resolve}. */
  resolutions: number;
  /** Resolutions answered from the cache (or an in-flight look-up). */
  cacheHits: number;
  /** Resolutions that needed AWS look-ups. */
  lookups: number;
  /** Entries in the cache now. */
  cached: number;
}

/** What a {@link TargetResolver} needs. */
export interface TargetResolverDeps {
  lookup: TargetLookupApi;
  logger: Logger;
  /** Monotonic clock, ms. Default `performance.now`. */
  now?: () => number;
  /** Random number in [0, 1) for `pick: any`. Default `Math.random`. */
  random?: () => number;
  /** Cache lifetime, ms, 0–{@link TARGET_CACHE_TTL_MS}. Default {@link TARGET_CACHE_TTL_MS}. */
  cacheTtlMs?: number;
}

interface CacheEntry {
  expiresAt: number;
  value: Promise<ResolvedTarget>;
}

/** `i-0abc (web-1a, Online)` for an instance in lists. */
function describeInstance(i: InstanceSummary): string {
  return `${i.instanceId} (${i.computerName || 'no computer name'}, ${i.pingStatus || 'unknown ping status'})`;
}

/** A candidate session target with the text used to list it. */
interface Candidate {
  id: string;
  text: string;
}

/** Resolves and caches the targets of forwards sharing one region/profile/endpoint. */
export class TargetResolver {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly ttlMs: number;
  private readonly log: Logger;
  private counters = { resolutions: 0, cacheHits: 0, lookups: 0 };

  constructor(private readonly deps: TargetResolverDeps) {
    this.now = deps.now ?? (() => performance.now());
    this.random = deps.random ?? Math.random;
    this.ttlMs = Math.min(Math.max(0, deps.cacheTtlMs ?? TARGET_CACHE_TTL_MS), TARGET_CACHE_TTL_MS);
    this.log = deps.logger.child('targets');
  }

  /** Counters, for status output and tests. */
  get stats(): TargetResolverStats {
    return { ...this.counters, cached: this.cache.size };
  }

  /**
   * The concrete target for `target` now (from the cache while it is fresh).
   *
   * @param target - the forward's `target`, already validated by `verifyConfig`
   * @param pick - `any` picks one of several matches at random; `one` (default) fails listing them
   * @throws AwsSessionError `PF_ERR_TARGET_NOT_FOUND`, `PF_ERR_TARGET_AMBIGUOUS`, `PF_ERR_ECS_EXEC_DISABLED`,
   *   `PF_ERR_ACCESS_DENIED` (naming the IAM action) or another mapped AWS error
   */
  resolve(target: string, pick: TargetPick = 'one'): Promise<ResolvedTarget> {
    this.counters.resolutions++;
    const spec = parseTarget(target);
    if (typeof spec === 'string') {
      return Promise.reject(new AwsSessionError('PF_ERR_TARGET_NOT_FOUND', `target ${target}: ${spec}`));
    }
    if (spec.kind === 'id') return Promise.resolve({ id: spec.id, spec: spec.id, matches: 1 });
    const key = `${pick} ${target}`;
    const now = this.now();
    const hit = this.cache.get(key);
    if (hit !== undefined && hit.expiresAt > now) {
      this.counters.cacheHits++;
      return hit.value;
    }
    this.counters.lookups++;
    const value = this.lookUp(spec, pick).then((resolved) => {
      this.log.info(`target ${target} → ${resolved.id} (${resolved.spec})`);
      return resolved;
    });
    this.cache.delete(key);
    if (this.cache.size >= TARGET_CACHE_MAX_ENTRIES) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    const entry: CacheEntry = { expiresAt: now + this.ttlMs, value };
    this.cache.set(key, entry);
    // A failed look-up is not cached: the next session start asks again.
    value.catch(() => {
      if (this.cache.get(key) === entry) this.cache.delete(key);
    });
    return value;
  }

  /**
   * Forget the cached resolutions of `target` (every `pick`), so the next session start looks it up again:
   * called when StartSession says the resolved instance is not connected (replaced within the cache time).
   */
  forget(target: string): void {
    for (const pick of ['one', 'any'] as const) this.cache.delete(`${pick} ${target}`);
  }

  /** Forget every cached resolution. */
  clear(): void {
    this.cache.clear();
  }

  private get region(): string {
    return this.deps.lookup.region ? ` in ${this.deps.lookup.region}` : '';
  }

  private async lookUp(spec: Exclude<TargetSpec, { kind: 'id' }>, pick: TargetPick): Promise<ResolvedTarget> {
    const text = describeTarget(spec);
    switch (spec.kind) {
      case 'tag':
        return this.lookUpTag(spec, text, pick);
      case 'ecsService': {
        const arns = await this.deps.lookup.listServiceTasks(spec.cluster, spec.service);
        if (arns.length === 0) {
          throw new AwsSessionError(
            'PF_ERR_TARGET_NOT_FOUND',
            `no running task in ECS service ${spec.service} of cluster ${spec.cluster}${this.region} (ListTasks desiredStatus=RUNNING): check the service is running and --region`,
          );
        }
        const tasks = await this.deps.lookup.describeTasks(spec.cluster, arns);
        return this.pickTask(spec.cluster, spec.container, tasks, text, pick);
      }
      case 'ecsTask': {
        const tasks = await this.deps.lookup.describeTasks(spec.cluster, [spec.taskId]);
        if (tasks.length === 0) {
          throw new AwsSessionError(
            'PF_ERR_TARGET_NOT_FOUND',
            `no ECS task ${spec.taskId} in cluster ${spec.cluster}${this.region} (DescribeTasks): check the task id, the cluster and --region`,
          );
        }
        return this.pickTask(spec.cluster, spec.container, tasks, text, pick);
      }
    }
  }

  private async lookUpTag(
    spec: { key: string; value: string },
    text: string,
    pick: TargetPick,
  ): Promise<ResolvedTarget> {
    const found = await this.deps.lookup.describeInstances([
      { key: `tag:${spec.key}`, values: [spec.value] },
      { key: 'PingStatus', values: ['Online'] },
    ]);
    const online = found.filter((i) => i.pingStatus === 'Online');
    if (online.length === 0) {
      throw new AwsSessionError(
        'PF_ERR_TARGET_NOT_FOUND',
        `no online managed instance matches ${text}${this.region} (DescribeInstanceInformation filters tag:${spec.key}=${spec.value}, PingStatus=Online): check the tag, --region/--profile and that the SSM agent is online`,
      );
    }
    return this.choose(
      online.map((i) => ({ id: i.instanceId, text: describeInstance(i) })),
      text,
      pick,
      'instances',
    );
  }

  /** Pick among several matches per `pick`, or fail listing up to {@link AMBIGUOUS_LISTED_MAX}. */
  private choose(candidates: Candidate[], text: string, pick: TargetPick, what: string): ResolvedTarget {
    const [first] = candidates;
    if (first !== undefined && candidates.length === 1) return { id: first.id, spec: text, matches: 1 };
    if (pick !== 'any') {
      const listed = candidates.slice(0, AMBIGUOUS_LISTED_MAX).map((c) => c.text);
      const more =
        candidates.length > AMBIGUOUS_LISTED_MAX
          ? `, and ${candidates.length - AMBIGUOUS_LISTED_MAX} more`
          : '';
      throw new AwsSessionError(
        'PF_ERR_TARGET_AMBIGUOUS',
        `${candidates.length} ${what} match ${text}${this.region}: ${listed.join(', ')}${more}; set pick: any (--pick-any) to use any of them, or name one by id`,
      );
    }
    const index = Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length));
    const chosen = candidates[index] as Candidate;
    this.log.info(`${text}: picked ${chosen.text} of ${candidates.length} matching ${what} (pick: any)`);
    return { id: chosen.id, spec: text, matches: candidates.length };
  }

  private pickTask(
    cluster: string,
    container: string | undefined,
    tasks: readonly TaskSummary[],
    text: string,
    pick: TargetPick,
  ): ResolvedTarget {
    const running = tasks.filter((t) => t.lastStatus === 'RUNNING');
    if (running.length === 0) {
      const states = [...new Set(tasks.map((t) => t.lastStatus || 'unknown'))].join(', ');
      throw new AwsSessionError(
        'PF_ERR_TARGET_NOT_FOUND',
        `no running task for ${text}${this.region} (DescribeTasks: ${states}): wait for the task to start, or check the service`,
      );
    }
    const candidates: Candidate[] = [];
    let execDisabled: string | undefined;
    let containerProblem: string | undefined;
    for (const task of running) {
      const chosen = container === undefined ? undefined : task.containers.find((c) => c.name === container);
      const names = task.containers.map((c) => c.name).join(', ');
      if (container !== undefined && chosen === undefined) {
        containerProblem = `task ${task.taskId} has no container ${container} (it has ${names || 'none'})`;
        continue;
      }
      const only = container === undefined && task.containers.length === 1 ? task.containers[0] : undefined;
      const c = chosen ?? only;
      if (c === undefined) {
        containerProblem = `task ${task.taskId} has ${task.containers.length} containers (${names}): name one, e.g. ${text}/${task.containers[0]?.name ?? 'app'}`;
        continue;
      }
      if (c.execAgentStatus !== 'RUNNING' || c.runtimeId === '') {
        execDisabled = `container ${c.name} of task ${task.taskId} has ${c.execAgentStatus === undefined ? `no ${ECS_EXEC_AGENT}` : `its ${ECS_EXEC_AGENT} ${c.execAgentStatus}`}`;
        continue;
      }
      candidates.push({
        id: `ecs:${cluster}_${task.taskId}_${c.runtimeId}`,
        text: `${task.taskId} (${c.name}, ${task.lastStatus})`,
      });
    }
    if (candidates.length === 0 && execDisabled !== undefined) {
      throw new AwsSessionError(
        'PF_ERR_ECS_EXEC_DISABLED',
        `${text}: ${execDisabled}: enable ECS Exec for the service (aws ecs update-service --cluster ${cluster} --service <service> --enable-execute-command --force-new-deployment) and make sure the task role allows ssmmessages:*`,
      );
    }
    if (candidates.length === 0) {
      throw new AwsSessionError(
        'PF_ERR_TARGET_NOT_FOUND',
        `${text}: ${containerProblem ?? 'no usable container'}`,
      );
    }
    return this.choose(candidates, text, pick, 'running tasks');
  }
}

/** What a forward needs from target resolution (the shape `ForwardDeps.targets` takes). */
export interface ForwardTargets {
  /** The concrete id for the forward's target now (`TunnelSessionDeps.resolveTarget`). */
  resolve(target: string): Promise<string>;
  /** StartSession said the resolved target is not connected: look it up again next time. */
  forget(target: string): void;
}

/** Where a forward's look-ups go: its AWS context. */
export type TargetLocation = Pick<ForwardConfig, 'region' | 'profile' | 'endpoint' | 'ecsEndpoint'>;

/** Options of {@link targetResolverFactory}. */
export interface TargetResolverFactoryOptions {
  logger: Logger;
  /** Appended to the SDK's User-Agent. */
  userAgent?: string;
  /** Builds the look-up API for a location; default {@link createTargetLookup} (tests may inject). */
  createLookup?: (options: TargetLookupLocationOptions) => TargetLookupApi;
  /** Fixed credentials (tests, the emulator). */
  credentials?: SsmApiOptions['credentials'];
}

/** What {@link TargetResolverFactoryOptions.createLookup} receives. */
export type TargetLookupLocationOptions = SsmApiOptions & { ecsEndpoint?: string };

/**
 * One resolver per region/profile/endpoints, shared by the forwards that have the same, and per forward
 * the {@link ForwardTargets} that resolve its target with its `pick`.
 */
export function targetResolverFactory(
  options: TargetResolverFactoryOptions,
): (forward: TargetLocation & Pick<ForwardConfig, 'pick'>) => ForwardTargets {
  const resolvers = new Map<string, TargetResolver>();
  const create = options.createLookup ?? createTargetLookup;
  return (forward) => {
    const key = JSON.stringify([forward.region, forward.profile, forward.endpoint, forward.ecsEndpoint]);
    let resolver = resolvers.get(key);
    if (resolver === undefined) {
      const lookupOptions: TargetLookupLocationOptions = { logger: options.logger };
      if (forward.region) lookupOptions.region = forward.region;
      if (forward.profile) lookupOptions.profile = forward.profile;
      if (forward.endpoint) lookupOptions.endpoint = forward.endpoint;
      if (forward.ecsEndpoint) lookupOptions.ecsEndpoint = forward.ecsEndpoint;
      if (options.userAgent) lookupOptions.userAgent = options.userAgent;
      if (options.credentials) lookupOptions.credentials = options.credentials;
      resolver = new TargetResolver({ lookup: create(lookupOptions), logger: options.logger });
      resolvers.set(key, resolver);
    }
    const shared = resolver;
    return {
      resolve: async (target) => (await shared.resolve(target, forward.pick ?? 'one')).id,
      forget: (target) => shared.forget(target),
    };
  };
}
