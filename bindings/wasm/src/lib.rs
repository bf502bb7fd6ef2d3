//! # zajel-wasm
//!
//! The wasm-bindgen layer of the `@zajel/client` npm package: a thin wrapper over
//! `zajel_client` with no logic of its own. JavaScript sees one class, `ZajelClient`:
//!
//! * static `register` / `login(serverUrl, username, password)` → `Promise<Session>`,
//!   `whoami(serverUrl, token)`, `logoutEverywhere(serverUrl, token)`;
//! * static `connect(serverUrl, token, options?)` → `Promise<ZajelClient>` once online, and
//!   static `start(serverUrl, token, options?)` → `ZajelClient` at once (connects in the
//!   background: the way to open a client while the server is unreachable);
//! * `options`: `{ storage?: "indexeddb" | { load(), save(json) }, storageKey?: string,
//!   resume?: { cursors } }`. With `storage: "indexeddb"` the resume cursors, the outbox and
//!   a bounded cache of the contact list (`cachedView()`) live in IndexedDB (database `zajel`, one record per `storageKey`, default the server
//!   URL): messages typed offline survive a reload, are re-sent with their original
//!   idempotency key, and nothing is missed or doubled. Use one `storageKey` per account
//!   (state stored for another user is discarded, never sent);
//! * a method returning a `Promise` for every client call (`requestFriend`, `send`,
//!   `history`, `conversations`, `markRead`, …), `queue(to, body)` (an outbox entry at once),
//!   `outbox()`, `retrySend(key)`, `deleteSend(key)`, and `onEvent(callback)` for the events.
//!
//! Events are `zajel_client::Event` serialized by serde: `{ type: "message", message,
//! replayed }`, `{ type: "state", state: { status, … } }`, `{ type: "outbox", item: { key, to,
//! conversation, body, state: "queued" | "sending" | "sent" | "failed" | "deleted", message?,
//! error?: { code, message }, will_retry? } }`, `sent`, `synced`, and the server's pushes as
//! `docs/protocol.md` shows them (`friend`, `read`, `typing`, `presence`, `going_away`, …).
//!
//! Values cross as plain JS objects with the protocol's JSON field names (`snake_case`),
//! through `serde-wasm-bindgen`. Failed calls reject with an `Error` whose `code` is the
//! protocol's error code (`not_friends`, `unauthenticated`, …) or one of `closed`,
//! `connection_lost`, `transport`, `http`, `invalid_url`, `invalid_argument`, `protocol`,
//! `timeout`. The TypeScript types and React hooks live in `bindings/js`.
#![cfg(target_arch = "wasm32")]

mod convert;
mod idb;

use convert::{arg_error, conversation, js_error, to_js, user_id};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use zajel_client::{Client, ClientBuilder, EventStream, HistoryQuery, ResumeState, Target};

/// A connected Zajel client (see the crate docs).
#[wasm_bindgen]
pub struct ZajelClient {
    client: Client,
    events: Rc<RefCell<Option<EventStream>>>,
}

fn promise<F, T>(f: F) -> js_sys::Promise
where
    F: std::future::Future<Output = Result<T, JsValue>> + 'static,
    T: serde::Serialize,
{
    future_to_promise(async move { to_js(&f.await?) })
}

#[wasm_bindgen]
impl ZajelClient {
    /// Creates an account; resolves to `{ user, token, expires_at }`.
    pub fn register(server_url: String, username: String, password: String) -> js_sys::Promise {
        promise(async move {
            Client::register(&server_url, &username, &password)
                .await
                .map_err(js_error)
        })
    }

    /// Signs in; resolves to `{ user, token, expires_at }`.
    pub fn login(server_url: String, username: String, password: String) -> js_sys::Promise {
        promise(async move {
            Client::login(&server_url, &username, &password)
                .await
                .map_err(js_error)
        })
    }

    /// Who a token belongs to; rejects with code `unauthenticated` when it is not valid.
    pub fn whoami(server_url: String, token: String) -> js_sys::Promise {
        promise(async move { Client::whoami(&server_url, &token).await.map_err(js_error) })
    }

    /// Ends every session of the token's user.
    #[wasm_bindgen(js_name = logoutEverywhere)]
    pub fn logout_everywhere(server_url: String, token: String) -> js_sys::Promise {
        promise(async move {
            Client::logout_everywhere(&server_url, &token)
                .await
                .map_err(js_error)
        })
    }

    /// Connects and resolves once online (authenticated and caught up); rejects with the
    /// first attempt's error. `options` as in the crate docs (a bare `{ cursors }` is taken
    /// as `resume`).
    pub fn connect(server_url: String, token: String, options: JsValue) -> js_sys::Promise {
        future_to_promise(async move {
            let builder = builder(server_url, token, &options)?;
            let (client, events) = builder.connect().await.map_err(js_error)?;
            Ok(ZajelClient::wrap(client, events).into())
        })
    }

    /// Starts a client that connects (and reconnects) in the background and returns at once;
    /// follow `state()` / `state` events. Calls made meanwhile wait for the connection;
    /// messages queue in the outbox (and, with storage, survive a reload).
    pub fn start(
        server_url: String,
        token: String,
        options: JsValue,
    ) -> Result<ZajelClient, JsValue> {
        let (client, events) = builder(server_url, token, &options)?
            .start()
            .map_err(js_error)?;
        Ok(ZajelClient::wrap(client, events))
    }

    /// Calls `callback(event)` for every event, in order, from the start of the connection
    /// (events that arrived before the call are delivered first). Only one subscriber per
    /// client; fan out in JavaScript.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, callback: js_sys::Function) -> Result<(), JsValue> {
        let mut events = self
            .events
            .borrow_mut()
            .take()
            .ok_or_else(|| arg_error("onEvent was already called on this client"))?;
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(event) = events.next().await {
                if let Ok(value) = to_js(&event) {
                    let _ = callback.call1(&JsValue::NULL, &value);
                }
            }
        });
        Ok(())
    }

    /// The connection state now: `{ status: "online" }`, `{ status: "reconnecting",
    /// attempt, retry_in_ms }`, …
    pub fn state(&self) -> Result<JsValue, JsValue> {
        to_js(&self.client.state())
    }

    /// The signed-in user (known once connected).
    pub fn user(&self) -> Result<JsValue, JsValue> {
        to_js(&self.client.user())
    }

    /// The direct conversation id with a user (`dm.<a>.<b>`).
    #[wasm_bindgen(js_name = conversationWith)]
    pub fn conversation_with(&self, peer: &str) -> Result<Option<String>, JsValue> {
        Ok(self
            .client
            .conversation_with(user_id(peer)?)
            .map(|c| c.to_string()))
    }

    /// The friends and conversations as last seen from the server (`{ friends, conversations
    /// }`): with storage, loaded at start, so a page reloaded while the server is down can
    /// show them (also delivered as a `cached` event); then the server's lists.
    #[wasm_bindgen(js_name = cachedView)]
    pub fn cached_view(&self) -> Result<JsValue, JsValue> {
        to_js(&self.client.cached_view())
    }

    /// Resume cursors to save and pass to `connect` later.
    pub fn cursors(&self) -> Result<JsValue, JsValue> {
        to_js(&self.client.cursors())
    }

    /// Sends a friend request by username; resolves to `{ user, relation }`.
    #[wasm_bindgen(js_name = requestFriend)]
    pub fn request_friend(&self, username: String) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.request_friend(&username).await.map_err(js_error) })
    }

    /// Accepts a request from the user with this id.
    #[wasm_bindgen(js_name = acceptFriend)]
    pub fn accept_friend(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| {
            Box::pin(async move { c.accept_friend(u).await })
        })
    }

    /// Declines a request.
    #[wasm_bindgen(js_name = declineFriend)]
    pub fn decline_friend(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| {
            Box::pin(async move { c.decline_friend(u).await })
        })
    }

    /// Withdraws my request.
    #[wasm_bindgen(js_name = cancelFriendRequest)]
    pub fn cancel_friend_request(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| {
            Box::pin(async move { c.cancel_friend_request(u).await })
        })
    }

    /// Ends a friendship.
    #[wasm_bindgen(js_name = removeFriend)]
    pub fn remove_friend(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| {
            Box::pin(async move { c.remove_friend(u).await })
        })
    }

    /// Blocks a user.
    pub fn block(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| Box::pin(async move { c.block(u).await }))
    }

    /// Lifts my block.
    pub fn unblock(&self, user: &str) -> js_sys::Promise {
        self.friend_op(user, |c, u| Box::pin(async move { c.unblock(u).await }))
    }

    /// Friends, requests and blocks, with presence: `FriendEntry[]`.
    pub fn friends(&self) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.friends().await.map_err(js_error) })
    }

    /// Sends `body` to a conversation id (`dm.…`) or a friend's user id; resolves to the
    /// stored `Message` once acknowledged.
    pub fn send(&self, to: &str, body: String) -> js_sys::Promise {
        let c = self.client.clone();
        let target = match conversation(to) {
            Ok(conv) => Ok(Target::Conversation(conv)),
            Err(_) => user_id(to).map(Target::Peer),
        };
        promise(async move { c.send(target?, body).await.map_err(js_error) })
    }

    /// Queues `body` for a conversation id or a friend's user id and returns its outbox entry
    /// at once (`{ key, to, conversation, body, state: "queued" }`); its progress arrives as
    /// `outbox` events with the same `key`. An empty or too long body throws (code
    /// `empty_body` / `body_too_long`) and is never queued.
    pub fn queue(&self, to: &str, body: String) -> Result<JsValue, JsValue> {
        let target: Target = to.parse().map_err(js_error)?;
        to_js(&self.client.queue(target, body).map_err(js_error)?)
    }

    /// The messages not yet acknowledged, oldest first (queued, sending, failed).
    pub fn outbox(&self) -> Result<JsValue, JsValue> {
        to_js(&self.client.outbox())
    }

    /// Queues a failed outbox entry again (same idempotency key).
    #[wasm_bindgen(js_name = retrySend)]
    pub fn retry_send(&self, key: String) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.retry_send(&key).await.map_err(js_error) })
    }

    /// Removes a queued or failed outbox entry (never sent).
    #[wasm_bindgen(js_name = deleteSend)]
    pub fn delete_send(&self, key: String) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.delete_send(&key).await.map_err(js_error) })
    }

    /// A page of history, oldest first: `{ conversation, messages, has_more }`. `query` is
    /// `{ before?, after?, limit? }` (exclusive sequence bounds).
    pub fn history(&self, conversation_id: &str, query: JsValue) -> js_sys::Promise {
        let c = self.client.clone();
        let args = conversation(conversation_id).and_then(|conv| {
            let q = if query.is_undefined() || query.is_null() {
                HistoryQuery::default()
            } else {
                serde_wasm_bindgen::from_value(query).map_err(|e| arg_error(&e.to_string()))?
            };
            Ok((conv, q))
        });
        promise(async move {
            let (conv, query) = args?;
            c.history(&conv, query).await.map_err(js_error)
        })
    }

    /// The conversation list, most recent first: `ConversationSummary[]`.
    pub fn conversations(&self, limit: Option<u32>) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.conversations(limit).await.map_err(js_error) })
    }

    /// Moves my read mark to `seq`; resolves to the mark now.
    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(&self, conversation_id: &str, seq: f64) -> js_sys::Promise {
        let c = self.client.clone();
        let conv = conversation(conversation_id);
        promise(async move { c.mark_read(&conv?, seq as u64).await.map_err(js_error) })
    }

    /// Tells the peer I started or stopped typing (ephemeral, dropped while offline).
    pub fn typing(&self, conversation_id: &str, active: bool) -> Result<(), JsValue> {
        self.client
            .typing(&conversation(conversation_id)?, active)
            .map_err(js_error)
    }

    /// A round trip to the server.
    pub fn ping(&self) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.ping().await.map_err(js_error) })
    }

    /// Signs out this session and stops the client (state `signed_out`).
    pub fn logout(&self) -> js_sys::Promise {
        let c = self.client.clone();
        promise(async move { c.logout().await.map_err(js_error) })
    }

    /// Stops the client (state `closed`).
    pub fn close(&self) {
        self.client.close();
    }
}

type FriendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = zajel_client::Result<zajel_client::FriendStatus>>>,
>;

/// A client builder from the JS `options` object.
fn builder(server_url: String, token: String, options: &JsValue) -> Result<ClientBuilder, JsValue> {
    let mut builder = Client::builder(server_url.clone(), token);
    if options.is_undefined() || options.is_null() {
        return Ok(builder);
    }
    let get = |name: &str| {
        js_sys::Reflect::get(options, &name.into())
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let resume = match get("resume") {
        Some(r) => Some(r),
        // The earlier signature took the resume state itself.
        None => get("cursors").map(|_| options.clone()),
    };
    if let Some(r) = resume {
        let state: ResumeState =
            serde_wasm_bindgen::from_value(r).map_err(|e| arg_error(&e.to_string()))?;
        builder = builder.resume_from(state);
    }
    let key = get("storageKey")
        .and_then(|k| k.as_string())
        .unwrap_or(server_url);
    match get("storage") {
        None => {}
        Some(s) if s.as_string().as_deref() == Some("indexeddb") => {
            builder = builder.storage(idb::IdbStorage { key });
        }
        Some(s) if s.is_object() => {
            builder = builder.storage(idb::JsStorage { object: s });
        }
        Some(s) if s.as_bool() == Some(false) => {}
        Some(_) => {
            return Err(arg_error(
                "storage must be \"indexeddb\" or an object with load() and save(json)",
            ));
        }
    }
    Ok(builder)
}

impl ZajelClient {
    fn wrap(client: Client, events: EventStream) -> Self {
        ZajelClient {
            client,
            events: Rc::new(RefCell::new(Some(events))),
        }
    }

    fn friend_op(
        &self,
        user: &str,
        op: impl FnOnce(Client, zajel_client::UserId) -> FriendFuture + 'static,
    ) -> js_sys::Promise {
        let c = self.client.clone();
        let user = user_id(user);
        promise(async move { op(c, user?).await.map_err(js_error) })
    }
}
