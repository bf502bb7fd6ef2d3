//! Runs the example app and uses both its own route and Zajel's HTTP + WebSocket endpoints.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use zajel_server::ServerConfig;

async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("json");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_routes_and_zajel_work_side_by_side() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let engine = example_embed_axum::engine(ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        ..ServerConfig::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(example_embed_axum::run(listener, engine, async move {
        let _ = stopped.await;
    }));

    let (status, body) = http(addr, "GET", "/hello", None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from my app (visit 1)")
    );

    let (status, body) = http(
        addr,
        "POST",
        "/api/register",
        Some(r#"{"username":"alice","password":"correct horse battery"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let reg: Value = serde_json::from_str(&body).expect("json");
    let token = reg["token"].as_str().expect("token");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("ws");
    let auth = json!({"type": "auth", "id": "1", "protocol": 1, "token": token});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .expect("send");
    let ok = next_json(&mut ws).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["user"]["username"], "alice");

    // Graceful shutdown reaches the WebSocket through the app's own server loop.
    stop.send(()).expect("stop");
    assert_eq!(next_json(&mut ws).await["type"], "going_away");
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve ok");
}
