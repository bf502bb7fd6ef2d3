//! The Redis store while Redis is away: calls fail fast with a typed `Unavailable` (and a
//! retry hint), health says so, and everything works again once Redis is back, through the
//! same `RedisStore`. Against a real redis-server that the test kills, restarts, and freezes
//! (SIGSTOP) to simulate a hung server.
use std::future::Future;
use std::time::{Duration, Instant};
use zajel_core::store::redis::RedisOptions;
use zajel_core::testing::RedisServer;
use zajel_core::{
    ConversationId, HistoryQuery, MessageStore, NewMessage, RedisStore, Session, SessionStore,
    Store, StoreError, StoreResult, Timestamp, UserId, UserStore, Username,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Generous: the configured command timeout is 500 ms; this is not a timing benchmark.
const FAST: Duration = Duration::from_secs(2);

fn options() -> RedisOptions {
    RedisOptions {
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
        breaker_cooldown: Duration::from_millis(300),
        ..RedisOptions::default()
    }
}

/// A "hi" from `sender` with idempotency key `key`.
fn msg(conv: &ConversationId, sender: UserId, key: &str) -> NewMessage {
    zajel_core::testing::message(conv, sender, "hi", key)
}

/// Runs `call`, asserting it fails with `Unavailable` within [`FAST`].
async fn fails_fast<T: std::fmt::Debug>(what: &str, call: impl Future<Output = StoreResult<T>>) {
    let started = Instant::now();
    let result = call.await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{what}: {result:?}"
    );
    assert!(took < FAST, "{what} took {took:?}");
}

/// Retries an append until Redis answers again (bounded), like a client's outbox would.
async fn append_when_back(store: &RedisStore, m: NewMessage) -> zajel_core::Appended {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.append(vec![m.clone()]).await.remove(0) {
            Ok(a) => return a,
            Err(e) => {
                assert!(Instant::now() < deadline, "Redis never came back: {e}");
                if let Some(ms) = e.retry_after_ms() {
                    tokio::time::sleep(Duration::from_millis(ms.min(200))).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn setup(server: &RedisServer) -> (RedisStore, UserId, UserId) {
    let store = RedisStore::connect_with(&server.url(), options())
        .await
        .unwrap();
    let a = store
        .create_user(&Username::parse("alice").unwrap(), None, T0)
        .await
        .unwrap();
    let b = store
        .create_user(&Username::parse("bob").unwrap(), None, T0)
        .await
        .unwrap();
    zajel_core::testing::befriend(&store, a.id, b.id).await;
    (store, a.id, b.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_redis_fails_fast_and_recovers() {
    let mut server = RedisServer::start_persistent().unwrap();
    let (store, a, b) = setup(&server).await;
    let conv = ConversationId::direct(a, b);
    let first = store
        .append(vec![msg(&conv, a, "k1")])
        .await
        .remove(0)
        .unwrap();
    assert!(store.health().is_ok());

    server.kill();
    let session = Session {
        user_id: a,
        token_hash: "h".into(),
        created_at: T0,
        expires_at: T0.plus_millis(60_000),
    };
    // The first call discovers the outage; the rest meet the open breaker.
    for round in 0..2 {
        fails_fast("append", async {
            store.append(vec![msg(&conv, b, "k2")]).await.remove(0)
        })
        .await;
        fails_fast("user", store.user(a)).await;
        fails_fast("session", store.session(a, "h", T0)).await;
        fails_fast("create_session", store.create_session(&session)).await;
        fails_fast("history", store.history(&conv, HistoryQuery::default())).await;
        fails_fast("mark_read", store.mark_read(&conv, b, 1)).await;
        fails_fast("conversations", store.conversations(a, 10)).await;
        assert!(!store.health().is_ok(), "round {round}");
    }

    server.restart().unwrap();
    let second = append_when_back(&store, msg(&conv, b, "k2")).await;
    assert!(store.health().is_ok());
    assert_eq!(second.message.seq, 2);
    let all = HistoryQuery {
        before: None,
        after: Some(0),
        limit: 50,
    };
    let page = store.history(&conv, all).await.unwrap();
    let ids: Vec<_> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![first.message.id, second.message.id]);
    store.create_session(&session).await.unwrap();
    assert!(store.session(a, "h", T0).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_times_out_and_recovers() {
    let server = RedisServer::start().unwrap();
    let (store, a, b) = setup(&server).await;
    let conv = ConversationId::direct(a, b);
    store
        .append(vec![msg(&conv, a, "k1")])
        .await
        .remove(0)
        .unwrap();

    // A frozen server accepts nothing and answers nothing: only the timeout can end a call.
    server.signal("STOP").unwrap();
    fails_fast("append", async {
        store.append(vec![msg(&conv, b, "k2")]).await.remove(0)
    })
    .await;
    // While the breaker is open, calls do not even wait for the timeout.
    let started = Instant::now();
    let e = store.user(a).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(250), "{e}");
    assert!(matches!(e.retry_after_ms(), Some(ms) if ms > 0), "{e:?}");
    assert!(!store.health().is_ok());

    server.signal("CONT").unwrap();
    // The timed-out append may or may not have run; its retry with the same key is safe.
    let again = append_when_back(&store, msg(&conv, b, "k2")).await;
    assert_eq!(again.message.seq, 2);
    assert!(store.health().is_ok());
    assert_eq!(store.last_seq(&conv).await.unwrap(), 2);
    assert_eq!(store.user(a).await.unwrap().unwrap().id, a);
}
