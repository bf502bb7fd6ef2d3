//! Unit tests of the connection driver against a channel-based fake transport (the only place
//! a stand-in server is used; the integration tests in `tests/` use the real server).

use crate::transport::{Connector, Incoming, Socket};
use crate::{Backoff, Client, ConnectionState, Error, Event, EventStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zajel_core::protocol::{
    ClientFrame, ErrorFrame, Limits, Push, RequestId, ServerFrame, SyncState,
};
use zajel_core::{ConversationId, ErrorCode, Message, MessageId, Timestamp, User, UserId};

struct FakeConn {
    from_client: mpsc::UnboundedReceiver<String>,
    to_client: mpsc::UnboundedSender<Incoming>,
}

struct FakeServer {
    conns: mpsc::UnboundedReceiver<FakeConn>,
    refuse: Arc<AtomicU32>,
    attempts: Arc<AtomicU32>,
}

fn fake() -> (Connector, FakeServer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refuse = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(AtomicU32::new(0));
    let (r, a) = (refuse.clone(), attempts.clone());
    let connector: Connector = Arc::new(move |_url| {
        a.fetch_add(1, Ordering::SeqCst);
        let refused = r
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let tx = tx.clone();
        Box::pin(async move {
            if refused {
                return Err(Error::Transport("refused".into()));
            }
            let (c_tx, c_rx) = mpsc::unbounded_channel();
            let (s_tx, s_rx) = mpsc::unbounded_channel();
            let _ = tx.send(FakeConn {
                from_client: c_rx,
                to_client: s_tx,
            });
            Ok(Socket { tx: c_tx, rx: s_rx })
        })
    });
    (
        connector,
        FakeServer {
            conns: rx,
            refuse,
            attempts,
        },
    )
}

const WAIT: Duration = Duration::from_secs(5);

fn user(n: u8) -> User {
    User {
        id: format!("00000000-0000-4000-8000-0000000000{n:02}")
            .parse()
            .unwrap(),
        username: format!("user{n}"),
        created_at: Timestamp(1),
    }
}

fn msg(conv: &ConversationId, seq: u64, sender: UserId, key: &str) -> Message {
    Message {
        id: MessageId(uuid_from(seq)),
        conversation: conv.clone(),
        seq,
        sender,
        body: format!("m{seq}"),
        sent_at: Timestamp(seq as i64),
        idempotency_key: key.into(),
    }
}

fn uuid_from(n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(u128::from(n))
}

impl FakeServer {
    async fn accept(&mut self) -> FakeConn {
        timeout(WAIT, self.conns.recv()).await.unwrap().unwrap()
    }
}

impl FakeConn {
    async fn frame(&mut self) -> ClientFrame {
        let text = timeout(WAIT, self.from_client.recv())
            .await
            .expect("a frame in time")
            .expect("socket open");
        ClientFrame::decode(&text).unwrap()
    }
    async fn no_frame(&mut self, wait: Duration) {
        if let Ok(Some(t)) = timeout(wait, self.from_client.recv()).await {
            panic!("unexpected frame {t}");
        }
    }
    fn push(&self, f: ServerFrame) {
        self.to_client.send(Incoming::Text(f.encode())).unwrap();
    }
    fn close(&self, code: u16) {
        let _ = self.to_client.send(Incoming::Closed {
            code: Some(code),
            reason: String::new(),
        });
    }
    /// Answers the `auth` with id `re` for `me`.
    fn auth_ok(&self, re: &RequestId, me: &User) {
        self.push(ServerFrame::AuthOk {
            re: re.clone(),
            user: me.clone(),
            protocol: 1,
            limits: Limits {
                max_frame_bytes: 65536,
                max_body_bytes: 4096,
                requests_per_second: 100,
                idle_timeout_ms: 60_000,
            },
        });
    }

    /// Reads `auth`, answers auth_ok, then `replay`ed messages, then synced.
    async fn handshake(&mut self, me: &User, replay: Vec<Message>) -> ClientFrame {
        let auth = self.frame().await;
        let ClientFrame::Auth { id, resume, .. } = &auth else {
            panic!("first frame must be auth: {auth:?}")
        };
        assert!(resume.is_some(), "the client always resumes");
        self.auth_ok(id, me);
        for m in replay {
            self.push(ServerFrame::Push(Push::Message { message: m }));
        }
        self.push(ServerFrame::Push(Push::Synced {
            state: SyncState::default(),
        }));
        auth
    }
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
        factor: 2.0,
        jitter: 0.5,
    }
}

async fn started(connector: Connector) -> (Client, EventStream) {
    Client::builder("http://127.0.0.1:9", "zs1.token")
        .backoff(fast())
        .connector(connector)
        .start()
        .unwrap()
}

async fn next_matching(events: &mut EventStream, f: impl Fn(&Event) -> bool) -> Event {
    timeout(WAIT, async {
        loop {
            let e = events.next().await.expect("stream open");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test]
async fn unauthenticated_auth_is_signed_out_without_retry() {
    let (connector, mut server) = fake();
    let connecting = tokio::spawn(
        Client::builder("http://127.0.0.1:9", "zs1.revoked")
            .backoff(fast())
            .connector(connector)
            .connect(),
    );
    let mut conn = server.accept().await;
    let ClientFrame::Auth { id, .. } = conn.frame().await else {
        panic!()
    };
    conn.push(ServerFrame::Error(ErrorFrame::new(
        Some(id),
        ErrorCode::Unauthenticated,
        "token expired",
    )));
    let err = connecting.await.unwrap().unwrap_err();
    assert_eq!(err, Error::SignedOut);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.attempts.load(Ordering::SeqCst), 1, "no retry loop");
}

#[tokio::test]
async fn revoked_session_close_code_signs_out() {
    let (connector, mut server) = fake();
    let (client, mut events) = started(connector).await;
    let me = user(1);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    client.wait_online().await.unwrap();
    conn.close(4001);
    next_matching(&mut events, |e| {
        matches!(e, Event::State(ConnectionState::SignedOut))
    })
    .await;
    assert_eq!(client.state(), ConnectionState::SignedOut);
    assert_eq!(
        client.send(UserId(uuid_from(9)), "x").await,
        Err(Error::SignedOut)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.attempts.load(Ordering::SeqCst), 1);
    // The event stream ends with the client.
    assert_eq!(timeout(WAIT, events.next()).await.unwrap(), None);
}

#[tokio::test]
async fn reconnects_with_backoff_and_resumes_from_cursors_exactly_once() {
    let (connector, mut server) = fake();
    let (client, mut events) = started(connector).await;
    let me = user(1);
    let peer = user(2);
    let conv = ConversationId::direct(me.id, peer.id);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![msg(&conv, 1, peer.id, "k1")])
        .await;
    client.wait_online().await.unwrap();
    conn.push(ServerFrame::Push(Push::Message {
        message: msg(&conv, 2, peer.id, "k2"),
    }));
    conn.push(ServerFrame::Push(Push::Message {
        message: msg(&conv, 2, peer.id, "k2"),
    }));
    conn.push(ServerFrame::Push(Push::Message {
        message: msg(&conv, 1, peer.id, "k1"),
    }));
    // Drop the connection and refuse the next attempt.
    server.refuse.store(1, Ordering::SeqCst);
    conn.close(1006);
    let mut got = Vec::new();
    let mut states = Vec::new();
    let mut conn = loop {
        tokio::select! {
            c = server.conns.recv() => break c.unwrap(),
            e = events.next() => match e.unwrap() {
                Event::Message { message, replayed } => got.push((message.seq, replayed)),
                Event::State(s) => states.push(s),
                _ => {}
            },
        }
    };
    assert_eq!(got, vec![(1, true), (2, false)], "each message once");
    let attempts: Vec<u32> = states
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Reconnecting { attempt, retry_in } => {
                assert!(*retry_in <= Duration::from_millis(40));
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    // The resume carries the cursor; the replay overlaps (seq 2 again) and adds seq 3.
    let auth = conn
        .handshake(
            &me,
            vec![msg(&conv, 2, peer.id, "k2"), msg(&conv, 3, peer.id, "k3")],
        )
        .await;
    let ClientFrame::Auth {
        resume: Some(resume),
        ..
    } = auth
    else {
        panic!()
    };
    assert_eq!(resume.cursors.get(&conv), Some(&2));
    let Event::Message { message, replayed } =
        next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await
    else {
        panic!()
    };
    assert_eq!((message.seq, replayed), (3, true));
    client.wait_online().await.unwrap();
    assert_eq!(client.cursors().cursors.get(&conv), Some(&3));
}

#[tokio::test]
async fn outbox_resends_with_the_same_key_after_a_drop() {
    let (connector, mut server) = fake();
    let (client, mut events) = started(connector).await;
    let me = user(1);
    let peer = user(2);
    let conv = ConversationId::direct(me.id, peer.id);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    client.wait_online().await.unwrap();
    let c = client.clone();
    let sending = tokio::spawn(async move { c.send(peer.id, "hello").await });
    let ClientFrame::Send {
        idempotency_key: key1,
        conversation,
        ..
    } = conn.frame().await
    else {
        panic!()
    };
    assert_eq!(conversation, conv);
    // The ack is lost with the connection.
    conn.close(1006);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    let ClientFrame::Send {
        id,
        idempotency_key: key2,
        ..
    } = conn.frame().await
    else {
        panic!()
    };
    assert_eq!(key1, key2, "retried with the same key");
    let stored = msg(&conv, 1, me.id, &key2);
    conn.push(ServerFrame::Sent {
        re: id,
        message: stored.clone(),
        duplicate: false,
    });
    assert_eq!(sending.await.unwrap().unwrap(), stored);
    assert_eq!(
        next_matching(&mut events, |e| matches!(e, Event::Sent(_))).await,
        Event::Sent(stored)
    );
    conn.no_frame(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn replayed_own_message_completes_the_outbox_without_resend() {
    let (connector, mut server) = fake();
    let (client, _events) = started(connector).await;
    let me = user(1);
    let peer = user(2);
    let conv = ConversationId::direct(me.id, peer.id);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    client.wait_online().await.unwrap();
    let c = client.clone();
    let to = conv.clone();
    let sending = tokio::spawn(async move { c.send(&to, "hello").await });
    let ClientFrame::Send {
        idempotency_key, ..
    } = conn.frame().await
    else {
        panic!()
    };
    conn.close(1001);
    let mut conn = server.accept().await;
    let stored = msg(&conv, 1, me.id, &idempotency_key);
    conn.handshake(&me, vec![stored.clone()]).await;
    assert_eq!(sending.await.unwrap().unwrap(), stored);
    conn.no_frame(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn retryable_errors_retry_and_others_fail() {
    let (connector, mut server) = fake();
    let (client, _events) = started(connector).await;
    let me = user(1);
    let peer = user(2);
    let conv = ConversationId::direct(me.id, peer.id);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    client.wait_online().await.unwrap();

    let c = client.clone();
    let sending = tokio::spawn(async move { c.send(peer.id, "one").await });
    let ClientFrame::Send {
        id,
        idempotency_key: k1,
        ..
    } = conn.frame().await
    else {
        panic!()
    };
    conn.push(ServerFrame::Error(ErrorFrame {
        re: Some(id),
        code: ErrorCode::RateLimited,
        message: "slow down".into(),
        retry_after_ms: Some(20),
    }));
    let ClientFrame::Send {
        id,
        idempotency_key: k2,
        ..
    } = conn.frame().await
    else {
        panic!()
    };
    assert_eq!(k1, k2);
    let stored = msg(&conv, 1, me.id, &k2);
    conn.push(ServerFrame::Sent {
        re: id,
        message: stored.clone(),
        duplicate: false,
    });
    assert_eq!(sending.await.unwrap().unwrap(), stored);

    let c = client.clone();
    let sending = tokio::spawn(async move { c.send(peer.id, "two").await });
    let ClientFrame::Send { id, .. } = conn.frame().await else {
        panic!()
    };
    conn.push(ServerFrame::Error(ErrorFrame::new(
        Some(id),
        ErrorCode::NotFriends,
        "you can only message friends",
    )));
    let err = sending.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFriends));
    // Local validation: nothing is sent.
    assert_eq!(
        client.send(peer.id, "   ").await.unwrap_err().code(),
        Some(ErrorCode::EmptyBody)
    );
    conn.no_frame(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn in_flight_friend_ops_fail_but_reads_are_resent() {
    let (connector, mut server) = fake();
    let (client, _events) = started(connector).await;
    let me = user(1);
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    client.wait_online().await.unwrap();
    let c = client.clone();
    let befriending = tokio::spawn(async move { c.request_friend("bob").await });
    let c = client.clone();
    let listing = tokio::spawn(async move { c.friends().await });
    let mut kinds = Vec::new();
    for _ in 0..2 {
        kinds.push(conn.frame().await);
    }
    assert!(
        kinds
            .iter()
            .any(|f| matches!(f, ClientFrame::FriendRequest { .. }))
    );
    conn.close(1006);
    assert_eq!(befriending.await.unwrap(), Err(Error::ConnectionLost));
    let mut conn = server.accept().await;
    conn.handshake(&me, vec![]).await;
    let ClientFrame::FriendsList { id } = conn.frame().await else {
        panic!()
    };
    conn.push(ServerFrame::Friends {
        re: id,
        friends: vec![],
    });
    assert_eq!(listing.await.unwrap(), Ok(vec![]));
}

#[tokio::test]
async fn truncated_conversations_are_paged_in_after_sync() {
    let (connector, mut server) = fake();
    let (client, mut events) = started(connector).await;
    let me = user(1);
    let peer = user(2);
    let conv = ConversationId::direct(me.id, peer.id);
    let mut conn = server.accept().await;
    let ClientFrame::Auth { id, .. } = conn.frame().await else {
        panic!()
    };
    conn.push(ServerFrame::AuthOk {
        re: id.clone(),
        user: me.clone(),
        protocol: 1,
        limits: Limits {
            max_frame_bytes: 65536,
            max_body_bytes: 4096,
            requests_per_second: 100,
            idle_timeout_ms: 60_000,
        },
    });
    // The server replayed up to its bound (seq 1–2) and says the rest is truncated.
    for seq in 1..=2 {
        conn.push(ServerFrame::Push(Push::Message {
            message: msg(&conv, seq, peer.id, "k"),
        }));
    }
    conn.push(ServerFrame::Push(Push::Synced {
        state: SyncState {
            truncated: vec![conv.clone()],
            ..SyncState::default()
        },
    }));
    let ClientFrame::History {
        id, after, before, ..
    } = conn.frame().await
    else {
        panic!()
    };
    assert_eq!((after, before), (Some(2), None));
    conn.push(ServerFrame::History {
        re: id,
        conversation: conv.clone(),
        messages: vec![msg(&conv, 3, peer.id, "k3"), msg(&conv, 4, peer.id, "k4")],
        has_more: false,
    });
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        if let Event::Message { message, replayed } =
            next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await
        {
            assert!(replayed);
            seqs.push(message.seq);
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(client.cursors().cursors.get(&conv), Some(&4));
    conn.no_frame(Duration::from_millis(100)).await;
}

#[test]
fn client_is_a_cheap_shareable_handle() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<Client>();
    fn assert_send<T: Send + 'static>() {}
    assert_send::<EventStream>();
}

/// Item 4: a 4008 ("lagged") close used to reconnect after a fixed 50–75 ms, so a node that
/// dropped its whole population got it back within ~25 ms. Now the delay is full jitter over
/// a window of seconds.
#[tokio::test]
async fn lagged_close_reconnects_with_full_jitter_not_at_once() {
    let mut delays = Vec::new();
    for _ in 0..20 {
        let (connector, mut server) = fake();
        let (client, mut events) = started(connector).await;
        let mut conn = server.accept().await;
        conn.handshake(&user(1), vec![]).await;
        client.wait_online().await.unwrap();
        conn.close(4008);
        let Event::State(ConnectionState::Reconnecting { retry_in, .. }) =
            next_matching(&mut events, |e| {
                matches!(e, Event::State(ConnectionState::Reconnecting { .. }))
            })
            .await
        else {
            unreachable!()
        };
        delays.push(retry_in);
        client.close();
    }
    let max = delays.iter().max().copied().unwrap();
    let min = delays.iter().min().copied().unwrap();
    assert!(max - min > Duration::from_millis(500), "spread: {delays:?}");
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(2)),
        "{delays:?}"
    );
}

/// Item 5: numbers from the network are untrusted: a `retry_after_ms` or
/// `reconnect_after_ms` of u64::MAX neither panics nor stalls the client for ages.
#[tokio::test]
async fn hostile_retry_after_and_reconnect_after_are_clamped() {
    let (connector, mut server) = fake();
    let (client, mut events) = started(connector).await;
    let mut conn = server.accept().await;
    conn.handshake(&user(1), vec![]).await;
    client.wait_online().await.unwrap();
    let item = client.queue(user(2).id, "hi").unwrap();
    let ClientFrame::Send { id, .. } = conn.frame().await else {
        panic!("a send")
    };
    conn.push(ServerFrame::Error(ErrorFrame {
        re: Some(id),
        code: ErrorCode::RateLimited,
        message: "slow down".into(),
        retry_after_ms: Some(u64::MAX),
    }));
    next_matching(&mut events, |e| {
        matches!(e, Event::Outbox(i) if i.key == item.key
            && matches!(i.state, crate::SendState::Failed { will_retry: true, .. }))
    })
    .await;
    // Still alive and answering.
    let ping = tokio::spawn({
        let c = client.clone();
        async move { c.ping().await }
    });
    conn.no_frame(Duration::from_millis(100)).await;
    drop(ping);
    conn.push(ServerFrame::Push(Push::GoingAway {
        reason: "bye".into(),
        reconnect_after_ms: u64::MAX,
    }));
    conn.close(1001);
    let Event::State(ConnectionState::Reconnecting { retry_in, .. }) =
        next_matching(&mut events, |e| {
            matches!(e, Event::State(ConnectionState::Reconnecting { .. }))
        })
        .await
    else {
        unreachable!()
    };
    assert!(retry_in <= Duration::from_secs(600), "{retry_in:?}");
    assert!(!client.state().is_terminal());
}

/// Item 2: the resume in `auth` stays under the frame limit whatever the number of
/// conversations, and the ones left out are paged in after `synced`.
#[tokio::test]
async fn resume_is_bounded_and_the_rest_is_caught_up() {
    let me = user(1);
    let convs: Vec<ConversationId> = (0..3000)
        .map(|_| ConversationId::direct(me.id, UserId::new_random()))
        .collect();
    let resume = zajel_core::protocol::ResumeState {
        cursors: convs.iter().map(|c| (c.clone(), 5)).collect(),
        ..Default::default()
    };
    let (connector, mut server) = fake();
    let (client, mut events) = Client::builder("http://127.0.0.1:9", "zs1.token")
        .backoff(fast())
        .connector(connector)
        .resume_from(resume)
        .start()
        .unwrap();
    let mut conn = server.accept().await;
    let auth = conn.frame().await;
    assert!(auth.encode().len() < 20 * 1024, "{}", auth.encode().len());
    let ClientFrame::Auth {
        id,
        resume: Some(r),
        ..
    } = auth
    else {
        panic!()
    };
    assert_eq!(r.unlisted, zajel_core::protocol::Unlisted::Skip);
    let left_out = convs
        .iter()
        .find(|c| !r.cursors.contains_key(*c))
        .unwrap()
        .clone();
    conn.push(ServerFrame::AuthOk {
        re: id.clone(),
        user: me.clone(),
        protocol: 1,
        limits: Limits {
            max_frame_bytes: 65536,
            max_body_bytes: 4096,
            requests_per_second: 100,
            idle_timeout_ms: 60_000,
        },
    });
    let summary = zajel_core::ConversationSummary {
        conversation: left_out.clone(),
        peer: None,
        last_seq: 6,
        last_message: None,
        unread: 1,
        read_seq: 0,
        peer_read_seq: 0,
    };
    conn.push(ServerFrame::Push(Push::Synced {
        state: SyncState {
            conversations: vec![summary],
            ..SyncState::default()
        },
    }));
    client.wait_online().await.unwrap();
    let ClientFrame::History {
        id,
        conversation,
        after,
        ..
    } = conn.frame().await
    else {
        panic!("a catch-up page")
    };
    assert_eq!((&conversation, after), (&left_out, Some(5)));
    conn.push(ServerFrame::History {
        re: id,
        conversation: left_out.clone(),
        messages: vec![msg(&left_out, 6, user(2).id, "k6")],
        has_more: false,
    });
    let e = next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await;
    assert!(matches!(e, Event::Message { message, replayed: true } if message.seq == 6));
}

/// Storage seam: a burst of messages is a handful of saves (cursor saves are coalesced), the
/// outbox is saved at once, and everything is in the last snapshot when the client stops.
#[tokio::test]
async fn storage_saves_are_coalesced_and_complete_at_stop() {
    #[derive(Clone, Default)]
    struct Counting {
        inner: crate::MemoryStorage,
        saves: Arc<AtomicU32>,
    }
    impl crate::Storage for Counting {
        fn load(&self) -> crate::StorageFuture<Option<crate::Snapshot>> {
            self.inner.load()
        }
        fn save(&self, s: crate::Snapshot) -> crate::StorageFuture<()> {
            self.saves.fetch_add(1, Ordering::SeqCst);
            self.inner.save(s)
        }
    }
    let storage = Counting::default();
    let (connector, mut server) = fake();
    let (client, _events) = Client::builder("http://127.0.0.1:9", "zs1.token")
        .backoff(fast())
        .connector(connector)
        .storage(storage.clone())
        .start()
        .unwrap();
    let mut conn = server.accept().await;
    conn.handshake(&user(1), vec![]).await;
    client.wait_online().await.unwrap();
    let conv = ConversationId::direct(user(1).id, user(2).id);
    for seq in 1..=300 {
        conn.push(ServerFrame::Push(Push::Message {
            message: msg(&conv, seq, user(2).id, &format!("k{seq}")),
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let item = client.queue(user(2).id, "typed").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snap = storage.inner.snapshot().expect("saved");
    assert_eq!(snap.outbox.len(), 1, "the outbox is saved at once");
    assert_eq!(snap.outbox[0].key, item.key);
    assert!(
        storage.saves.load(Ordering::SeqCst) <= 6,
        "{} saves for 300 messages",
        storage.saves.load(Ordering::SeqCst)
    );
    client.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snap = storage.inner.snapshot().expect("saved");
    assert_eq!(snap.cursors.get(&conv), Some(&300));
    assert_eq!(snap.user, Some(user(1).id));
}

/// The contact list cache: a client started on stored state reports the stored view before
/// any connection (`Event::Cached`, `cached_view`); the server's `synced` replaces it, live
/// events keep it current, and it is saved with the snapshot. A stored view of another user
/// is dropped at `auth_ok`.
#[tokio::test]
async fn the_contact_list_cache_is_loaded_then_replaced_by_the_server() {
    use crate::storage::Storage;
    use crate::{CachedView, MemoryStorage, Snapshot};
    use zajel_core::protocol::FriendEntry;
    use zajel_core::{ConversationSummary, FriendReason, Relation};

    let (me, bob, carol) = (user(1), user(2), user(3));
    let entry = |u: &User| FriendEntry {
        user: u.clone(),
        relation: Relation::Friends,
        since: Timestamp(1),
        online: false,
        last_seen: None,
    };
    let summary = |peer: &User, last_seq: u64| ConversationSummary {
        conversation: ConversationId::direct(me.id, peer.id),
        peer: Some(peer.id),
        last_message: None,
        last_seq,
        unread: 0,
        read_seq: last_seq,
        peer_read_seq: 0,
    };
    let stored = CachedView {
        friends: vec![entry(&bob)],
        conversations: vec![summary(&bob, 0)],
    };
    let storage = MemoryStorage::new();
    storage
        .save(Snapshot {
            user: Some(me.id),
            view: stored.clone(),
            ..Snapshot::default()
        })
        .await
        .unwrap();

    let start = |token: &str, connector: Connector| {
        Client::builder("http://127.0.0.1:9", token)
            .backoff(fast())
            .connector(connector)
            .storage(storage.clone())
            .start()
            .unwrap()
    };
    let (connector, mut server) = fake();
    server.refuse.store(1, Ordering::SeqCst);
    let (client, mut events) = start("zs1.token", connector);
    // Before any connection: the stored view.
    let Event::Cached(view) = next_matching(&mut events, |e| matches!(e, Event::Cached(_))).await
    else {
        unreachable!()
    };
    assert_eq!(view, stored);
    assert_eq!(client.cached_view(), stored);

    // The server's lists replace it.
    let mut conn = server.accept().await;
    let auth = conn.frame().await;
    let ClientFrame::Auth { id, .. } = auth else {
        panic!("{auth:?}")
    };
    conn.auth_ok(&id, &me);
    conn.push(ServerFrame::Push(Push::Synced {
        state: SyncState {
            conversations: vec![summary(&carol, 0)],
            friends: vec![entry(&carol)],
            ..SyncState::default()
        },
    }));
    next_matching(&mut events, |e| matches!(e, Event::Synced { .. })).await;
    assert_eq!(client.cached_view().friends, vec![entry(&carol)]);

    // Live events keep it current: bob is back as a friend, carol writes.
    let to_carol = ConversationId::direct(me.id, carol.id);
    conn.push(ServerFrame::Push(Push::Friend {
        user: bob.clone(),
        relation: Relation::Friends,
        reason: FriendReason::Accepted,
        at: Timestamp(9),
    }));
    conn.push(ServerFrame::Push(Push::Message {
        message: msg(&to_carol, 1, carol.id, "c1"),
    }));
    next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await;
    let view = client.cached_view();
    assert_eq!(view.friends.len(), 2);
    assert_eq!(view.conversations[0].last_seq, 1);
    assert_eq!(view.conversations[0].unread, 1);

    // Saved with the snapshot.
    client.close();
    timeout(WAIT, async { while events.next().await.is_some() {} })
        .await
        .unwrap();
    assert_eq!(storage.snapshot().unwrap().view, view);

    // Another account on the same storage never sees it.
    let (connector, mut server) = fake();
    let (client, mut events) = start("zs1.other", connector);
    let mut conn = server.accept().await;
    conn.handshake(&user(4), Vec::new()).await;
    next_matching(&mut events, |e| matches!(e, Event::Synced { .. })).await;
    assert!(client.cached_view().is_empty());
    client.close();
}
