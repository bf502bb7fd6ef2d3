//! The accounts API over HTTP: natively a minimal hyper HTTP/1.1 client, in the browser
//! `fetch`.

use crate::error::Error;
use crate::event::Session;
use crate::url::ServerUrl;
use serde::Deserialize;
use zajel_core::{ErrorCode, User};

#[derive(Deserialize)]
struct ErrorBody {
    code: ErrorCode,
    message: String,
}

#[derive(Deserialize)]
struct MeBody {
    user: User,
}

/// `POST /api/register` or `/api/login`.
pub(crate) async fn credentials(
    url: &ServerUrl,
    path: &str,
    username: &str,
    password: &str,
) -> Result<Session, Error> {
    let body = serde_json::json!({ "username": username, "password": password }).to_string();
    let (status, text) = request("POST", &url.http(path), None, Some(body)).await?;
    parse(status, &text)
}

/// `POST /api/logout` or `/api/logout-all`.
pub(crate) async fn logout(url: &ServerUrl, path: &str, token: &str) -> Result<(), Error> {
    let (status, text) = request("POST", &url.http(path), Some(token), None).await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(error_of(status, &text))
    }
}

/// `GET /api/me`.
pub(crate) async fn me(url: &ServerUrl, token: &str) -> Result<User, Error> {
    let (status, text) = request("GET", &url.http("/api/me"), Some(token), None).await?;
    parse::<MeBody>(status, &text).map(|b| b.user)
}

fn parse<T: serde::de::DeserializeOwned>(status: u16, text: &str) -> Result<T, Error> {
    if (200..300).contains(&status) {
        serde_json::from_str(text).map_err(|_| Error::Http {
            status,
            body: truncate(text),
        })
    } else {
        Err(error_of(status, text))
    }
}

fn error_of(status: u16, text: &str) -> Error {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(e) if e.code == ErrorCode::Unauthenticated => Error::SignedOut,
        Ok(e) => Error::rejected(e.code, e.message),
        Err(_) => Error::Http {
            status,
            body: truncate(text),
        },
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(not(target_arch = "wasm32"))]
async fn request(
    method: &str,
    full_url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), Error> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let url = ServerUrl::parse(full_url)?;
    let path = full_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_else(|| "/".to_owned());
    let (host, port) = url.host_port();
    let t = |e: &dyn std::fmt::Display| Error::Transport(format!("{method} {full_url}: {e}"));
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| t(&e))?;
    let _ = stream.set_nodelay(true);
    // Without the `tls` feature `ServerUrl::parse` refused a secure URL already.
    let mut sender = match url.secure {
        #[cfg(feature = "tls")]
        true => handshake(crate::tls::connect(&host, stream).await?).await,
        _ => handshake(stream).await,
    }
    .map_err(|e| t(&e))?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, url.authority.as_str())
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(tok) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {tok}"));
    }
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| t(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| t(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| t(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// An HTTP/1.1 connection over any stream (TCP or TLS); its driver runs on a task.
#[cfg(not(target_arch = "wasm32"))]
async fn handshake<S>(
    stream: S,
) -> Result<
    hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    hyper::Error,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(target_arch = "wasm32")]
async fn request(
    method: &str,
    full_url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), Error> {
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    let t = |e: JsValue| Error::Transport(format!("{method} {full_url}: {}", js_message(&e)));
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_mode(web_sys::RequestMode::Cors);
    let headers = web_sys::Headers::new().map_err(t)?;
    headers.set("Accept", "application/json").map_err(t)?;
    if let Some(tok) = token {
        headers
            .set("Authorization", &format!("Bearer {tok}"))
            .map_err(t)?;
    }
    if let Some(b) = &body {
        headers.set("Content-Type", "application/json").map_err(t)?;
        init.set_body(&JsValue::from_str(b));
    }
    init.set_headers(&headers);
    let request = web_sys::Request::new_with_str_and_init(full_url, &init).map_err(t)?;
    // The global `fetch`: the same function in a window, a worker and Node 18+.
    let resp: web_sys::Response = JsFuture::from(global_fetch(&request))
        .await
        .map_err(t)?
        .dyn_into()
        .map_err(t)?;
    let status = resp.status();
    let text = JsFuture::from(resp.text().map_err(t)?).await.map_err(t)?;
    Ok((status, text.as_string().unwrap_or_default()))
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &web_sys::Request) -> js_sys::Promise;
}

/// A JS exception's message (`Failed to fetch`), never its stack or `JsValue(...)` debug form.
#[cfg(target_arch = "wasm32")]
pub(crate) fn js_message(e: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string()
        .unwrap_or_else(|| "unknown JavaScript error".into())
}
