/**
 * The emulator's SSM JSON API (spec §2): AWS JSON 1.1 exactly as `@aws-sdk/client-ssm` sends it — `POST /`,
 * `Content-Type: application/x-amz-json-1.1`, `X-Amz-Target: AmazonSSM.<Operation>` — for StartSession,
 * ResumeSession, TerminateSession and DescribeInstanceInformation, and the ECS operations ListTasks and
 * DescribeTasks on the same endpoint (`X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`, as
 * `@aws-sdk/client-ecs` sends them) answered from the inventory (`inventory.ts`). Signatures are not
 * checked (spec §12.1).
 *
 * Validation is pure ({@link validateStartSession}); session bookkeeping is delegated to an {@link ApiBackend}.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import { ApiError } from './api-error.js';
import type { ApiOperation, Faults } from './faults.js';
import type { Inventory } from './inventory.js';

/** Content type of AWS JSON 1.1 requests and responses (protocol). */
export const AMZ_JSON_CONTENT_TYPE = 'application/x-amz-json-1.1';
/** Prefix of the `X-Amz-Target` header for SSM (protocol). */
export const TARGET_PREFIX = 'AmazonSSM.';
/** Prefix of the `X-Amz-Target` header for ECS (protocol, as `@aws-sdk/client-ecs` sends it). */
export const ECS_TARGET_PREFIX = 'AmazonEC2ContainerServiceV20141113.';
/** The AWS document for the instance's own ports (SSM documents). */
export const SERVICE_DOCUMENT_LOCAL = 'AWS-StartPortForwardingSession';
/** The AWS document for a host reachable from the instance (SSM documents). */
export const SERVICE_DOCUMENT_REMOTE_HOST = 'AWS-StartPortForwardingSessionToRemoteHost';

/**
 * A port-forwarding document an organisation published: it behaves like one of the AWS documents (`base`)
 * and takes these further parameters (each a one-element list of strings).
 */
export interface CustomDocument {
  /** `local`: like AWS-StartPortForwardingSession; `remoteHost`: like …ToRemoteHost. */
  base: 'local' | 'remoteHost';
  /** Names of the further parameters it accepts. */
  parameters: readonly string[];
}
/** Largest accepted request body, bytes (our own limit; real requests are < 2 KiB). */
export const MAX_REQUEST_BODY_BYTES = 1024 * 1024;
/** Longest StartSession `Reason`, characters (SSM API reference). */
export const MAX_REASON_CHARS = 256;

export { API_ERROR_STATUS, ApiError } from './api-error.js';
export type { EmulatorOnlyErrorCode, LookupErrorCode } from './api-error.js';

/** A validated StartSession request. */
export interface StartSessionInput {
  /** Managed node id or `ecs:<cluster>_<taskId>_<runtimeId>`. */
  target: string;
  /** One of the two port-forwarding documents or a configured custom one. */
  documentName: string;
  /** Parameters reduced to single strings (`localPortNumber` and `host` only when given). */
  parameters: { portNumber: string; localPortNumber?: string; host?: string };
  /** A custom document's further parameters, reduced to single strings. */
  extraParameters?: Record<string, string>;
  /** Optional reason text. */
  reason?: string;
}

/** What StartSession and a successful ResumeSession answer (spec §2.1). */
export interface SessionGrantBody {
  SessionId: string;
  TokenValue: string;
  StreamUrl: string;
}

/** Outcome of ResumeSession as the backend sees it. */
export type ResumeOutcome =
  | { kind: 'granted'; grant: SessionGrantBody }
  /** The session ended: answer without TokenValue (spec §2.2). */
  | { kind: 'ended' }
  | { kind: 'unknown' };

/** Session bookkeeping the API delegates to (the emulator implements it). */
export interface ApiBackend {
  /** Instances and ECS tasks for the look-ups. */
  inventory: Inventory;
  /** Custom documents StartSession accepts besides the two AWS ones. */
  documents: Readonly<Record<string, CustomDocument>>;
  /** True when StartSession may open a session to `target`. */
  isTargetConnected(target: string): boolean;
  /** Create a session and return its first grant. */
  startSession(input: StartSessionInput): SessionGrantBody;
  /** Issue a new token and cell-number, or say why not. */
  resumeSession(sessionId: string): ResumeOutcome;
  /** End the session if it exists and is live; idempotent. */
  terminateSession(sessionId: string): void;
  /** Told about every call, before it is processed (for the `apiCall` event). */
  onCall(op: string): void;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** SSM-style "1 validation error detected" message. */
function validationError(field: string, value: unknown, constraint: string): ApiError {
  return new ApiError(
    'ValidationException',
    `1 validation error detected: Value '${String(value)}' at '${field}' failed to satisfy constraint: ${constraint}`,
  );
}

const AWS_DOCUMENTS: Readonly<Record<string, CustomDocument>> = {
  [SERVICE_DOCUMENT_LOCAL]: { base: 'local', parameters: [] },
  [SERVICE_DOCUMENT_REMOTE_HOST]: { base: 'remoteHost', parameters: [] },
};
const PORT_PATTERN = /^\d{1,5}$/;

/** The single value of a list-valued parameter, or an InvalidParameters error. */
function singleValue(name: string, value: unknown): string {
  if (!Array.isArray(value) || value.length !== 1 || typeof value[0] !== 'string') {
    throw new ApiError('InvalidParameters', `Parameter "${name}" must be a list holding exactly one string.`);
  }
  return value[0];
}

function checkPort(name: string, text: string, min: number): void {
  const n = Number(text);
  if (!PORT_PATTERN.test(text) || n < min || n > 65535) {
    throw new ApiError(
      'InvalidParameters',
      `Parameter "${name}" "${text}" is not a port number between ${min} and 65535.`,
    );
  }
}

/**
 * Validate a StartSession body the way the service does for the two port documents (spec §2.1, §2.4).
 * @throws ApiError ValidationException, InvalidDocument or InvalidParameters
 */
export function validateStartSession(
  body: JsonObject,
  documents: Readonly<Record<string, CustomDocument>> = {},
): StartSessionInput {
  const target = body['Target'];
  if (typeof target !== 'string' || target.length < 1 || target.length > 400) {
    throw validationError('target', target, 'Member must not be null and have length between 1 and 400');
  }
  const reason = body['Reason'];
  if (reason !== undefined) {
    if (typeof reason !== 'string' || reason.length < 1 || reason.length > MAX_REASON_CHARS) {
      throw validationError('reason', reason, `Member must have length between 1 and ${MAX_REASON_CHARS}`);
    }
  }
  const documentName = body['DocumentName'];
  const document =
    typeof documentName === 'string'
      ? (AWS_DOCUMENTS[documentName] ??
        (Object.hasOwn(documents, documentName) ? documents[documentName] : undefined))
      : undefined;
  if (typeof documentName !== 'string' || document === undefined) {
    throw new ApiError(
      'InvalidDocument',
      `Document ${String(documentName)} does not exist or is not a port-forwarding document supported by the emulator.`,
    );
  }
  const raw = body['Parameters'] ?? {};
  if (!isObject(raw))
    throw new ApiError('InvalidParameters', 'Parameters must be a map of lists of strings.');
  const remoteHost = document.base === 'remoteHost';
  const allowed = [
    ...(remoteHost ? ['portNumber', 'localPortNumber', 'host'] : ['portNumber', 'localPortNumber']),
    ...document.parameters,
  ];
  for (const name of Object.keys(raw)) {
    if (!allowed.includes(name)) {
      throw new ApiError(
        'InvalidParameters',
        `Parameter "${name}" is not allowed for document ${documentName}.`,
      );
    }
  }
  if (raw['portNumber'] === undefined) {
    throw new ApiError(
      'InvalidParameters',
      `Parameter "portNumber" is required for document ${documentName}.`,
    );
  }
  const portNumber = singleValue('portNumber', raw['portNumber']);
  checkPort('portNumber', portNumber, 1);
  const parameters: StartSessionInput['parameters'] = { portNumber };
  if (raw['localPortNumber'] !== undefined) {
    const localPortNumber = singleValue('localPortNumber', raw['localPortNumber']);
    if (localPortNumber !== '') checkPort('localPortNumber', localPortNumber, 0);
    parameters.localPortNumber = localPortNumber;
  }
  if (remoteHost) {
    if (raw['host'] === undefined) {
      throw new ApiError('InvalidParameters', `Parameter "host" is required for document ${documentName}.`);
    }
    const host = singleValue('host', raw['host']);
    if (host.length === 0) throw new ApiError('InvalidParameters', 'Parameter "host" must not be empty.');
    parameters.host = host;
  }
  const input: StartSessionInput = { target, documentName, parameters };
  if (document.parameters.length > 0) {
    const extra: Record<string, string> = {};
    for (const name of document.parameters) {
      if (raw[name] !== undefined) extra[name] = singleValue(name, raw[name]);
    }
    input.extraParameters = extra;
  }
  if (typeof reason === 'string') input.reason = reason;
  return input;
}

/** The `SessionId` field of ResumeSession/TerminateSession bodies. */
function sessionIdOf(body: JsonObject): string {
  const id = body['SessionId'];
  if (typeof id !== 'string' || id.length < 1 || id.length > 96) {
    throw validationError('sessionId', id, 'Member must not be null and have length between 1 and 96');
  }
  return id;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST_BODY_BYTES) {
        reject(new ApiError('SerializationException', 'Request body too large.'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': AMZ_JSON_CONTENT_TYPE,
    'Content-Length': String(Buffer.byteLength(text)),
    'x-amzn-RequestId': randomUUID(),
    ...headers,
  });
  res.end(text);
}

/** Answer an {@link ApiError} as AWS JSON 1.1 does: status, `__type` body and `x-amzn-ErrorType` header. */
export function sendApiError(res: ServerResponse, err: ApiError): void {
  send(res, err.status, { __type: err.code, message: err.message }, { 'x-amzn-ErrorType': err.code });
}

/** Operations per `X-Amz-Target` prefix. */
const OPERATIONS: Readonly<Record<string, ReadonlySet<string>>> = {
  [TARGET_PREFIX]: new Set<ApiOperation>([
    'StartSession',
    'ResumeSession',
    'TerminateSession',
    'DescribeInstanceInformation',
  ]),
  [ECS_TARGET_PREFIX]: new Set<ApiOperation>(['ListTasks', 'DescribeTasks']),
};

/** The operation an `X-Amz-Target` header names, or '' when it names none the emulator serves. */
function operationOf(target: string): ApiOperation | '' {
  for (const [prefix, ops] of Object.entries(OPERATIONS)) {
    if (!target.startsWith(prefix)) continue;
    const op = target.slice(prefix.length);
    return ops.has(op) ? (op as ApiOperation) : '';
  }
  return '';
}

/** Run one operation on a parsed body; returns the response body. */
function dispatch(op: ApiOperation, body: JsonObject, backend: ApiBackend): unknown {
  switch (op) {
    case 'StartSession': {
      const input = validateStartSession(body, backend.documents);
      if (!backend.isTargetConnected(input.target)) {
        throw new ApiError('TargetNotConnected', `${input.target} is not connected.`);
      }
      return backend.startSession(input);
    }
    case 'ResumeSession': {
      const id = sessionIdOf(body);
      const outcome = backend.resumeSession(id);
      switch (outcome.kind) {
        case 'granted':
          return outcome.grant;
        case 'ended':
          return { SessionId: id };
        case 'unknown':
          throw new ApiError('DoesNotExistException', `Session ${id} does not exist.`);
      }
      break;
    }
    case 'TerminateSession': {
      const id = sessionIdOf(body);
      backend.terminateSession(id);
      return { SessionId: id };
    }
    case 'DescribeInstanceInformation':
      return backend.inventory.describeInstanceInformation(body);
    case 'ListTasks':
      return backend.inventory.listTasks(body);
    case 'DescribeTasks':
      return backend.inventory.describeTasks(body);
  }
  throw new ApiError('InternalServerError', `operation ${op} not dispatched`);
}

/**
 * Serve one JSON API request (`POST /`). Injected faults (`apiError`) are answered before validation, like a
 * throttle or an outage in front of the service would.
 */
export async function handleApiRequest(
  req: IncomingMessage,
  res: ServerResponse,
  backend: ApiBackend,
  faults: Faults,
  logger: Logger,
): Promise<void> {
  try {
    if (req.method !== 'POST')
      throw new ApiError('UnknownOperationException', `Method ${req.method} not allowed.`);
    const targetHeader = req.headers['x-amz-target'];
    const target = typeof targetHeader === 'string' ? targetHeader : '';
    const op = operationOf(target);
    const raw = await readBody(req);
    backend.onCall(op || target);
    if (op === '') throw new ApiError('UnknownOperationException', `Unknown operation ${target}.`);
    const fault = faults.takeApiError(op);
    if (fault) {
      logger.debug('injected API error', { op, code: fault.code });
      throw new ApiError(fault.code, fault.message ?? `Injected ${fault.code} for ${op}.`);
    }
    let body: unknown;
    try {
      body = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
    } catch {
      throw new ApiError('SerializationException', 'Request body is not valid JSON.');
    }
    if (!isObject(body)) throw new ApiError('SerializationException', 'Request body is not a JSON object.');
    const response = dispatch(op, body, backend);
    send(res, 200, response);
  } catch (err) {
    if (err instanceof ApiError) {
      logger.debug('API error', { code: err.code, message: err.message });
      sendApiError(res, err);
      return;
    }
    logger.error('API request failed', { error: err });
    sendApiError(res, new ApiError('InternalServerError', 'Internal error in the emulator.'));
  }
}
