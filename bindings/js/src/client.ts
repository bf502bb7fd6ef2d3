// A typed face for the wasm-bindgen class: loads the module once (in the browser or in Node),
// types every call, turns every failure into a `ZajelError`, and fans the client's single
// event callback out to any number of listeners.
import init, { ZajelClient as RawClient } from '../pkg/zajel_wasm.js';
import { guard, toZajelError, ZajelError } from './errors.js';
import type {
  CachedView,
  ConnectionState,
  ConversationId,
  ConnectOptions,
  ConversationSummary,
  FriendEntry,
  FriendStatus,
  HistoryPage,
  HistoryQuery,
  Message,
  OutboxItem,
  ResumeState,
  Session,
  User,
  UserId,
  ZajelEvent,
} from './types.js';

/** Options of `loadZajel`. */
export interface LoadOptions {
  /** The `.wasm` to instantiate (URL, response, bytes or module). Default: the package's own
   * `pkg/zajel_wasm_bg.wasm`, fetched next to the JS in a browser, read from disk in Node. */
  wasm?: RequestInfo | URL | BufferSource | WebAssembly.Module;
  /** A WebSocket implementation for runtimes without a global one (Node 20: the `ws`
   * package). Default: the global `WebSocket`, else `ws` when it is installed. */
  WebSocket?: unknown;
}

let loading: Promise<void> | undefined;

// Node (bots, SSR, tests) has no `fetch` of file: URLs and, before Node 22, no WebSocket.
// The module names are variables so that bundlers leave these imports alone: a browser bundle
// never runs this branch.
const isNode = () =>
  typeof window === 'undefined' &&
  typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node ===
    'string';

async function nodeWasm(): Promise<BufferSource> {
  const fs = 'node:fs/promises';
  const { readFile } = (await import(/* @vite-ignore */ fs)) as {
    readFile(u: URL): Promise<Uint8Array>;
  };
  return readFile(new URL('../pkg/zajel_wasm_bg.wasm', import.meta.url)) as Promise<BufferSource>;
}

async function nodeWebSocket(): Promise<unknown> {
  const ws = 'ws';
  try {
    const mod = (await import(/* @vite-ignore */ ws)) as { WebSocket?: unknown; default?: unknown };
    return mod.WebSocket ?? mod.default;
  } catch {
    throw new ZajelError(
      'transport',
      'this runtime has no WebSocket: install the `ws` package (npm install ws) or pass one to loadZajel({ WebSocket })',
    );
  }
}

async function load(options: LoadOptions): Promise<void> {
  const g = globalThis as { WebSocket?: unknown };
  if (options.WebSocket) g.WebSocket = options.WebSocket;
  else if (g.WebSocket === undefined && isNode()) g.WebSocket = await nodeWebSocket();
  const wasm = options.wasm ?? (isNode() ? await nodeWasm() : undefined);
  await (wasm === undefined ? init() : init({ module_or_path: wasm }));
}

/** Loads and instantiates the WebAssembly module (once; later calls share the promise).
 * Every static method calls it, so calling it yourself is optional (e.g. to preload, or to
 * pass options). */
export function loadZajel(options: LoadOptions = {}): Promise<void> {
  loading ??= load(options).catch((e: unknown) => {
    loading = undefined; // let a later call try again
    throw toZajelError(e);
  });
  return loading;
}

export type Listener = (event: ZajelEvent) => void;

/** A connected client: reconnects, resumes and keeps an outbox by itself (the Rust client
 * core's behaviour, see docs/client.md). */
export class ZajelClient {
  readonly serverUrl: string;
  private raw: RawClient;
  private listeners = new Set<Listener>();
  private pending: ZajelEvent[] | null = [];
  private lastState: ConnectionState;
  private me?: User;

  private constructor(serverUrl: string, raw: RawClient, me?: User) {
    this.serverUrl = serverUrl;
    this.raw = raw;
    this.me = me;
    this.lastState = raw.state() as ConnectionState;
    raw.onEvent((event: ZajelEvent) => {
      if (event.type === 'state') this.lastState = event.state;
      this.emit(event);
    });
  }

  private emit(event: ZajelEvent) {
    if (this.pending) this.pending.push(event);
    else for (const l of [...this.listeners]) l(event);
  }

  /** Creates an account and returns its first session. */
  static async register(serverUrl: string, username: string, password: string): Promise<Session> {
    await loadZajel();
    return guard(() => RawClient.register(serverUrl, username, password));
  }

  /** Signs in with username and password. */
  static async login(serverUrl: string, username: string, password: string): Promise<Session> {
    await loadZajel();
    return guard(() => RawClient.login(serverUrl, username, password));
  }

  /** Who a token belongs to (rejects with code `unauthenticated` for a bad token). */
  static async whoami(serverUrl: string, token: string): Promise<User> {
    await loadZajel();
    return guard(() => RawClient.whoami(serverUrl, token));
  }

  /** Ends every session of the token's user, on all devices. */
  static async logoutEverywhere(serverUrl: string, token: string): Promise<void> {
    await loadZajel();
    await guard(() => RawClient.logoutEverywhere(serverUrl, token));
  }

  /** Connects and resolves once online (authenticated and caught up); rejects with the
   * first attempt's error. `options`: storage for resume + outbox across page loads, or
   * saved cursors (a bare `ResumeState` is accepted too). */
  static async connect(
    serverUrl: string,
    token: string,
    options?: ConnectOptions | ResumeState,
  ): Promise<ZajelClient> {
    await loadZajel();
    const raw: RawClient = await guard(() => RawClient.connect(serverUrl, token, options));
    return new ZajelClient(serverUrl, raw);
  }

  /** Starts a client that connects (and reconnects) in the background and returns at once:
   * the way to open a client while the server is unreachable. Calls made meanwhile wait for
   * the connection; `queue`/`send` go to the outbox (kept in `storage` across reloads).
   * `me` (the session's user) answers `user`/`conversationWith` before the first connection. */
  static async start(
    serverUrl: string,
    token: string,
    options?: ConnectOptions,
    me?: User,
  ): Promise<ZajelClient> {
    await loadZajel();
    const raw: RawClient = await guard(() => RawClient.start(serverUrl, token, options));
    return new ZajelClient(serverUrl, raw, me);
  }

  /** Subscribes to every event; returns the unsubscribe function. Events that arrived before
   * the first listener (the first sync) are delivered to it first. */
  on(listener: Listener): () => void {
    this.listeners.add(listener);
    const pending = this.pending;
    if (pending) {
      this.pending = null;
      for (const e of pending) listener(e);
    }
    return () => this.listeners.delete(listener);
  }

  /** The connection state now. */
  get state(): ConnectionState {
    return this.lastState;
  }

  /** The signed-in user. */
  get user(): User {
    return (this.raw.user() as User | null | undefined) ?? (this.me as User);
  }

  /** The direct conversation id with a user. */
  conversationWith(peer: UserId): ConversationId {
    let id: ConversationId | null | undefined;
    try {
      id = this.raw.conversationWith(peer) as ConversationId | null | undefined;
    } catch (e) {
      throw toZajelError(e);
    }
    if (id) return id;
    // Not connected yet: the id is `dm.<lower>.<higher>` of the two user ids.
    const mine = this.user?.id;
    if (!mine) throw new ZajelError('closed', 'the signed-in user is not known yet');
    const [lo, hi] = [mine.toLowerCase(), peer.toLowerCase()].sort();
    return `dm.${lo}.${hi}`;
  }

  /** The friends and conversations as last seen from the server: with storage, what the
   * previous page load showed (also a `cached` event), until the server's lists replace it. */
  cachedView(): CachedView {
    return this.raw.cachedView() as CachedView;
  }

  /** Cursors to save and pass to `connect` later (resume across page loads). */
  cursors(): ResumeState {
    return this.raw.cursors() as ResumeState;
  }

  requestFriend(username: string): Promise<FriendStatus> {
    return guard(() => this.raw.requestFriend(username));
  }
  acceptFriend(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.acceptFriend(user));
  }
  declineFriend(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.declineFriend(user));
  }
  cancelFriendRequest(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.cancelFriendRequest(user));
  }
  removeFriend(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.removeFriend(user));
  }
  block(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.block(user));
  }
  unblock(user: UserId): Promise<FriendStatus> {
    return guard(() => this.raw.unblock(user));
  }
  /** Friends, requests and blocks, with presence. */
  friends(): Promise<FriendEntry[]> {
    return guard(() => this.raw.friends());
  }

  /** Sends to a conversation id or a friend's user id; resolves to the stored message once
   * acknowledged (idempotent: queued and retried across reconnects, stored once). */
  send(to: ConversationId | UserId, body: string): Promise<Message> {
    return guard(() => this.raw.send(to, body));
  }
  /** Queues a message and returns its outbox entry at once (`state: "queued"`); progress
   * arrives as `outbox` events with the same `key`. An empty or too long body throws
   * (`empty_body` / `body_too_long`) and is never queued. */
  queue(to: ConversationId | UserId, body: string): OutboxItem {
    try {
      return this.raw.queue(to, body) as OutboxItem;
    } catch (e) {
      throw toZajelError(e);
    }
  }
  /** My messages not acknowledged yet, oldest first (queued, sending, failed). */
  outbox(): OutboxItem[] {
    return this.raw.outbox() as OutboxItem[];
  }
  /** Queues a failed outbox entry again (same idempotency key: stored at most once). */
  retrySend(key: string): Promise<void> {
    return guard(() => this.raw.retrySend(key));
  }
  /** Removes a queued or failed outbox entry (never sent). */
  deleteSend(key: string): Promise<void> {
    return guard(() => this.raw.deleteSend(key));
  }
  /** A page of history, oldest first. */
  history(conversation: ConversationId, query: HistoryQuery = {}): Promise<HistoryPage> {
    return guard(() => this.raw.history(conversation, query));
  }
  /** My conversations, most recent first, with unread counts. */
  conversations(limit?: number): Promise<ConversationSummary[]> {
    return guard(() => this.raw.conversations(limit));
  }
  /** Moves my read mark (the peer sees "seen"); resolves to the mark now. */
  async markRead(conversation: ConversationId, seq: number): Promise<number> {
    const mark: number = await guard(() => this.raw.markRead(conversation, seq));
    // The server tells only my other devices; tell this page's listeners too.
    this.emit({ type: 'read', conversation, user: this.user.id, seq: mark });
    return mark;
  }
  /** Tells the peer I started or stopped typing (ephemeral). */
  typing(conversation: ConversationId, active: boolean): void {
    try {
      this.raw.typing(conversation, active);
    } catch (e) {
      throw toZajelError(e);
    }
  }
  ping(): Promise<void> {
    return guard(() => this.raw.ping());
  }
  /** Signs this session out and stops the client. */
  logout(): Promise<void> {
    return guard(() => this.raw.logout());
  }
  /** Stops the client and frees the wasm object. */
  close(): void {
    this.raw.close();
    this.listeners.clear();
  }
}
