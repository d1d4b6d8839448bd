/**
 * The session ledger (spec §10.4): one small JSON file per daemon process (`<dir>/<pid>.json`) listing the
 * SSM sessions it has open, so a daemon that was killed (SIGKILL, OOM, power loss) does not leave them
 * running on the service until the idle timeout. On the next start, files of processes that are gone are
 * read, their sessions terminated through the API, and the files deleted. One file per process means
 * several daemons never overwrite each other's records.
 *
 * Only SessionIds and where to reach the API are stored — never a TokenValue or StreamUrl. Writes are
 * atomic (temp file + rename) with mode 0600. Every failure is logged and ignored: the ledger is a
 * courtesy, it must never stop a forward.
 */
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { homedir } from 'node:os';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

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
}

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
    optionalString('region') &&
    optionalString('profile') &&
    optionalString('endpoint')
  );
}

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

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
    private readonly isAlive: (pid: number) => boolean = processAlive,
  ) {
    this.path = join(dir, `${process.pid}.json`);
  }

  /**
   * Read the files of processes that are no longer running and return their entries. The files are
   * deleted by {@link forgetOrphans} once the sessions have been dealt with. Unreadable files are skipped.
   */
  async findOrphans(): Promise<{ entries: LedgerEntry[]; files: string[] }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger.warn(`cannot read session ledger ${this.dir}: ${describeError(err)}`);
      }
      return { entries: [], files: [] };
    }
    const entries: LedgerEntry[] = [];
    const files: string[] = [];
    for (const name of names) {
      const match = /^(\d+)\.json$/.exec(name);
      if (!match) continue;
      const pid = Number(match[1]);
      if (pid === process.pid || this.isAlive(pid)) continue;
      const file = join(this.dir, name);
      files.push(file);
      try {
        const raw: unknown = JSON.parse(await readFile(file, 'utf8'));
        if (Array.isArray(raw)) entries.push(...raw.filter(isEntry));
      } catch (err) {
        this.logger.warn(`ignoring unreadable session ledger file ${file}: ${describeError(err)}`);
      }
    }
    return { entries, files };
  }

  /** Delete orphan files once their sessions were terminated (or found gone). */
  async forgetOrphans(files: string[]): Promise<void> {
    await Promise.all(files.map((file) => rm(file, { force: true }).catch(() => undefined)));
  }

  /** Record an open session. */
  add(entry: LedgerEntry): Promise<void> {
    this.entries.set(entry.sessionId, entry);
    return this.save();
  }

  /** Forget a session that ended. */
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
        const temp = `${this.path}.tmp`;
        await writeFile(temp, snapshot, { mode: 0o600 });
        await rename(temp, this.path);
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
