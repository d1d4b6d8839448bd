import test from 'ava';
import fc from 'fast-check';
import { HEADER, HeaderFlags, MessageType } from '../../src/datachannel/constants.js';
import { decodeInbound, decodeMessage, encodeMessage, newMessage } from '../../src/datachannel/message.js';
import { encodeAcknowledgeMessage, encodeInputAcknowledgeMessage } from '../../src/datachannel/payloads.js';

const CASES = 10_000;

test(`encodeInputAcknowledgeMessage: ${CASES} acks are byte for byte the general encoder's, but for the fresh MessageId`, (t) => {
  fc.assert(
    fc.property(
      fc.uuid(),
      fc.oneof(fc.constantFrom(0, 9, 10, 99, 100, Number.MAX_SAFE_INTEGER), fc.maxSafeNat()),
      fc.integer({ min: 1, max: 2 ** 42 }),
      (uuid, seq, createdDate) => {
        const input = decodeInbound(
          encodeMessage(
            newMessage({
              messageType: MessageType.InputStreamData,
              sequenceNumber: seq,
              flags: HeaderFlags.Data,
              payloadType: 1,
              payload: Buffer.from('x'),
              messageId: uuid,
            }),
          ),
        );
        const ours = encodeInputAcknowledgeMessage(input, createdDate);
        const general = encodeAcknowledgeMessage(
          {
            acknowledgedMessageType: MessageType.InputStreamData,
            acknowledgedMessageId: uuid.toLowerCase(),
            acknowledgedMessageSequenceNumber: seq,
            isSequentialMessage: true,
          },
          createdDate,
        );
        // Everything before the MessageId, the digest and everything after it are equal; the id is random.
        t.true(ours.length === general.length);
        t.true(
          ours.subarray(0, HEADER.MESSAGE_ID_OFFSET).equals(general.subarray(0, HEADER.MESSAGE_ID_OFFSET)),
        );
        t.true(
          ours.subarray(HEADER.PAYLOAD_DIGEST_OFFSET).equals(general.subarray(HEADER.PAYLOAD_DIGEST_OFFSET)),
        );
        const decoded = decodeMessage(ours);
        t.is(decoded.messageType, MessageType.Acknowledge);
        t.is(decoded.flags, HeaderFlags.Ack);
      },
    ),
    { numRuns: CASES },
  );
});

test('encodeInputAcknowledgeMessage: a fresh random UUIDv4 MessageId per ack', (t) => {
  const input = decodeInbound(
    encodeMessage(
      newMessage({
        messageType: MessageType.InputStreamData,
        sequenceNumber: 1,
        flags: 0,
        payloadType: 1,
        payload: Buffer.alloc(1),
      }),
    ),
  );
  const ids = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const id = decodeMessage(encodeInputAcknowledgeMessage(input, 1)).messageId;
    t.regex(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    ids.add(id);
  }
  t.is(ids.size, 1000);
});
