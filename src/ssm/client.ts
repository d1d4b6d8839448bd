/**
 * {@link SsmApi} on top of `@aws-sdk/client-ssm` (spec §2). Region, credentials and endpoint come from the
 * SDK's own chains: `profile` is handed to the client, which resolves static keys, `credential_process`,
 * SSO and assume-role profiles from `~/.aws/config` exactly like the AWS CLI; `AWS_REGION`,
 * `AWS_PROFILE` and `AWS_ENDPOINT_URL_SSM` work unchanged. Nothing here re-implements that chain, except
 * one AWS CLI convention the SDK v3 lacks: `AWS_DEFAULT_REGION` applies when `AWS_REGION` is unset.
 *
 * A StreamUrl is checked by {@link streamUrlProblem} before it leaves this module, so a token is only ever
 * sent to a data-channel host the endpoint may name.
 *
 * Every failure is rethrown as an `AwsSessionError` via {@link mapSsmError}. TokenValue and StreamUrl
 * are never logged.
 */
import {
  ResumeSessionCommand,
  SSMClient,
  StartSessionCommand,
  TerminateSessionCommand,
} from '@aws-sdk/client-ssm';
import type { SSMClientConfig } from '@aws-sdk/client-ssm';
import { AwsSessionError } from '../errors.js';
import type { Logger } from '../log.js';
import { describeProxy, proxyAgentFor, proxyUrlFor } from '../proxy.js';
import { describeError } from '../errors.js';
import { signStreamUrl } from './sign.js';
import { streamUrlProblem } from './stream-url.js';
import type { SessionGrant, SsmApi, StartSessionRequest } from './types.js';
import { mapSsmError } from './errors.js';
import type { SsmErrorContext, SsmOperation } from './errors.js';

/** Default time one SSM API request may take before it fails as a retryable network error, ms (our own bound). */
export const SSM_REQUEST_TIMEOUT_MS = 30_000;
/** Default TCP/TLS connect timeout towards the SSM endpoint, ms (our own bound). */
export const SSM_CONNECT_TIMEOUT_MS = 10_000;

/** Static credentials (tests, the emulator). Production uses the SDK chain instead. */
export interface StaticCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options for {@link createSsmApi}. Unset fields fall through to the SDK's default chains. */
export interface SsmApiOptions {
  /** AWS region, e.g. `eu-west-1`. Default: `AWS_REGION` / the profile's `region`. */
  region?: string;
  /** Named profile in `~/.aws/config` (SSO profiles included). Default: `AWS_PROFILE` / `default`. */
  profile?: string;
  /** SSM API endpoint URL (e.g. the emulator's `http://127.0.0.1:port`). Default: `AWS_ENDPOINT_URL_SSM` / the regional endpoint. */
  endpoint?: string;
  /** Scoped logger; this module logs under `ssm`. */
  logger: Logger;
  /** Appended to the SDK's User-Agent, e.g. `pf-daemon/0.1.0` (spec §3.3: our own version goes here). */
  userAgent?: string;
  /** Fixed credentials instead of the SDK chain; meant for tests and the emulator. */
  credentials?: StaticCredentials;
  /** Time one request may take, ms. Default {@link SSM_REQUEST_TIMEOUT_MS}. */
  requestTimeoutMs?: number;
  /** Attempts per call including the first, handled by the SDK's standard retry strategy. Default 3 (SDK default). */
  maxAttempts?: number;
  /** Environment for `AWS_REGION`/`AWS_DEFAULT_REGION` and the endpoint variables. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/**
 * The region the AWS CLI would use before looking at the profile: `AWS_REGION`, then `AWS_DEFAULT_REGION`.
 * Undefined lets the SDK read the profile's `region`.
 */
export function regionFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  return env['AWS_REGION'] || env['AWS_DEFAULT_REGION'] || undefined;
}

/** The fields of a Start/ResumeSession response pf-daemon reads. */
interface GrantOutput {
  SessionId?: string | undefined;
  TokenValue?: string | undefined;
  StreamUrl?: string | undefined;
}

/**
 * Build an {@link SsmApi} backed by the AWS SDK.
 *
 * @param options - region/profile/endpoint overrides (each optional), logger, test credentials
 * @returns the API; each call throws `AwsSessionError` on failure
 */
export function createSsmApi(options: SsmApiOptions): SsmApi {
  const log = options.logger.child('ssm');
  // The SDK ignores HTTPS_PROXY; route the API through the same proxy rules as the WebSocket. Without an
  // endpoint the regional host is not known yet, so NO_PROXY is matched against the service domain.
  const proxyAgent = proxyAgentFor(options.endpoint ?? 'https://ssm.amazonaws.com');
  if (proxyAgent)
    log.debug(
      `SSM API through proxy ${describeProxy(proxyUrlFor(options.endpoint ?? 'https://ssm.amazonaws.com') ?? '')}`,
    );
  const config: SSMClientConfig = {
    // The SDK's own default is no request timeout at all: a hung call would stall a forward forever.
    requestHandler: {
      requestTimeout: options.requestTimeoutMs ?? SSM_REQUEST_TIMEOUT_MS,
      connectionTimeout: Math.min(SSM_CONNECT_TIMEOUT_MS, options.requestTimeoutMs ?? SSM_CONNECT_TIMEOUT_MS),
      throwOnRequestTimeout: true,
      ...(proxyAgent ? { httpAgent: proxyAgent, httpsAgent: proxyAgent } : {}),
    },
  };
  const env = options.env ?? process.env;
  // SDK v3 reads AWS_REGION and the profile but not AWS_DEFAULT_REGION; the AWS CLI (and our docs) do.
  const region = options.region ?? regionFromEnv(env);
  if (region) config.region = region;
  if (options.profile) config.profile = options.profile;
  if (options.endpoint) config.endpoint = options.endpoint;
  if (options.userAgent) config.customUserAgent = options.userAgent;
  if (options.credentials) config.credentials = { ...options.credentials };
  if (options.maxAttempts !== undefined) config.maxAttempts = options.maxAttempts;
  const client = new SSMClient(config);
  const baseContext: SsmErrorContext = {};
  if (region) baseContext.region = region;
  if (options.profile) baseContext.profile = options.profile;

  async function call<T>(op: SsmOperation, context: SsmErrorContext, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      const mapped = mapSsmError(err, op, { ...baseContext, ...context });
      log.debug(`${op} failed`, { code: mapped.code, retryable: mapped.retryable, error: mapped.message });
      throw mapped;
    }
  }

  // The endpoint the SDK will call, for the StreamUrl rules (its own env variables included).
  const apiEndpoint =
    options.endpoint ?? (env['AWS_ENDPOINT_URL_SSM'] || env['AWS_ENDPOINT_URL'] || undefined);

  /** Refuse a StreamUrl the endpoint may not name (see `stream-url.ts`); the token is never used then. */
  function checkStreamUrl(op: SsmOperation, grant: SessionGrant): SessionGrant {
    const problem = streamUrlProblem(grant.streamUrl, apiEndpoint);
    if (problem === undefined) return grant;
    throw new AwsSessionError(
      'PF_ERR_STREAM_URL',
      `${op} for session ${grant.sessionId} refused: ${problem}; the session token was not sent. Check --endpoint (and AWS_ENDPOINT_URL_SSM) points at the real SSM API`,
    );
  }

  function grantFrom(op: SsmOperation, out: GrantOutput, sessionId?: string): SessionGrant {
    const id = out.SessionId || sessionId;
    if (!out.TokenValue) {
      if (op === 'ResumeSession') {
        // Spec §2.2: a resume answer without a token means the session is over.
        throw new AwsSessionError(
          'PF_ERR_SESSION_GONE',
          `session ${id ?? ''} can no longer be resumed (ResumeSession returned no token): a new session will be started`,
        );
      }
      throw new AwsSessionError(
        'PF_ERR_AWS',
        `${op} returned no TokenValue: the SSM endpoint is not compatible`,
      );
    }
    if (!id || !out.StreamUrl) {
      throw new AwsSessionError(
        'PF_ERR_AWS',
        `${op} returned no ${id ? 'StreamUrl' : 'SessionId'}: the SSM endpoint is not compatible`,
      );
    }
    return { sessionId: id, tokenValue: out.TokenValue, streamUrl: out.StreamUrl };
  }

  return {
    async startSession(request: StartSessionRequest): Promise<SessionGrant> {
      const context = { target: request.target, document: request.documentName };
      log.debug('StartSession', { target: request.target, document: request.documentName });
      const out = await call('StartSession', context, () =>
        client.send(
          new StartSessionCommand({
            Target: request.target,
            DocumentName: request.documentName,
            Parameters: request.parameters,
            ...(request.reason ? { Reason: request.reason } : {}),
          }),
        ),
      );
      const grant = grantFrom('StartSession', out);
      log.debug('StartSession ok', { sessionId: grant.sessionId, target: request.target });
      try {
        return checkStreamUrl('StartSession', grant);
      } catch (err) {
        // The session exists on the service now: end it rather than leave it to the idle timeout.
        await client.send(new TerminateSessionCommand({ SessionId: grant.sessionId })).catch(() => undefined);
        throw err;
      }
    },

    async resumeSession(sessionId: string): Promise<SessionGrant> {
      log.debug('ResumeSession', { sessionId });
      const out = await call('ResumeSession', { sessionId }, () =>
        client.send(new ResumeSessionCommand({ SessionId: sessionId })),
      );
      return checkStreamUrl('ResumeSession', grantFrom('ResumeSession', out, sessionId));
    },

    async terminateSession(sessionId: string): Promise<void> {
      log.debug('TerminateSession', { sessionId });
      try {
        await call('TerminateSession', { sessionId }, () =>
          client.send(new TerminateSessionCommand({ SessionId: sessionId })),
        );
      } catch (err) {
        // Spec §2.3: terminating a session that is already gone is success from our side.
        if (err instanceof AwsSessionError && err.code === 'PF_ERR_SESSION_GONE') return;
        throw err;
      }
    },

    async checkSetup(): Promise<void> {
      // The same resolution StartSession would do first, without calling the API; errors map the same way.
      await call('StartSession', {}, async () => {
        await client.config.region();
        await client.config.credentials();
      });
    },

    async signStreamUrl(streamUrl: string): Promise<Record<string, string>> {
      try {
        const credentials = await client.config.credentials();
        const region = await client.config.region();
        return await signStreamUrl(streamUrl, credentials, region);
      } catch (err) {
        // Optional today (spec §3.1): the OpenDataChannel token authorises the channel.
        log.debug(`WebSocket upgrade not signed: ${describeError(err)}`);
        return {};
      }
    },
  };
}
