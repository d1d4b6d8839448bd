/**
 * SigV4 headers for the data-channel WebSocket upgrade (spec §3.1): recent official clients sign the
 * `GET` of the StreamUrl for service `ssmmessages` when the URL is not presigned. The token in
 * OpenDataChannel is what authorises the channel today, so signing is best effort: any failure means the
 * upgrade goes out unsigned. The headers are secrets (never logged).
 */
import { createHash, createHmac } from 'node:crypto';
import type { Hash as NodeHash, Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';

/** Service name the data channel is signed for (spec §3.1). */
export const DATA_CHANNEL_SIGNING_SERVICE = 'ssmmessages';

/** Credentials as the SDK resolves them. */
export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

type SourceData = string | ArrayBuffer | ArrayBufferView;

function toBuffer(data: SourceData): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

/** SHA-256 / HMAC-SHA-256 in the shape the signer expects, on Node's crypto. */
class Sha256 {
  private hash: NodeHash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): NodeHash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', toBuffer(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(toBuffer(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.hash.digest()));
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

/** True when the URL already carries a presigned signature (then no headers are added). */
export function isPresigned(url: URL): boolean {
  return url.searchParams.has('X-Amz-Signature') || url.searchParams.has('X-Amz-Credential');
}

/**
 * The SigV4 headers (`Authorization`, `X-Amz-Date`, `X-Amz-Content-Sha256`, optional `X-Amz-Security-Token`) for a `GET` of
 * `streamUrl`, signed for `ssmmessages` in `region`. Empty for presigned URLs.
 */
export async function signStreamUrl(
  streamUrl: string,
  credentials: SigningCredentials,
  region: string,
  signingDate: Date = new Date(),
): Promise<Record<string, string>> {
  const url = new URL(streamUrl);
  if (isPresigned(url)) return {};
  const query: Record<string, string> = {};
  for (const [key, value] of url.searchParams) query[key] = value;
  const signer = new SignatureV4({
    service: DATA_CHANNEL_SIGNING_SERVICE,
    region,
    credentials,
    sha256: Sha256,
  });
  const signed = await signer.sign(
    {
      method: 'GET',
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers: { host: url.host },
    },
    { signingDate },
  );
  // Every header the signer added or signed must go on the wire (the WebSocket client sets `host` itself).
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(signed.headers)) {
    if (key.toLowerCase() !== 'host') headers[key] = String(value);
  }
  return headers;
}
