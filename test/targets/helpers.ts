/**
 * Shared pieces of the target tests: a logger that records lines (for asserting what the user reads), an
 * emulator inventory builder, and the SDK-backed look-up pointed at an emulator.
 */
import type { Logger, LogMeta } from '../../src/log.js';
import type { Emulator, InventoryInstance, InventoryTask } from '../../src/emulator/index.js';
import { silentLogger } from '../../src/log.js';
import { createTargetLookup } from '../../src/ssm/lookup.js';
import type { TargetLookupApi } from '../../src/ssm/lookup.js';

/** Static credentials for the emulator's unsigned API. */
export const credentials = { accessKeyId: 'AKIDEMULATOR', secretAccessKey: 'emulator-secret' };

/** One recorded log line. */
export interface LogLine {
  level: 'error' | 'warn' | 'info' | 'debug';
  namespace: string;
  message: string;
}

/** A logger recording every line (all levels) with its namespace. */
export function recordingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const make = (namespace: string): Logger => {
    const at =
      (level: LogLine['level']) =>
      (message: string, _meta?: LogMeta): void => {
        lines.push({ level, namespace, message });
      };
    return {
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      debugEnabled: true,
      child: (ns) => make(namespace ? `${namespace}:${ns}` : ns),
    };
  };
  return { logger: make(''), lines };
}

/** An instance id from a number (17 hex digits). */
export function instanceId(n: number): string {
  return `i-${n.toString(16).padStart(17, '0')}`;
}

/** A 32-hex task id from a number. */
export function taskId(n: number): string {
  return n.toString(16).padStart(32, '0');
}

/** An online instance with a Name tag (and more tags). */
export function instance(n: number, name: string, tags: Record<string, string> = {}): InventoryInstance {
  return { instanceId: instanceId(n), tags: { Name: name, ...tags }, computerName: `${name}.internal` };
}

/** A running service task with one container `app` whose ExecuteCommandAgent runs. */
export function serviceTask(cluster: string, service: string, n: number): InventoryTask {
  return { cluster, service, taskId: taskId(n), containers: [{ name: 'app', execAgent: 'RUNNING' }] };
}

/** The SDK-backed look-up (real @aws-sdk/client-ssm and client-ecs) against the emulator. */
export function emulatorLookup(emulator: Emulator, logger: Logger = silentLogger): TargetLookupApi {
  return createTargetLookup({
    endpoint: emulator.endpoint,
    ecsEndpoint: emulator.endpoint,
    region: 'us-east-1',
    credentials,
    logger,
    maxAttempts: 1,
  });
}

/** Count the emulator's API calls per operation while `fn` runs. */
export async function countCalls<T>(
  emulator: Emulator,
  fn: () => Promise<T>,
): Promise<{ value: T; calls: Record<string, number> }> {
  const calls: Record<string, number> = {};
  const onCall = (op: string): void => {
    calls[op] = (calls[op] ?? 0) + 1;
  };
  emulator.on('apiCall', onCall);
  try {
    return { value: await fn(), calls };
  } finally {
    emulator.off('apiCall', onCall);
  }
}
