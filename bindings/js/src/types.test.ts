// @vitest-environment node
import { describe, expect, it } from 'vitest';
import { isSystemMessage, SYSTEM_USER_ID, type Message } from './types.js';

const base: Message = {
  id: '01936d2a-8b4c-7d3e-9f10-a1b2c3d4e5f6',
  conversation: 'dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422',
  seq: 1,
  sender: '6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422',
  body: 'hi',
  sent_at: 1732550060000,
  idempotency_key: 'k',
};

describe('isSystemMessage', () => {
  it('tells a notice from the server from a person’s message', () => {
    expect(isSystemMessage(base)).toBe(false);
    expect(isSystemMessage({ ...base, sender: SYSTEM_USER_ID, kind: 'system' })).toBe(true);
    // Either mark is enough (the sender id decides on the server; `kind` spells it out).
    expect(isSystemMessage({ ...base, sender: SYSTEM_USER_ID })).toBe(true);
  });

  it('uses the reserved id of the Rust core', async () => {
    const { readFileSync } = await import('node:fs');
    const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');
    expect(doc).toContain(`"sender": "${SYSTEM_USER_ID}", "kind": "system"`);
  });
});
