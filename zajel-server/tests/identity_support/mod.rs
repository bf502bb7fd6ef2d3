//! Identity test helpers: a browser-like HTTP client (manual redirects, a cookie jar per
//! host), the real OpenID Connect provider (npm `oidc-provider`) as a child process, and a
//! Zajel server with OIDC sign-in on a free loopback port.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use zajel_server::identity::oidc::{OidcConfig, OidcProvider, OidcSignIn};
use zajel_server::{Engine, ServerConfig};

/// A response as a browser sees it.
#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// All Set-Cookie values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A minimal browser: follows nothing by itself, keeps cookies per host:port.
#[derive(Default)]
pub struct Browser {
    http: reqwest::Client,
    pub jar: HashMap<String, HashMap<String, String>>,
}

fn host_of(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl Browser {
    pub fn new() -> Self {
        Self::trusting(None)
    }

    /// A browser that also trusts the certificate `ca_pem` (a provider's private CA).
    pub fn trusting(ca_pem: Option<&str>) -> Self {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20));
        if let Some(pem) = ca_pem {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(pem.as_bytes()).expect("ca pem"),
            );
        }
        Self {
            http: http.build().expect("client"),
            jar: HashMap::new(),
        }
    }

    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).expect("url");
        self.jar.get(&host_of(&url))?.get(name).cloned()
    }

    pub fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        let url = reqwest::Url::parse(url).expect("url");
        self.jar
            .entry(host_of(&url))
            .or_default()
            .insert(name.into(), value.into());
    }

    async fn send(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let parsed = reqwest::Url::parse(url).expect("url");
        let host = host_of(&parsed);
        let mut req = match form {
            Some(f) => self.http.post(parsed.clone()).form(f),
            None => self.http.get(parsed.clone()),
        };
        if let Some(cookies) = self.jar.get(&host)
            && !cookies.is_empty()
        {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", header.join("; "));
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().expect("cookie ascii");
            let first = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let jar = self.jar.entry(host.clone()).or_default();
                let expired = v.is_empty() || c.to_ascii_lowercase().contains("max-age=0");
                if expired {
                    jar.remove(k.trim());
                } else {
                    jar.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| parsed.join(l).expect("location").to_string());
        let body = res.text().await.unwrap_or_default();
        Page {
            url: url.to_owned(),
            status,
            location,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        self.send(url, None).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        self.send(url, Some(form)).await
    }

    /// Follows redirects until a non-redirect page, or until the next hop would go to a URL
    /// starting with `stop_before` (returned as the last redirect page).
    pub async fn follow(&mut self, mut page: Page, stop_before: Option<&str>) -> Page {
        for _ in 0..20 {
            let Some(next) = page
                .location
                .clone()
                .filter(|_| (300..400).contains(&page.status))
            else {
                return page;
            };
            if stop_before.is_some_and(|p| next.starts_with(p)) {
                return page;
            }
            page = self.get(&next).await;
        }
        panic!("too many redirects");
    }
}

/// How the person at the provider answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Grant,
    Deny,
}

/// Logs in as `login` at the provider and answers the consent prompt, starting from the
/// provider page `page` (a redirect into the provider). Returns the redirect page whose
/// Location is Zajel's callback (not yet followed).
pub async fn at_provider(
    browser: &mut Browser,
    page: Page,
    login: &str,
    consent: Consent,
    callback_prefix: &str,
) -> Page {
    let mut page = browser.follow(page, Some(callback_prefix)).await;
    for _ in 0..4 {
        if page
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(callback_prefix))
        {
            return page;
        }
        assert_eq!(page.status, 200, "provider page: {page:?}");
        let url = page.url.clone();
        let next = if page.body.contains("name=\"prompt\" value=\"login\"") {
            browser
                .post_form(
                    &url,
                    &[("prompt", "login"), ("login", login), ("password", "pw")],
                )
                .await
        } else if page.body.contains("name=\"prompt\" value=\"consent\"") {
            match consent {
                Consent::Grant => browser.post_form(&url, &[("prompt", "consent")]).await,
                Consent::Deny => browser.get(&format!("{url}/abort")).await,
            }
        } else {
            panic!("unexpected provider page: {}", page.body);
        };
        page = browser.follow(next, Some(callback_prefix)).await;
    }
    panic!("the provider never redirected to the callback: {page:?}");
}

/// The real provider: `node tests/oidc-provider/provider.mjs`, killed on drop.
pub struct RealProvider {
    child: Child,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

/// A certificate for `127.0.0.1` (rcgen, self-signed: its own trust anchor) written as PEM
/// files into a temp dir, for a provider served over https.
pub struct TestCertificate {
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
}

impl TestCertificate {
    pub fn generate() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_pem = cert.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem())
            .expect("write key");
        Self { dir, cert_pem }
    }

    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

impl RealProvider {
    pub fn start(redirect_uri: &str) -> Self {
        Self::start_with(redirect_uri, None)
    }

    /// The provider served over https with `tls`'s certificate.
    pub fn start_tls(redirect_uri: &str, tls: &TestCertificate) -> Self {
        Self::start_with(redirect_uri, Some(tls))
    }

    fn start_with(redirect_uri: &str, tls: Option<&TestCertificate>) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc-provider");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "the test provider is not installed: run `source scripts/ensure-tools.sh && ensure_oidc_provider`"
        );
        let mut node = Command::new("node");
        if let Some(tls) = tls {
            node.env("TLS_CERT", tls.cert_path())
                .env("TLS_KEY", tls.key_path());
        }
        let mut child = node
            .arg("provider.mjs")
            .arg(redirect_uri)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("oidc-provider started");
        Self {
            child,
            issuer,
            client_id: "zajel-test".into(),
            client_secret: "zajel-test-secret".into(),
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Zajel server with OIDC sign-in (provider id `test`) on 127.0.0.1.
pub struct IdentityServer {
    pub addr: SocketAddr,
    pub base: String,
    pub engine: Engine,
    pub oidc: OidcSignIn,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IdentityServer {
    /// Binds first, so the redirect URL (needed to start the provider) is known.
    pub async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        (listener, base)
    }

    pub fn callback_url(base: &str) -> String {
        format!("{base}/api/auth/oidc/test/callback")
    }

    pub async fn serve(
        listener: tokio::net::TcpListener,
        store: Arc<dyn zajel_core::Store>,
        provider: OidcProvider,
        tweak: impl FnOnce(&mut OidcConfig),
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let engine = Engine::new(
            store,
            ServerConfig {
                argon2_memory_kib: 256,
                argon2_iterations: 1,
                ..ServerConfig::default()
            },
        );
        let mut config = OidcConfig {
            public_url: base.clone(),
            providers: vec![provider],
            http_timeout_secs: 3,
            ..OidcConfig::default()
        };
        tweak(&mut config);
        let oidc = OidcSignIn::new(engine.clone(), config).expect("oidc config");
        let app = engine.router().merge(oidc.router());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(zajel_server::serve_router(
            listener,
            app,
            engine.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            base,
            engine,
            oidc,
            stop: Some(tx),
        }
    }

    pub fn start_url(&self, return_to: &str) -> String {
        format!(
            "{}/api/auth/oidc/test/start?return_to={return_to}",
            self.base
        )
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The provider config pointing at `issuer` with id `test`.
pub fn provider_config(issuer: &str, client_id: &str, secret: &str) -> OidcProvider {
    OidcProvider::generic(
        "test",
        "Test IdP",
        issuer,
        client_id,
        Some(secret.to_owned()),
    )
}
