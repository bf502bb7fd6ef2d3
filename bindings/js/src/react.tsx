// React bindings: a provider that owns the session and the connected client, and hooks for
// friends, conversations, messages and typing. Every hook works from the client's events plus
// one fetch, so the UI is live and needs no polling.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import { ZajelClient } from './client.js';
import { toZajelError, ZajelError } from './errors.js';
import { outboxOf, type OutboxEntry } from './outbox.js';

export type { OutboxEntry, OutboxState } from './outbox.js';
import type {
  CachedView,
  ConnectOptions,
  ConnectionState,
  ConversationId,
  ConversationSummary,
  FriendEntry,
  Message,
  Session,
  User,
  UserId,
  ZajelEvent,
} from './types.js';

export interface ZajelContextValue {
  serverUrl: string;
  /** The stored session (null when signed out). */
  session: Session | null;
  user: User | null;
  /** The connected client, once online for the first time. */
  client: ZajelClient | null;
  /** `signed_out` when there is no session. */
  state: ConnectionState;
  /** The last sign-in or connection error. */
  error: ZajelError | null;
  register(username: string, password: string): Promise<void>;
  login(username: string, password: string): Promise<void>;
  /** Ends the session on the server and forgets it here. */
  logout(): Promise<void>;
}

const ZajelContext = createContext<ZajelContextValue | null>(null);

export interface ZajelProviderProps {
  /** The server's base URL; defaults to the page's origin (the server serves the app). */
  serverUrl?: string;
  /** localStorage key for the session; `null` keeps it in memory only. */
  storageKey?: string | null;
  /** Delay before retrying a first connection that failed for a network reason. */
  retryMs?: number;
  /** Where the client keeps resume cursors and the outbox across page loads: `"indexeddb"`
   * (the default where IndexedDB exists; one record per account), an adapter, or `false`
   * (memory only). */
  storage?: ConnectOptions['storage'];
  /** How to open a client for a session (default: `ZajelClient.start` with `storage`, so a
   * reload while offline shows the stored outbox at once); e.g. a stand-in client in unit
   * tests. */
  connect?: (serverUrl: string, token: string, session: Session) => Promise<ZajelClient>;
  children?: ReactNode;
}

const hasIndexedDb = () => typeof indexedDB !== 'undefined';

function startWith(storage: ConnectOptions['storage'] | undefined) {
  return (serverUrl: string, token: string, session: Session) => {
    const store = storage ?? (hasIndexedDb() ? 'indexeddb' : false);
    return ZajelClient.start(
      serverUrl,
      token,
      store ? { storage: store, storageKey: `${serverUrl}#${session.user.id}` } : undefined,
      session.user,
    );
  };
}

function readSession(key: string | null): Session | null {
  if (!key || typeof localStorage === 'undefined') return null;
  try {
    const raw = localStorage.getItem(key);
    const s = raw ? (JSON.parse(raw) as Session) : null;
    return s && s.expires_at > Date.now() ? s : null;
  } catch {
    return null;
  }
}

function writeSession(key: string | null, s: Session | null) {
  if (!key || typeof localStorage === 'undefined') return;
  if (s) localStorage.setItem(key, JSON.stringify(s));
  else localStorage.removeItem(key);
}

const asError = toZajelError;

/** Holds the session (persisted in localStorage) and one connected client for it. */
export function ZajelProvider({
  serverUrl,
  storageKey = 'zajel.session',
  retryMs = 2000,
  storage,
  connect: connectProp,
  children,
}: ZajelProviderProps) {
  const connect = useMemo(() => connectProp ?? startWith(storage), [connectProp, storage]);
  const url = serverUrl ?? window.location.origin;
  const [session, setSessionState] = useState<Session | null>(() => readSession(storageKey));
  const [client, setClient] = useState<ZajelClient | null>(null);
  const [state, setState] = useState<ConnectionState>(
    session ? { status: 'connecting' } : { status: 'signed_out' },
  );
  const [error, setError] = useState<ZajelError | null>(null);
  const [attempt, setAttempt] = useState(0);

  const setSession = useCallback(
    (s: Session | null) => {
      writeSession(storageKey, s);
      setSessionState(s);
    },
    [storageKey],
  );

  useEffect(() => {
    if (!session) {
      setState({ status: 'signed_out' });
      return;
    }
    let cancelled = false;
    let connected: ZajelClient | null = null;
    let off: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setState({ status: 'connecting' });
    connect(url, session.token, session).then(
      (c) => {
        if (cancelled) {
          c.close();
          return;
        }
        connected = c;
        off = c.on((e) => {
          if (e.type !== 'state') return;
          setState(e.state);
          if (e.state.status === 'signed_out') setSession(null);
        });
        setState(c.state);
        setError(null);
        setClient(c);
      },
      (e: unknown) => {
        if (cancelled) return;
        const err = asError(e);
        setError(err);
        if (err.code === 'unauthenticated') {
          setSession(null);
        } else {
          setState({ status: 'reconnecting', attempt: attempt + 1, retry_in_ms: retryMs });
          timer = setTimeout(() => setAttempt((a) => a + 1), retryMs);
        }
      },
    );
    return () => {
      cancelled = true;
      clearTimeout(timer);
      off?.();
      connected?.close();
      setClient(null);
    };
    // `attempt` re-runs the effect to retry; the rest identify the connection.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [session, url, attempt, retryMs, setSession, connect]);

  const signIn = useCallback(
    async (how: 'register' | 'login', username: string, password: string) => {
      try {
        const s = await (how === 'register'
          ? ZajelClient.register(url, username, password)
          : ZajelClient.login(url, username, password));
        setError(null);
        setSession(s);
      } catch (e) {
        const err = asError(e);
        setError(err);
        throw err;
      }
    },
    [url, setSession],
  );

  const logout = useCallback(async () => {
    try {
      // Offline, the server cannot be told; do not keep the user waiting for it.
      await Promise.race([
        client?.logout(),
        new Promise((resolve) => setTimeout(resolve, 3000)),
      ]);
    } catch {
      // Signed out here anyway; the token expires on the server.
    } finally {
      setSession(null);
    }
  }, [client, setSession]);

  const value = useMemo<ZajelContextValue>(
    () => ({
      serverUrl: url,
      session,
      user: session?.user ?? null,
      client,
      state,
      error,
      register: (u, p) => signIn('register', u, p),
      login: (u, p) => signIn('login', u, p),
      logout,
    }),
    [url, session, client, state, error, signIn, logout],
  );
  return <ZajelContext.Provider value={value}>{children}</ZajelContext.Provider>;
}

/** The session, the client and the connection state. */
export function useZajel(): ZajelContextValue {
  const ctx = useContext(ZajelContext);
  if (!ctx) throw new ZajelError('error', 'useZajel must be used inside <ZajelProvider>');
  return ctx;
}

/** Calls `handler` for every event of the current client (the latest handler is used). */
export function useZajelEvent(handler: (event: ZajelEvent) => void): void {
  const { client } = useZajel();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    if (!client) return;
    return client.on((e) => ref.current(e));
  }, [client]);
}

/** The client's `CachedView` (older clients and stand-ins may lack it). */
function cachedView(c: ZajelClient): CachedView | null {
  try {
    return typeof c.cachedView === 'function' ? c.cachedView() : null;
  } catch {
    return null;
  }
}

/** Runs `load` when the client changes and on demand; drops answers overtaken by a newer
 * call. Until the first answer (or `set`), the value is `cached(client)` when given (the
 * stored contact list of a client started offline), and `seed` may replace it. */
function useLatest<T>(
  initial: T,
  load: ((c: ZajelClient) => Promise<T>) | null,
  cached?: (v: CachedView) => T,
) {
  const { client } = useZajel();
  const [value, setValue] = useState<T>(initial);
  const generation = useRef(0);
  // True once the server answered (or an event set the value): the cache is then stale.
  const fresh = useRef(false);
  const loadRef = useRef(load);
  loadRef.current = load;
  const cachedRef = useRef(cached);
  cachedRef.current = cached;
  const reload = useCallback(async () => {
    const l = loadRef.current;
    if (!client || !l) return;
    const g = ++generation.current;
    try {
      const v = await l(client);
      if (g === generation.current) {
        fresh.current = true;
        setValue(v);
      }
    } catch {
      // Offline or closed: the next event or reconnect triggers another load.
    }
  }, [client]);
  const set = useCallback((v: T | ((prev: T) => T)) => {
    generation.current++;
    fresh.current = true;
    setValue(v);
  }, []);
  const seed = useCallback((view: CachedView) => {
    const c = cachedRef.current;
    if (c && !fresh.current) setValue(c(view));
  }, []);
  useEffect(() => {
    fresh.current = false;
    const view = client && cachedRef.current ? cachedView(client) : null;
    setValue(view && cachedRef.current ? cachedRef.current(view) : initial);
    if (client) void reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, reload]);
  return [value, set, reload, seed] as const;
}

/** The friends list with presence, pending requests both ways, and the friend operations.
 * A client started offline with storage shows the stored list until the server answers. */
export function useFriends() {
  const { client } = useZajel();
  const [list, setList, reload, seed] = useLatest<FriendEntry[]>(
    [],
    (c) => c.friends(),
    (v) => v.friends,
  );
  // Presence events are newer than any list fetched before them, so they overlay the list
  // until the next sync (whose list is fresh) replaces both.
  const [presence, setPresence] = useState<
    Map<UserId, Pick<FriendEntry, 'online' | 'last_seen'>>
  >(() => new Map());
  useEffect(() => setPresence(new Map()), [client]);
  useZajelEvent((e) => {
    if (e.type === 'synced') {
      setList(e.friends);
      setPresence(new Map());
    } else if (e.type === 'cached') seed(e);
    else if (e.type === 'friend') void reload();
    else if (e.type === 'presence')
      setPresence((m) => new Map(m).set(e.user, { online: e.online, last_seen: e.last_seen }));
  });
  const entries = useMemo(
    () =>
      list.map((f) => {
        const p = presence.get(f.user.id);
        return p ? { ...f, online: p.online, last_seen: p.last_seen ?? f.last_seen } : f;
      }),
    [list, presence],
  );
  const op = useCallback(
    (fn: (c: ZajelClient) => Promise<unknown>) => async () => {
      if (!client) throw new ZajelError('closed', 'not connected');
      await fn(client);
      await reload();
    },
    [client, reload],
  );
  return {
    /** Every entry (friends, requests, blocks). */
    entries,
    friends: entries.filter((f) => f.relation === 'friends'),
    /** Requests to me, to accept or decline. */
    incoming: entries.filter((f) => f.relation === 'request_received'),
    /** My requests, waiting. */
    outgoing: entries.filter((f) => f.relation === 'request_sent'),
    blocked: entries.filter((f) => f.relation === 'blocked'),
    requestFriend: (username: string) => op((c) => c.requestFriend(username))(),
    accept: (user: UserId) => op((c) => c.acceptFriend(user))(),
    decline: (user: UserId) => op((c) => c.declineFriend(user))(),
    cancel: (user: UserId) => op((c) => c.cancelFriendRequest(user))(),
    remove: (user: UserId) => op((c) => c.removeFriend(user))(),
    block: (user: UserId) => op((c) => c.block(user))(),
    unblock: (user: UserId) => op((c) => c.unblock(user))(),
    reload,
  };
}

/** The conversation list (most recent first) with last message and unread counts, kept up
 * to date by message, read and sync events; the stored list while offline after a reload. */
export function useConversations() {
  const [conversations, setConversations, reload, seed] = useLatest<ConversationSummary[]>(
    [],
    (c) => c.conversations(),
    (v) => v.conversations,
  );
  useZajelEvent((e) => {
    if (e.type === 'synced') setConversations(e.conversations);
    else if (e.type === 'cached') seed(e);
    else if (e.type === 'message' || e.type === 'sent' || e.type === 'read') void reload();
  });
  const totalUnread = conversations.reduce((n, c) => n + c.unread, 0);
  return { conversations, totalUnread, reload };
}

const noSubscribe = () => () => {};
const EMPTY: OutboxEntry[] = [];
const noEntries = () => EMPTY;

/** One conversation's messages, oldest first: the latest history page plus live messages,
 * each exactly once (keyed by sequence), with read marks for "seen" ticks. */
export function useMessages(conversation: ConversationId | null, pageSize = 50) {
  const { client, user } = useZajel();
  const [bySeq, setBySeq] = useState<Map<number, Message>>(() => new Map());
  const [hasMore, setHasMore] = useState(false);
  const [loading, setLoading] = useState(false);
  const [readSeq, setReadSeq] = useState(0);
  const [peerReadSeq, setPeerReadSeq] = useState(0);
  const current = useRef(conversation);
  current.current = conversation;

  const merge = useCallback((messages: Message[]) => {
    const mine = messages.filter((m) => m.conversation === current.current);
    if (mine.length === 0) return;
    setBySeq((prev) => {
      const next = new Map(prev);
      for (const m of mine) next.set(m.seq, m);
      return next;
    });
  }, []);

  // Live first (the event subscription exists before the history request), then history;
  // both go through `merge`, so overlaps collapse by sequence.
  useZajelEvent((e) => {
    if ((e.type === 'message' || e.type === 'sent') && e.message.conversation === conversation) {
      merge([e.message]);
    } else if (e.type === 'read' && e.conversation === conversation) {
      if (e.user === user?.id) setReadSeq((s) => Math.max(s, e.seq));
      else setPeerReadSeq((s) => Math.max(s, e.seq));
    } else if (e.type === 'synced') {
      const c = e.conversations.find((x) => x.conversation === conversation);
      if (c) {
        setReadSeq((s) => Math.max(s, c.read_seq));
        setPeerReadSeq((s) => Math.max(s, c.peer_read_seq));
      }
    }
  });

  useEffect(() => {
    setBySeq(new Map());
    setHasMore(false);
    setReadSeq(0);
    setPeerReadSeq(0);
    if (!client || !conversation) return;
    let cancelled = false;
    setLoading(true);
    client
      .history(conversation, { limit: pageSize })
      .then((page) => {
        if (cancelled) return;
        merge(page.messages);
        setHasMore(page.has_more);
      })
      .catch(() => {})
      .finally(() => !cancelled && setLoading(false));
    client
      .conversations()
      .then((list) => {
        const c = list.find((x) => x.conversation === conversation);
        if (cancelled || !c) return;
        setReadSeq((s) => Math.max(s, c.read_seq));
        setPeerReadSeq((s) => Math.max(s, c.peer_read_seq));
      })
      .catch(() => {});
    return () => {
      cancelled = true;
    };
  }, [client, conversation, pageSize, merge]);

  const messages = useMemo(() => [...bySeq.values()].sort((a, b) => a.seq - b.seq), [bySeq]);

  const loadOlder = useCallback(async () => {
    if (!client || !conversation || messages.length === 0) return;
    const page = await client.history(conversation, { before: messages[0].seq, limit: pageSize });
    merge(page.messages);
    setHasMore(page.has_more);
  }, [client, conversation, messages, pageSize, merge]);

  // This page's sends that are not stored yet (sending, or failed with the reason).
  const box = client ? outboxOf(client) : null;
  const allPending = useSyncExternalStore(
    box?.subscribe ?? noSubscribe,
    box?.snapshot ?? noEntries,
    box?.snapshot ?? noEntries,
  );
  const outbox = useMemo(
    () => allPending.filter((e) => e.conversation === conversation),
    [allPending, conversation],
  );

  const send = useCallback(
    async (body: string) => {
      if (!box || !conversation) throw new ZajelError('closed', 'not connected');
      const m = await box.send(conversation, body);
      merge([m]);
      return m;
    },
    [box, conversation, merge],
  );
  const retry = useCallback(
    async (key: string) => {
      const m = await box?.retry(key);
      if (m) merge([m]);
    },
    [box, merge],
  );
  const discard = useCallback(async (key: string) => box?.discard(key), [box]);

  const markRead = useCallback(
    async (seq: number) => {
      if (!client || !conversation || seq <= readSeq) return;
      setReadSeq(seq);
      await client.markRead(conversation, seq);
    },
    [client, conversation, readSeq],
  );

  return {
    messages,
    /** My sends not stored yet, oldest first: `sending` or `failed` (with `error`). */
    outbox,
    hasMore,
    loading,
    loadOlder,
    /** Sends; the message shows in `outbox` until stored, then in `messages`. Rejects with
     * the refusal (the entry stays in `outbox` as `failed`). */
    send,
    /** Sends a failed outbox entry again. */
    retry,
    /** Drops a failed outbox entry. */
    discard,
    readSeq,
    peerReadSeq,
    markRead,
  };
}

/** Who else is typing in a conversation, and `onInput`/`stop` to report my own typing
 * (throttled: one "typing" every `throttleMs`, "stopped" after `idleMs` without input). */
export function useTyping(
  conversation: ConversationId | null,
  { idleMs = 3000, throttleMs = 2000, expireMs = 8000 } = {},
) {
  const { client } = useZajel();
  const [typing, setTyping] = useState<UserId[]>([]);
  const expiry = useRef(new Map<UserId, ReturnType<typeof setTimeout>>());
  const lastSent = useRef(0);
  const idle = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  const drop = useCallback((u: UserId) => {
    clearTimeout(expiry.current.get(u));
    expiry.current.delete(u);
    setTyping((list) => list.filter((x) => x !== u));
  }, []);

  useZajelEvent((e) => {
    if (e.type === 'typing' && e.conversation === conversation) {
      if (e.active) {
        clearTimeout(expiry.current.get(e.user));
        expiry.current.set(
          e.user,
          setTimeout(() => drop(e.user), expireMs),
        );
        setTyping((list) => (list.includes(e.user) ? list : [...list, e.user]));
      } else drop(e.user);
    } else if (e.type === 'message' && e.message.conversation === conversation) {
      drop(e.message.sender);
    }
  });

  useEffect(() => {
    const timers = expiry.current;
    setTyping([]);
    return () => {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      clearTimeout(idle.current);
      if (lastSent.current && client && conversation) {
        try {
          client.typing(conversation, false);
        } catch {
          // closed
        }
      }
      lastSent.current = 0;
    };
  }, [client, conversation]);

  const stop = useCallback(() => {
    clearTimeout(idle.current);
    if (lastSent.current && client && conversation) {
      lastSent.current = 0;
      try {
        client.typing(conversation, false);
      } catch {
        // closed
      }
    }
  }, [client, conversation]);

  const onInput = useCallback(() => {
    if (!client || !conversation) return;
    const now = Date.now();
    if (now - lastSent.current >= throttleMs) {
      lastSent.current = now;
      try {
        client.typing(conversation, true);
      } catch {
        // closed
      }
    }
    clearTimeout(idle.current);
    idle.current = setTimeout(stop, idleMs);
  }, [client, conversation, throttleMs, idleMs, stop]);

  return { typing, onInput, stop };
}
