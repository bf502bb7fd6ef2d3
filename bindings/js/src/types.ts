// The values @zajel/client hands out: plain objects with the protocol's JSON field names
// (docs/protocol.md). Ids are strings; times are milliseconds since the Unix epoch.

/** A user id (UUID string). */
export type UserId = string;
/** A conversation id: `dm.<a>.<b>` for a direct conversation. */
export type ConversationId = string;
/** Milliseconds since the Unix epoch. */
export type Timestamp = number;

export interface User {
  id: UserId;
  username: string;
  created_at: Timestamp;
}

export interface Session {
  user: User;
  /** Secret: keep it out of logs. */
  token: string;
  expires_at: Timestamp;
}

/** The sender of system messages: no account has it. */
export const SYSTEM_USER_ID: UserId = '00000000-0000-0000-0000-000000000000';

export interface Message {
  id: string;
  conversation: ConversationId;
  /** 1, 2, 3, … per conversation, no gaps. */
  seq: number;
  /** The author; `SYSTEM_USER_ID` for a system message. */
  sender: UserId;
  /**
   * `'system'`: a notice the app's server posted into the conversation (no person wrote it);
   * show it as a notice, not as either member's message. Absent for a person's message.
   */
  kind?: 'system';
  body: string;
  sent_at: Timestamp;
  idempotency_key: string;
}

/** Whether `m` is a system message (a notice from the app's server, not from a person). */
export function isSystemMessage(m: Pick<Message, 'sender' | 'kind'>): boolean {
  return m.kind === 'system' || m.sender === SYSTEM_USER_ID;
}

export interface ConversationSummary {
  conversation: ConversationId;
  /** The other participant of a direct conversation. */
  peer: UserId | null;
  last_message: Message | null;
  last_seq: number;
  unread: number;
  /** My read mark. */
  read_seq: number;
  /** The peer's read mark ("seen" up to this sequence). */
  peer_read_seq: number;
}

export type Relation = 'none' | 'friends' | 'request_sent' | 'request_received' | 'blocked';
export type FriendReason =
  | 'requested'
  | 'accepted'
  | 'declined'
  | 'cancelled'
  | 'removed'
  | 'blocked'
  | 'unblocked';

export interface FriendEntry {
  user: User;
  relation: Relation;
  since: Timestamp;
  /** Friends only. */
  online: boolean;
  last_seen?: Timestamp | null;
}

export interface FriendStatus {
  user: User;
  relation: Relation;
}

export interface HistoryQuery {
  /** Messages with a lower sequence (scroll back). */
  before?: number;
  /** Messages with a higher sequence (catch up). */
  after?: number;
  /** 1–200, server default 50. */
  limit?: number;
}

export interface HistoryPage {
  conversation: ConversationId;
  /** Oldest first. */
  messages: Message[];
  has_more: boolean;
}

export type ConnectionState =
  | { status: 'connecting' }
  | { status: 'online' }
  | { status: 'reconnecting'; attempt: number; retry_in_ms: number }
  /** The token was refused: sign in again. Never retried. */
  | { status: 'signed_out' }
  | { status: 'closed' };

/** One of my messages in the client's outbox (until the server stores it). */
export interface OutboxItem {
  /** The idempotency key: the handle for `retrySend` / `deleteSend`. */
  key: string;
  /** Where it goes, as given to `queue`/`send`. */
  to: unknown;
  conversation: ConversationId | null;
  body: string;
  /** `queued`: waiting (offline, paced, or behind an earlier message of the conversation);
   * `sending`: on the wire; `sent`: stored (`message`), leaves the outbox; `failed`: refused
   * (`error`; `will_retry` when the client tries again by itself); `deleted`: removed. */
  state: 'queued' | 'sending' | 'sent' | 'failed' | 'deleted';
  message?: Message;
  error?: { code: string; message: string; retry_after_ms?: number };
  will_retry?: boolean;
}

/** The friends and conversations as last seen from the server, kept with the outbox in the
 * client's storage (at most 1,000 conversations, most recent first; last-message bodies cut
 * to a 256-byte preview): what a page reloaded while the server is down shows. */
export interface CachedView {
  friends: FriendEntry[];
  conversations: ConversationSummary[];
}

/** Where the client keeps resume cursors, the outbox and the `CachedView` between page
 * loads. */
export interface StorageAdapter {
  /** The JSON saved last, or null. */
  load(): Promise<string | null> | string | null;
  save(json: string): Promise<void> | void;
}

/** Options of `ZajelClient.connect` / `start`. */
export interface ConnectOptions {
  /** `"indexeddb"` (browser; survives reloads), your own adapter, or nothing (memory). */
  storage?: 'indexeddb' | StorageAdapter | false;
  /** One key per account (default: the server URL). State stored for another user is
   * discarded, never sent. */
  storageKey?: string;
  /** Cursors saved from `cursors()` (without storage). */
  resume?: ResumeState;
}

/** Resume cursors: conversation → every message up to this sequence is held. */
export interface ResumeState {
  cursors: Record<ConversationId, number>;
  unlisted?: 'replay' | 'skip';
}

/** A frame the server pushes (docs/protocol.md, "Server frames"), as the server sent it: the
 * Rust `zajel_core::protocol::Push`. `message` and `synced` reach the app as the client's own
 * `message` / `synced` events (with `replayed` / `first`). */
export type ServerEvent =
  | { type: 'friend'; user: User; relation: Relation; reason: FriendReason; at: Timestamp }
  | { type: 'read'; conversation: ConversationId; user: UserId; seq: number }
  | { type: 'typing'; conversation: ConversationId; user: UserId; active: boolean }
  /** `last_seen` is set when going offline. */
  | { type: 'presence'; user: UserId; online: boolean; last_seen?: Timestamp }
  /** The server is closing this connection; the client reconnects by itself after about
   * `reconnect_after_ms` and resumes (for a UI notice). */
  | { type: 'going_away'; reason: string; reconnect_after_ms: number };

/** Everything `onEvent` / `on` delivers: the Rust client's `Event` serialized by serde
 * (checked by `event-samples.ts`, generated from the Rust types). */
export type ZajelEvent =
  | { type: 'state'; state: ConnectionState }
  | { type: 'message'; message: Message; replayed: boolean }
  | { type: 'sent'; message: Message }
  | { type: 'outbox'; item: OutboxItem }
  /** The stored `CachedView`, before the first connection (only when storage had one). */
  | ({ type: 'cached' } & CachedView)
  | {
      type: 'synced';
      conversations: ConversationSummary[];
      friends: FriendEntry[];
      first: boolean;
    }
  | ServerEvent;
