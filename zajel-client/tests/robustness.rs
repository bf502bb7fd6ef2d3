//! Issue 8: the client's robustness against the real server (in-process engine, real
//! WebSockets on loopback). Each test reproduces a defect of the earlier client: gaps never
//! filled, big accounts locked out by their own resume, reconnect floods, and state lost on
//! restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use zajel_client::{
    Backoff, Client, ConnectionState, ConversationId, Error, ErrorCode, Event, EventStream,
    FileStorage, Message, ResumeState, SendState, Session,
};
use zajel_core::friends::{Edge, Link, UserPair};
use zajel_core::{
    Body, FriendStore, HistoryQuery, IdempotencyKey, MemoryStore, MessageStore, NewMessage,
    Timestamp, UserId, UserStore, Username,
};
use zajel_server::ServerConfig;
use zajel_test_support::{LoopbackServer, test_config};

const WAIT: Duration = Duration::from_secs(20);

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        factor: 2.0,
        jitter: 0.5,
    }
}

async fn register(url: &str, name: &str) -> Session {
    Client::register(url, name, "password-123")
        .await
        .expect("register")
}

/// Makes two stored users friends directly in the store (setup, not under test).
async fn befriend(store: &Arc<MemoryStore>, a: UserId, b: UserId) {
    let pair = UserPair::new(a, b).expect("distinct");
    let edge = Edge {
        link: Link::Friends,
        lo_blocks: false,
        hi_blocks: false,
        since: Timestamp::now(),
        ..Edge::default()
    };
    assert!(
        store
            .swap_edge(pair, Edge::default(), edge)
            .await
            .expect("edge")
    );
}

/// A user that exists only in the store (for peers that never connect).
async fn stored_user(store: &Arc<MemoryStore>, name: &str) -> UserId {
    store
        .create_user(
            &Username::parse(name).expect("name"),
            None,
            Timestamp::now(),
        )
        .await
        .expect("user")
        .id
}

/// Appends a message straight to the log, bypassing the live fan-out: what a lost publish
/// (a broker hiccup between nodes) looks like to a client.
async fn append_silently(
    store: &Arc<MemoryStore>,
    conv: &ConversationId,
    sender: UserId,
    body: &str,
) -> u64 {
    let r = store
        .append(vec![NewMessage {
            conversation: conv.clone(),
            sender,
            body: Body::parse(body).expect("body"),
            idempotency_key: IdempotencyKey::parse(&format!("k-{}", UserId::new_random()))
                .expect("key"),
            sent_at: Timestamp::now(),
        }])
        .await;
    r.into_iter()
        .next()
        .expect("one result")
        .expect("appended")
        .message
        .seq
}

/// Collects `Event::Message`s until `done` says stop (or the timeout).
async fn messages_until(
    events: &mut EventStream,
    mut done: impl FnMut(&[Message]) -> bool,
) -> (Vec<Message>, Vec<ConnectionState>) {
    let mut got = Vec::new();
    let mut states = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, events.next()).await {
            Ok(Some(Event::Message { message, .. })) => got.push(message),
            Ok(Some(Event::State(s))) => states.push(s),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (got, states)
}

/// Drains events for `d`, returning the messages and states seen.
async fn drain_for(events: &mut EventStream, d: Duration) -> (Vec<Message>, Vec<ConnectionState>) {
    let deadline = Instant::now() + d;
    let mut got = Vec::new();
    let mut states = Vec::new();
    while let Ok(Some(e)) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        events.next(),
    )
    .await
    {
        match e {
            Event::Message { message, .. } => got.push(message),
            Event::State(s) => states.push(s),
            _ => {}
        }
    }
    (got, states)
}

fn assert_once(messages: &[Message]) {
    let mut seen = HashSet::new();
    for m in messages {
        assert!(
            seen.insert((m.conversation.clone(), m.seq)),
            "delivered twice: {m:?}"
        );
    }
}

/// Item 1: a live event that never arrives (seq 7 then 9) is fetched at once, not at the next
/// reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_live_stream_is_filled_promptly_and_once() {
    let store = Arc::new(MemoryStore::new());
    let server = LoopbackServer::start(store.clone(), None, test_config()).await;
    let url = server.url();
    let alice = register(&url, "alice").await;
    let bob = register(&url, "bob").await;
    befriend(&store, alice.user.id, bob.user.id).await;
    let (ca, mut ea) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("alice");
    let (cb, _eb) = Client::builder(&url, bob.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("bob");
    let conv = ConversationId::direct(alice.user.id, bob.user.id);

    cb.send(alice.user.id, "one").await.expect("one");
    let lost = append_silently(&store, &conv, bob.user.id, "lost in transit").await;
    cb.send(alice.user.id, "three").await.expect("three");

    let (got, states) = messages_until(&mut ea, |m| m.iter().any(|m| m.seq == lost)).await;
    assert!(
        got.iter()
            .any(|m| m.seq == lost && m.body == "lost in transit"),
        "the missing message was never fetched: {got:?}"
    );
    assert!(
        states.iter().all(|s| *s == ConnectionState::Online),
        "filled without a reconnect: {states:?}"
    );
    let (more, _) = drain_for(&mut ea, Duration::from_millis(800)).await;
    let all: Vec<Message> = got.into_iter().chain(more).collect();
    assert_once(&all);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(ca.cursors().cursors.get(&conv), Some(&3));
    server.stop().await;
}

/// Item 2: an account with 2,000 conversations resumes (the old client's `auth` frame was
/// ~170 KB, over the 64 KiB frame limit: 1009 and a retry loop), and every message missed in
/// any of them arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_account_resumes_within_the_frame_limit() {
    let store = Arc::new(MemoryStore::new());
    let server = LoopbackServer::start(store.clone(), None, test_config()).await;
    let url = server.url();
    let alice = register(&url, "alice").await;
    let me = alice.user.id;
    let mut convs = Vec::new();
    let mut cursors = BTreeMap::new();
    for _ in 0..2000 {
        let peer = UserId::new_random();
        let conv = ConversationId::direct(me, peer);
        append_silently(&store, &conv, peer, "old").await;
        cursors.insert(conv.clone(), 1);
        convs.push((conv, peer));
    }
    // While alice was away: news in 40 conversations spread over the whole account.
    let mut missed = HashSet::new();
    for (conv, peer) in convs.iter().step_by(50) {
        let seq = append_silently(&store, conv, *peer, "news").await;
        missed.insert((conv.clone(), seq));
    }
    let resume = ResumeState {
        cursors,
        ..ResumeState::default()
    };
    let (client, mut events) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .resume_from(resume)
        .connect()
        .await
        .expect("a 2,000-conversation account connects");
    let (got, states) = messages_until(&mut events, |m| m.len() >= missed.len()).await;
    let (more, more_states) = drain_for(&mut events, Duration::from_millis(800)).await;
    let all: Vec<Message> = got.into_iter().chain(more).collect();
    assert_once(&all);
    let delivered: HashSet<(ConversationId, u64)> = all
        .iter()
        .map(|m| (m.conversation.clone(), m.seq))
        .collect();
    assert_eq!(delivered, missed, "exactly the missed messages");
    assert!(
        states
            .iter()
            .chain(&more_states)
            .all(|s| *s == ConnectionState::Online),
        "no reconnect: {states:?} {more_states:?}"
    );
    assert_eq!(client.cursors().cursors.len(), 2000);
    server.stop().await;
}

/// Item 2, second half: a close retrying cannot fix (1009 frame too large) stops the client
/// with the server's error instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_close_is_an_error_not_a_retry_loop() {
    let store = Arc::new(MemoryStore::new());
    let server = LoopbackServer::start(
        store.clone(),
        None,
        ServerConfig {
            max_frame_bytes: 64,
            ..test_config()
        },
    )
    .await;
    let url = server.url();
    let alice = register(&url, "alice").await;
    let (client, mut events) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .start()
        .expect("start");
    let (_, states) = drain_for(&mut events, Duration::from_secs(3)).await;
    assert_eq!(client.state(), ConnectionState::Closed, "{states:?}");
    assert!(
        !states
            .iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    assert_eq!(
        client.last_error().and_then(|e| e.code()),
        Some(ErrorCode::FrameTooLarge)
    );
    server.stop().await;
}

/// Item 3: 500 messages to 20 friends typed while offline go out paced by the server's
/// advertised rate once it is back: no `rate_limited` storm, no 1008, every conversation in
/// the order typed, each message stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backlog_is_paced_and_stays_in_order() {
    let store = Arc::new(MemoryStore::new());
    let cfg = ServerConfig {
        rate_per_second: 150,
        rate_burst: 10,
        ..test_config()
    };
    let server = LoopbackServer::start(store.clone(), None, cfg.clone()).await;
    let url = server.url();
    let addr = server.addr;
    let alice = register(&url, "alice").await;
    let mut peers = Vec::new();
    for i in 0..20 {
        let p = stored_user(&store, &format!("peer{i:02}")).await;
        befriend(&store, alice.user.id, p).await;
        peers.push(p);
    }
    let (client, mut events) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("alice");
    server.stop().await;
    // Offline: 25 messages to each of the 20 friends, interleaved.
    for i in 0..25 {
        for p in &peers {
            client.queue(*p, format!("{i:03}")).expect("queued");
        }
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(client.outbox().len(), 500);
    let server = LoopbackServer::start(store.clone(), Some(addr), cfg).await;
    let mut acked = 0;
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < 500 {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            events.next(),
        )
        .await
        {
            Ok(Some(Event::Sent(_))) => acked += 1,
            Ok(Some(Event::State(s))) => states.push(s),
            Ok(Some(_)) => {}
            _ => panic!("only {acked} acked; {states:?} {:?}", client.last_error()),
        }
    }
    // After the restart: one reconnect (the one that brought it back), never a 1008.
    let (_, more) = drain_for(&mut events, Duration::from_millis(300)).await;
    states.extend(more);
    // The first connection, the outage, then one connection that stays up: a flood would
    // have been closed with 1008 and reconnected.
    let after_outage: Vec<&ConnectionState> = states
        .iter()
        .skip_while(|s| **s == ConnectionState::Online)
        .skip_while(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        .collect();
    assert_eq!(after_outage, [&ConnectionState::Online], "{states:?}");
    if let Some(e) = client.last_error() {
        assert!(!e.to_string().contains("1008"), "{e}");
    }
    for p in &peers {
        let conv = ConversationId::direct(alice.user.id, *p);
        let page = store
            .history(
                &conv,
                HistoryQuery {
                    before: None,
                    after: Some(0),
                    limit: 200,
                },
            )
            .await
            .expect("history");
        let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
        let expected: Vec<String> = (0..25).map(|i| format!("{i:03}")).collect();
        assert_eq!(bodies, expected, "in order, once, for {conv}");
    }
    assert!(client.outbox().is_empty());
    server.stop().await;
}

/// Items 6 and 8: messages typed offline are visible as queued, survive a restart of the
/// app (file storage), and are delivered once after it; cursors survive too (no replay of
/// what was already seen, nothing missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_and_cursors_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alice.json");
    let store = Arc::new(MemoryStore::new());
    let server = LoopbackServer::start(store.clone(), None, test_config()).await;
    let url = server.url();
    let addr = server.addr;
    let alice = register(&url, "alice").await;
    let bob = register(&url, "bob").await;
    befriend(&store, alice.user.id, bob.user.id).await;
    let conv = ConversationId::direct(alice.user.id, bob.user.id);
    let (cb, _eb) = Client::builder(&url, bob.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("bob");
    cb.send(alice.user.id, "seen before").await.expect("bob 1");
    {
        let (ca, mut ea) = Client::builder(&url, alice.token.clone())
            .backoff(fast())
            .storage(FileStorage::new(&path))
            .connect()
            .await
            .expect("alice");
        // A fresh device starts from now; then she sees one live message.
        cb.send(alice.user.id, "live").await.expect("bob 2");
        let (got, _) = messages_until(&mut ea, |m| !m.is_empty()).await;
        assert_eq!(got[0].body, "live");
        server.stop().await;
        for body in ["one", "two", "three"] {
            let item = ca.queue(bob.user.id, body).expect("queued");
            assert_eq!(item.state, SendState::Queued);
        }
        sleep(Duration::from_millis(200)).await;
        let out = ca.outbox();
        assert_eq!(
            out.iter().map(|i| i.body.as_str()).collect::<Vec<_>>(),
            ["one", "two", "three"]
        );
        assert!(out.iter().all(|i| i.conversation.as_ref() == Some(&conv)));
        ca.close();
        // The stored snapshot is written before the driver ends.
        let _ = drain_for(&mut ea, Duration::from_millis(500)).await;
    }
    let server = LoopbackServer::start(store.clone(), Some(addr), test_config()).await;
    let (cb, _eb) = Client::builder(&url, bob.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("bob");
    cb.send(alice.user.id, "while alice was away")
        .await
        .expect("bob 3");
    let (ca, mut ea) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .storage(FileStorage::new(&path))
        .start()
        .expect("alice again");
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut cached = None;
    let deadline = Instant::now() + WAIT;
    while sent.len() < 3 || received.is_empty() {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            ea.next(),
        )
        .await
        {
            Ok(Some(Event::Sent(m))) => sent.push(m),
            Ok(Some(Event::Message { message, .. })) => received.push(message),
            // The stored contact list, before the first connection.
            Ok(Some(Event::Cached(view))) => {
                assert!(sent.is_empty() && received.is_empty(), "cached comes first");
                cached = Some(view);
            }
            Ok(Some(_)) => {}
            _ => panic!("timed out: sent {sent:?} received {received:?}"),
        }
    }
    let cached = cached.expect("the stored contact list was reported");
    assert_eq!(
        cached.friends.iter().map(|f| f.user.id).collect::<Vec<_>>(),
        [bob.user.id]
    );
    assert_eq!(cached.conversations[0].conversation, conv);
    assert_eq!(
        cached.conversations[0]
            .last_message
            .as_ref()
            .map(|m| m.body.as_str()),
        Some("live")
    );
    let (more, _) = drain_for(&mut ea, Duration::from_millis(500)).await;
    received.extend(more);
    assert_eq!(
        received.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["while alice was away"]
    );
    assert_eq!(
        sent.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let page = store
        .history(
            &conv,
            HistoryQuery {
                before: None,
                after: Some(0),
                limit: 50,
            },
        )
        .await
        .expect("history");
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "seen before",
            "live",
            "while alice was away",
            "one",
            "two",
            "three"
        ]
    );
    assert!(ca.outbox().is_empty());
    server.stop().await;
}

/// Item 8: a refused send is reported (never dropped) and stays visible as failed until the
/// app retries or deletes it; states go queued → sending → sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_states_are_visible_and_refusals_are_reported() {
    let store = Arc::new(MemoryStore::new());
    let server = LoopbackServer::start(store.clone(), None, test_config()).await;
    let url = server.url();
    let alice = register(&url, "alice").await;
    let bob = register(&url, "bob").await;
    let carol = register(&url, "carol").await;
    befriend(&store, alice.user.id, bob.user.id).await;
    let (ca, mut ea) = Client::builder(&url, alice.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("alice");

    // Refused at the call: never queued.
    let empty = ca.queue(bob.user.id, "   ").unwrap_err();
    assert_eq!(empty.code(), Some(ErrorCode::EmptyBody));
    let long = ca.send(bob.user.id, "x".repeat(5000)).await.unwrap_err();
    assert_eq!(long.code(), Some(ErrorCode::BodyTooLong));

    // Refused by the server: reported, kept as failed.
    let err = ca.send(carol.user.id, "hi stranger").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFriends));
    let out = ca.outbox();
    assert_eq!(out.len(), 1);
    let key = out[0].key.clone();
    assert!(matches!(
        &out[0].state,
        SendState::Failed { error, will_retry: false } if error.code() == Some(ErrorCode::NotFriends)
    ));
    ca.retry_send(&key).await.expect("retry");
    // Still not friends: failed again.
    let deadline = Instant::now() + WAIT;
    let mut states: HashMap<String, Vec<&'static str>> = HashMap::new();
    loop {
        let e = timeout(
            deadline.saturating_duration_since(Instant::now()),
            ea.next(),
        )
        .await
        .expect("event")
        .expect("stream");
        if let Event::Outbox(item) = e {
            let name = match item.state {
                SendState::Queued => "queued",
                SendState::Sending => "sending",
                SendState::Sent { .. } => "sent",
                SendState::Failed { .. } => "failed",
                SendState::Deleted => "deleted",
            };
            let v = states.entry(item.key.clone()).or_default();
            v.push(name);
            // The first attempt's states, then the retry's.
            if item.key == key && v.iter().filter(|s| **s == "failed").count() == 2 {
                assert!(
                    v.ends_with(&["failed", "queued", "sending", "failed"]),
                    "{v:?}"
                );
                break;
            }
        }
    }
    assert!(matches!(
        ca.delete_send("nope").await,
        Err(Error::InvalidArgument(_))
    ));
    ca.delete_send(&key).await.expect("delete");
    assert!(ca.outbox().is_empty());

    // A good send: queued → sending → sent, then gone from the outbox.
    let item = ca.queue(bob.user.id, "hello bob").expect("queue");
    let mut seen = Vec::new();
    while !seen.contains(&"sent") {
        let e = timeout(
            deadline.saturating_duration_since(Instant::now()),
            ea.next(),
        )
        .await
        .expect("event")
        .expect("stream");
        if let Event::Outbox(i) = e
            && i.key == item.key
        {
            seen.push(match i.state {
                SendState::Queued => "queued",
                SendState::Sending => "sending",
                SendState::Sent { message } => {
                    assert_eq!(message.body, "hello bob");
                    "sent"
                }
                _ => "other",
            });
        }
    }
    assert_eq!(seen, ["queued", "sending", "sent"]);
    assert!(ca.outbox().is_empty());
    server.stop().await;
}

/// Item 4: a node that closes all its sockets at once (shutdown: `going_away` with the
/// server's delay) must not get its whole population back within a few milliseconds: the
/// earlier client spread them over [delay, 1.5 × delay] (100–150 ms here). Now the server
/// gives each connection its own delay, spread over a window that grows with the number it
/// closes, and the client honours it (plus a little jitter of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutdown_spreads_the_reconnects() {
    let store = Arc::new(MemoryStore::new());
    // 12 connections at 6 per second: the server spreads its advice over 2 s after the
    // 100 ms base; each client adds at most max(delay / 4, 500 ms) of its own.
    let server = LoopbackServer::start(
        store.clone(),
        None,
        ServerConfig {
            reconnect_rate: 6,
            ..test_config()
        },
    )
    .await;
    let url = server.url();
    let mut clients = Vec::new();
    for i in 0..12 {
        let s = register(&url, &format!("user{i:02}")).await;
        let (c, e) = Client::builder(&url, s.token.clone())
            .backoff(fast())
            .connect()
            .await
            .expect("connect");
        clients.push((c, e));
    }
    server.stop().await;
    let mut delays = Vec::new();
    for (_, events) in &mut clients {
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                events.next(),
            )
            .await
            {
                Ok(Some(Event::State(ConnectionState::Reconnecting { retry_in, .. }))) => {
                    delays.push(retry_in);
                    break;
                }
                Ok(Some(_)) => {}
                _ => panic!("no reconnect scheduled"),
            }
        }
    }
    let min = delays.iter().min().copied().unwrap_or_default();
    let max = delays.iter().max().copied().unwrap_or_default();
    assert!(
        min >= Duration::from_millis(100),
        "never before the server's delay: {delays:?}"
    );
    assert!(
        max - min >= Duration::from_millis(600),
        "spread out: {delays:?}"
    );
    assert!(
        max <= Duration::from_millis(100 + 2000 + 525),
        "the server's advice, plus a little client jitter: {delays:?}"
    );
    for (c, _) in &clients {
        c.close();
    }
}
