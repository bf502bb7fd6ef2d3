// Unit tests of the hooks' bookkeeping with a stand-in client (the real client, server and
// browser are exercised by examples/web-chat/tests/chat.spec.ts).
import { act, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { Listener, ZajelClient } from './client.js';
import { ZajelError } from './errors.js';
import {
  ZajelProvider,
  useConversations,
  useFriends,
  useMessages,
  useTyping,
  useZajel,
} from './react.js';
import type { FriendEntry, HistoryPage, Message, OutboxItem, ZajelEvent } from './types.js';

const ME = { id: 'me', username: 'me', created_at: 0 };
const BOB = { id: 'bob', username: 'bob', created_at: 0 };
const CONV = 'dm.bob.me';

const msg = (seq: number, sender = BOB.id): Message => ({
  id: `m${seq}`,
  conversation: CONV,
  seq,
  sender,
  body: `#${seq}`,
  sent_at: seq,
  idempotency_key: `k${seq}`,
});

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

class FakeClient {
  listeners = new Set<Listener>();
  user = ME;
  state = { status: 'online' as const };
  history = vi.fn<() => Promise<HistoryPage>>();
  friends = vi.fn<() => Promise<FriendEntry[]>>(async () => []);
  conversations = vi.fn(async () => []);
  markRead = vi.fn(async (_c: string, seq: number) => seq);
  typing = vi.fn();
  queue = vi.fn<(to: string, body: string) => OutboxItem>();
  outbox = vi.fn<() => OutboxItem[]>(() => []);
  retrySend = vi.fn(async (_key: string) => {});
  deleteSend = vi.fn(async (_key: string) => {});
  on(l: Listener) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  emit(e: ZajelEvent) {
    act(() => {
      for (const l of this.listeners) l(e);
    });
  }
  conversationWith() {
    return CONV;
  }
  close() {}
}

let fake: FakeClient;
function wrapper({ children }: { children: ReactNode }) {
  return (
    <ZajelProvider
      serverUrl="http://test"
      storageKey="zajel.test"
      connect={async () => fake as unknown as ZajelClient}
    >
      {children}
    </ZajelProvider>
  );
}

beforeEach(() => {
  fake = new FakeClient();
  localStorage.setItem(
    'zajel.test',
    JSON.stringify({ user: ME, token: 't', expires_at: Date.now() + 60_000 }),
  );
});

describe('useMessages', () => {
  it('merges history with live and replayed messages exactly once, in order', async () => {
    const page = deferred<HistoryPage>();
    fake.history.mockReturnValue(page.promise);
    const { result } = renderHook(() => useMessages(CONV), { wrapper });
    await waitFor(() => expect(fake.history).toHaveBeenCalled());
    // Live messages overtake the history answer; one of them is also in the page.
    fake.emit({ type: 'message', message: msg(2), replayed: false });
    fake.emit({ type: 'message', message: msg(3), replayed: false });
    await act(async () => page.resolve({ conversation: CONV, messages: [msg(1), msg(2)], has_more: false }));
    fake.emit({ type: 'message', message: msg(3), replayed: true });
    fake.emit({ type: 'sent', message: msg(4, ME.id) });
    fake.emit({ type: 'message', message: { ...msg(9), conversation: 'dm.carol.me' }, replayed: false });
    await waitFor(() => expect(result.current.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]));
  });

  it('tracks the peer read mark for "seen" ticks', async () => {
    fake.history.mockResolvedValue({ conversation: CONV, messages: [], has_more: false });
    const { result } = renderHook(() => useMessages(CONV), { wrapper });
    await waitFor(() => expect(fake.history).toHaveBeenCalled());
    fake.emit({ type: 'read', conversation: CONV, user: BOB.id, seq: 3 });
    fake.emit({ type: 'read', conversation: CONV, user: BOB.id, seq: 2 });
    expect(result.current.peerReadSeq).toBe(3);
  });
});

describe('useMessages outbox', () => {
  const item = (key: string, state: OutboxItem['state'], extra: Partial<OutboxItem> = {}): OutboxItem => ({
    key,
    to: CONV,
    conversation: CONV,
    body: 'hello',
    state,
    ...extra,
  });
  async function chat() {
    fake.history.mockResolvedValue({ conversation: CONV, messages: [], has_more: false });
    const hook = renderHook(() => useMessages(CONV), { wrapper });
    await waitFor(() => expect(fake.history).toHaveBeenCalled());
    return hook;
  }

  it('follows a message from queued to sending to stored', async () => {
    fake.queue.mockReturnValue(item('k1', 'queued'));
    const { result } = await chat();
    let sent!: Promise<Message>;
    act(() => {
      sent = result.current.send('hello');
    });
    expect(fake.queue).toHaveBeenCalledWith(CONV, 'hello');
    expect(result.current.outbox).toMatchObject([{ key: 'k1', body: 'hello', state: 'queued' }]);
    fake.emit({ type: 'outbox', item: item('k1', 'sending') });
    expect(result.current.outbox).toMatchObject([{ key: 'k1', state: 'sending' }]);
    const stored = { ...msg(1, ME.id), body: 'hello' };
    fake.emit({ type: 'outbox', item: item('k1', 'sent', { message: stored }) });
    fake.emit({ type: 'sent', message: stored });
    await act(async () => expect(await sent).toEqual(stored));
    expect(result.current.outbox).toEqual([]);
    expect(result.current.messages.map((m) => m.body)).toEqual(['hello']);
  });

  it('keeps a message refused before queueing (too long) as failed; retry and discard', async () => {
    fake.queue.mockImplementationOnce(() => {
      throw Object.assign(new Error('body_too_long: at most 4096 bytes'), { code: 'body_too_long' });
    });
    const { result } = await chat();
    await act(async () => {
      await expect(result.current.send('x'.repeat(5000))).rejects.toBeInstanceOf(ZajelError);
    });
    expect(result.current.outbox).toHaveLength(1);
    const failed = result.current.outbox[0];
    expect(failed).toMatchObject({ state: 'failed', body: 'x'.repeat(5000) });
    expect(failed.error?.code).toBe('body_too_long');

    // Retry queues it again (here it is accepted); discard drops a local entry.
    fake.queue.mockReturnValueOnce(item('k2', 'queued', { body: 'x'.repeat(5000) }));
    act(() => void result.current.retry(failed.key).catch(() => {}));
    expect(result.current.outbox).toMatchObject([{ key: 'k2', state: 'queued' }]);
    fake.queue.mockImplementationOnce(() => {
      throw Object.assign(new Error('empty'), { code: 'empty_body' });
    });
    await act(async () => {
      await result.current.send('').catch(() => {});
    });
    const local = result.current.outbox.find((e) => e.key.startsWith('local-'))!;
    await act(async () => result.current.discard(local.key));
    expect(result.current.outbox.map((e) => e.key)).toEqual(['k2']);
  });

  it('a refusal from the server: failed with its typed error, retried by key, deleted by key', async () => {
    fake.queue.mockReturnValue(item('k3', 'queued'));
    const { result } = await chat();
    let sent!: Promise<Message>;
    act(() => {
      sent = result.current.send('hello');
    });
    const refused = expect(sent).rejects.toMatchObject({ code: 'not_friends' });
    fake.emit({
      type: 'outbox',
      item: item('k3', 'failed', { error: { code: 'not_friends', message: 'nope' }, will_retry: false }),
    });
    await refused;
    expect(result.current.outbox[0]).toMatchObject({ key: 'k3', state: 'failed', will_retry: false });
    expect(result.current.outbox[0].error).toBeInstanceOf(ZajelError);
    act(() => void result.current.retry('k3').catch(() => {}));
    expect(fake.retrySend).toHaveBeenCalledWith('k3');
    fake.emit({ type: 'outbox', item: item('k3', 'queued') });
    expect(result.current.outbox[0].state).toBe('queued');
    await act(async () => result.current.discard('k3'));
    expect(fake.deleteSend).toHaveBeenCalledWith('k3');
    fake.emit({ type: 'outbox', item: item('k3', 'deleted') });
    expect(result.current.outbox).toEqual([]);
  });

  it('shows what the client restored from storage (typed before a reload)', async () => {
    fake.outbox.mockReturnValue([item('old1', 'queued', { body: 'typed offline' })]);
    const { result } = await chat();
    expect(result.current.outbox).toMatchObject([{ key: 'old1', body: 'typed offline', state: 'queued' }]);
  });

  it('keeps the outbox when the chat is closed and opened again', async () => {
    fake.queue.mockReturnValue(item('k4', 'queued', { body: 'later' }));
    const first = await chat();
    act(() => void first.result.current.send('later'));
    first.unmount();
    const again = renderHook(() => useMessages(CONV), { wrapper });
    await waitFor(() =>
      expect(again.result.current.outbox).toMatchObject([{ body: 'later', state: 'queued' }]),
    );
  });
});

describe('ZajelProvider', () => {
  it('reports a failed connection as a typed error without a stack trace', async () => {
    const trace = new TypeError('Failed to fetch\n    at wasm://zajel_wasm.wasm:1:2\n    at x');
    const { result } = renderHook(() => useZajel(), {
      wrapper: ({ children }: { children: ReactNode }) => (
        <ZajelProvider
          serverUrl="http://test"
          storageKey="zajel.test"
          retryMs={60_000}
          connect={() => Promise.reject(trace)}
        >
          {children}
        </ZajelProvider>
      ),
    });
    await waitFor(() => expect(result.current.error).not.toBeNull());
    expect(result.current.error).toBeInstanceOf(ZajelError);
    expect(result.current.error?.code).toBe('transport');
    expect(result.current.error?.message).toBe('Failed to fetch');
    expect(result.current.state.status).toBe('reconnecting');
  });
});

describe('useFriends', () => {
  it('keeps a presence change over a friends list fetched before it', async () => {
    const entry: FriendEntry = { user: BOB, relation: 'friends', since: 0, online: false };
    fake.friends.mockResolvedValue([entry]);
    const { result } = renderHook(() => useFriends(), { wrapper });
    await waitFor(() => expect(result.current.friends).toHaveLength(1));
    const stale = deferred<FriendEntry[]>();
    fake.friends.mockReturnValue(stale.promise);
    fake.emit({ type: 'friend', user: BOB, relation: 'friends', reason: 'accepted', at: 1 });
    fake.emit({ type: 'presence', user: BOB.id, online: true });
    await act(async () => stale.resolve([entry]));
    expect(result.current.friends[0].online).toBe(true);
    fake.emit({ type: 'synced', friends: [entry], conversations: [], first: false });
    expect(result.current.friends[0].online).toBe(false);
  });
});

describe('the stored contact list (offline after a reload)', () => {
  const entry: FriendEntry = { user: BOB, relation: 'friends', since: 0, online: false };
  const summary = {
    conversation: CONV,
    peer: BOB.id,
    last_message: msg(1),
    last_seq: 1,
    unread: 1,
    read_seq: 0,
    peer_read_seq: 0,
  };

  it('shows the cached view until the server answers, then the server lists', async () => {
    const offline = deferred<FriendEntry[]>();
    fake.friends.mockReturnValue(offline.promise);
    fake.conversations.mockReturnValue(new Promise(() => {}));
    (fake as unknown as { cachedView(): unknown }).cachedView = () => ({
      friends: [entry],
      conversations: [summary],
    });
    const { result } = renderHook(() => ({ f: useFriends(), c: useConversations() }), { wrapper });
    await waitFor(() => expect(result.current.f.friends).toEqual([entry]));
    expect(result.current.c.conversations).toEqual([summary]);
    expect(result.current.c.totalUnread).toBe(1);
    // The server's list replaces it, even an empty one.
    await act(async () => offline.resolve([]));
    expect(result.current.f.friends).toEqual([]);
    fake.emit({ type: 'synced', friends: [], conversations: [], first: true });
    expect(result.current.c.conversations).toEqual([]);
    // A late `cached` event does not bring back what the server replaced.
    fake.emit({ type: 'cached', friends: [entry], conversations: [summary] });
    expect(result.current.f.friends).toEqual([]);
    expect(result.current.c.conversations).toEqual([]);
  });

  it('takes a cached event that arrives after the hooks mounted', async () => {
    fake.friends.mockReturnValue(new Promise(() => {}));
    fake.conversations.mockReturnValue(new Promise(() => {}));
    const { result } = renderHook(() => ({ f: useFriends(), c: useConversations() }), { wrapper });
    await waitFor(() => expect(fake.listeners.size).toBeGreaterThan(0));
    expect(result.current.f.friends).toEqual([]);
    fake.emit({ type: 'cached', friends: [entry], conversations: [summary] });
    expect(result.current.f.friends).toEqual([entry]);
    expect(result.current.c.conversations).toEqual([summary]);
  });
});

describe('useTyping', () => {
  it('shows a typing peer until they stop or send', async () => {
    fake.history.mockResolvedValue({ conversation: CONV, messages: [], has_more: false });
    const { result } = renderHook(() => useTyping(CONV), { wrapper });
    await waitFor(() => expect(fake.listeners.size).toBeGreaterThan(0));
    fake.emit({ type: 'typing', conversation: CONV, user: BOB.id, active: true });
    expect(result.current.typing).toEqual([BOB.id]);
    fake.emit({ type: 'message', message: msg(1), replayed: false });
    expect(result.current.typing).toEqual([]);
    act(() => result.current.onInput());
    act(() => result.current.onInput());
    expect(fake.typing).toHaveBeenCalledTimes(1);
    expect(fake.typing).toHaveBeenLastCalledWith(CONV, true);
    act(() => result.current.stop());
    expect(fake.typing).toHaveBeenLastCalledWith(CONV, false);
  });
});
