//! The JavaScript face of [`Event`] checked against the TypeScript types of `@zajel/client`.
//!
//! This test serializes one sample of every event (each client event kind, and every push
//! frame of `docs/protocol.md` as [`Event::Server`]) exactly as the wasm bindings hand it to
//! JavaScript, and compares the result with `bindings/js/src/event-samples.ts`. That file
//! declares the samples `satisfies ZajelEvent[]`, so `tsc` (the package build) fails when a
//! Rust event has a type, a field or a shape that `ZajelEvent` in `types.ts` lacks. After
//! changing an event, regenerate it with `ZAJEL_WRITE_SAMPLES=1 cargo test -p zajel-client
//! event_samples` and fix `types.ts` until `npm run typecheck -w @zajel/client` passes.

use crate::error::Error;
use crate::event::{ConnectionState, Event, OutboxItem, SendState, Target};
use crate::view::CachedView;
use serde_json::Value;
use std::time::Duration;
use zajel_core::protocol::{Push, ServerFrame};
use zajel_core::{ErrorCode, Message};

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../bindings/js/src/event-samples.ts"
);
const PROTOCOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

/// Every push frame example in the protocol reference.
fn documented_pushes() -> Vec<Push> {
    let doc = std::fs::read_to_string(PROTOCOL).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line) {
            (None, "```json") => block = Some(String::new()),
            (Some(b), "```") => {
                if let Ok(ServerFrame::Push(p)) = ServerFrame::decode(b) {
                    out.push(p);
                }
                block = None;
            }
            (Some(b), l) => b.push_str(l),
            _ => {}
        }
    }
    out
}

/// The event kind, by an exhaustive match: a new [`Event`] variant does not compile here
/// until it has a sample below.
fn kind(e: &Event) -> &'static str {
    match e {
        Event::State(_) => "state",
        Event::Message { .. } => "message",
        Event::Sent(_) => "sent",
        Event::Outbox(_) => "outbox",
        Event::Synced { .. } => "synced",
        Event::Cached(_) => "cached",
        Event::Server(_) => "server",
    }
}

/// The documented system message (a `message` push from the reserved system sender).
fn system_message(pushes: &[Push]) -> Message {
    pushes
        .iter()
        .find_map(|p| match p {
            Push::Message { message } if message.is_system() => Some(message.clone()),
            _ => None,
        })
        .unwrap()
}

fn samples() -> Vec<Event> {
    let pushes = documented_pushes();
    let message: Message = pushes
        .iter()
        .find_map(|p| match p {
            Push::Message { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    let state = pushes
        .iter()
        .find_map(|p| match p {
            Push::Synced { state } => Some(state.clone()),
            _ => None,
        })
        .unwrap();
    let item = |state: SendState| {
        Event::Outbox(OutboxItem {
            key: message.idempotency_key.clone(),
            to: Target::Peer(message.sender),
            conversation: Some(message.conversation.clone()),
            body: message.body.clone(),
            state,
        })
    };
    let mut all = vec![
        Event::State(ConnectionState::Connecting),
        Event::State(ConnectionState::Online),
        Event::State(ConnectionState::Reconnecting {
            attempt: 2,
            retry_in: Duration::from_millis(500),
        }),
        Event::State(ConnectionState::SignedOut),
        Event::State(ConnectionState::Closed),
        Event::Message {
            message: message.clone(),
            replayed: true,
        },
        // A system message too: its `kind` must be in the TypeScript `Message`.
        Event::Message {
            message: system_message(&pushes),
            replayed: false,
        },
        Event::Sent(message.clone()),
        item(SendState::Queued),
        item(SendState::Sending),
        item(SendState::Sent {
            message: message.clone(),
        }),
        item(SendState::Failed {
            error: Error::Rejected {
                code: ErrorCode::RateLimited,
                message: "too many requests".into(),
                retry_after_ms: Some(250),
            },
            will_retry: true,
        }),
        item(SendState::Failed {
            error: Error::Transport("connection refused".into()),
            will_retry: false,
        }),
        item(SendState::Deleted),
        Event::Cached(CachedView {
            friends: state.friends.clone(),
            conversations: state.conversations.clone(),
        }),
        Event::Synced {
            conversations: state.conversations,
            friends: state.friends,
            first: true,
        },
    ];
    // `message` and `synced` pushes reach the app as the events above, not as `Server`.
    all.extend(
        pushes
            .into_iter()
            .filter(|p| !matches!(p, Push::Message { .. } | Push::Synced { .. }))
            .map(Event::Server),
    );
    all
}

fn render(samples: &[Event]) -> String {
    let mut out = String::from(
        "// Generated by zajel-client's `event_samples` test from the Rust `Event` (do not edit;\n\
         // regenerate with `ZAJEL_WRITE_SAMPLES=1 cargo test -p zajel-client event_samples`).\n\
         // One sample of every event as JavaScript receives it: `tsc` checks that each one is\n\
         // a `ZajelEvent`, so the TypeScript types cannot drift from the Rust events.\n\
         import type { ZajelEvent } from './types.js';\n\n\
         export const EVENT_SAMPLES = [\n",
    );
    for e in samples {
        let json = serde_json::to_string(e).unwrap();
        out.push_str("  ");
        out.push_str(&json);
        out.push_str(",\n");
    }
    out.push_str("] satisfies ZajelEvent[];\n");
    out
}

#[test]
fn event_samples_match_the_typescript_check() {
    let samples = samples();
    // Every client kind and every push type has a sample.
    let kinds: std::collections::BTreeSet<_> = samples.iter().map(kind).collect();
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    let pushes: std::collections::BTreeSet<String> = samples
        .iter()
        .filter_map(|e| match e {
            Event::Server(p) => serde_json::to_value(p).ok(),
            _ => None,
        })
        .filter_map(|v: Value| v["type"].as_str().map(str::to_owned))
        .collect();
    for t in Push::TYPES {
        assert!(
            pushes.contains(*t) || ["message", "synced"].contains(t),
            "no sample of the {t} push (document it in docs/protocol.md)"
        );
    }
    let rendered = render(&samples);
    if std::env::var_os("ZAJEL_WRITE_SAMPLES").is_some() {
        std::fs::write(SAMPLES, &rendered).unwrap();
    }
    let current = std::fs::read_to_string(SAMPLES).unwrap_or_default();
    assert!(
        current == rendered,
        "bindings/js/src/event-samples.ts is stale: run `ZAJEL_WRITE_SAMPLES=1 cargo test -p \
         zajel-client event_samples`, then make `ZajelEvent` in bindings/js/src/types.ts accept \
         it (`npm run typecheck -w @zajel/client`)"
    );
}
