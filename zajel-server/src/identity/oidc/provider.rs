//! One provider: discovery (lazy, retried after a failure), the OAuth client, the code
//! exchange and ID token verification with a JWKS refetch on an unknown key.

use super::super::IdentityError;
use super::OidcProvider;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse, reqwest,
};
use openidconnect::{ClaimsVerificationError, SignatureVerificationError};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Minimum time between two JWKS refetches caused by unknown key ids.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

struct Discovered {
    metadata: CoreProviderMetadata,
    client: Client,
    /// The last refetch caused by an unknown key id (none yet: the first may happen at once).
    jwks_refetched: Option<Instant>,
}

/// A configured provider and what discovery found.
pub(super) struct Provider {
    pub config: OidcProvider,
    redirect: RedirectUrl,
    discovered: RwLock<Option<Discovered>>,
}

/// What the browser is sent to, and what the callback will need.
pub(super) struct Authorization {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// The verified identity from an ID token.
pub(super) struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> IdentityError {
    tracing::warn!(error = %e, "{what}");
    IdentityError::ProviderUnavailable(format!("{what}: {e}"))
}

/// The full chain of an error's sources, for messages ("Request failed" alone says nothing).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Provider {
    pub fn new(config: OidcProvider, public_url: &str) -> Result<Self, IdentityError> {
        let valid_id = !config.id.is_empty()
            && config.id.len() <= 32
            && config
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_id {
            return Err(IdentityError::BadRequest(format!(
                "provider id {:?} must be 1-32 of a-z 0-9 _ -",
                config.id
            )));
        }
        IssuerUrl::new(config.issuer.clone())
            .map_err(|e| IdentityError::BadRequest(format!("issuer URL: {e}")))?;
        let redirect = config.redirect_url.clone().unwrap_or_else(|| {
            format!(
                "{}/api/auth/oidc/{}/callback",
                public_url.trim_end_matches('/'),
                config.id
            )
        });
        let redirect = RedirectUrl::new(redirect)
            .map_err(|e| IdentityError::BadRequest(format!("redirect URL: {e}")))?;
        Ok(Self {
            config,
            redirect,
            discovered: RwLock::new(None),
        })
    }

    /// The redirect URL to register at the provider.
    pub fn redirect_url(&self) -> &str {
        self.redirect.as_str()
    }

    fn build_client(&self, metadata: CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Discovers the provider unless already done.
    async fn client(&self, http: &reqwest::Client) -> Result<Client, IdentityError> {
        if let Some(d) = &*self.discovered.read().await {
            return Ok(d.client.clone());
        }
        let mut slot = self.discovered.write().await;
        if let Some(d) = &*slot {
            return Ok(d.client.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| IdentityError::BadRequest(format!("issuer URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| unavailable("discovery failed", chain(&e)))?;
        let client = self.build_client(metadata.clone());
        *slot = Some(Discovered {
            metadata,
            client: client.clone(),
            jwks_refetched: None,
        });
        Ok(client)
    }

    /// Refetches the JWKS (key rotation), at most once per [`JWKS_MIN_REFRESH`]. Returns
    /// whether the keys changed.
    async fn refresh_jwks(&self, http: &reqwest::Client) -> Result<bool, IdentityError> {
        let mut slot = self.discovered.write().await;
        let Some(d) = slot.as_mut() else {
            return Ok(false);
        };
        if d.jwks_refetched
            .is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH)
        {
            return Ok(false);
        }
        d.jwks_refetched = Some(Instant::now());
        let jwks = CoreJsonWebKeySet::fetch_async(d.metadata.jwks_uri(), http)
            .await
            .map_err(|e| unavailable("JWKS fetch failed", chain(&e)))?;
        d.metadata = d.metadata.clone().set_jwks(jwks);
        d.client = self.build_client(d.metadata.clone());
        Ok(true)
    }

    /// The authorization URL with fresh `state`, `nonce` and PKCE challenge.
    pub async fn authorize(&self, http: &reqwest::Client) -> Result<Authorization, IdentityError> {
        let client = self.client(http).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.config.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token.
    pub async fn finish(
        &self,
        http: &reqwest::Client,
        code: String,
        pkce_verifier: String,
        nonce: &str,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let client = self.client(http).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| unavailable("the provider has no token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(http)
            .await
            .map_err(|e| match e {
                // The provider answered, and refused: a used, expired or foreign code.
                RequestTokenError::ServerResponse(r) => {
                    IdentityError::InvalidState(match r.error() {
                        openidconnect::core::CoreErrorResponseType::InvalidGrant => {
                            "the provider rejected the sign-in code"
                        }
                        _ => "the provider refused the code exchange",
                    })
                }
                other => unavailable("token request failed", chain(&other)),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| IdentityError::InvalidIdToken("the provider sent no ID token".into()))?
            .clone();
        let nonce = Nonce::new(nonce.to_owned());
        let verify = |client: &Client| {
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .map(|c| VerifiedIdentity {
                    issuer: c.issuer().as_str().to_owned(),
                    subject: c.subject().as_str().to_owned(),
                    preferred_username: c.preferred_username().map(|u| u.as_str().to_owned()),
                    name: c
                        .name()
                        .and_then(|n| n.get(None))
                        .map(|n| n.as_str().to_owned()),
                    email: c.email().map(|e| e.as_str().to_owned()),
                })
        };
        match verify(&client) {
            Ok(v) => Ok(v),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys since discovery.
                if self.refresh_jwks(http).await? {
                    let client = self.client(http).await?;
                    verify(&client).map_err(|e| IdentityError::InvalidIdToken(chain(&e)))
                } else {
                    Err(IdentityError::InvalidIdToken(
                        "the ID token is signed with an unknown key".into(),
                    ))
                }
            }
            Err(e) => Err(IdentityError::InvalidIdToken(chain(&e))),
        }
    }
}
