/**
 * Agent-side frames for the reliable-channel tests (`reliable.test.ts`, `reliable-send.test.ts`): data,
 * acks and service messages as the agent and the service send them.
 */
import { HeaderFlags, MessageType, PayloadType } from '../../src/datachannel/constants.js';
import { encodeMessage, newMessage } from '../../src/datachannel/message.js';
import { encodeAcknowledge } from '../../src/datachannel/payloads.js';

export const CREATED = 1_700_000_000_000;

export function agentData(
  seq: number,
  payload: Buffer | string,
  payloadType: number = PayloadType.Output,
): Buffer {
  return encodeMessage(
    newMessage({
      messageType: MessageType.OutputStreamData,
      sequenceNumber: seq,
      flags: seq === 0 ? HeaderFlags.First : HeaderFlags.Data,
      payloadType,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      createdDate: CREATED,
    }),
  );
}

export function agentAck(seq: number): Buffer {
  return encodeMessage(
    newMessage({
      messageType: MessageType.Acknowledge,
      sequenceNumber: 0,
      flags: HeaderFlags.Ack,
      payloadType: PayloadType.None,
      payload: encodeAcknowledge({
        acknowledgedMessageType: MessageType.InputStreamData,
        acknowledgedMessageId: '00000000-0000-4000-8000-000000000000',
        acknowledgedMessageSequenceNumber: seq,
        isSequentialMessage: true,
      }),
      createdDate: CREATED,
    }),
  );
}

export function serviceMessage(messageType: string, payload: Buffer = Buffer.alloc(0)): Buffer {
  return encodeMessage(
    newMessage({ messageType, sequenceNumber: 0, flags: 0, payloadType: 0, payload, createdDate: CREATED }),
  );
}
