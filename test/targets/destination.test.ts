/** The agent's destination rules (`src/targets/destination.ts`): canonical forms, loopback, denylist, messages. */
import test from 'ava';
import {
  agentDenylistReason,
  canonicalHost,
  describeConnectToPortError,
  isLoopbackHost,
} from '../../src/targets/destination.js';

test('IPv4 in inet_aton forms, IPv6 and IPv4-mapped IPv6 canonicalise', (t) => {
  t.deepEqual(canonicalHost('127.1'), { kind: 'ipv4', address: '127.0.0.1' });
  t.deepEqual(canonicalHost('0x7f.1'), { kind: 'ipv4', address: '127.0.0.1' });
  t.deepEqual(canonicalHost('017700000001'), { kind: 'ipv4', address: '127.0.0.1' });
  t.deepEqual(canonicalHost('2130706433'), { kind: 'ipv4', address: '127.0.0.1' });
  t.deepEqual(canonicalHost('::ffff:127.0.0.1'), { kind: 'ipv4', address: '127.0.0.1' });
  t.deepEqual(canonicalHost('[::FFFF:7f00:2]'), { kind: 'ipv4', address: '127.0.0.2' });
  t.deepEqual(canonicalHost('0:0:0:0:0:0:0:1'), { kind: 'ipv6', address: '::1' });
  t.deepEqual(canonicalHost('FD00:EC2:0::254'), { kind: 'ipv6', address: 'fd00:ec2::254' });
  t.deepEqual(canonicalHost('DB.Internal.'), { kind: 'name', name: 'db.internal' });
});

test('loopback hosts in every form', (t) => {
  for (const host of [
    'localhost',
    'LOCALHOST.',
    'api.localhost',
    '127.0.0.1',
    '127.1',
    '127.255.255.254',
    '0x7f.1',
    '::1',
    '[::1]',
    '::ffff:127.0.0.1',
  ]) {
    t.true(isLoopbackHost(host), host);
  }
  for (const host of [
    'db.internal',
    '10.0.0.1',
    '128.0.0.1',
    '::2',
    'localhost.example.com',
    '169.254.169.254',
  ]) {
    t.false(isLoopbackHost(host), host);
  }
});

test('the denylist covers loopback and the metadata and credential endpoints', (t) => {
  for (const host of [
    '169.254.169.254',
    '169.254.170.2',
    '169.254.170.23',
    'fd00:ec2::254',
    'fd00:ec2::23',
    '0xa9.254.169.254',
    '::ffff:169.254.169.254',
  ]) {
    t.is(agentDenylistReason(host), 'metadata', host);
  }
  t.is(agentDenylistReason('127.0.0.2'), 'loopback');
  t.is(agentDenylistReason('169.254.169.253'), undefined);
  t.is(agentDenylistReason('db.internal'), undefined);
});

test('the ConnectToPortError line names the likely causes', (t) => {
  const plain = describeConnectToPortError('db.internal', 5432);
  t.regex(plain, /db\.internal:5432/);
  t.regex(plain, /nothing listens on port 5432/);
  t.regex(plain, /security group, NACL/);
  t.regex(plain, /loopback and metadata addresses/);
  t.regex(
    describeConnectToPortError(undefined, 22),
    /localhost:22: nothing listens on port 22 on the instance/,
  );
  t.regex(
    describeConnectToPortError('169.254.169.254', 80),
    /3\.3\.4851\.0 and later refuse the instance metadata/,
  );
  t.regex(
    describeConnectToPortError('127.0.0.2', 80, 'AWS-StartPortForwardingSessionToRemoteHost'),
    /refuse loopback addresses.*drop host/,
  );
  // Without a documentName a loopback host went through the local document: the denylist is not the cause.
  t.regex(
    describeConnectToPortError('127.0.0.2', 80),
    /^the agent could not connect to 127\.0\.0\.2:80: nothing listens on port 80 on the instance/,
  );
  t.regex(describeConnectToPortError('169.254.169.254', 80, 'Acme-PF'), /refuse the instance metadata/);
});
