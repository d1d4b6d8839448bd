import test from 'ava';
import { AwsSessionError } from '../../src/errors.js';
import { mapSsmError } from '../../src/ssm/errors.js';

/** An SDK-shaped service exception: name, message, $metadata.httpStatusCode, $fault. */
function sdkError(name: string, status: number, message = '', fault = status >= 500 ? 'server' : 'client') {
  return { name, message, $fault: fault, $metadata: { httpStatusCode: status } };
}

const context = { target: 'i-0abc1234', region: 'us-east-1', profile: 'dev' };

const cases: [string, unknown, string, boolean, RegExp][] = [
  [
    'TargetNotConnected',
    sdkError('TargetNotConnected', 400, 'i-0abc1234 is not connected.'),
    'PF_ERR_TARGET_NOT_CONNECTED',
    false,
    /^target i-0abc1234 is not connected to SSM in us-east-1: check the SSM agent is running/,
  ],
  [
    'InvalidDocument',
    sdkError('InvalidDocument', 400, 'Document does not exist'),
    'PF_ERR_INVALID_DOCUMENT',
    false,
    /document.*Document does not exist.*check the document exists/,
  ],
  [
    'InvalidParameters',
    sdkError('InvalidParameters', 400, 'portNumber is bad'),
    'PF_ERR_INVALID_PARAMETERS',
    false,
    /portNumber is bad.*check remotePort/,
  ],
  [
    'AccessDeniedException',
    sdkError('AccessDeniedException', 400, 'User: arn:aws:iam::1:user/a is not authorized'),
    'PF_ERR_ACCESS_DENIED',
    false,
    /^IAM denied ssm:StartSession for profile dev on i-0abc1234.*allow ssm:StartSession/,
  ],
  ['AccessDenied (short)', sdkError('AccessDenied', 400), 'PF_ERR_ACCESS_DENIED', false, /IAM denied/],
  ['ThrottlingException', sdkError('ThrottlingException', 400), 'PF_ERR_THROTTLED', true, /throttled/],
  ['429', { name: 'Whatever', $metadata: { httpStatusCode: 429 } }, 'PF_ERR_THROTTLED', true, /throttled/],
  [
    'InternalServerError',
    sdkError('InternalServerError', 500),
    'PF_ERR_AWS_INTERNAL',
    true,
    /internal error.*HTTP 500/,
  ],
  ['bare 503', sdkError('Unknown', 503), 'PF_ERR_AWS_INTERNAL', true, /HTTP 503/],
  [
    'ECONNREFUSED',
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }),
    'PF_ERR_AWS',
    true,
    /cannot reach the SSM endpoint.*ECONNREFUSED.*check the network/,
  ],
  [
    'ENOTFOUND in cause',
    Object.assign(new Error('fetch failed'), { cause: { code: 'ENOTFOUND' } }),
    'PF_ERR_AWS',
    true,
    /ENOTFOUND.*--region/,
  ],
  ['TimeoutError', { name: 'TimeoutError', message: 'socket hang up' }, 'PF_ERR_AWS', true, /cannot reach/],
  [
    'CredentialsProviderError (missing)',
    { name: 'CredentialsProviderError', message: 'Could not load credentials from any providers' },
    'PF_ERR_CREDENTIALS',
    false,
    /^no AWS credentials found for profile dev: run `aws configure`/,
  ],
  [
    'CredentialsProviderError (SSO expired)',
    { name: 'CredentialsProviderError', message: 'The SSO session associated with this profile has expired' },
    'PF_ERR_CREDENTIALS',
    false,
    /^AWS credentials expired for profile dev: run `aws sso login --profile dev`/,
  ],
  [
    'ExpiredTokenException',
    sdkError('ExpiredTokenException', 400, 'The security token included in the request is expired'),
    'PF_ERR_CREDENTIALS',
    false,
    /^AWS credentials expired for profile dev: run `aws sso login --profile dev`/,
  ],
  [
    'UnrecognizedClientException',
    sdkError('UnrecognizedClientException', 400),
    'PF_ERR_CREDENTIALS',
    false,
    /does not recognise the access key/,
  ],
  [
    'InvalidSignatureException',
    sdkError('InvalidSignatureException', 400),
    'PF_ERR_CREDENTIALS',
    false,
    /signature.*system clock/,
  ],
  [
    'namespaced __type',
    { __type: 'com.amazonaws.ssm#TargetNotConnected', message: 'x' },
    'PF_ERR_TARGET_NOT_CONNECTED',
    false,
    /not connected/,
  ],
  ['Region missing', new Error('Region is missing'), 'PF_ERR_AWS', false, /pass --region/],
  ['unknown 4xx', sdkError('SomethingNew', 400, 'odd'), 'PF_ERR_AWS', false, /HTTP 400 SomethingNew: odd/],
  ['a string', 'boom', 'PF_ERR_AWS', false, /boom/],
];

for (const [title, input, code, retryable, pattern] of cases) {
  test(`maps ${title}`, (t) => {
    const mapped = mapSsmError(input, 'StartSession', context);
    t.true(mapped instanceof AwsSessionError);
    t.is(mapped.code as string, code);
    t.is(mapped.retryable, retryable);
    t.regex(mapped.message, pattern);
    t.false(mapped.message.includes('\n'));
    t.is(mapped.cause, input);
  });
}

test('DoesNotExistException on ResumeSession means the session is gone', (t) => {
  const mapped = mapSsmError(sdkError('DoesNotExistException', 400), 'ResumeSession', {
    sessionId: 'alice-0a1b',
  });
  t.is(mapped.code, 'PF_ERR_SESSION_GONE');
  t.false(mapped.retryable);
  t.regex(mapped.message, /^session alice-0a1b no longer exists/);
});

test('DoesNotExistException on StartSession is not "session gone"', (t) => {
  const mapped = mapSsmError(sdkError('DoesNotExistException', 400), 'StartSession', context);
  t.is(mapped.code, 'PF_ERR_AWS');
});

test('messages never carry tokens, keys or StreamUrl queries', (t) => {
  const secretText =
    'bad {"TokenValue":"AAEAAxSECRET"} at wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/s?role=publish_subscribe&X-Amz-Signature=abc key AKIAABCDEFGHIJKLMNOP\nsecond line';
  for (const name of ['SomethingNew', 'InvalidDocument', 'InvalidParameters', 'AccessDeniedException']) {
    const mapped = mapSsmError(sdkError(name, 400, secretText), 'StartSession', context);
    t.false(mapped.message.includes('AAEAAxSECRET'), name);
    t.false(mapped.message.includes('X-Amz-Signature'), name);
    t.false(mapped.message.includes('role=publish_subscribe'), name);
    t.false(mapped.message.includes('AKIAABCDEFGHIJKLMNOP'), name);
    t.false(mapped.message.includes('\n'), name);
  }
});

test('an AwsSessionError passes through unchanged', (t) => {
  const original = new AwsSessionError('PF_ERR_THROTTLED' as const, 'x', { retryable: true });
  t.is(mapSsmError(original, 'StartSession'), original);
});
