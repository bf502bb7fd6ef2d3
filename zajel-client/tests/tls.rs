//! Item 7: `https://` and `wss://` from the native client (rustls), against a TLS endpoint on
//! loopback (a certificate made by rcgen, terminating in front of the real server, the way
//! `docs/server.md` recommends deploying it).

use std::time::Duration;
use tokio::time::timeout;
use zajel_client::{Client, ConnectionState, Event};
use zajel_test_support::{LoopbackServer, TlsProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_through_a_tls_endpoint() {
    let server = LoopbackServer::memory().await;
    let TlsProxy {
        addr: tls_addr,
        ca_pem: pem,
    } = TlsProxy::start(server.addr).await;
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
