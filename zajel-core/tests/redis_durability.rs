//! Durability of the Redis store: with the append-only file on, everything acknowledged
//! survives a SIGKILL of redis-server, and the same `RedisStore` keeps working afterwards
//! (the connection manager reconnects; scripts are reloaded after `NOSCRIPT`).

use zajel_core::friends::{Edge, FriendGraph, FriendOp, UserPair};
use zajel_core::store::IdentityStore;
use zajel_core::testing::RedisServer;
use zajel_core::{
    ConversationId, ExternalIdentity, FriendStore, HistoryQuery, MessageStore, RedisStore,
    Relation, Session, SessionStore, Timestamp, UserStore, Username,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

use zajel_core::testing::message as msg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_redis_kill() {
    let mut server = RedisServer::start_persistent().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.unwrap();

    let alice = store
        .create_user(&Username::parse("alice").unwrap(), Some("$argon2id$a"), T0)
        .await
        .unwrap();
    let bob = store
        .create_user(&Username::parse("bob").unwrap(), None, T0)
        .await
        .unwrap();
    store.set_last_seen(bob.id, Timestamp(42)).await.unwrap();
    let idp = ExternalIdentity::oidc("https://idp", "sub-1").unwrap();
    store.link_external(&idp, alice.id, T0).await.unwrap();
    let session = Session {
        user_id: alice.id,
        token_hash: "hash".into(),
        created_at: T0,
        expires_at: T0.plus_millis(60_000),
    };
    store.create_session(&session).await.unwrap();
    let graph = FriendGraph::new(&store);
    graph
        .apply(alice.id, bob.id, FriendOp::Request, T0)
        .await
        .unwrap();
    graph
        .apply(bob.id, alice.id, FriendOp::Accept, T0)
        .await
        .unwrap();
    let pair = UserPair::new(alice.id, bob.id).unwrap();
    let edge: Edge = store.edge(pair).await.unwrap();
    let conv = ConversationId::direct(alice.id, bob.id);
    let batch: Vec<_> = (1..=20)
        .map(|i| {
            let sender = if i % 2 == 0 { bob.id } else { alice.id };
            msg(&conv, sender, &format!("m{i}"), &format!("k{i}"))
        })
        .collect();
    let acked: Vec<_> = store
        .append(batch)
        .await
        .into_iter()
        .map(|r| r.unwrap().message)
        .collect();
    store.mark_read(&conv, alice.id, 20).await.unwrap();
    let before_list = store.conversations(bob.id, 10).await.unwrap();

    server.restart().expect("restart redis-server");

    // The first call after the kill may need the connection manager to reconnect; the store
    // retries once on a dropped connection, so the reads below succeed straight away.
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
        .unwrap();
    assert_eq!(page.messages, acked);
    assert_eq!(store.last_seq(&conv).await.unwrap(), 20);
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store
            .user_by_username(&Username::parse("BOB").unwrap())
            .await
            .unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.password_hash(alice.id).await.unwrap().as_deref(),
        Some("$argon2id$a")
    );
    assert_eq!(store.last_seen(bob.id).await.unwrap(), Some(Timestamp(42)));
    assert_eq!(store.external_user(&idp).await.unwrap(), Some(alice.id));
    assert_eq!(
        store.session(alice.id, "hash", T0).await.unwrap(),
        Some(session)
    );
    assert_eq!(store.edge(pair).await.unwrap(), edge);
    assert!(edge.are_friends());
    let rel = store.relations(alice.id).await.unwrap();
    assert_eq!((rel[0].peer, rel[0].relation), (bob.id, Relation::Friends));
    assert_eq!(store.conversations(bob.id, 10).await.unwrap(), before_list);

    // Writes keep working: the restarted server has an empty script cache (NOSCRIPT), so the
    // store reloads its scripts; idempotency records survived too.
    let more = store
        .append(vec![
            msg(&conv, alice.id, "after restart", "k21"),
            msg(&conv, alice.id, "retry of m1", "k1"),
        ])
        .await;
    let more: Vec<_> = more
        .into_iter()
        .map(|r| r.map(|a| (a.message.seq, a.duplicate)))
        .collect();
    assert_eq!(more, vec![Ok((21, false)), Ok((1, true))]);
    let mark = store.mark_read(&conv, bob.id, 21).await.unwrap();
    assert!(mark.changed);
    graph
        .apply(alice.id, bob.id, FriendOp::Remove, Timestamp(7))
        .await
        .unwrap();
    assert!(store.relations(bob.id).await.unwrap().is_empty());
    // Friends again (messages are only stored between friends): a request and an accept.
    graph
        .apply(bob.id, alice.id, FriendOp::Request, Timestamp(8))
        .await
        .unwrap();
    graph
        .apply(alice.id, bob.id, FriendOp::Accept, Timestamp(9))
        .await
        .unwrap();

    // And those post-restart writes are durable as well. This time the first call after the
    // kill is a write: it meets the dropped connection and then NOSCRIPT, in one call.
    server.restart().expect("second restart");
    let r = store
        .append(vec![msg(&conv, bob.id, "first call after restart", "k22")])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!((r.message.seq, r.duplicate), (22, false));
    let list = store.conversations(bob.id, 10).await.unwrap();
    assert_eq!(
        (list[0].last_seq, list[0].read_seq, list[0].unread),
        (22, 22, 0)
    );
    assert_eq!(list[0].peer_read_seq, 21, "alice sent 21");
    let edge = store.edge(pair).await.unwrap();
    assert!(edge.are_friends());
    assert_eq!(
        edge.since,
        Timestamp(9),
        "the post-restart friend changes survived"
    );
}

/// The harness: a restart whose port was taken meanwhile fails at once with redis-server's
/// own reason (not after polling a dead process for 10 s), so a CI failure there says why.
#[test]
fn a_restart_onto_a_taken_port_fails_at_once_naming_the_cause() {
    let mut server = RedisServer::start_persistent().expect("redis-server");
    server.kill();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", server.port())).expect("bind");
    let started = std::time::Instant::now();
    let e = server.restart().expect_err("the port is taken").to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");
    assert!(e.contains("exited"), "{e}");
    assert!(e.to_lowercase().contains("address already in use"), "{e}");
}
