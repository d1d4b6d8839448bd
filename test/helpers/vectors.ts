/**
 * The spec's fixed byte vectors (`shared/protocol/vectors.json`), vendored in `test/fixtures` so the suite
 * runs without the shared folder; `test/datachannel/vectors.test.ts` checks the copy is current.
 */
import { readFileSync } from 'node:fs';

export interface MessageVector {
  name: string;
  fields: {
    MessageType: string;
    SchemaVersion: number;
    CreatedDate: number;
    SequenceNumber: number;
    Flags: number;
    MessageId: string;
    PayloadType: number;
    PayloadHex: string;
    PayloadDigestHex: string;
  };
  hex: string;
  length: number;
}

export interface SmuxVector {
  name: string;
  hex: string;
  invalid?: boolean;
}

export interface Vectors {
  messages: MessageVector[];
  smux: SmuxVector[];
  invalid_messages: { name: string; hex: string }[];
}

export const VENDORED_VECTORS_URL = new URL('../../../test/fixtures/protocol-vectors.json', import.meta.url);
export const SHARED_VECTORS_URL = new URL('../../../../shared/protocol/vectors.json', import.meta.url);

export const vectors: Vectors = JSON.parse(readFileSync(VENDORED_VECTORS_URL, 'utf8')) as Vectors;

export function messageVector(name: string): MessageVector {
  const found = vectors.messages.find((v) => v.name === name);
  if (!found) throw new Error(`no vector named ${name}`);
  return found;
}
