/**
 * The logging module: secrets never reach output in any format, plain has no colours or timestamps, json
 * parses, child namespaces nest. Output is captured through a winston Stream transport.
 */
import test from 'ava';
import { Writable } from 'node:stream';
import winston from 'winston';
import { createLogger, redact, redactText, resolveLogFormat } from '../src/log.js';
import type { LogFormat, Logger } from '../src/log.js';

const TOKEN = 'AAEAAxTOKENVALUEsecret123';
const SECRET = 'wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY';
const SESSION_TOKEN = 'IQoJb3JpZ2luX2VjSESSIONTOKEN';
const KEY_ID = 'AKIAIOSFODNN7EXAMPLE';
const QUERY = 'X-Amz-Signature=deadbeef';
const STREAM_URL = `wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/alice-0a1b?role=publish_subscribe&cell-number=AAEA&${QUERY}`;
const SECRETS = [TOKEN, SECRET, SESSION_TOKEN, KEY_ID, QUERY, 'cell-number=AAEA', 'role=publish_subscribe'];

/** A logger writing into a string. */
function capture(
  format: LogFormat,
  options: { level?: 'debug' | 'info'; isTTY?: boolean } = {},
): {
  logger: Logger;
  output: () => string;
} {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  const logger = createLogger({
    format,
    level: options.level ?? 'debug',
    isTTY: options.isTTY ?? false,
    env: {},
    transports: [new winston.transports.Stream({ stream })],
  });
  return { logger, output: () => text };
}

/** Log every way a secret could plausibly reach a log line. */
function logSecrets(logger: Logger): void {
  logger.info('grant', { sessionId: 'alice-0a1b', tokenValue: TOKEN, streamUrl: STREAM_URL });
  logger.info(`dialling ${STREAM_URL}`);
  logger.debug(`OpenDataChannel {"MessageSchemaVersion":"1.0","TokenValue":"${TOKEN}","ClientId":"c"}`);
  logger.warn('credentials', {
    credentials: { accessKeyId: KEY_ID, secretAccessKey: SECRET, sessionToken: SESSION_TOKEN },
  });
  logger.error('headers', {
    headers: {
      'X-Amz-Security-Token': SESSION_TOKEN,
      authorization: `AWS4-HMAC-SHA256 Credential=${KEY_ID}/x, Signature=deadbeef`,
    },
  });
  logger.info(`request with X-Amz-Security-Token: ${SESSION_TOKEN} and aws_secret_access_key = ${SECRET}`);
  logger.info('error', { error: new Error(`failed at ${STREAM_URL} with TokenValue=${TOKEN}`) });
  logger.child('deep', { a: { b: { c: { d: { e: { f: TOKEN } } } } } }).info('nested');
  logger.info('list', { urls: [STREAM_URL], nested: [{ SecretAccessKey: SECRET }] });
}

for (const format of ['text', 'plain', 'json'] as const) {
  test(`${format}: secrets never appear in output`, (t) => {
    const { logger, output } = capture(format);
    logSecrets(logger);
    const out = output();
    t.true(out.length > 0);
    for (const secret of SECRETS) t.false(out.includes(secret), `${format} leaked ${secret}:\n${out}`);
    t.true(out.includes('alice-0a1b'), 'non-secret context is kept');
    t.true(
      out.includes('wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/alice-0a1b'),
      'URL path is kept',
    );
  });
}

test('plain: no ANSI colours and no timestamps', (t) => {
  const { logger, output } = capture('plain', { isTTY: true });
  logger.info('hello', { port: 5432 });
  logger.child('forward').child('db').warn('slow');
  t.is(output(), 'info: hello port=5432\nwarn: [forward:db] slow\n');
  t.false(output().includes('\u001b['));
});

test('text: timestamps, and colours only on a TTY', (t) => {
  const tty = capture('text', { isTTY: true });
  tty.logger.info('hello');
  t.regex(tty.output(), /^\d\d:\d\d:\d\d\.\d{3} .*info.*: hello\n$/);
  t.true(tty.output().includes('\u001b['));
  const pipe = capture('text', { isTTY: false });
  pipe.logger.info('hello');
  t.regex(pipe.output(), /^\d\d:\d\d:\d\d\.\d{3} info: hello\n$/);
});

test('json: one parseable object per line with namespace and context', (t) => {
  const { logger, output } = capture('json');
  const child = logger.child('forward', { forward: 'db' }).child('session', { sessionId: 's-1' });
  child.info('opened', { port: 5432 });
  child.error('closed');
  const lines = output().trim().split('\n');
  t.is(lines.length, 2);
  const first = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
  t.like(first, {
    level: 'info',
    message: 'opened',
    namespace: 'forward:session',
    forward: 'db',
    sessionId: 's-1',
    port: 5432,
  });
  t.is(typeof first['timestamp'], 'string');
  t.like(JSON.parse(lines[1] ?? ''), { level: 'error', message: 'closed' });
});

test('levels: debug is dropped at info, debugEnabled says so', (t) => {
  const { logger, output } = capture('plain', { level: 'info' });
  t.false(logger.debugEnabled);
  logger.debug('hidden');
  logger.info('shown');
  t.is(output(), 'info: shown\n');
  t.true(capture('plain', { level: 'debug' }).logger.debugEnabled);
});

test('redact helpers', (t) => {
  t.is(redactText(`{"TokenValue":"${TOKEN}"}`), '{"TokenValue":"[REDACTED]"}');
  t.is(redactText('https://h/p?x=1 next'), 'https://h/p?[REDACTED] next');
  t.deepEqual(redact({ password: 'p', ok: 1, buf: Buffer.alloc(3) }), {
    password: '[REDACTED]',
    ok: 1,
    buf: '<3 bytes>',
  });
  t.is(resolveLogFormat('auto', { JOURNAL_STREAM: '8:1' }), 'plain');
  t.is(resolveLogFormat('auto', { INVOCATION_ID: 'x' }), 'plain');
  t.is(resolveLogFormat('auto', {}), 'text');
  t.is(resolveLogFormat('json', { JOURNAL_STREAM: '8:1' }), 'json');
});
