//! Item 7: `https://` and `wss://` from the native client (rustls), against a TLS endpoint on
//! loopback (a certificate made by rcgen, terminating in front of the real server, the way
//! `docs/server.md` recommends deploying it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zajel_client::{Client, ConnectionState, Event};
use zajel_server::{Engine, ServerConfig};

/// A TLS terminator on loopback forwarding to `backend`; returns its address and the
/// certificate (PEM) clients must trust.
async fn tls_proxy(backend: SocketAddr) -> (SocketAddr, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
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
async fn https_and_wss_through_a_tls_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
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
    let url = format!("https://{tls_addr}");

    // Not trusted yet: the handshake fails with a transport error, nothing is sent in clear.
    let err = Client::register(&url, "alice", "password-123")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("TLS handshake"),
        "untrusted certificate must fail: {err}"
    );
    assert!(zajel_client::add_root_certificates_pem("not a certificate").is_err());

    assert_eq!(zajel_client::add_root_certificates_pem(&pem).unwrap(), 1);
    let alice = Client::register(&url, "alice", "password-123")
        .await
        .expect("https register");
    let bob = Client::register(&url, "bob", "password-123")
        .await
        .expect("https register");
    let (ca, _ea) = Client::connect(url.as_str(), alice.token.clone())
        .await
        .expect("wss connect");
    let (cb, mut eb) = Client::connect(format!("wss://{tls_addr}/ws"), bob.token.clone())
        .await
        .expect("wss connect");
    assert_eq!(ca.state(), ConnectionState::Online);
    ca.request_friend("bob").await.expect("request");
    cb.accept_friend(alice.user.id).await.expect("accept");
    ca.send(bob.user.id, "over tls").await.expect("send");
    let got = timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Message { message, .. }) = eb.next().await {
                return message;
            }
        }
    })
    .await
    .expect("message over wss");
    assert_eq!(got.body, "over tls");
    assert_eq!(
        Client::whoami(&url, &alice.token).await.expect("me").id,
        alice.user.id
    );
}
