/**
 * Where the control socket lives, and making its directory private.
 *
 * Default path, first that applies:
 * 1. `$RUNTIME_DIRECTORY/control.sock`: systemd sets `RUNTIME_DIRECTORY` for a unit with
 *    `RuntimeDirectory=` (the system unit); systemd creates that directory owned by the unit's user;
 * 2. `$XDG_RUNTIME_DIR/pf-daemon/control.sock`: the login session's private runtime directory
 *    (`/run/user/<uid>`, the user unit and interactive use);
 * 3. `<tmpdir>/pf-daemon-<uid>/control.sock`: no runtime directory (cron, `su`, containers). A per-user
 *    directory in the temporary folder, as tmux and ssh-agent use; it is created 0700 and refused if it
 *    exists but is a symlink, not ours, or open to others (another user could have prepared it).
 *
 * The client (`pf-daemon status`) looks at 2 and 3 (it does not run under the unit, so it has no
 * `RUNTIME_DIRECTORY`); for the system unit pass `--control-socket` (see README).
 *
 * Who may connect: Node has no API for the peer's credentials (`SO_PEERCRED`), so the socket relies on the
 * file system, which the kernel enforces at `connect()`: the directory is 0700 (nobody else can reach any
 * name inside it, on every platform) and the socket itself 0600 (Linux also checks write permission on
 * the socket file). Root bypasses both, as it bypasses any check we could make.
 */
import { lstat, mkdir, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ControlError } from '../errors.js';

/** File name of the control socket inside its directory. */
export const CONTROL_SOCKET_NAME = 'control.sock';
/** Mode of the control socket's directory: owner only (rwx------). */
export const CONTROL_DIR_MODE = 0o700;
/** Mode of the control socket: owner read/write (rw-------). */
export const CONTROL_SOCKET_MODE = 0o600;

/** The current uid, or -1 where the platform has none (Windows). */
function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : -1;
}

/** The fallback directory when no runtime directory is set: `<tmpdir>/pf-daemon-<uid>`. */
export function fallbackControlDir(): string {
  return path.join(os.tmpdir(), `pf-daemon-${uid()}`);
}

/** The daemon's default control socket path for this environment (see the module comment). */
export function defaultControlSocketPath(env: NodeJS.ProcessEnv): string {
  const runtime = env['RUNTIME_DIRECTORY']?.split(':')[0];
  if (runtime) return path.join(runtime, CONTROL_SOCKET_NAME);
  const xdg = env['XDG_RUNTIME_DIR'];
  if (xdg) return path.join(xdg, 'pf-daemon', CONTROL_SOCKET_NAME);
  return path.join(fallbackControlDir(), CONTROL_SOCKET_NAME);
}

/** Where `pf-daemon status` looks, in order, when no path is given. */
export function clientControlSocketPaths(env: NodeJS.ProcessEnv): string[] {
  const paths: string[] = [];
  const xdg = env['XDG_RUNTIME_DIR'];
  if (xdg) paths.push(path.join(xdg, 'pf-daemon', CONTROL_SOCKET_NAME));
  paths.push(path.join(fallbackControlDir(), CONTROL_SOCKET_NAME));
  return paths;
}

/**
 * Create the socket's directory 0700 (parents as needed) and check it is a real directory, owned by us,
 * with no access for group or others. A directory we created is tightened with chmod (umask may have
 * loosened it); one that already existed with looser modes is refused, since someone else may hold it open.
 *
 * @throws ControlError `PF_ERR_CONTROL_SOCKET` naming the directory and the fix.
 */
export async function preparePrivateDir(dir: string): Promise<void> {
  let created: string | undefined;
  try {
    created = await mkdir(dir, { recursive: true, mode: CONTROL_DIR_MODE });
  } catch (err) {
    throw new ControlError(
      'PF_ERR_CONTROL_SOCKET',
      `cannot create the control socket directory ${dir}: ${(err as Error).message}; pass --control-socket PATH`,
      { cause: err },
    );
  }
  if (created !== undefined) await chmod(dir, CONTROL_DIR_MODE);
  const info = await lstat(dir);
  const me = uid();
  const problem = !info.isDirectory()
    ? 'is not a directory (a symlink?)'
    : me >= 0 && info.uid !== me
      ? `belongs to uid ${info.uid}, not to us (uid ${me})`
      : (info.mode & 0o077) !== 0
        ? `is open to other users (mode ${(info.mode & 0o777).toString(8)})`
        : undefined;
  if (problem) {
    throw new ControlError(
      'PF_ERR_CONTROL_SOCKET',
      `control socket directory ${dir} ${problem}; run chmod 700 on it, remove it, or pass --control-socket PATH`,
    );
  }
}
