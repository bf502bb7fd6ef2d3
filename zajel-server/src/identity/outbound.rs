//! The HTTP client for requests to identity providers (OpenID Connect discovery, JWKS, token
//! exchange) and JWT authenticators' JWKS URLs: rustls with the web PKI roots, plus the extra
//! root certificates an operator names (a provider behind a private CA, e.g. an in-house
//! Keycloak), no redirects (an SSRF risk, never needed), a timeout per request.

use super::IdentityError;
use openidconnect::reqwest;
use std::path::PathBuf;
use std::time::Duration;

/// Builds the client. Every file in `ca_files` must hold at least one PEM certificate; a file
/// that cannot be read or parsed is a configuration error (`BadRequest`), found at startup.
pub(crate) fn provider_client(
    timeout: Duration,
    ca_files: &[PathBuf],
) -> Result<reqwest::Client, IdentityError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    for path in ca_files {
        let pem = std::fs::read(path).map_err(|e| {
            IdentityError::BadRequest(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                IdentityError::BadRequest(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                ))
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(IdentityError::internal)
}
