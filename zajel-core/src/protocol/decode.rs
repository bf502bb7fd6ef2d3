//! Decoding client frames with precise errors: the request id is recovered whenever the frame
//! was JSON with an `id`, so even a rejected request gets an answer the client can match.

use super::{ClientFrame, RequestId};
use crate::error::{ErrorCode, HasErrorCode};

/// Why a client frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The request id, if one could be read.
    pub re: Option<RequestId>,
    /// `bad_frame`, `unknown_type` or `invalid_field`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl HasErrorCode for FrameError {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

impl ClientFrame {
    /// Parses a client frame from JSON text.
    ///
    /// ```
    /// use zajel_core::{ErrorCode, protocol::ClientFrame};
    /// let ok = ClientFrame::decode(r#"{"type":"ping","id":"1"}"#).unwrap();
    /// assert_eq!(ok.id().unwrap().as_str(), "1");
    /// let err = ClientFrame::decode(r#"{"type":"teleport","id":"2"}"#).unwrap_err();
    /// assert_eq!((err.code, err.re.unwrap().as_str()), (ErrorCode::UnknownType, "2"));
    /// assert_eq!(ClientFrame::decode("{nope").unwrap_err().code, ErrorCode::BadFrame);
    /// ```
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        // Fast path: a well-formed frame parses once.
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => Ok(frame),
            Err(typed_err) => Err(diagnose(text, typed_err)),
        }
    }
}

fn diagnose(text: &str, typed_err: serde_json::Error) -> FrameError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return FrameError {
                re: None,
                code: ErrorCode::BadFrame,
                message: format!("not valid JSON: {e}"),
            };
        }
    };
    let Some(obj) = value.as_object() else {
        return FrameError {
            re: None,
            code: ErrorCode::BadFrame,
            message: "a frame must be a JSON object".into(),
        };
    };
    let re = obj
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| RequestId::new(s).ok());
    let Some(ty) = obj.get("type").and_then(|t| t.as_str()) else {
        return FrameError {
            re,
            code: ErrorCode::BadFrame,
            message: "a frame needs a string \"type\"".into(),
        };
    };
    if !ClientFrame::TYPES.contains(&ty) {
        return FrameError {
            re,
            code: ErrorCode::UnknownType,
            message: format!("unknown frame type {ty:?}"),
        };
    }
    FrameError {
        re,
        code: ErrorCode::InvalidField,
        message: format!("invalid {ty} frame: {typed_err}"),
    }
}
