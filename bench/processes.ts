/**
 * Child processes of the benchmark (servers, emulators, daemon) and what `/proc` says about them.
 * Every child is registered so that it is killed when the benchmark exits, whatever the way: normal end,
 * thrown error, SIGINT/SIGTERM, or an uncaught exception.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

/** Lines of stderr/stdout kept per child for error messages. */
const TAIL_LINES = 40;
/** Time a child gets after SIGTERM before SIGKILL, ms (our default). */
export const STOP_GRACE_MS = 15_000;

const live = new Set<ChildProcess>();
const exitActions = new Set<() => void>();
let exitHooksInstalled = false;

/**
 * Run a synchronous clean-up when the benchmark process exits, however it exits.
 * @returns a function that unregisters it (call it once the clean-up has been done normally)
 */
export function atExit(action: () => void): () => void {
  installExitHooks();
  exitActions.add(action);
  return () => exitActions.delete(action);
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
    for (const action of exitActions) {
      try {
        action();
      } catch {
        // Best effort: the process is exiting anyway.
      }
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`bench: ${signal}, killing child processes\n`);
      process.exit(130);
    });
  }
}

/**
 * Environment variable naming a directory: when set, every emulator child (`name` starting with `emulator`)
 * runs under `node --cpu-prof` with its profiles written there (the daemon has `--cpu-prof` of its own;
 * `NODE_OPTIONS` refuses `--cpu-prof`, so the flag has to go on the command line).
 */
export const EMULATOR_CPU_PROF_ENV = 'PF_BENCH_EMULATOR_CPU_PROF';

/**
 * Environment variable with extra Node flags for every emulator child, space-separated (e.g.
 * `--perf-basic-prof` for `perf record`, `--trace-deopt`).
 */
export const EMULATOR_NODE_FLAGS_ENV = 'PF_BENCH_EMULATOR_NODE_FLAGS';

/** Node flags for a child called `name`: for emulators, those {@link EMULATOR_NODE_FLAGS_ENV} and {@link EMULATOR_CPU_PROF_ENV} ask for. */
function profileFlags(name: string, command: string, env: NodeJS.ProcessEnv): string[] {
  if (command !== process.execPath || !name.startsWith('emulator')) return [];
  const flags = (env[EMULATOR_NODE_FLAGS_ENV] ?? '').split(' ').filter((flag) => flag !== '');
  const dir = env[EMULATOR_CPU_PROF_ENV];
  if (dir !== undefined && dir !== '') flags.push('--cpu-prof', '--cpu-prof-dir', dir);
  return flags;
}

/** A child process with line-oriented output capture. */
export class Child {
  readonly process: ChildProcess;
  private readonly tail: string[] = [];
  private readonly lineWaiters = new Set<(line: string) => void>();
  private exitInfo: string | undefined;
  private readonly exited: Promise<void>;

  /**
   * @param name - label for messages
   * @param command - executable
   * @param args - arguments
   * @param env - full environment of the child
   */
  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    env: NodeJS.ProcessEnv,
  ) {
    installExitHooks();
    this.process = spawn(command, [...profileFlags(name, command, env), ...args], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(this.process);
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => {
        live.delete(this.process);
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      });
      this.process.once('error', (err) => {
        live.delete(this.process);
        this.exitInfo = err.message;
        resolve();
      });
    });
    for (const stream of [this.process.stdout, this.process.stderr]) {
      let partial = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (text: string) => {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) this.onLine(line);
      });
    }
  }

  /** Process id (0 when the spawn failed). */
  get pid(): number {
    return this.process.pid ?? 0;
  }

  /** True once the process has exited. */
  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The last output lines, for error messages. */
  recentOutput(): string {
    return this.tail.join('\n');
  }

  private onLine(line: string): void {
    this.tail.push(line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    for (const waiter of this.lineWaiters) waiter(line);
  }

  /**
   * Wait for an output line (stdout or stderr) matching `pattern`.
   * @returns the match
   * @throws Error on timeout or when the process exits first, with its recent output
   */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.lineWaiters.delete(onLine);
        this.process.off('exit', onExit);
      };
      const onLine = (line: string): void => {
        const match = line.match(pattern);
        if (!match) return;
        cleanup();
        resolve(match);
      };
      const onExit = (): void => {
        cleanup();
        reject(new Error(`${this.name} exited before printing ${pattern}:\n${this.recentOutput()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`${this.name} did not print ${pattern} within ${timeoutMs} ms:\n${this.recentOutput()}`),
        );
      }, timeoutMs);
      this.lineWaiters.add(onLine);
      this.process.once('exit', onExit);
      if (this.hasExited) onExit();
    });
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs: number = STOP_GRACE_MS): Promise<void> {
    if (this.hasExited) return;
    this.process.stdin?.end();
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux in practice). */
export const CLOCK_TICKS_PER_SECOND = ((): number => {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
})();

/** CPU time a process has used so far (user + system), seconds; undefined when `/proc` cannot be read. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (proc(5)).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Memory figures of `/proc/<pid>/status`, bytes. */
export interface MemoryStatus {
  /** Resident set size now (`VmRSS`). */
  rssBytes: number;
  /** Peak resident set size since start or the last {@link resetPeakRss} (`VmHWM`). */
  peakRssBytes: number;
}

/** Read `VmRSS` and `VmHWM`; undefined when `/proc` cannot be read. */
export function memoryStatus(pid: number): MemoryStatus | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (key: string): number => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1]);
    const rssBytes = kib('VmRSS') * 1024;
    const peakRssBytes = kib('VmHWM') * 1024;
    return Number.isFinite(rssBytes) && Number.isFinite(peakRssBytes)
      ? { rssBytes, peakRssBytes }
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reset the process's peak RSS (`VmHWM`) to its current RSS by writing 5 to `/proc/<pid>/clear_refs`
 * (proc(5), Linux ≥ 4.0).
 * @returns whether the reset worked
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Samples a process's RSS at a fixed interval; the fallback peak when {@link resetPeakRss} is refused. */
export class RssSampler {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  /**
   * @param pid - process to sample
   * @param intervalMs - sampling period, ms
   */
  constructor(
    private readonly pid: number,
    intervalMs: number,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    const status = memoryStatus(this.pid);
    if (status && status.rssBytes > this.peak) this.peak = status.rssBytes;
  }

  /** Stop sampling; returns the highest RSS seen, bytes. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}
