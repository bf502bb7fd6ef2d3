// A typed face for the wasm-bindgen class: loads the module once, types every call, and fans
// the client's single event callback out to any number of listeners.
import init, { ZajelClient as RawClient } from '../pkg/zajel_wasm.js';
import type {
  ConnectionState,
  ConversationId,
  ConversationSummary,
  FriendEntry,
  FriendStatus,
  HistoryPage,
  HistoryQuery,
  Message,
  ResumeState,
  Session,
  User,
  UserId,
  ZajelEvent,
} from './types.js';

let loading: Promise<unknown> | undefined;

/** Loads and instantiates the WebAssembly module (once; later calls share the promise).
 * Every static method calls it, so calling it yourself is optional (e.g. to preload). */
export function loadZajel(wasm?: RequestInfo | URL | BufferSource): Promise<unknown> {
  loading ??= wasm === undefined ? init() : init({ module_or_path: wasm });
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

  private constructor(serverUrl: string, raw: RawClient) {
    this.serverUrl = serverUrl;
    this.raw = raw;
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
    return RawClient.register(serverUrl, username, password);
  }

  /** Signs in with username and password. */
  static async login(serverUrl: string, username: string, password: string): Promise<Session> {
    await loadZajel();
    return RawClient.login(serverUrl, username, password);
  }

  /** Who a token belongs to (rejects with code `unauthenticated` for a bad token). */
  static async whoami(serverUrl: string, token: string): Promise<User> {
    await loadZajel();
    return RawClient.whoami(serverUrl, token);
  }

  /** Ends every session of the token's user, on all devices. */
  static async logoutEverywhere(serverUrl: string, token: string): Promise<void> {
    await loadZajel();
    await RawClient.logoutEverywhere(serverUrl, token);
  }

  /** Connects and resolves once online (authenticated and caught up). */
  static async connect(serverUrl: string, token: string, resume?: ResumeState): Promise<ZajelClient> {
    await loadZajel();
    const raw: RawClient = await RawClient.connect(serverUrl, token, resume);
    return new ZajelClient(serverUrl, raw);
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
    return this.raw.user() as User;
  }

  /** The direct conversation id with a user. */
  conversationWith(peer: UserId): ConversationId {
    return this.raw.conversationWith(peer) as ConversationId;
  }

  /** Cursors to save and pass to `connect` later (resume across page loads). */
  cursors(): ResumeState {
    return this.raw.cursors() as ResumeState;
  }

  requestFriend(username: string): Promise<FriendStatus> {
    return this.raw.requestFriend(username);
  }
  acceptFriend(user: UserId): Promise<FriendStatus> {
    return this.raw.acceptFriend(user);
  }
  declineFriend(user: UserId): Promise<FriendStatus> {
    return this.raw.declineFriend(user);
  }
  cancelFriendRequest(user: UserId): Promise<FriendStatus> {
    return this.raw.cancelFriendRequest(user);
  }
  removeFriend(user: UserId): Promise<FriendStatus> {
    return this.raw.removeFriend(user);
  }
  block(user: UserId): Promise<FriendStatus> {
    return this.raw.block(user);
  }
  unblock(user: UserId): Promise<FriendStatus> {
    return this.raw.unblock(user);
  }
  /** Friends, requests and blocks, with presence. */
  friends(): Promise<FriendEntry[]> {
    return this.raw.friends();
  }

  /** Sends to a conversation id or a friend's user id; resolves to the stored message once
   * acknowledged (idempotent: queued and retried across reconnects, stored once). */
  send(to: ConversationId | UserId, body: string): Promise<Message> {
    return this.raw.send(to, body);
  }
  /** A page of history, oldest first. */
  history(conversation: ConversationId, query: HistoryQuery = {}): Promise<HistoryPage> {
    return this.raw.history(conversation, query);
  }
  /** My conversations, most recent first, with unread counts. */
  conversations(limit?: number): Promise<ConversationSummary[]> {
    return this.raw.conversations(limit);
  }
  /** Moves my read mark (the peer sees "seen"); resolves to the mark now. */
  async markRead(conversation: ConversationId, seq: number): Promise<number> {
    const mark: number = await this.raw.markRead(conversation, seq);
    // The server tells only my other devices; tell this page's listeners too.
    this.emit({ type: 'read', conversation, user: this.user.id, seq: mark });
    return mark;
  }
  /** Tells the peer I started or stopped typing (ephemeral). */
  typing(conversation: ConversationId, active: boolean): void {
    this.raw.typing(conversation, active);
  }
  ping(): Promise<void> {
    return this.raw.ping();
  }
  /** Signs this session out and stops the client. */
  logout(): Promise<void> {
    return this.raw.logout();
  }
  /** Stops the client and frees the wasm object. */
  close(): void {
    this.raw.close();
    this.listeners.clear();
  }
}
