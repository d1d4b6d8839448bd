/**
 * Test helpers for the emulator's service half: a fake agent (for API/relay tests that must not depend on the
 * real agent), a raw data-channel client over `ws`, and SDK client construction.
 */
import { SSMClient, StartSessionCommand } from '@aws-sdk/client-ssm';
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { DOCUMENT_LOCAL } from '../../src/config/types.js';
import { MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import type { ClientMessage } from '../../src/datachannel/message.js';
import { encodeAcknowledge, encodeOpenDataChannel } from '../../src/datachannel/payloads.js';
import type { AgentDeps, AgentOptions, EmulatedAgent } from '../../src/emulator/agent.js';
import type { AgentFactory, Emulator, EmulatorOptions } from '../../src/emulator/index.js';
import { startEmulator } from '../../src/emulator/index.js';

export const TARGET = 'i-0123456789abcdef0';

/** A minimal agent: sends one output_stream_data on start, acks every input_stream_data, records calls. */
export class FakeAgent extends EventEmitter {
  readonly received: ClientMessage[] = [];
  readonly calls: string[] = [];
  private seq = 0;
  constructor(
    readonly options: AgentOptions,
    private readonly deps: AgentDeps,
  ) {
    super();
  }
  start(): void {
    this.calls.push('start');
    this.sendOutput(Buffer.from('{"AgentVersion":"fake"}'), PayloadType.HandshakeRequest);
  }
  /** Send a sequenced output_stream_data to the client. */
  sendOutput(payload: Buffer, payloadType: number = PayloadType.Output): number {
    const seq = this.seq++;
    this.deps.sendToClient(
      encodeMessage(
        newMessage({
          messageType: MessageType.OutputStreamData,
          sequenceNumber: seq,
          flags: seq === 0 ? 1 : 0,
          payloadType,
          payload,
        }),
      ),
    );
    return seq;
  }
  receiveFromClient(frame: Buffer): void {
    const m = decodeMessage(frame, { verifyDigest: false });
    this.received.push(m);
    this.emit('received', m);
    if (m.messageType === MessageType.InputStreamData) {
      this.deps.sendToClient(
        encodeMessage(
          newMessage({
            messageType: MessageType.Acknowledge,
            sequenceNumber: 0,
            flags: 3,
            payloadType: 0,
            payload: encodeAcknowledge({
              acknowledgedMessageType: m.messageType,
              acknowledgedMessageId: m.messageId,
              acknowledgedMessageSequenceNumber: m.sequenceNumber,
              isSequentialMessage: true,
            }),
          }),
        ),
      );
    }
  }
  pausePublication(): void {
    this.calls.push('pause');
    this.emit('call', 'pause');
  }
  startPublication(): void {
    this.calls.push('start_publication');
    this.emit('call', 'start_publication');
  }
  stallReceive(): void {
    this.calls.push('stall');
  }
  releaseReceiveStall(): void {
    this.calls.push('release');
  }
  close(reason: string): void {
    this.calls.push(`close:${reason}`);
  }
}

/** A factory recording every fake agent it builds. */
export function fakeAgentFactory(created: FakeAgent[] = []): AgentFactory {
  return (options, deps) => {
    const agent = new FakeAgent(options, deps);
    created.push(agent);
    return agent as unknown as EmulatedAgent;
  };
}

/** An SDK client pointed at the emulator (no retries unless asked). */
export function ssmFor(emulator: Emulator, maxAttempts = 1): SSMClient {
  return new SSMClient({
    endpoint: emulator.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    maxAttempts,
  });
}

/** StartSession for the local document. */
export async function startLocalSession(
  ssm: SSMClient,
  port = 5432,
): Promise<{ sessionId: string; token: string; url: string }> {
  const out = await ssm.send(
    new StartSessionCommand({
      Target: TARGET,
      DocumentName: DOCUMENT_LOCAL,
      Parameters: { portNumber: [String(port)] },
    }),
  );
  return { sessionId: out.SessionId ?? '', token: out.TokenValue ?? '', url: out.StreamUrl ?? '' };
}

/** A raw data-channel client: the codec over a `ws` WebSocket, with a queue of decoded messages. */
export class RawClient {
  readonly ws: WebSocket;
  readonly messages: ClientMessage[] = [];
  readonly events = new EventEmitter();
  closeCode: number | undefined;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(url: string) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        resolve({ code, reason: this.closeReason });
      });
    });
    this.ws.on('error', () => undefined);
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) return;
      const m = decodeMessage(data as Buffer, { verifyDigest: false });
      this.messages.push(m);
      this.events.emit('message', m);
    });
  }

  /** Connect and send OpenDataChannel. */
  static async open(
    url: string,
    token: string,
    clientId = randomUUID(),
    clientVersion = '1.2.694.0',
  ): Promise<RawClient> {
    const client = new RawClient(url);
    await client.opened;
    client.ws.send(
      encodeOpenDataChannel({
        messageSchemaVersion: '1.0',
        requestId: randomUUID(),
        tokenValue: token,
        clientId,
        clientVersion,
      }),
    );
    return client;
  }

  /** Wait for a message matching `predicate` (already received ones included). */
  next(predicate: (m: ClientMessage) => boolean, timeoutMs = 5000): Promise<ClientMessage> {
    const found = this.messages.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const onMessage = (m: ClientMessage): void => {
        if (!predicate(m)) return;
        clearTimeout(timer);
        this.events.off('message', onMessage);
        resolve(m);
      };
      const timer = setTimeout(() => {
        this.events.off('message', onMessage);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a message`));
      }, timeoutMs);
      this.events.on('message', onMessage);
    });
  }

  /** Send an encoded message. */
  send(message: ClientMessage): void {
    this.ws.send(encodeMessage(message));
  }

  /** Send a sequenced input_stream_data. */
  sendInput(seq: number, payload: Buffer, payloadType: number = PayloadType.Output): void {
    this.send(
      newMessage({
        messageType: MessageType.InputStreamData,
        sequenceNumber: seq,
        flags: 0,
        payloadType,
        payload,
      }),
    );
  }

  /** Ack an agent message. */
  ack(m: ClientMessage): void {
    this.send(
      newMessage({
        messageType: MessageType.Acknowledge,
        sequenceNumber: 0,
        flags: 3,
        payloadType: 0,
        payload: encodeAcknowledge({
          acknowledgedMessageType: m.messageType,
          acknowledgedMessageId: m.messageId,
          acknowledgedMessageSequenceNumber: m.sequenceNumber,
          isSequentialMessage: true,
        }),
      }),
    );
  }

  close(): void {
    this.ws.close(1000);
  }
}

/** What a {@link withEmulator} body gets. */
export interface Ctx {
  emulator: Emulator;
  ssm: SSMClient;
  agents: FakeAgent[];
}

/** Run `run` against a fresh emulator with fake agents; always closes both. */
export async function withEmulator(
  options: Partial<EmulatorOptions>,
  run: (ctx: Ctx) => Promise<void>,
): Promise<void> {
  const agents: FakeAgent[] = [];
  const emulator = await startEmulator({ agentFactory: fakeAgentFactory(agents), ...options });
  const ssm = ssmFor(emulator);
  try {
    await run({ emulator, ssm, agents });
  } finally {
    ssm.destroy();
    await emulator.close();
  }
}
