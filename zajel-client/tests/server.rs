//! The SDK against the real server (in-process engine, real WebSockets and HTTP on loopback).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use zajel_client::{
    Backoff, Client, ConnectionState, ConversationId, Error, Event, EventStream, FriendReason,
    HistoryQuery, Push, Relation, Session,
};
use zajel_core::Store;
use zajel_server::ServerConfig;
use zajel_test_support::{LoopbackServer, test_config};

const WAIT: Duration = Duration::from_secs(15);

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        factor: 2.0,
        jitter: 0.5,
    }
}

async fn connect(url: &str, s: &Session) -> (Client, EventStream) {
    Client::builder(url, s.token.clone())
        .backoff(fast())
        .connect()
        .await
        .expect("connect")
}

async fn wait_for<T>(events: &mut EventStream, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    timeout(WAIT, async {
        loop {
            let e = events.next().await.expect("event stream open");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    })
    .await
    .expect("expected event in time")
}

/// Collects connection states until the event stream ends (it ends when signed out).
async fn states_until_end(events: &mut EventStream) -> Vec<ConnectionState> {
    let mut states = Vec::new();
    timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Event::State(s) = e {
                states.push(s);
            }
        }
    })
    .await
    .expect("stream ends when signed out");
    states
}

/// Registers two users and makes them friends through the SDK.
async fn friends(url: &str, a: &str, b: &str) -> [(Session, Client, EventStream); 2] {
    let sa = Client::register(url, a, "password-123")
        .await
        .expect("register a");
    let sb = Client::register(url, b, "password-123")
        .await
        .expect("register b");
    let (ca, mut ea) = connect(url, &sa).await;
    let (cb, mut eb) = connect(url, &sb).await;
    let st = ca.request_friend(b).await.expect("request");
    assert_eq!(st.relation, Relation::RequestSent);
    let from = wait_for(&mut eb, |e| match e {
        Event::Server(Push::Friend {
            user,
            relation: Relation::RequestReceived,
            reason: FriendReason::Requested,
            ..
        }) => Some(user.clone()),
        _ => None,
    })
    .await;
    assert_eq!(from.id, sa.user.id);
    let st = cb.accept_friend(from.id).await.expect("accept");
    assert_eq!(st.relation, Relation::Friends);
    wait_for(&mut ea, |e| match e {
        Event::Server(Push::Friend {
            user,
            relation: Relation::Friends,
            ..
        }) if user.id == sb.user.id => Some(()),
        _ => None,
    })
    .await;
    [(sa, ca, ea), (sb, cb, eb)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_and_chat_flow() {
    let server = LoopbackServer::start(
        Arc::new(zajel_core::MemoryStore::new()),
        None,
        test_config(),
    )
    .await;
    let url = server.url();
    let [(sa, alice, mut ea), (sb, bob, mut eb)] = friends(&url, "alice", "bob").await;
    assert_eq!(alice.user().map(|u| u.id), Some(sa.user.id));
    let conv = ConversationId::direct(sa.user.id, sb.user.id);

    // Send by peer id; acked with server id and seq; bob gets it live once.
    let m1 = alice.send(sb.user.id, "hi bob").await.expect("send 1");
    assert_eq!((m1.seq, m1.conversation.clone()), (1, conv.clone()));
    let got = wait_for(&mut eb, |e| match e {
        Event::Message { message, replayed } => Some((message.clone(), *replayed)),
        _ => None,
    })
    .await;
    assert_eq!(got, (m1.clone(), false));

    // Reply by conversation id.
    let m2 = bob.send(&conv, "hi alice").await.expect("send 2");
    assert_eq!(m2.seq, 2);
    let got = wait_for(&mut ea, |e| match e {
        Event::Message { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, m2);

    // Typing is relayed.
    alice.typing(&conv, true).expect("typing");
    wait_for(&mut eb, |e| match e {
        Event::Server(Push::Typing {
            user, active: true, ..
        }) if *user == sa.user.id => Some(()),
        _ => None,
    })
    .await;

    // History, oldest first; paging back.
    let page = alice
        .history(&conv, HistoryQuery::latest(50))
        .await
        .expect("history");
    assert_eq!(page.messages, vec![m1.clone(), m2.clone()]);
    assert!(!page.has_more);
    let older = alice
        .history(&conv, HistoryQuery::before(2, 10))
        .await
        .expect("history before");
    assert_eq!(older.messages, vec![m1.clone()]);

    // Conversation list with unread counts: alice has not read bob's reply yet.
    let list = alice.conversations(None).await.expect("conversations");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].conversation, conv);
    assert_eq!(list[0].last_seq, 2);
    assert_eq!(list[0].unread, 1);

    // Read receipt reaches bob.
    assert_eq!(alice.mark_read(&conv, 2).await.expect("mark read"), 2);
    wait_for(&mut eb, |e| match e {
        Event::Server(Push::Read {
            user,
            seq: 2,
            conversation,
        }) if *user == sa.user.id && *conversation == conv => Some(()),
        _ => None,
    })
    .await;
    let list = alice.conversations(None).await.expect("conversations");
    assert_eq!(list[0].unread, 0);

    // Friends list with presence.
    let friends = alice.friends().await.expect("friends");
    assert_eq!(friends.len(), 1);
    assert_eq!(friends[0].user.id, sb.user.id);
    assert_eq!(friends[0].relation, Relation::Friends);
    assert!(friends[0].online);

    // Errors are typed: a stranger cannot be messaged.
    let sc = Client::register(&url, "carol", "password-123")
        .await
        .expect("register carol");
    let err = alice.send(sc.user.id, "hello?").await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some(zajel_core::ErrorCode::NotFriends | zajel_core::ErrorCode::ConversationNotFound)
        ),
        "{err:?}"
    );
    let err = alice.request_friend("nobody-here").await.unwrap_err();
    assert_eq!(err.code(), Some(zajel_core::ErrorCode::UserNotFound));

    // Bob goes offline: presence reaches alice.
    bob.close();
    wait_for(&mut ea, |e| match e {
        Event::Server(Push::Presence {
            user,
            online: false,
            ..
        }) if *user == sb.user.id => Some(()),
        _ => None,
    })
    .await;
    alice.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_resumes_and_flushes_the_outbox_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        zajel_core::EmbeddedStore::open(dir.path().join("zajel.redb")).expect("embedded store"),
    );
    let server = LoopbackServer::start(store.clone(), None, test_config()).await;
    let addr = server.addr;
    let url = server.url();
    let [(sa, alice, mut ea), (sb, bob, mut eb)] = friends(&url, "alice", "bob").await;
    let conv = ConversationId::direct(sa.user.id, sb.user.id);

    for i in 1..=3 {
        let m = alice
            .send(&conv, format!("before {i}"))
            .await
            .expect("send");
        assert_eq!(m.seq, i);
    }
    // Bob has seen two of them live when the server goes down mid-conversation.
    let mut bob_got = Vec::new();
    while bob_got.len() < 3 {
        if let Event::Message { message, .. } = timeout(WAIT, eb.next()).await.unwrap().unwrap() {
            bob_got.push(message);
        }
    }

    server.stop().await;
    wait_for(&mut ea, |e| match e {
        Event::State(ConnectionState::Reconnecting { .. }) => Some(()),
        _ => None,
    })
    .await;

    // Alice keeps writing while the server is down: the messages wait in the outbox.
    let mut sends = Vec::new();
    for i in 1..=5 {
        let c = alice.clone();
        let conv = conv.clone();
        sends.push(tokio::spawn(async move {
            c.send(&conv, format!("during {i}")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        alice.state(),
        ConnectionState::Reconnecting { .. }
    ));

    // Same address, same store.
    let server = LoopbackServer::start(store.clone(), Some(addr), test_config()).await;
    let mut seqs = Vec::new();
    for s in sends {
        let m = timeout(WAIT, s)
            .await
            .expect("flushed")
            .unwrap()
            .expect("acked");
        seqs.push(m.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, vec![4, 5, 6, 7, 8]);
    alice.wait_online().await.expect("alice online");
    bob.wait_online().await.expect("bob online");

    // Bob receives every message exactly once (live or replayed after his own reconnect).
    while bob_got.len() < 8 {
        if let Event::Message { message, .. } = timeout(WAIT, eb.next()).await.unwrap().unwrap() {
            bob_got.push(message);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(e) = eb.try_next() {
        if let Event::Message { message, .. } = e {
            bob_got.push(message);
        }
    }
    let mut got: Vec<u64> = bob_got.iter().map(|m| m.seq).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=8).collect::<Vec<_>>(), "bob: every message once");

    // The sender's history has no duplicates.
    let page = alice
        .history(&conv, HistoryQuery::latest(50))
        .await
        .expect("history");
    assert_eq!(page.messages.len(), 8);
    let mut keys: Vec<&str> = page
        .messages
        .iter()
        .map(|m| m.idempotency_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 8);
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    let mut during: Vec<&str> = page.messages[3..].iter().map(|m| m.body.as_str()).collect();
    during.sort_unstable();
    assert_eq!(
        during,
        ["during 1", "during 2", "during 3", "during 4", "during 5"]
    );
    assert_eq!(alice.cursors().cursors.get(&conv), Some(&8));

    alice.close();
    bob.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_signed_out_not_a_retry_loop() {
    let server = LoopbackServer::start(
        Arc::new(zajel_core::MemoryStore::new()),
        None,
        test_config(),
    )
    .await;
    let url = server.url();
    let s1 = Client::register(&url, "dave", "password-123")
        .await
        .expect("register");
    let (client, mut events) = connect(&url, &s1).await;
    assert_eq!(
        Client::whoami(&url, &s1.token).await.expect("me").id,
        s1.user.id
    );

    // Another device logs out everywhere.
    let s2 = Client::login(&url, "dave", "password-123")
        .await
        .expect("login");
    Client::logout_everywhere(&url, &s2.token)
        .await
        .expect("logout-all");

    let states = states_until_end(&mut events).await;
    assert_eq!(
        states.last(),
        Some(&ConnectionState::SignedOut),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .filter(|s| matches!(s, ConnectionState::Reconnecting { .. }))
            .count()
            <= 1,
        "{states:?}"
    );
    assert_eq!(client.state(), ConnectionState::SignedOut);
    assert_eq!(client.friends().await, Err(Error::SignedOut));

    // Reconnecting with the revoked token: refused once, signed out, no retry loop.
    let (client, mut events) = Client::builder(&url, s1.token.clone())
        .backoff(fast())
        .start()
        .expect("start");
    let states = states_until_end(&mut events).await;
    assert_eq!(states, vec![ConnectionState::SignedOut]);
    assert_eq!(client.last_error(), Some(Error::SignedOut));
    assert_eq!(
        Client::connect(&url, s1.token.clone()).await.unwrap_err(),
        Error::SignedOut
    );
    assert_eq!(
        Client::whoami(&url, &s1.token).await.unwrap_err(),
        Error::SignedOut
    );
    // Wrong password: a typed error.
    assert_eq!(
        Client::login(&url, "dave", "wrong-password")
            .await
            .unwrap_err()
            .code(),
        Some(zajel_core::ErrorCode::InvalidCredentials)
    );
    server.stop().await;
}

/// A session that expires while the client is connected surfaces as `SignedOut` at the next
/// reconnect (here forced by a server restart), not as a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_signed_out_at_reconnect() {
    let store: Arc<dyn Store> = Arc::new(zajel_core::MemoryStore::new());
    let short = ServerConfig {
        token_ttl_secs: 1,
        ..test_config()
    };
    let server = LoopbackServer::start(store.clone(), None, short.clone()).await;
    let url = server.url();
    let s = Client::register(&url, "erin", "password-123")
        .await
        .expect("register");
    let (client, mut events) = connect(&url, &s).await;
    assert_eq!(client.state(), ConnectionState::Online);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let addr = server.addr;
    server.stop().await;
    let _server = LoopbackServer::start(store, Some(addr), short).await;
    let states = states_until_end(&mut events).await;
    assert_eq!(
        states.last(),
        Some(&ConnectionState::SignedOut),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .filter(|st| matches!(st, ConnectionState::Reconnecting { .. }))
            .count()
            <= 3,
        "a few reconnect attempts while the server was down, then signed out: {states:?}"
    );
    assert_eq!(client.state(), ConnectionState::SignedOut);
}
