//! The echo bot binary behind TLS: it signs in over `https://` and connects over `wss://` to
//! a loopback TLS endpoint (an rcgen certificate passed with `--ca-file`) in front of the real
//! server.

use std::time::Duration;
use tokio::time::timeout;
use zajel_client::{Client, Event, Push, Relation};
use zajel_test_support::{LoopbackServer, TlsProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_over_wss() {
    let server = LoopbackServer::memory().await;
    let plain_url = server.url();
    let TlsProxy {
        addr: tls_addr,
        ca_pem: pem,
    } = TlsProxy::start(server.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write ca");

    let mut bot = tokio::process::Command::new(env!("CARGO_BIN_EXE_example-echo-bot"))
        .args([
            "--server",
            &format!("https://{tls_addr}"),
            "--username",
            "echo",
        ])
        .arg("--ca-file")
        .arg(&ca)
        .env("ECHO_BOT_PASSWORD", "echo-password")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the bot");

    // The test user talks to the server directly; only the bot goes through TLS.
    let me = Client::register(&plain_url, "erin", "password-123")
        .await
        .expect("register");
    let (erin, mut events) = Client::connect(plain_url.as_str(), me.token)
        .await
        .expect("connect");
    // The bot registers itself once it is up.
    let wait = Duration::from_secs(30);
    let echo = timeout(wait, async {
        loop {
            match erin.request_friend("echo").await {
                Ok(s) => break s.user,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the bot signs up over https");
    timeout(wait, async {
        loop {
            if let Some(Event::Server(Push::Friend {
                relation: Relation::Friends,
                ..
            })) = events.next().await
            {
                break;
            }
        }
    })
    .await
    .expect("the bot accepts over wss");
    let sent = erin.send(echo.id, "hello through tls").await.expect("send");
    let reply = timeout(wait, async {
        loop {
            if let Some(Event::Message { message, .. }) = events.next().await {
                break message;
            }
        }
    })
    .await
    .expect("the bot answers");
    assert_eq!(reply.body, "echo: hello through tls");
    assert_eq!(reply.seq, sent.seq + 1);
    assert!(
        bot.try_wait().expect("status").is_none(),
        "the bot is still running"
    );
    let _ = bot.kill().await;
}
