//! A client that stops reading is closed with 4008 ("lagged") once its queue overflows, other
//! clients are unaffected, and it resumes from its cursor without losing or doubling anything.

mod common;

use common::*;
use serde_json::json;
use zajel_server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_client_is_closed_4008_and_resumes_without_loss() {
    let server = TestServer::memory_with(ServerConfig {
        queue_capacity: 4,
        ..bulk_config()
    })
    .await;
    let addr = server.addr;
    let Pair {
        alice,
        bob,
        mut a,
        mut b,
        conv,
    } = alice_and_bob(addr).await;
    let (mut a2, _) = Client::login(addr, &alice).await;

    // bob stops reading; alice sends far more than the socket buffers hold.
    let body = "x".repeat(16 * 1024);
    let total: u64 = 1200;
    for i in 1..=total {
        let ack = a.send_message(&conv, &body, &format!("k{i}")).await;
        assert_eq!(ack["message"]["seq"], i);
        // Alice's other device keeps reading and keeps up.
        assert_eq!(a2.expect("message").await["message"]["seq"], i);
    }

    // bob reads what was delivered, then the 4008 close.
    let (code, frames) = b.expect_close().await;
    assert_eq!(code, 4008);
    // Told when to come back: alone in its wave, at once (the spread grows with the wave).
    let away = frames.last().expect("frames before the close");
    assert_eq!(away["type"], "going_away", "{away}");
    assert!(
        away["reconnect_after_ms"].as_u64().expect("number") <= 10,
        "{away}"
    );
    let got: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        (got.len() as u64) < total,
        "bob lagged, so not everything arrived live"
    );
    // What did arrive is in order without gaps.
    assert!(got.iter().copied().eq(1..=got.len() as u64), "{got:?}");
    let cursor = got.len() as u64;

    // Resume: the rest, exactly once, in order.
    let mut b2 = Client::connect(addr, "bob-2").await;
    let ok = b2
        .auth(&bob.token, Some(json!({"cursors": {conv.clone(): cursor}})))
        .await;
    assert_eq!(ok["type"], "auth_ok");
    let replayed = (total - cursor).min(1000);
    for seq in cursor + 1..=cursor + replayed {
        assert_eq!(b2.expect("message").await["message"]["seq"], seq);
    }
    let synced = b2.expect("synced").await;
    if cursor + replayed < total {
        // Over the replay bound: listed as truncated, the client pages the rest.
        assert_eq!(synced["truncated"], json!([conv]));
        let h = b2
            .history(&conv, json!({"after": cursor + replayed, "limit": 200}))
            .await;
        assert_eq!(seqs(&h).last().copied(), Some(total));
    } else {
        assert_eq!(synced["truncated"], json!([]));
    }
    b2.expect_silence(100).await;
    a.assert_alive().await;
    server.stop_with([a, a2, b2]).await;
}
