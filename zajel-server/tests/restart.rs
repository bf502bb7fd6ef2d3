//! Server restarts: the real binary is stopped (SIGTERM, exit 0) and started again on the same
//! data; history is intact and a client resumes from its cursor.

mod common;

use common::*;
use serde_json::json;

/// Registers two friends, exchanges messages, restarts the server with `args`, and checks
/// that sessions, history and resume survived.
fn restart_keeps_everything(args: Vec<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = Binary::start(&args);
    let addr = bin.addr;
    let (alice, bob, conv) = rt.block_on(async {
        let mut p = alice_and_bob(addr).await;
        p.a.send_message(&p.conv, "one", "k1").await;
        p.b.expect("message").await;
        p.b.close().await;
        // bob is away: two more.
        p.a.send_message(&p.conv, "two", "k2").await;
        p.a.send_message(&p.conv, "three", "k3").await;
        p.a.close().await;
        (p.alice, p.bob, p.conv)
    });
    assert_eq!(bin.terminate(), Some(0));

    let bin = Binary::start(&args);
    let addr = bin.addr;
    rt.block_on(async {
        // The old tokens still work; bob resumes from seq 1 and gets exactly 2 and 3.
        let mut b = Client::connect(addr, "bob").await;
        let ok = b
            .auth(&bob.token, Some(json!({"cursors": {conv.clone(): 1}})))
            .await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        for (seq, body) in [(2, "two"), (3, "three")] {
            let m = b.expect("message").await;
            assert_eq!(m["message"]["seq"], seq);
            assert_eq!(m["message"]["body"], body);
        }
        let synced = b.expect("synced").await;
        assert_eq!(synced["friends"][0]["relation"], "friends");
        let h = b.history(&conv, json!({})).await;
        assert_eq!(seqs(&h), vec![1, 2, 3]);
        // An idempotent retry after the restart is still recognized.
        let (mut a, _) = Client::login(addr, &alice).await;
        let again = a.send_message(&conv, "three", "k3").await;
        assert_eq!(
            (
                again["duplicate"].as_bool(),
                again["message"]["seq"].as_u64()
            ),
            (Some(true), Some(3))
        );
        let ack = a.send_message(&conv, "four", "k4").await;
        assert_eq!(ack["message"]["seq"], 4);
        assert_eq!(b.expect("message").await["message"]["seq"], 4);
    });
    assert_eq!(bin.terminate(), Some(0));
}

#[test]
fn restart_with_embedded_store_keeps_history_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    restart_keeps_everything(vec![
        "--data-dir".into(),
        data.to_str().expect("utf-8").into(),
    ]);
}

#[test]
fn restart_with_redis_keeps_history_and_resumes() {
    let redis = zajel_core::testing::RedisServer::start_persistent().expect("redis-server");
    restart_keeps_everything(vec!["--redis-url".into(), redis.url()]);
}

#[test]
fn restart_of_redis_itself_loses_nothing_acknowledged() {
    // The zajel-server keeps running while Redis restarts (AOF, fsync always): what was
    // acknowledged before is still there, and the server reconnects for new writes.
    let mut redis = zajel_core::testing::RedisServer::start_persistent().expect("redis-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bin = Binary::start(&["--redis-url", &redis.url()]);
    let addr = bin.addr;
    let (alice, bob, conv) = rt.block_on(async {
        let mut p = alice_and_bob(addr).await;
        p.a.send_message(&p.conv, "one", "k1").await;
        p.a.close().await;
        p.b.close().await;
        (p.alice, p.bob, p.conv)
    });
    redis.restart().expect("redis restart");
    rt.block_on(async {
        let (mut b, _) = Client::login(addr, &bob).await;
        let h = b.history(&conv, json!({})).await;
        assert_eq!(seqs(&h), vec![1], "{h}");
        let (mut a, _) = Client::login(addr, &alice).await;
        let ack = a.send_message(&conv, "two", "k2").await;
        assert_eq!(ack["message"]["seq"], 2);
        assert_eq!(b.expect("message").await["message"]["seq"], 2);
    });
    assert_eq!(bin.terminate(), Some(0));
}
