/**
 * The emulator's SSM JSON API (spec §2): AWS JSON 1.1 exactly as `@aws-sdk/client-ssm` sends it — `POST /`,
 * `Content-Type: application/x-amz-json-1.1`, `X-Amz-Target: AmazonSSM.<Operation>` — for StartSession,
 * ResumeSession and TerminateSession. Signatures are not checked (spec §12.1).
 *
 * Validation is pure ({@link validateStartSession}); session bookkeeping is delegated to an {@link ApiBackend}.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST } from '../config/types.js';
import type { Logger } from '../log.js';
import type { ApiErrorCode, ApiOperation, Faults } from './faults.js';

/** Content type of AWS JSON 1.1 requests and responses (protocol). */
export const AMZ_JSON_CONTENT_TYPE = 'application/x-amz-json-1.1';
/** Prefix of the `X-Amz-Target` header for SSM (protocol). */
export const TARGET_PREFIX = 'AmazonSSM.';
/** Largest accepted request body, bytes (our own limit; real requests are < 2 KiB). */
export const MAX_REQUEST_BODY_BYTES = 1024 * 1024;
/** Longest StartSession `Reason`, characters (SSM API reference). */
export const MAX_REASON_CHARS = 256;

/** HTTP status per error code (spec §2.4), plus codes the emulator itself uses for malformed requests. */
export const API_ERROR_STATUS: Readonly<Record<ApiErrorCode | EmulatorOnlyErrorCode, number>> = {
  TargetNotConnected: 400,
  InvalidDocument: 400,
  InvalidParameters: 400,
  DoesNotExistException: 400,
  AccessDeniedException: 400,
  ThrottlingException: 400,
  ValidationException: 400,
  InternalServerError: 500,
  UnknownOperationException: 400,
  SerializationException: 400,
};

/** Error codes only produced for malformed requests (not in spec §2.4). */
export type EmulatorOnlyErrorCode = 'UnknownOperationException' | 'SerializationException';

/** An API error: `__type` code and message. */
export class ApiError extends Error {
  constructor(
    /** The `__type` / `x-amzn-ErrorType` code. */
    readonly code: ApiErrorCode | EmulatorOnlyErrorCode,
    message: string,
  ) {
    super(message);
  }

  /** HTTP status of this code (spec §2.4). */
  get status(): number {
    return API_ERROR_STATUS[this.code];
  }
}

/** A validated StartSession request. */
export interface StartSessionInput {
  /** Managed node id. */
  target: string;
  /** One of the two port-forwarding documents. */
  documentName: string;
  /** Parameters reduced to single strings (`localPortNumber` and `host` only when given). */
  parameters: { portNumber: string; localPortNumber?: string; host?: string };
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

const PORT_DOCUMENTS: ReadonlySet<string> = new Set([DOCUMENT_LOCAL, DOCUMENT_REMOTE_HOST]);
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
export function validateStartSession(body: JsonObject): StartSessionInput {
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
  if (typeof documentName !== 'string' || !PORT_DOCUMENTS.has(documentName)) {
    throw new ApiError(
      'InvalidDocument',
      `Document ${String(documentName)} does not exist or is not a port-forwarding document supported by the emulator.`,
    );
  }
  const raw = body['Parameters'] ?? {};
  if (!isObject(raw))
    throw new ApiError('InvalidParameters', 'Parameters must be a map of lists of strings.');
  const remoteHost = documentName === DOCUMENT_REMOTE_HOST;
  const allowed = remoteHost ? ['portNumber', 'localPortNumber', 'host'] : ['portNumber', 'localPortNumber'];
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

const OPERATIONS: ReadonlySet<string> = new Set<ApiOperation>([
  'StartSession',
  'ResumeSession',
  'TerminateSession',
]);

function isOperation(op: string): op is ApiOperation {
  return OPERATIONS.has(op);
}

/** Run one operation on a parsed body; returns the response body. */
function dispatch(op: ApiOperation, body: JsonObject, backend: ApiBackend): unknown {
  switch (op) {
    case 'StartSession': {
      const input = validateStartSession(body);
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
    const op = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : '';
    const raw = await readBody(req);
    backend.onCall(op || target);
    if (!isOperation(op)) throw new ApiError('UnknownOperationException', `Unknown operation ${target}.`);
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
