// My messages that are not stored yet, as a UI shows them: the client's outbox (queued /
// sending / failed with the reason, kept across reloads when the client has storage), plus
// messages the client refused before queueing (too long, empty), which stay here as
// `failed` until the user edits or deletes them, so typed text is never silently lost.
import type { ZajelClient } from './client.js';
import { toZajelError, type ZajelError } from './errors.js';
import type { ConversationId, Message, OutboxItem } from './types.js';

export type OutboxState = 'queued' | 'sending' | 'failed';

export interface OutboxEntry {
  /** The client's key (its idempotency key), or `local-…` for a message refused before
   * queueing. */
  key: string;
  conversation: ConversationId;
  body: string;
  /** When this page first saw it (ms since the epoch). */
  created_at: number;
  /** `queued`: waiting (offline, paced, or behind an earlier message); `sending`: on the
   * wire; `failed`: refused, see `error` (`will_retry`: the client tries again itself). */
  state: OutboxState;
  error?: ZajelError;
  will_retry?: boolean;
}

type Listener = () => void;
interface Waiter {
  resolve(m: Message): void;
  reject(e: ZajelError): void;
}

let localCounter = 0;

export class Outbox {
  private entries: OutboxEntry[] = [];
  private listeners = new Set<Listener>();
  private waiters = new Map<string, Waiter>();
  private readonly client: ZajelClient;

  constructor(client: ZajelClient) {
    this.client = client;
    let items: OutboxItem[] = [];
    try {
      items = client.outbox();
    } catch {
      // A closed client has no outbox.
    }
    for (const item of items) this.apply(item, false);
    client.on((e) => {
      if (e.type === 'outbox') this.apply(e.item, true);
    });
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

  private apply(item: OutboxItem, notify: boolean) {
    const waiter = this.waiters.get(item.key);
    if (item.state === 'sent' || item.state === 'deleted') {
      this.waiters.delete(item.key);
      if (item.state === 'sent' && item.message) waiter?.resolve(item.message);
      else waiter?.reject(toZajelError({ code: 'closed', message: 'deleted before it was sent' }));
      const rest = this.entries.filter((e) => e.key !== item.key);
      if (notify) this.set(rest);
      else this.entries = rest;
      return;
    }
    const error = item.error ? toZajelError(item.error) : undefined;
    if (item.state === 'failed' && !item.will_retry && waiter && error) {
      this.waiters.delete(item.key);
      waiter.reject(error);
    }
    const old = this.entries.find((e) => e.key === item.key);
    const entry: OutboxEntry = {
      key: item.key,
      conversation: item.conversation ?? old?.conversation ?? '',
      body: item.body,
      created_at: old?.created_at ?? Date.now(),
      state: item.state,
      error,
      will_retry: item.will_retry,
    };
    const next = old
      ? this.entries.map((e) => (e.key === item.key ? entry : e))
      : [...this.entries, entry];
    if (notify) this.set(next);
    else this.entries = next;
  }

  /** Queues `body` and resolves to the stored message; rejects with the refusal (the entry
   * then stays `failed` here until retried or discarded). */
  send(conversation: ConversationId, body: string): Promise<Message> {
    let item: OutboxItem;
    try {
      item = this.client.queue(conversation, body);
    } catch (e) {
      const error = toZajelError(e);
      this.set([
        ...this.entries,
        {
          key: `local-${Date.now().toString(36)}-${++localCounter}`,
          conversation,
          body,
          created_at: Date.now(),
          state: 'failed',
          error,
        },
      ]);
      return Promise.reject(error);
    }
    const done = new Promise<Message>((resolve, reject) =>
      this.waiters.set(item.key, { resolve, reject }),
    );
    if (!this.entries.some((e) => e.key === item.key)) this.apply(item, true);
    return done;
  }

  /** Sends a failed entry again (a client entry keeps its idempotency key). */
  async retry(key: string): Promise<Message | undefined> {
    const entry = this.entries.find((e) => e.key === key && e.state === 'failed');
    if (!entry) return undefined;
    if (key.startsWith('local-')) {
      this.set(this.entries.filter((e) => e.key !== key));
      return this.send(entry.conversation, entry.body);
    }
    const done = new Promise<Message>((resolve, reject) =>
      this.waiters.set(key, { resolve, reject }),
    );
    await this.client.retrySend(key);
    return done;
  }

  /** Forgets a failed (or still queued) entry: it is never sent. */
  async discard(key: string): Promise<void> {
    if (key.startsWith('local-')) {
      this.set(this.entries.filter((e) => e.key !== key));
      return;
    }
    await this.client.deleteSend(key);
  }
}

const outboxes = new WeakMap<ZajelClient, Outbox>();

/** The outbox of a client (one per client, shared by every hook using it). */
export function outboxOf(client: ZajelClient): Outbox {
  let o = outboxes.get(client);
  if (!o) outboxes.set(client, (o = new Outbox(client)));
  return o;
}
