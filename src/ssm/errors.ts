/**
 * Map whatever an SSM API call threw (an SDK `ServiceException`, a credential-provider error, a socket
 * error) onto one {@link AwsSessionError} with a stable code and a one-line message that names the fix
 * (spec §2.4). Callers branch on `code` and `retryable`; users read `message`.
 *
 * Messages never carry a TokenValue, credentials or a StreamUrl query string: the AWS text is passed
 * through {@link redactText} and flattened to one line.
 */
import { AwsSessionError } from '../errors.js';
import type { CodeOf } from '../errors.js';
import { redactText } from '../log.js';

/** The SSM operations pf-daemon calls (spec §2.1–§2.3), and the look-ups that resolve targets. */
export type SsmOperation =
  | 'StartSession'
  | 'ResumeSession'
  | 'TerminateSession'
  | 'DescribeInstanceInformation'
  | 'ListTasks'
  | 'DescribeTasks';

/**
 * IAM action and what it is needed for, per target look-up operation: an AccessDenied on one of these names
 * the missing permission (the session permissions are a different fix).
 */
export const LOOKUP_PERMISSIONS: Readonly<Record<string, { action: string; purpose: string }>> = {
  DescribeInstanceInformation: {
    action: 'ssm:DescribeInstanceInformation',
    purpose: 'name: and tag: targets (resource "*")',
  },
  ListTasks: { action: 'ecs:ListTasks', purpose: 'ecs:<cluster>/<service> targets (on the cluster)' },
  DescribeTasks: { action: 'ecs:DescribeTasks', purpose: "ecs: targets (on the cluster's tasks)" },
};

/** What the call was about; every field is optional and only sharpens the message. */
export interface SsmErrorContext {
  /** Managed node id the session was for. */
  target?: string;
  /** Region the client was configured with (undefined: the SDK chain picked one). */
  region?: string;
  /** Named profile the client was configured with. */
  profile?: string;
  /** Session document of a StartSession call. */
  document?: string;
  /** Session id of a Resume/TerminateSession call. */
  sessionId?: string;
}

/** Error names (after stripping any `namespace#` prefix) that mean throttling (spec §2.4). */
const THROTTLING_NAMES = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
]);

/** Error names of a server-side failure worth retrying (spec §2.4). */
const INTERNAL_NAMES = new Set([
  'InternalServerError',
  'InternalServerException',
  'InternalFailure',
  'InternalError',
  'ServiceUnavailable',
  'ServiceUnavailableException',
]);

/** Error names that mean the credentials are expired (refreshing them is the fix). */
const EXPIRED_NAMES = new Set([
  'ExpiredTokenException',
  'ExpiredToken',
  'RequestExpired',
  'TokenRefreshRequired',
  'InvalidGrantException',
  'UnauthorizedException',
]);

/** Error names that mean the access key is unknown (deleted user, wrong partition). */
const UNKNOWN_KEY_NAMES = new Set(['UnrecognizedClientException', 'InvalidClientTokenId']);

/** Error names that mean the request signature was rejected (bad secret or clock skew). */
const SIGNATURE_NAMES = new Set([
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
]);

/** Node/undici socket error codes that mean "could not talk to the endpoint at all" (retryable). */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EPROTO',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
]);

/** SDK error names for timeouts and aborted sockets. */
const NETWORK_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'NetworkingError',
]);

/** The fields of an SDK-shaped error this module reads. */
interface ErrorShape {
  name: string;
  message: string;
  status: number | undefined;
  fault: string | undefined;
  code: string | undefined;
}

function field(value: object, key: string): unknown {
  return (value as Record<string, unknown>)[key];
}

function stringField(value: object, key: string): string | undefined {
  const v = field(value, key);
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** Read name/message/status/fault/code from anything thrown, tolerating plain objects. */
function shapeOf(err: unknown): ErrorShape {
  if (err === null || typeof err !== 'object') {
    return { name: 'Error', message: String(err), status: undefined, fault: undefined, code: undefined };
  }
  const rawName =
    stringField(err, '__type') ?? stringField(err, 'Code') ?? stringField(err, 'name') ?? 'Error';
  const name = rawName.slice(rawName.lastIndexOf('#') + 1).split(':')[0] ?? rawName;
  const message = stringField(err, 'message') ?? stringField(err, 'Message') ?? '';
  const metadata = field(err, '$metadata');
  const statusValue =
    metadata !== null && typeof metadata === 'object' ? field(metadata, 'httpStatusCode') : undefined;
  const fault = stringField(err, '$fault');
  let code = stringField(err, 'code') ?? stringField(err, 'errno');
  // Node wraps connection failures one level down (`cause`), the SDK sometimes two.
  let cause = field(err, 'cause');
  for (
    let depth = 0;
    code === undefined && depth < 3 && cause !== null && typeof cause === 'object';
    depth++
  ) {
    code = stringField(cause, 'code');
    cause = field(cause, 'cause');
  }
  return {
    name,
    message,
    status: typeof statusValue === 'number' ? statusValue : undefined,
    fault,
    code,
  };
}

/** One line, no secrets, bounded length. */
function clean(text: string): string {
  const line = redactText(text).replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

/** `aws sso login --profile dev` or `aws sso login` when no profile was named. */
function ssoLogin(profile: string | undefined): string {
  return profile ? `aws sso login --profile ${profile}` : 'aws sso login';
}

/**
 * Map an error thrown by an SSM call to an {@link AwsSessionError}.
 *
 * @param err - whatever the SDK (or its credential chain, or the socket) threw
 * @param op - the SSM operation that failed (`StartSession`, …); named in messages
 * @param context - target/region/profile to name in the message
 * @returns the mapped error; `cause` is the original value, `retryable` is true for throttling, 5xx and
 *   network failures (spec §2.4)
 */
export function mapSsmError(
  err: unknown,
  op: SsmOperation | (string & {}),
  context: SsmErrorContext = {},
): AwsSessionError {
  if (err instanceof AwsSessionError) return err;
  const shape = shapeOf(err);
  const awsText = shape.message ? clean(shape.message) : '';
  const inRegion = context.region ? ` in ${context.region}` : '';
  const forProfile = context.profile ? ` for profile ${context.profile}` : '';
  const target = context.target ?? 'the target';
  const make = (code: CodeOf<'aws'>, message: string, retryable = false): AwsSessionError =>
    new AwsSessionError(code, clean(message), { cause: err, retryable });
  const lowerMessage = shape.message.toLowerCase();
  // ECS look-ups share this mapping; name their service and endpoint flag.
  const ecs = op === 'ListTasks' || op === 'DescribeTasks';
  const service = ecs ? 'ECS' : 'SSM';
  const endpointFlag = ecs ? '--ecs-endpoint' : '--endpoint';

  if (shape.name === 'TargetNotConnected') {
    return make(
      'PF_ERR_TARGET_NOT_CONNECTED',
      `target ${target} is not connected to SSM${inRegion}: check the SSM agent is running and the instance role allows SSM, or use the right --region/--profile`,
    );
  }
  if (shape.name === 'InvalidDocument') {
    const doc = context.document ? ` ${context.document}` : '';
    return make(
      'PF_ERR_INVALID_DOCUMENT',
      `SSM rejected session document${doc}${inRegion}${awsText ? ` (${awsText})` : ''}: check the document exists in this region and is shared with your account`,
    );
  }
  if (shape.name === 'InvalidParameters' || shape.name === 'ValidationException') {
    return make(
      'PF_ERR_INVALID_PARAMETERS',
      `SSM rejected the ${op} parameters for ${target}${awsText ? ` (${awsText})` : ''}: check remotePort, host and reason in the forward`,
    );
  }
  if (shape.name === 'DoesNotExistException' || shape.name === 'InvalidSessionId') {
    if (op === 'StartSession') {
      return make(
        'PF_ERR_AWS',
        `StartSession: ${target} or its document does not exist${inRegion}${awsText ? ` (${awsText})` : ''}: check the target id and --region`,
      );
    }
    return make(
      'PF_ERR_SESSION_GONE',
      `session${context.sessionId ? ` ${context.sessionId}` : ''} no longer exists (${op}): a new session will be started`,
    );
  }
  const lookup = LOOKUP_PERMISSIONS[op];
  if (lookup !== undefined && (shape.name === 'AccessDeniedException' || shape.name === 'AccessDenied')) {
    return make(
      'PF_ERR_ACCESS_DENIED',
      `IAM denied ${lookup.action}${forProfile}${inRegion}${awsText ? ` (${awsText})` : ''}: allow ${lookup.action} to resolve ${lookup.purpose}, or name the target by id`,
    );
  }
  if (shape.name === 'AccessDeniedException' || shape.name === 'AccessDenied') {
    return make(
      'PF_ERR_ACCESS_DENIED',
      `IAM denied ssm:${op}${forProfile}${context.target ? ` on ${context.target}` : ''}${awsText ? ` (${awsText})` : ''}: allow ssm:StartSession on the instance and the port-forwarding documents, and ssm:ResumeSession/ssm:TerminateSession on your own sessions`,
    );
  }
  if (THROTTLING_NAMES.has(shape.name) || shape.status === 429) {
    return make('PF_ERR_THROTTLED', `${service} throttled ${op}${inRegion}: will retry with backoff`, true);
  }
  if (shape.name === 'CredentialsProviderError' || shape.name === 'TokenProviderError') {
    if (/expired|refresh/.test(lowerMessage)) {
      return make(
        'PF_ERR_CREDENTIALS',
        `AWS credentials expired${forProfile}: run \`${ssoLogin(context.profile)}\` (or refresh the profile's keys)`,
      );
    }
    if (context.profile && /profile|sso|config|credentials file/.test(lowerMessage)) {
      return make(
        'PF_ERR_CREDENTIALS',
        `cannot load AWS credentials for profile ${context.profile} (${awsText}): check ~/.aws/config, or run \`${ssoLogin(context.profile)}\``,
      );
    }
    return make(
      'PF_ERR_CREDENTIALS',
      `no AWS credentials found${forProfile}: run \`aws configure\` or \`aws configure sso\`, then pass --profile or set AWS_PROFILE`,
    );
  }
  if (EXPIRED_NAMES.has(shape.name) || (shape.status === 403 && /expired/.test(lowerMessage))) {
    return make(
      'PF_ERR_CREDENTIALS',
      `AWS credentials expired${forProfile}: run \`${ssoLogin(context.profile)}\` (or refresh the profile's keys)`,
    );
  }
  if (UNKNOWN_KEY_NAMES.has(shape.name)) {
    return make(
      'PF_ERR_CREDENTIALS',
      `AWS does not recognise the access key${forProfile}${inRegion}: the key was deleted or belongs to another partition; refresh the credentials or pick another --profile`,
    );
  }
  if (SIGNATURE_NAMES.has(shape.name)) {
    return make(
      'PF_ERR_CREDENTIALS',
      `AWS rejected the request signature${forProfile}: check the secret access key and that the system clock is correct`,
    );
  }
  if (/region is missing|unresolved region|invalid region/i.test(shape.message)) {
    return make(
      'PF_ERR_AWS',
      `no usable AWS region${forProfile}: pass --region, set AWS_REGION, or set region in the profile`,
    );
  }
  if (INTERNAL_NAMES.has(shape.name) || (shape.status !== undefined && shape.status >= 500)) {
    return make(
      'PF_ERR_AWS_INTERNAL',
      `${service} internal error on ${op}${inRegion} (HTTP ${shape.status ?? 500}): will retry with backoff`,
      true,
    );
  }
  if ((shape.code !== undefined && NETWORK_CODES.has(shape.code)) || NETWORK_NAMES.has(shape.name)) {
    const what = shape.code ?? shape.name;
    const hint =
      shape.code === 'ENOTFOUND' || shape.code === 'EAI_AGAIN'
        ? `check DNS, the --region name and ${endpointFlag}`
        : `check the network, proxy settings (HTTPS_PROXY) and ${endpointFlag}`;
    return make(
      'PF_ERR_AWS',
      `cannot reach the ${service} endpoint for ${op}${inRegion} (${what}): ${hint}`,
      true,
    );
  }
  if (shape.fault === 'server') {
    return make(
      'PF_ERR_AWS_INTERNAL',
      `${service} failed on ${op}${inRegion} (${shape.name}): will retry`,
      true,
    );
  }
  const status = shape.status !== undefined ? `HTTP ${shape.status} ` : '';
  return make(
    'PF_ERR_AWS',
    `${service} ${op} failed${inRegion}: ${status}${shape.name}${awsText ? `: ${awsText}` : ''}`,
  );
}
