//! Values to and from JavaScript: the client's own types through serde (no mirrors: they
//! serialize with the protocol's JSON field names), ids parsed from strings, and the error
//! mapping.

use serde::Serialize;
use wasm_bindgen::JsValue;
use zajel_client::{ConversationId, Error, UserId};

/// Serializes to a plain JS value (objects for maps, numbers for integers, null for None).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| arg_error(&format!("serialize: {e}")))
}

fn error_with_code(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

/// A rejected promise's value for an invalid argument.
pub(crate) fn arg_error(message: &str) -> JsValue {
    error_with_code("invalid_argument", message)
}

/// A client error as a JS `Error` with a `code` ([`Error::code_name`]) and `retry_after_ms`
/// when rate limited.
pub(crate) fn js_error(e: Error) -> JsValue {
    let err = error_with_code(&e.code_name(), &e.to_string());
    if let Error::Rejected {
        retry_after_ms: Some(ms),
        ..
    } = &e
    {
        let _ = js_sys::Reflect::set(&err, &"retry_after_ms".into(), &(*ms as f64).into());
    }
    err
}

pub(crate) fn user_id(s: &str) -> Result<UserId, JsValue> {
    s.parse()
        .map_err(|_| arg_error(&format!("not a user id: {s:?}")))
}

pub(crate) fn conversation(s: &str) -> Result<ConversationId, JsValue> {
    s.parse()
        .map_err(|_| arg_error(&format!("not a conversation id: {s:?}")))
}
