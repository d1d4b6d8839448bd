import test from 'ava';
import { AllowList, parseAllowRule } from '../../src/socks/allow.js';

test('CIDR rules with and without ports; other address forms of the same host match too', (t) => {
  const list = AllowList.parse(['10.0.0.0/8:5432', '192.168.1.7', '[fd00::/8]:443,8000-8100', '127.0.0.0/8']);
  t.true(list.allows('10.20.30.40', 5432));
  t.false(list.allows('10.20.30.40', 5433));
  t.false(list.allows('11.0.0.1', 5432));
  t.true(list.allows('192.168.1.7', 1));
  t.false(list.allows('192.168.1.8', 1));
  t.true(list.allows('fd00::1', 443));
  t.true(list.allows('fd12:3456::1', 8050));
  t.false(list.allows('fe80::1', 443));
  // inet_aton forms and IPv4-mapped IPv6 are canonicalised before matching (src/targets/destination.ts).
  t.true(list.allows('127.1', 22));
  t.true(list.allows('0x7f.0.0.1', 22));
  t.true(list.allows('::ffff:10.1.2.3', 5432));
  t.true(list.allows('012.0.0.1', 5432));
});

test('names: exact, *.domain (not the domain itself), case and trailing dot ignored, never resolved', (t) => {
  const list = AllowList.parse(['db.internal:5432', '*.corp.example:80,443']);
  t.true(list.allows('db.internal', 5432));
  t.true(list.allows('DB.Internal.', 5432));
  t.false(list.allows('db.internal', 80));
  t.false(list.allows('x.db.internal', 5432));
  t.true(list.allows('app.corp.example', 443));
  t.true(list.allows('a.b.corp.example', 80));
  t.false(list.allows('corp.example', 80));
  t.false(list.allows('evilcorp.example', 80));
  t.false(list.allows('app.corp.example.evil', 80));
  // A CIDR rule never matches a name: the name is resolved on the instance, not here.
  t.false(AllowList.parse(['10.0.0.0/8']).allows('ten.internal', 80));
});

test('* and *:ports', (t) => {
  t.true(AllowList.all.allows('anything.example', 1));
  const https = AllowList.parse(['*:443']);
  t.true(https.allows('1.2.3.4', 443));
  t.false(https.allows('1.2.3.4', 80));
});

test('bad rules are reported with a reason', (t) => {
  for (const bad of [
    '',
    '10.0.0.0/33',
    '10.0.0.0/8:0',
    '*.',
    'a*b.example',
    'db:80-70',
    'db:x',
    '[fd00::/8',
    'a b',
  ]) {
    t.is(typeof parseAllowRule(bad), 'string', bad);
  }
  t.throws(() => AllowList.parse(['ok.example', '10.0.0.0/99']), { message: /10\.0\.0\.0\/99/ });
});
