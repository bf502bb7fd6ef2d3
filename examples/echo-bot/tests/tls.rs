//! The echo bot binary behind TLS: it signs in over `https://` and connects over `wss://` to
//! a loopback TLS endpoint (an rcgen certificate passed with `--ca-file`) in front of the real
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zajel_client::{Client, Event, Push, Relation};
use zajel_server::{Engine, ServerConfig};

async fn tls_proxy(backend: SocketAddr) -> (SocketAddr, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
    let pem = cert.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_over_wss() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    let plain_url = format!("http://{backend}");
    let cfg = ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        ..ServerConfig::default()
    };
    let engine = Engine::new(Arc::new(zajel_core::MemoryStore::new()), cfg);
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(zajel_server::serve(listener, engine, async move {
        let _ = stopped.await;
    }));
    let (tls_addr, pem) = tls_proxy(backend).await;
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
