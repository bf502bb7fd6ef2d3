//! TLS for the native transports (`https://`, `wss://`): rustls with the ring provider and
//! Mozilla's root certificates (`webpki-roots`), plus roots the application adds (a private
//! CA, a test certificate). One configuration for HTTP and WebSocket.

use crate::error::Error;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

static EXTRA_ROOTS: Mutex<Vec<CertificateDer<'static>>> = Mutex::new(Vec::new());
static CONFIG: Mutex<Option<Arc<ClientConfig>>> = Mutex::new(None);

/// Trusts the certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks) for every
/// `https://` / `wss://` connection this process makes from now on, in addition to the
/// built-in public roots. For a private CA or a test certificate; returns how many were
/// added. Not available in the browser (which uses its own trust store).
pub fn add_root_certificates_pem(pem: &str) -> Result<usize, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::InvalidArgument(format!("PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(
            "no certificate in the PEM text".into(),
        ));
    }
    // Check they parse as trust anchors before keeping them.
    let mut probe = RootCertStore::empty();
    for c in &certs {
        probe
            .add(c.clone())
            .map_err(|e| Error::InvalidArgument(format!("certificate: {e}")))?;
    }
    let n = certs.len();
    crate::driver::lock(&EXTRA_ROOTS).extend(certs);
    *crate::driver::lock(&CONFIG) = None;
    Ok(n)
}

fn config() -> Result<Arc<ClientConfig>, Error> {
    let mut cached = crate::driver::lock(&CONFIG);
    if let Some(c) = cached.as_ref() {
        return Ok(c.clone());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in crate::driver::lock(&EXTRA_ROOTS).iter() {
        // Checked when added.
        let _ = roots.add(c.clone());
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Transport(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    *cached = Some(config.clone());
    Ok(config)
}

/// Opens TLS over `tcp` to `host` (a DNS name or an IP address), verifying the certificate.
pub(crate) async fn connect(host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Transport(format!("TLS server name {host:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Transport(format!("TLS handshake with {host}: {e}")))
}
