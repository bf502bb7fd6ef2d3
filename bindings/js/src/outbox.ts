// What this page is sending, per client: each `send` is an entry from the moment it is called
// until the server stores it (then it is an ordinary message) or refuses it (then it stays,
// `failed` with the error, until the user retries or deletes it). The client core already
// queues and re-sends across reconnects; this store is what makes that visible to a UI.
import type { ZajelClient } from './client.js';
import { toZajelError, type ZajelError } from './errors.js';
import type { ConversationId, Message } from './types.js';

export type OutboxState = 'sending' | 'failed';

export interface OutboxEntry {
  /** Local id of this entry (stable across retries). */
  key: string;
  conversation: ConversationId;
  body: string;
  /** When the user sent it (ms since the epoch). */
  created_at: number;
  /** `sending`: handed to the client, not acknowledged yet (waiting for the network when
   * offline). `failed`: refused; see `error`. */
  state: OutboxState;
  error?: ZajelError;
}

type Listener = () => void;

export class Outbox {
  private entries: OutboxEntry[] = [];
  private listeners = new Set<Listener>();
  private counter = 0;
  private readonly client: ZajelClient;

  constructor(client: ZajelClient) {
    this.client = client;
  }

  subscribe = (l: Listener): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  /** The current entries (a new array after every change, for `useSyncExternalStore`). */
  snapshot = (): OutboxEntry[] => this.entries;

  private set(entries: OutboxEntry[]) {
    this.entries = entries;
    for (const l of [...this.listeners]) l();
  }

  private update(key: string, patch: Partial<OutboxEntry> | null) {
    this.set(
      patch === null
        ? this.entries.filter((e) => e.key !== key)
        : this.entries.map((e) => (e.key === key ? { ...e, ...patch } : e)),
    );
  }

  /** Sends `body`; resolves to the stored message, or rejects with the refusal (the entry then
   * stays `failed`). */
  send(conversation: ConversationId, body: string): Promise<Message> {
    const key = `local-${Date.now().toString(36)}-${++this.counter}`;
    this.set([
      ...this.entries,
      { key, conversation, body, created_at: Date.now(), state: 'sending' },
    ]);
    return this.attempt(key, conversation, body);
  }

  private async attempt(key: string, conversation: ConversationId, body: string) {
    try {
      const m = await this.client.send(conversation, body);
      this.update(key, null);
      return m;
    } catch (e) {
      const error = toZajelError(e);
      this.update(key, { state: 'failed', error });
      throw error;
    }
  }

  /** Sends a failed entry again (a new attempt: the refused one was not stored). */
  retry(key: string): Promise<Message> | undefined {
    const entry = this.entries.find((e) => e.key === key && e.state === 'failed');
    if (!entry) return undefined;
    this.update(key, { state: 'sending', error: undefined });
    return this.attempt(key, entry.conversation, entry.body);
  }

  /** Forgets a failed entry. */
  discard(key: string): void {
    if (this.entries.some((e) => e.key === key && e.state === 'failed')) this.update(key, null);
  }
}

const outboxes = new WeakMap<ZajelClient, Outbox>();

/** The outbox of a client (one per client, shared by every hook using it). */
export function outboxOf(client: ZajelClient): Outbox {
  let o = outboxes.get(client);
  if (!o) outboxes.set(client, (o = new Outbox(client)));
  return o;
}
