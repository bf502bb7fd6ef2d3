//! [`RouterOptions`]: how an embedding application mounts the engine's router.

/// Options of [`Engine::router_with`](crate::Engine::router_with).
///
/// ```
/// # fn demo(engine: zajel_server::Engine) {
/// use zajel_server::RouterOptions;
/// // The app serves its own /metrics and /healthz; Zajel lives under /chat.
/// let app = axum::Router::new()
///     .route("/metrics", axum::routing::get(|| async { "app metrics" }))
///     .merge(engine.router_with(RouterOptions::default().prefix("/chat").metrics(false).healthz(false)));
/// # let _ = app; }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterOptions {
    pub(crate) prefix: Option<String>,
    pub(crate) metrics: bool,
    pub(crate) healthz: bool,
}

impl Default for RouterOptions {
    /// No prefix; `/metrics` and `/healthz` served (what [`Engine::router`](crate::Engine::router) gives).
    fn default() -> Self {
        Self {
            prefix: None,
            metrics: true,
            healthz: true,
        }
    }
}

impl RouterOptions {
    /// Mounts every route under `prefix` (e.g. `/chat`: `/chat/ws`, `/chat/api/login`). Must
    /// start with `/` and not end with one; `""` or `"/"` means no prefix. Clients then use
    /// the prefixed URLs; the session cookie stays `Path=/`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        let p = prefix.trim_end_matches('/');
        self.prefix = (!p.is_empty()).then(|| {
            if p.starts_with('/') {
                p.to_owned()
            } else {
                format!("/{p}")
            }
        });
        self
    }

    /// Whether the engine serves `GET /metrics` (off when the app has its own).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Whether the engine serves `GET /healthz` (off when the app has its own).
    pub fn healthz(mut self, on: bool) -> Self {
        self.healthz = on;
        self
    }
}
