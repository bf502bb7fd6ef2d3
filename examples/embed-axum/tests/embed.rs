//! Runs the example app and uses both its own route and Zajel's HTTP + WebSocket endpoints.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use zajel_server::ServerConfig;

async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_with(addr, method, path, body, "").await;
    (status, body)
}

/// Like [`http`], with extra header lines; also returns the response head.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
    (status, head.to_owned(), body.to_owned())
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
        Some(r#"{"username":"carol","password":"correct horse battery"}"#),
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
    assert_eq!(ok["user"]["username"], "carol");

    // Graceful shutdown reaches the WebSocket through the app's own server loop.
    stop.send(()).expect("stop");
    assert_eq!(next_json(&mut ws).await["type"], "going_away");
    // Then the close (1001), answered as a client does: the server's teardown does not wait
    // out its linger for the echo.
    match ws.next().await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected the close, got {other:?}"),
    }
    ws.flush().await.expect("close echo");
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve ok");
}

/// The cookie `name` from a response head's Set-Cookie lines.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The app's own user signs in to the app, trades the app's session for a Zajel session, and
/// chats with another app user the app made a friend through the engine API.
async fn app_sign_in(addr: SocketAddr, user: &str, password: &str) -> String {
    let (status, head, body) = http_with(
        addr,
        "POST",
        "/login",
        Some(&json!({"username": user, "password": password}).to_string()),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sid = set_cookie(&head, "app_session").expect("app cookie");
    let (status, _, body) = http_with(
        addr,
        "POST",
        "/api/auth/app",
        None,
        &format!("Cookie: app_session={sid}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["user"]["username"], user);
    v["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_own_users_chat_without_zajel_passwords() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let engine = example_embed_axum::engine(ServerConfig::default());
    tokio::spawn(example_embed_axum::run(
        listener,
        engine.clone(),
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Without the app's session there is no Zajel session.
    let (status, _, _) = http_with(addr, "POST", "/api/auth/app", None, "").await;
    assert_eq!(status, 401);
    let (status, _, _) = http_with(
        addr,
        "POST",
        "/api/auth/app",
        None,
        "Cookie: app_session=forged\r\n",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = http_with(
        addr,
        "POST",
        "/login",
        Some(r#"{"username":"alice","password":"wrong"}"#),
        "",
    )
    .await;
    assert_eq!(status, 401);

    let alice = app_sign_in(addr, "alice", "wonderland").await;
    let bob = app_sign_in(addr, "bob", "builder").await;
    // The app's users have no Zajel password: Zajel's own login cannot open them.
    let (status, _) = http(
        addr,
        "POST",
        "/api/login",
        Some(r#"{"username":"alice","password":"wonderland"}"#),
    )
    .await;
    assert_eq!(status, 401);

    let connect = |token: String| async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("ws");
        let auth = json!({"type": "auth", "id": "a", "protocol": 1, "token": token});
        ws.send(Message::Text(auth.to_string().into()))
            .await
            .expect("send");
        let ok = next_json(&mut ws).await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        (ws, ok)
    };
    let (mut a, a_ok) = connect(alice).await;
    let (mut b, b_ok) = connect(bob).await;
    let a_id: zajel_server::zajel_core::UserId = a_ok["user"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let b_id: zajel_server::zajel_core::UserId = b_ok["user"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let conversation = zajel_server::zajel_core::ConversationId::direct(a_id, b_id).to_string();
    // The app's welcome notice opens the conversation, marked as a system message; seeding
    // again (a restart) does not repeat it.
    example_embed_axum::seed(&engine).await.expect("seed again");
    let history = json!({"type": "history", "id": "h1", "conversation": conversation});
    a.send(Message::Text(history.to_string().into()))
        .await
        .expect("send");
    let page = loop {
        let f = next_json(&mut a).await;
        if f["re"] == "h1" {
            break f;
        }
    };
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{page}");
    assert_eq!(
        (
            &messages[0]["kind"],
            &messages[0]["body"],
            &messages[0]["sender"]
        ),
        (
            &json!("system"),
            &json!(example_embed_axum::WELCOME),
            &json!(zajel_server::zajel_core::UserId::SYSTEM)
        )
    );
    let send = json!({"type": "send", "id": "s1", "conversation": conversation,
        "body": "hi bob, from the app", "idempotency_key": "k1"});
    a.send(Message::Text(send.to_string().into()))
        .await
        .expect("send");
    loop {
        let f = next_json(&mut a).await;
        if f["type"] == "sent" {
            break;
        }
        assert_ne!(f["type"], "error", "{f}");
    }
    loop {
        let f = next_json(&mut b).await;
        if f["type"] == "message" && f["message"]["kind"] == "system" {
            // The repeat of the welcome republishes it (same seq; clients de-duplicate).
            assert_eq!(f["message"]["seq"], 1, "{f}");
            continue;
        }
        if f["type"] == "message" {
            assert_eq!(f["message"]["body"], "hi bob, from the app");
            assert_eq!(f["message"]["seq"], 2, "after the welcome notice");
            assert!(f["message"].get("kind").is_none(), "{f}");
            break;
        }
    }
}
