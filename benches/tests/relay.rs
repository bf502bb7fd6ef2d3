//! The bare relay answers bad input with error frames and keeps the connection; it only relays
//! between friends; an unauthenticated socket gets nothing.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use zajel_benches::relay::{RelayStore, start};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn register(host: &str, name: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    let body = json!({"username": name, "password": "x"}).to_string();
    let req = format!(
        "POST /api/register HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 201"), "{raw}");
    let (_, body) = raw.split_once("\r\n\r\n").expect("body");
    serde_json::from_str(body).expect("json")
}

async fn connect(host: &str) -> Ws {
    let mut req = format!("ws://{host}/ws")
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("zajel.v1"),
    );
    tokio_tungstenite::connect_async(req).await.expect("ws").0
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("json");
        }
    }
}

async fn say(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
    next(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_error_frames_and_only_friends_are_relayed() {
    let relay = start(RelayStore::Redb, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("relay");
    let host = relay.addr.to_string();
    let a = register(&host, "alice").await;
    let b = register(&host, "bob").await;
    let conv = zajel_core::ConversationId::direct(
        a["user"]["id"].as_str().expect("id").parse().expect("uuid"),
        b["user"]["id"].as_str().expect("id").parse().expect("uuid"),
    )
    .to_string();

    // No auth: refused, and the socket is closed.
    let mut anon = connect(&host).await;
    let r = say(
        &mut anon,
        json!({"type": "send", "id": "1", "conversation": conv, "body": "x"}),
    )
    .await;
    assert_eq!(r["code"], "unauthorized", "{r}");
    let closed = tokio::time::timeout(Duration::from_secs(10), anon.next())
        .await
        .expect("closed in time");
    assert!(
        matches!(closed, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{closed:?}"
    );
    let mut forged = connect(&host).await;
    let r = say(
        &mut forged,
        json!({"type": "auth", "id": "2", "token": "forged"}),
    )
    .await;
    assert_eq!(r["code"], "unauthorized", "{r}");

    let mut wa = connect(&host).await;
    let ok = say(
        &mut wa,
        json!({"type": "auth", "id": "a", "token": a["token"]}),
    )
    .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let mut wb = connect(&host).await;
    let ok = say(
        &mut wb,
        json!({"type": "auth", "id": "b", "token": b["token"]}),
    )
    .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");

    // Garbage, unknown frames, foreign conversations: error frames, connection kept.
    ws_text(&mut wa, "{not json").await;
    assert_eq!(next(&mut wa).await["code"], "bad_frame");
    let r = say(&mut wa, json!({"type": "nope", "id": "3"})).await;
    assert_eq!(r["code"], "bad_frame", "{r}");
    let r = say(
        &mut wa,
        json!({"type": "send", "id": "4", "conversation": "dm.x.y", "body": "x"}),
    )
    .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let other = zajel_core::ConversationId::direct(
        zajel_core::UserId::new_random(),
        zajel_core::UserId::new_random(),
    );
    let r = say(
        &mut wa,
        json!({"type": "send", "id": "5", "conversation": other.to_string(), "body": "x"}),
    )
    .await;
    assert_eq!(r["code"], "not_member", "{r}");
    // Not friends yet: refused, nothing stored or relayed.
    let r = say(
        &mut wa,
        json!({"type": "send", "id": "6", "conversation": conv, "body": "early"}),
    )
    .await;
    assert_eq!(r["code"], "not_friends", "{r}");

    let r = say(
        &mut wa,
        json!({"type": "friend_request", "id": "7", "username": "bob"}),
    )
    .await;
    assert_eq!(r["relation"], "request_sent", "{r}");
    let r = say(
        &mut wb,
        json!({"type": "friend_request", "id": "8", "username": "alice"}),
    )
    .await;
    assert_eq!(r["relation"], "friends", "{r}");

    let r = say(
        &mut wa,
        json!({"type": "send", "id": "9", "conversation": conv, "body": "hi \"bob\""}),
    )
    .await;
    assert_eq!(r["type"], "sent", "{r}");
    assert_eq!(r["re"], "9");
    assert_eq!(r["message"]["seq"], 1, "the refused send took no seq: {r}");
    let m = next(&mut wb).await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["message"]["body"], "hi \"bob\"");
    assert_eq!(m["message"]["seq"], 1);
    let r = say(&mut wa, json!({"type": "ping", "id": "10"})).await;
    assert_eq!(r["type"], "pong", "{r}");

    drop((wa, wb, anon, forged));
    relay.stop().await.expect("stop");
}

async fn ws_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}
