/**
 * The narrow SSM API surface the rest of pf-daemon uses (spec §2). `src/ssm/client.ts` implements it
 * with `@aws-sdk/client-ssm`; tests may pass their own implementation.
 */

/** StartSession request (spec §2.1). */
export interface StartSessionRequest {
  /** Managed node id. */
  target: string;
  /** `AWS-StartPortForwardingSession` or `AWS-StartPortForwardingSessionToRemoteHost`. */
  documentName: string;
  /** Every value a list of strings, e.g. `{ portNumber: ['5432'] }`. */
  parameters: Record<string, string[]>;
  /** Shown in session history; 1–256 chars. */
  reason?: string;
}

/** What StartSession and ResumeSession return. `tokenValue` and `streamUrl` are secrets: never log them. */
export interface SessionGrant {
  sessionId: string;
  /** Bearer token for OpenDataChannel. */
  tokenValue: string;
  /** WebSocket URL to dial exactly as given. */
  streamUrl: string;
}

/** The SSM operations pf-daemon needs. Errors are `AwsSessionError`s with stable codes. */
export interface SsmApi {
  startSession(request: StartSessionRequest): Promise<SessionGrant>;
  /** Throws `PF_ERR_SESSION_GONE` when the session cannot be resumed (no token or DoesNotExist). */
  resumeSession(sessionId: string): Promise<SessionGrant>;
  /** Idempotent. */
  terminateSession(sessionId: string): Promise<void>;
  /**
   * SigV4 headers for the WebSocket upgrade to `streamUrl` (spec §3.1), from the same credentials and
   * region as the API calls. Optional; resolves to `{}` when signing is not possible. Secrets: never log.
   */
  signStreamUrl?(streamUrl: string): Promise<Record<string, string>>;
  /**
   * Resolve region and credentials without calling the API (start-up check). Optional. Throws the
   * `AwsSessionError` StartSession would throw for the same cause, so the message names the fix.
   */
  checkSetup?(): Promise<void>;
}
