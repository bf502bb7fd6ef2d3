//! Unit tests against a throwaway redis-server: damaged data is `Corrupt` (never a panic),
//! prefixes isolate, and an emptied script cache is reloaded transparently.

use super::*;
use crate::friends::Link;
use crate::limits::{Body, IdempotencyKey};
use crate::testing::RedisServer;

const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn setup() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    (store, server)
}

async fn raw(store: &RedisStore, cmd: &Cmd) {
    store.query(cmd).await.expect("raw command");
}

fn msg(conv: &ConversationId, sender: UserId, key: &str) -> NewMessage {
    NewMessage {
        conversation: conv.clone(),
        sender,
        body: Body::parse("hi").unwrap(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        sent_at: T0,
    }
}

fn is_corrupt<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

#[tokio::test]
async fn garbage_edge_is_corrupt() {
    let (store, _server) = setup().await;
    let pair = UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
    raw(
        &store,
        ::redis::cmd("SET")
            .arg(store.keys.edge(pair))
            .arg("{not json"),
    )
    .await;
    assert!(is_corrupt(store.edge(pair).await));
    let new = Edge {
        link: Link::RequestedByLo,
        ..Edge::default()
    };
    assert!(is_corrupt(
        store.swap_edge(pair, Edge::default(), new).await
    ));
    // The failed swap changed nothing.
    assert!(store.relations(pair.lo).await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_records_are_corrupt() {
    let (store, _server) = setup().await;
    let u = UserId::new_random();
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.relations(u))
            .arg("x")
            .arg("[1,2"),
    )
    .await;
    assert!(is_corrupt(store.relations(u).await));
    // A user hash without its name.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(u))
            .arg("pw")
            .arg("x"),
    )
    .await;
    assert!(is_corrupt(store.user(u).await));
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(u))
            .arg("last_seen")
            .arg("yesterday"),
    )
    .await;
    assert!(is_corrupt(store.last_seen(u).await));
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.sessions(u))
            .arg("h")
            .arg("nope"),
    )
    .await;
    assert!(is_corrupt(store.session(u, "h", T0).await));
    // A key of the wrong type.
    raw(
        &store,
        ::redis::cmd("SET").arg(store.keys.sessions(u)).arg("x"),
    )
    .await;
    assert!(is_corrupt(store.session(u, "h", T0).await));
    // A username claim pointing at no user.
    let name = Username::parse("ghost").unwrap();
    raw(
        &store,
        ::redis::cmd("SET")
            .arg(store.keys.username("ghost"))
            .arg("not-a-uuid"),
    )
    .await;
    assert!(is_corrupt(store.user_by_username(&name).await));
}

#[tokio::test]
async fn damaged_log_is_corrupt() {
    let (store, _server) = setup().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    let conv = ConversationId::direct(a, b);
    for k in ["1", "2"] {
        store.append(vec![msg(&conv, a, k)]).await[0]
            .as_ref()
            .unwrap();
    }
    // Claim a third message that the log does not have.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(store.keys.meta(&conv))
            .arg("seq")
            .arg(3),
    )
    .await;
    assert!(is_corrupt(
        store.history(&conv, HistoryQuery::default()).await
    ));
    // An entry with a broken sender.
    raw(
        &store,
        ::redis::cmd("XADD")
            .arg(store.keys.log(&conv))
            .arg("3-0")
            .arg("id")
            .arg("x")
            .arg("sender")
            .arg("y"),
    )
    .await;
    assert!(is_corrupt(store.conversations(a, 10).await));
    // A repeat whose idempotency record points at nothing.
    raw(
        &store,
        ::redis::cmd("HSET")
            .arg(
                store
                    .keys
                    .idempotency(&conv, T0.0 as u64 / DEFAULT_DEDUPE_WINDOW_MS),
            )
            .arg(format!("{a}:gone"))
            .arg(99),
    )
    .await;
    assert!(is_corrupt(
        store.append(vec![msg(&conv, a, "gone")]).await.remove(0)
    ));
}

#[tokio::test]
async fn prefixes_isolate_and_are_validated() {
    let (store, server) = setup().await;
    let other = RedisStore::connect_with_prefix(&server.url(), "other")
        .await
        .unwrap();
    let name = Username::parse("alice").unwrap();
    store.create_user(&name, None, T0).await.unwrap();
    assert_eq!(other.user_by_username(&name).await.unwrap(), None);
    other.create_user(&name, None, T0).await.unwrap();
    assert!(matches!(
        RedisStore::connect_with_prefix(&server.url(), "a{b}").await,
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn scripts_reload_after_cache_flush() {
    let (store, _server) = setup().await;
    let (a, b) = (UserId::new_random(), UserId::new_random());
    let conv = ConversationId::direct(a, b);
    store.append(vec![msg(&conv, a, "1")]).await[0]
        .as_ref()
        .unwrap();
    raw(&store, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
    let batch = vec![msg(&conv, a, "2"), msg(&conv, b, "3"), msg(&conv, a, "1")];
    let r: Vec<_> = store
        .append(batch)
        .await
        .into_iter()
        .map(|r| r.map(|x| (x.message.seq, x.duplicate)))
        .collect();
    assert_eq!(r, vec![Ok((2, false)), Ok((3, false)), Ok((1, true))]);
    raw(&store, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
    assert_eq!(store.mark_read(&conv, b, 3).await.unwrap().seq, 3);
}
