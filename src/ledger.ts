/**
 * The session ledger (spec §10.4): one small JSON file per daemon process (`<dir>/<pid>-<instance>.json`)
 * listing the SSM sessions it has open, so a daemon that was killed (SIGKILL, OOM, power loss) does not leave
 * them running on the service until the idle timeout. On the next start, files of processes that are gone
 * are read, their sessions terminated through the API, and each entry is forgotten only once its
 * TerminateSession succeeded; failed ones stay in the file and are tried again on the next start. One file
 * per process instance means several daemons never overwrite each other's records, not even a daemon that
 * got its predecessor's pid after a reboot.
 *
 * Telling a live owner from a dead one takes more than the pid, which is reused (after a reboot a service
 * often gets the very same one): each entry also records the boot id (`/proc/sys/kernel/random/boot_id`) and
 * the owner's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot). The owner is alive only if
 * the boot is the same, the pid exists and, where both are known, its start time matches. Without `/proc`
 * (not Linux) the pid alone decides, as before.
 *
 * Only SessionIds and where to reach the API are stored — never a TokenValue or StreamUrl. Writes are
 * atomic (temp file + rename) with mode 0600. Every failure is logged and ignored: the ledger is a
 * courtesy, it must never stop a forward.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { homedir } from 'node:os';
import { describeError } from './errors.js';
import type { Logger } from './log.js';

/** One open session as recorded. */
export interface LedgerEntry {
  /** SSM SessionId. */
  sessionId: string;
  /** Managed node id, for logs. */
  target: string;
  /** Where to call TerminateSession: the forward's region/profile/endpoint overrides. */
  region?: string;
  profile?: string;
  endpoint?: string;
  /** Process id of the daemon that opened it. */
  pid: number;
  /** Unix ms. */
  startedAt: number;
  /** Boot id of the machine when the owner wrote the entry; filled in by the ledger (Linux only). */
  bootId?: string;
  /** Owner's start time, clock ticks after boot (`/proc/<pid>/stat` field 22); filled in by the ledger. */
  ownerStartTicks?: number;
}

/** How the ledger tells a live owner from a dead one; injectable for tests. */
export interface OwnerProbe {
  /** True if a process with this pid exists. */
  isAlive(pid: number): boolean;
  /** The current boot id; undefined where unknown. */
  bootId(): string | undefined;
  /** Start time of `pid` in clock ticks after boot; undefined where unknown or gone. */
  startTicks(pid: number): number | undefined;
}

/** Boot id from `/proc/sys/kernel/random/boot_id`; undefined without `/proc`. */
export function readBootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Field 22 (`starttime`) of `/proc/<pid>/stat`; undefined without `/proc` or when the pid is gone. */
export function readStartTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces; fields 3.. follow the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[22 - 3]);
    return Number.isSafeInteger(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

/** The probe of this machine: signal 0, `/proc` boot id and start times. */
export const systemOwnerProbe: OwnerProbe = {
  isAlive: (pid) => processAlive(pid),
  bootId: readBootId,
  startTicks: readStartTicks,
};

/** Default ledger folder: `$XDG_STATE_HOME/pf-daemon/sessions` (`~/.local/state/pf-daemon/sessions`). */
export function defaultLedgerDir(env: NodeJS.ProcessEnv = process.env): string {
  const stateHome = env['XDG_STATE_HOME'] || join(homedir(), '.local', 'state');
  return join(stateHome, 'pf-daemon', 'sessions');
}

/** True if a process with this pid exists (signal 0 probes without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isEntry(value: unknown): value is LedgerEntry {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  const optionalString = (k: string): boolean => v[k] === undefined || typeof v[k] === 'string';
  return (
    typeof v['sessionId'] === 'string' &&
    typeof v['target'] === 'string' &&
    Number.isSafeInteger(v['pid']) &&
    Number.isSafeInteger(v['startedAt']) &&
    optionalString('bootId') &&
    (v['ownerStartTicks'] === undefined || Number.isSafeInteger(v['ownerStartTicks'])) &&
    optionalString('region') &&
    optionalString('profile') &&
    optionalString('endpoint')
  );
}

/** Orphans of one dead daemon: its file and the sessions it left. */
export interface OrphanFile {
  file: string;
  entries: LedgerEntry[];
}

/** Ledger file names: `<pid>-<instance>.json`, and `<pid>.json` as written before instance names. */
const FILE_NAME = /^(\d+)(?:-[0-9a-f]+)?\.json$/;

/**
 * `mkdir -p` whose error names the real cause: Node's recursive mkdir reports ENOENT when a missing
 * component cannot be created (a read-only file system, as under systemd's `ProtectHome=read-only`), so
 * on ENOENT the first missing component is created on its own to get the errno that explains it (EROFS,
 * EACCES, ENOTDIR).
 */
async function mkdirWithCause(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    let missing = dir;
    for (let parent = dirname(missing); parent !== missing; parent = dirname(missing)) {
      const exists = await stat(parent).then(
        () => true,
        () => false,
      );
      if (exists) break;
      missing = parent;
    }
    await mkdir(missing, { mode: 0o700 });
    throw err;
  }
}

/** Renders a file-system error as `EROFS (mkdir /home/a/.local)`, the errno and the step that failed. */
function fsCause(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e.code !== 'string') return describeError(err);
  return `${e.code} (${[e.syscall, e.path].filter(Boolean).join(' ')})`;
}

/** This process's ledger file, plus the orphan sweep; all writes are serialised. */
export class SessionLedger {
  private readonly entries = new Map<string, LedgerEntry>();
  private writing: Promise<void> = Promise.resolve();
  /** A failed write was reported at warn: later ones go to debug (one warning per process). */
  private writeFailureReported = false;
  /** This process's file. */
  readonly path: string;
  private readonly owner: Pick<LedgerEntry, 'bootId' | 'ownerStartTicks'>;

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
    private readonly probe: OwnerProbe = systemOwnerProbe,
  ) {
    // A random instance part: a later daemon with the same pid (after a reboot) never writes over this file.
    this.path = join(dir, `${process.pid}-${randomBytes(4).toString('hex')}.json`);
    const bootId = probe.bootId();
    const ownerStartTicks = probe.startTicks(process.pid);
    this.owner = {
      ...(bootId !== undefined ? { bootId } : {}),
      ...(ownerStartTicks !== undefined ? { ownerStartTicks } : {}),
    };
  }

  /**
   * True when the daemon that wrote `entries` (named `pid` in its file name) is still running: same boot,
   * pid alive, and the same start time where both are known. A legacy `<pid>.json` with this process's pid
   * was never written by this process (it writes instance-named files), so its owner is gone.
   */
  private ownerAlive(pid: number, entries: LedgerEntry[], legacyName: boolean): boolean {
    const recorded = entries[0];
    const bootId = this.probe.bootId();
    if (recorded?.bootId !== undefined && bootId !== undefined && recorded.bootId !== bootId) return false;
    if (legacyName && pid === process.pid) return false;
    if (!this.probe.isAlive(pid)) return false;
    if (recorded?.ownerStartTicks !== undefined) {
      const ticks = this.probe.startTicks(pid);
      if (ticks !== undefined && ticks !== recorded.ownerStartTicks) return false;
    }
    return true;
  }

  /**
   * Read the files of daemons that are no longer running and return their sessions per file. Nothing is
   * deleted here: {@link sweepOrphans} forgets each entry once it has been dealt with. Unreadable files are
   * skipped and logged; files with no valid entry are returned with none, so the sweep deletes them.
   */
  async findOrphans(): Promise<OrphanFile[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger.warn(`cannot read session ledger ${this.dir}: ${describeError(err)}`);
      }
      return [];
    }
    const orphans: OrphanFile[] = [];
    for (const name of names) {
      const match = FILE_NAME.exec(name);
      if (!match) continue;
      const file = join(this.dir, name);
      if (file === this.path) continue;
      let entries: LedgerEntry[];
      try {
        const raw: unknown = JSON.parse(await readFile(file, 'utf8'));
        entries = Array.isArray(raw) ? raw.filter(isEntry) : [];
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        this.logger.warn(`ignoring unreadable session ledger file ${file}: ${describeError(err)}`);
        continue;
      }
      const pid = Number(match[1]);
      if (this.ownerAlive(pid, entries, !name.includes('-'))) continue;
      orphans.push({ file, entries });
    }
    return orphans;
  }

  /**
   * Terminate the sessions of dead daemons (spec §10.4). An entry is forgotten only after `terminate`
   * resolved for it (TerminateSession succeeded, or the service said the session is gone); entries whose
   * call failed stay in their file, owner fields unchanged, and are tried again on the next start.
   * @returns SessionIds terminated and SessionIds kept for a retry.
   */
  async sweepOrphans(
    terminate: (entry: LedgerEntry) => Promise<void>,
  ): Promise<{ terminated: string[]; kept: string[] }> {
    const terminated: string[] = [];
    const kept: string[] = [];
    const sweepFile = async (orphan: OrphanFile): Promise<void> => {
      const done = await Promise.all(
        orphan.entries.map((entry) =>
          terminate(entry).then(
            () => true,
            () => false,
          ),
        ),
      );
      const left = orphan.entries.filter((_, i) => !done[i]);
      for (const [i, entry] of orphan.entries.entries()) (done[i] ? terminated : kept).push(entry.sessionId);
      try {
        if (left.length === 0) await rm(orphan.file, { force: true });
        else await writeAtomically(orphan.file, JSON.stringify(left, null, 1));
      } catch (err) {
        this.logger.warn(`cannot update session ledger file ${orphan.file}: ${describeError(err)}`);
      }
    };
    await Promise.all((await this.findOrphans()).map(sweepFile));
    return { terminated, kept };
  }

  /** Record an open session (with this process's boot id and start time, to tell it from a pid reuse). */
  add(entry: LedgerEntry): Promise<void> {
    this.entries.set(entry.sessionId, { ...entry, ...this.owner });
    return this.save();
  }

  /** Forget a session once it is known to be gone on the service (terminated, or closed by the service). */
  remove(sessionId: string): Promise<void> {
    if (!this.entries.delete(sessionId)) return this.writing;
    return this.save();
  }

  /** Sessions currently recorded by this process. */
  get size(): number {
    return this.entries.size;
  }

  /** Wait for pending writes (tests, shutdown). */
  flushed(): Promise<void> {
    return this.writing;
  }

  private save(): Promise<void> {
    const empty = this.entries.size === 0;
    const snapshot = JSON.stringify([...this.entries.values()], null, 1);
    this.writing = this.writing.then(async () => {
      try {
        if (empty) {
          await rm(this.path, { force: true });
          return;
        }
        await mkdirWithCause(this.dir);
        await writeAtomically(this.path, snapshot);
      } catch (err) {
        const text = `cannot write session ledger ${this.path}: ${fsCause(err)}; sessions left open by a crash will not be cleaned up on the next start. Point XDG_STATE_HOME at a writable directory (the system unit sets it to its StateDirectory=)`;
        if (this.writeFailureReported) {
          this.logger.debug(text);
        } else {
          this.writeFailureReported = true;
          this.logger.warn(text);
        }
      }
    });
    return this.writing;
  }
}

/** Write `text` to `path` through a temp file and rename, mode 0600, so a reader never sees half a file. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  await writeFile(temp, text, { mode: 0o600 });
  await rename(temp, path);
}
