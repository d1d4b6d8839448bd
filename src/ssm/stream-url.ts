/**
 * Which data-channel URLs pf-daemon will send a session token to (spec §3.1). The StreamUrl comes from the
 * StartSession/ResumeSession answer; a compromised or misconfigured endpoint could point it anywhere, and
 * the OpenDataChannel message would hand that host the token. Rules:
 * - a loopback API endpoint (the emulator, a local test double) may hand out any ws:// or wss:// URL;
 * - otherwise the StreamUrl must be wss://;
 * - when the API endpoint is AWS's (no override, or a `*.amazonaws.com` / `*.amazonaws.com.cn` host), the
 *   StreamUrl host must be AWS's message gateway too: `ssmmessages[-fips].<region>.amazonaws.com[.cn]`.
 * Newer official clients apply the same check before they dial.
 */
import { isLoopbackHost } from '../targets/destination.js';

/** Hosts of the AWS API endpoints (regional, FIPS, VPC endpoint names). */
const AWS_API_HOST = /(^|\.)amazonaws\.com(\.cn)?$/i;
/** Hosts of the AWS message gateway that serves data channels. */
export const AWS_STREAM_HOST = /^ssmmessages(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/i;

/**
 * Why `streamUrl` must not be dialled for an API at `apiEndpoint`, or undefined when it may be.
 *
 * @param streamUrl - the StreamUrl as the API returned it (never logged: only its scheme and host are named)
 * @param apiEndpoint - the SSM API endpoint URL in use; undefined = AWS's regional endpoint
 */
export function streamUrlProblem(streamUrl: string, apiEndpoint: string | undefined): string | undefined {
  let url: URL;
  try {
    url = new URL(streamUrl);
  } catch {
    return 'the StreamUrl is not a URL';
  }
  if (url.protocol !== 'wss:' && url.protocol !== 'ws:') {
    return `the StreamUrl scheme ${url.protocol} is not wss:`;
  }
  let apiHost: string | undefined;
  if (apiEndpoint !== undefined) {
    try {
      apiHost = new URL(apiEndpoint).hostname;
    } catch {
      return 'the API endpoint is not a URL';
    }
    if (isLoopbackHost(apiHost)) return undefined;
  }
  if (url.protocol !== 'wss:') {
    return `the StreamUrl of a non-loopback endpoint must be wss://, got ws://${url.host}`;
  }
  const awsApi = apiHost === undefined || AWS_API_HOST.test(apiHost);
  if (awsApi && !AWS_STREAM_HOST.test(url.hostname)) {
    return `the StreamUrl host ${url.hostname} is not an AWS message gateway (ssmmessages.<region>.amazonaws.com) although the API endpoint is AWS's`;
  }
  return undefined;
}
