//! The server address: one base URL gives the HTTP API and the WebSocket endpoint.
//!
//! Hand-written rather than the `url` crate on purpose: this client also ships as wasm to
//! browsers, and `url` brings IDNA with its Unicode tables (`idna`, `icu_*`) into that bundle
//! to split `scheme://authority/prefix`, which needs none of it. The tests below pin the
//! accepted forms.

use crate::error::Error;

/// A parsed server base URL (`http://host:port/optional/prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    pub secure: bool,
    /// `host` or `host:port` as written.
    pub authority: String,
    /// Path prefix without a trailing slash ("" or "/chat").
    pub prefix: String,
}

impl ServerUrl {
    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidUrl(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return Err(bad()),
        };
        #[cfg(all(not(target_arch = "wasm32"), not(feature = "tls")))]
        if secure {
            return Err(Error::InvalidArgument(format!(
                "{s}: https:// and wss:// need zajel-client's `tls` feature"
            )));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
            return Err(bad());
        }
        let mut prefix = path.split(['?', '#']).next().unwrap_or("").to_owned();
        // A URL that already names the endpoint (`ws://h/ws`) means its parent.
        if scheme.starts_with("ws") && prefix.ends_with("/ws") {
            prefix.truncate(prefix.len() - 3);
        }
        while prefix.ends_with('/') {
            prefix.pop();
        }
        Ok(Self {
            secure,
            authority: authority.to_owned(),
            prefix,
        })
    }

    /// `http(s)://authority/prefix/path`.
    pub(crate) fn http(&self, path: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority, self.prefix)
    }

    /// `ws(s)://authority/prefix/ws`.
    pub(crate) fn ws(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}/ws", self.authority, self.prefix)
    }

    /// Host and port for a plain TCP connection.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn host_port(&self) -> (String, u16) {
        let default = if self.secure { 443 } else { 80 };
        // IPv6 literal: [::1]:8080
        if let Some(rest) = self.authority.strip_prefix('[')
            && let Some((host, tail)) = rest.split_once(']')
        {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (host.to_owned(), port);
        }
        match self.authority.rsplit_once(':') {
            Some((h, p)) => match p.parse() {
                Ok(port) => (h.to_owned(), port),
                Err(_) => (self.authority.clone(), default),
            },
            None => (self.authority.clone(), default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_derives_endpoints() {
        let u = ServerUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.http("/api/login"), "http://127.0.0.1:8080/api/login");
        assert_eq!(u.ws(), "ws://127.0.0.1:8080/ws");
        assert_eq!(u.host_port(), ("127.0.0.1".to_owned(), 8080));
        let u = ServerUrl::parse("ws://[::1]:9000/ws").unwrap();
        assert_eq!(u.http("/api/me"), "http://[::1]:9000/api/me");
        assert_eq!(u.host_port(), ("::1".to_owned(), 9000));
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("localhost:8080").is_err());
    }

    #[test]
    #[cfg(feature = "tls")]
    fn secure_urls() {
        let u = ServerUrl::parse("https://chat.example.com/zajel").unwrap();
        assert_eq!(u.ws(), "wss://chat.example.com/zajel/ws");
        assert_eq!(u.host_port(), ("chat.example.com".to_owned(), 443));
    }

    /// Without TLS compiled in, a secure URL is refused up front, naming the feature (never a
    /// plain-text connection to a server that expects TLS).
    #[test]
    #[cfg(not(feature = "tls"))]
    fn secure_urls_need_the_tls_feature() {
        for url in ["https://chat.example.com", "wss://chat.example.com/ws"] {
            let Err(Error::InvalidArgument(e)) = ServerUrl::parse(url) else {
                panic!("{url} accepted without the tls feature");
            };
            assert!(e.contains("`tls` feature"), "{e}");
        }
    }
}
