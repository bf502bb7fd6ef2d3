//! [`JwtAuthenticator`]: signed JWTs as an embedding app's credential.
//!
//! The app's backend (any language) signs a short-lived token for its user, like the
//! connection tokens other real-time servers accept:
//!
//! ```json
//! {"sub": "<app user id>", "aud": "<audience>", "exp": 1735689600, "iss": "<issuer>", "name": "alice"}
//! ```
//!
//! Verified: the signature (HS256 with a shared secret, or RS256/ES256 against a JWKS fetched
//! from a URL, cached, and refetched when a token names an unknown `kid`), `exp` (required),
//! `nbf` (if present), `aud` (required), `iss` (when configured), `sub` (required, the app's
//! user id). The algorithm comes from the configuration, never from the token: a token
//! claiming `HS256` is refused by a JWKS-configured authenticator (no key confusion) and
//! `alg: none` is never accepted.

use super::outbound::provider_client;
use super::{AppUser, Authenticator, IdentityError};
use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::reqwest;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Where the authenticator's keys come from.
#[derive(Clone, Debug)]
pub enum JwtKey {
    /// HS256 with a shared secret (at least 32 bytes).
    Hs256(Vec<u8>),
    /// RS256 / ES256 keys from a JWKS URL (fetched on first use, refetched on an unknown `kid`,
    /// at most once per [`JwtConfig::jwks_min_refresh`]).
    JwksUrl(String),
    /// RS256 / ES256 keys from a JWKS document given inline.
    Jwks(String),
}

/// Where a request carries the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <jwt>`.
    Bearer,
    /// A cookie of this name (e.g. the app's own session cookie holding a JWT).
    Cookie(String),
}

/// Configuration of a [`JwtAuthenticator`].
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The keys.
    pub key: JwtKey,
    /// The required `aud` (tokens minted for another service are refused).
    pub audience: String,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
    /// Where the token is read from.
    pub source: TokenSource,
    /// Minimum time between two JWKS fetches (unknown `kid`s cannot make us hammer the URL).
    pub jwks_min_refresh: Duration,
    /// Timeout of a JWKS fetch.
    pub http_timeout: Duration,
    /// PEM files of extra root certificates trusted for the JWKS URL, beside the web PKI
    /// roots (a JWKS served behind a private CA).
    pub ca_files: Vec<PathBuf>,
}

impl JwtConfig {
    /// Defaults: 30 s leeway, bearer header, JWKS refetched at most every 30 s, 5 s timeout.
    pub fn new(key: JwtKey, audience: impl Into<String>) -> Self {
        Self {
            key,
            audience: audience.into(),
            issuer: None,
            leeway: Duration::from_secs(30),
            source: TokenSource::Bearer,
            jwks_min_refresh: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
            ca_files: Vec::new(),
        }
    }
}

/// The claims read from a verified token.
#[derive(Clone, Debug, Deserialize)]
pub struct AppClaims {
    /// The app's user id.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Optional display name (`preferred_username`, else `name`).
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Optional display name.
    #[serde(default)]
    pub name: Option<String>,
}

struct JwksCache {
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// Verifies app-signed JWTs; see the [module docs](self).
pub struct JwtAuthenticator {
    config: JwtConfig,
    cache: RwLock<JwksCache>,
    http: reqwest::Client,
}

fn invalid(reason: impl std::fmt::Display) -> IdentityError {
    IdentityError::InvalidCredential(reason.to_string())
}

impl JwtAuthenticator {
    /// An authenticator for `config`. Fails on an HS256 secret shorter than 32 bytes or an
    /// inline JWKS that does not parse.
    pub fn new(config: JwtConfig) -> Result<Arc<Self>, IdentityError> {
        let keys = match &config.key {
            JwtKey::Hs256(secret) if secret.len() < 32 => {
                return Err(IdentityError::BadRequest(
                    "an HS256 secret must be at least 32 bytes".into(),
                ));
            }
            JwtKey::Jwks(doc) => Some(serde_json::from_str::<JwkSet>(doc).map_err(|e| {
                IdentityError::BadRequest(format!("the JWKS document does not parse: {e}"))
            })?),
            _ => None,
        };
        let http = provider_client(config.http_timeout, &config.ca_files)?;
        Ok(Arc::new(Self {
            config,
            cache: RwLock::new(JwksCache {
                keys,
                fetched: None,
            }),
            http,
        }))
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<AppClaims, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let (key, alg) = match &self.config.key {
            JwtKey::Hs256(secret) => {
                if header.alg != Algorithm::HS256 {
                    return Err(invalid(format!(
                        "algorithm {:?} is not accepted",
                        header.alg
                    )));
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtKey::Jwks(_) | JwtKey::JwksUrl(_) => {
                self.jwks_key(header.kid.as_deref(), header.alg).await?
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = self.config.leeway.as_secs();
        v.validate_nbf = true;
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        if let Some(iss) = &self.config.issuer {
            v.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<AppClaims>(token, &key, &v).map_err(invalid)?;
        if data.claims.sub.is_empty() {
            return Err(invalid("empty sub"));
        }
        Ok(data.claims)
    }

    /// The key for `kid` (refetching the JWKS once when it is unknown) and the algorithm the
    /// key dictates; the token's `alg` must match it.
    async fn jwks_key(
        &self,
        kid: Option<&str>,
        token_alg: Algorithm,
    ) -> Result<(DecodingKey, Algorithm), IdentityError> {
        if let Some(found) = self.lookup(kid, token_alg).await? {
            return Ok(found);
        }
        if let JwtKey::JwksUrl(url) = &self.config.key {
            self.refresh(url).await?;
            if let Some(found) = self.lookup(kid, token_alg).await? {
                return Ok(found);
            }
        }
        Err(invalid("no key matches the token's kid"))
    }

    async fn lookup(
        &self,
        kid: Option<&str>,
        token_alg: Algorithm,
    ) -> Result<Option<(DecodingKey, Algorithm)>, IdentityError> {
        let cache = self.cache.read().await;
        let Some(set) = &cache.keys else {
            return Ok(None);
        };
        let jwk = match kid {
            Some(kid) => set.find(kid),
            // Without a kid, only an unambiguous single-key set is usable.
            None if set.keys.len() == 1 => set.keys.first(),
            None => {
                return Err(invalid(
                    "the token has no kid and the key set has several keys",
                ));
            }
        };
        let Some(jwk) = jwk else { return Ok(None) };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => match token_alg {
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => token_alg,
                _ => {
                    return Err(invalid(format!(
                        "algorithm {token_alg:?} does not fit an RSA key"
                    )));
                }
            },
            AlgorithmParameters::EllipticCurve(p) => match (p.curve.clone(), token_alg) {
                (EllipticCurve::P256, Algorithm::ES256) => Algorithm::ES256,
                (EllipticCurve::P384, Algorithm::ES384) => Algorithm::ES384,
                _ => {
                    return Err(invalid(format!(
                        "algorithm {token_alg:?} does not fit this EC key"
                    )));
                }
            },
            _ => return Err(invalid("only RSA and EC keys are accepted from a JWKS")),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(invalid)?;
        Ok(Some((key, alg)))
    }

    async fn refresh(&self, url: &str) -> Result<(), IdentityError> {
        let mut cache = self.cache.write().await;
        if cache
            .fetched
            .is_some_and(|t| t.elapsed() < self.config.jwks_min_refresh)
        {
            return Ok(());
        }
        cache.fetched = Some(Instant::now());
        let res =
            self.http.get(url).send().await.map_err(|e| {
                IdentityError::ProviderUnavailable(format!("JWKS fetch failed: {e}"))
            })?;
        if !res.status().is_success() {
            return Err(IdentityError::ProviderUnavailable(format!(
                "JWKS fetch answered {}",
                res.status()
            )));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| IdentityError::ProviderUnavailable(format!("JWKS fetch failed: {e}")))?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| IdentityError::ProviderUnavailable(format!("JWKS does not parse: {e}")))?;
        cache.keys = Some(set);
        Ok(())
    }

    fn token(&self, headers: &HeaderMap) -> Option<String> {
        match &self.config.source {
            TokenSource::Bearer => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_owned()),
            TokenSource::Cookie(name) => crate::http::cookie_value(headers, name),
        }
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<AppUser, IdentityError> {
        let token = self
            .token(headers)
            .ok_or_else(|| invalid("no token in the request"))?;
        let claims = self.verify(&token).await?;
        Ok(AppUser {
            id: claims.sub,
            username_hint: claims.preferred_username.or(claims.name),
        })
    }
}
