/**
 * Which StreamUrls a session token may be sent to (stream-url.ts), as a table. The end-to-end check is in
 * `stream-url.integration.test.ts`.
 */
import test from 'ava';
import { streamUrlProblem } from '../../src/ssm/stream-url.js';

const AWS_WSS = 'wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe';

const CASES: [streamUrl: string, endpoint: string | undefined, allowed: boolean][] = [
  [AWS_WSS, undefined, true],
  ['wss://ssmmessages.cn-north-1.amazonaws.com.cn/v1/data-channel/s-1', undefined, true],
  [AWS_WSS, 'https://ssm.eu-west-1.amazonaws.com', true],
  [AWS_WSS, 'https://vpce-0123-abcd.ssm.eu-west-1.vpce.amazonaws.com', true],
  ['wss://evil.example.com/v1/data-channel/s-1', undefined, false],
  ['wss://evil.example.com/v1/data-channel/s-1', 'https://ssm.eu-west-1.amazonaws.com', false],
  ['wss://ssmmessages.eu-west-1.amazonaws.com.evil.example/x', undefined, false],
  ['ws://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1', undefined, false],
  ['ws://10.0.0.5:8080/v1/data-channel/s-1', 'https://ssm-gateway.corp.example', false],
  ['wss://gateway.corp.example/v1/data-channel/s-1', 'https://ssm-gateway.corp.example', true],
  ['ws://127.0.0.1:4566/v1/data-channel/s-1', 'http://127.0.0.1:4566', true],
  ['ws://127.0.0.1:4566/v1/data-channel/s-1', 'http://localhost:4566', true],
  ['ws://[::1]:4566/v1/data-channel/s-1', 'http://[::1]:4566', true],
  ['https://ssmmessages.eu-west-1.amazonaws.com/x', undefined, false],
  ['not a url', undefined, false],
];

for (const [streamUrl, endpoint, allowed] of CASES) {
  test(`${allowed ? 'allows' : 'refuses'} ${streamUrl} for endpoint ${endpoint ?? '(AWS default)'}`, (t) => {
    const problem = streamUrlProblem(streamUrl, endpoint);
    if (allowed) t.is(problem, undefined);
    else t.truthy(problem);
  });
}
