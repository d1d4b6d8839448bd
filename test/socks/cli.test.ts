/** `-D` through `main()`: check-config prints the SOCKS entry, and exposure mistakes exit 2 with one line. */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli.js';

const T = 'i-0abc12345678';
const home = mkdtempSync(join(tmpdir(), 'pf-socks-cli-'));

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (text: string) => (out += text) },
    stderr: { write: (text: string) => (err += text) },
    env: { HOME: home, XDG_CONFIG_HOME: join(home, '.config') },
  });
  return { code, out, err };
}

test('check-config -D lists the SOCKS listener with its defaults', async (t) => {
  const r = await run(['check-config', '-D', `1080@${T}`, '-D', '127.0.0.1:1081', '--target', T]);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /^flags: OK, 0 forward\(s\)/);
  t.regex(
    r.out,
    new RegExp(
      `socks:1080@${T}: 127\\.0\\.0\\.1:1080 SOCKS5/HTTP CONNECT -> any allowed host:port via ${T} \\[allow \\*; no auth; up to 16 destinations\\]`,
    ),
  );
  t.regex(r.out, /socks:1081@/);
});

test('-D on 0.0.0.0 without allow and credentials exits 2 naming both fixes', async (t) => {
  const r = await run(['check-config', '-D', `0.0.0.0:1080@${T}`]);
  t.is(r.code, 2);
  t.regex(r.err, /socks\[0\]\.allow: required when bind \(0\.0\.0\.0\) is not loopback/);
  t.regex(
    r.err,
    /socks\[0\]\.username: required when bind \(0\.0\.0\.0\) is not loopback: set username and password, or bind 127\.0\.0\.1/,
  );
  t.is(r.err.trim().split('\n').length, 1, 'one line');
});

test('a malformed -D exits 2 with the accepted form', async (t) => {
  const r = await run(['-D', 'x1080']);
  t.is(r.code, 2);
  t.regex(
    r.err,
    /-D "x1080": localPort "x1080" is not a port number; expected \[bind:\]localPort\[@target\], e\.g\. -D 1080@i-/,
  );
});
