//! Every JSON example in `docs/protocol.md` parses through the protocol types and serializes
//! back to the same JSON, and every frame type has at least one example. This is the protocol's
//! round-trip test and keeps the document honest.

use serde_json::Value;
use std::collections::BTreeSet;
use zajel_core::ErrorCode;
use zajel_core::protocol::{ClientFrame, Push, ServerFrame};

struct Example {
    section: &'static str,
    json: String,
}

fn examples() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut section = "";
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with("## ") {
            section = match line {
                "## Client frames" => "client",
                "## Server frames" => "server",
                _ => "",
            };
        }
        match (&mut current, line) {
            (None, "```json") => current = Some(String::new()),
            (Some(buf), "```") => {
                out.push(Example {
                    section,
                    json: std::mem::take(buf),
                });
                current = None;
            }
            (Some(buf), l) => {
                buf.push_str(l);
                buf.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_example_round_trips() {
    let all = examples();
    assert!(all.len() > 30, "found only {} examples", all.len());
    for ex in all {
        let value: Value =
            serde_json::from_str(&ex.json).unwrap_or_else(|e| panic!("bad JSON {e}:\n{}", ex.json));
        let back = match ex.section {
            "client" => {
                let frame =
                    ClientFrame::decode(&ex.json).unwrap_or_else(|e| panic!("{e}:\n{}", ex.json));
                serde_json::from_str::<Value>(&frame.encode()).unwrap()
            }
            "server" => {
                let frame =
                    ServerFrame::decode(&ex.json).unwrap_or_else(|e| panic!("{e}:\n{}", ex.json));
                assert_ne!(frame, ServerFrame::Unknown, "{}", ex.json);
                serde_json::from_str::<Value>(&frame.encode()).unwrap()
            }
            other => panic!(
                "JSON example outside the frame sections ({other:?}):\n{}",
                ex.json
            ),
        };
        assert_eq!(back, value, "round trip changed the frame");
    }
}

#[test]
fn every_frame_type_is_documented() {
    let all = examples();
    let documented = |section: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|e| e.section == section)
            .filter_map(|e| {
                serde_json::from_str::<Value>(&e.json)
                    .ok()?
                    .get("type")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    let client: BTreeSet<String> = ClientFrame::TYPES.iter().map(|s| s.to_string()).collect();
    let server: BTreeSet<String> = ServerFrame::TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(documented("client"), client);
    assert_eq!(documented("server"), server);
}

#[test]
fn every_error_code_is_documented_and_stable() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    use ErrorCode::*;
    let codes = [
        BadFrame,
        UnknownType,
        InvalidField,
        FrameTooLarge,
        UnsupportedVersion,
        UnsupportedMediaType,
        NotFound,
        MethodNotAllowed,
        Unauthenticated,
        AlreadyAuthenticated,
        InvalidCredentials,
        InvalidUsername,
        InvalidPassword,
        UsernameTaken,
        RateLimited,
        UserNotFound,
        CannotBefriendSelf,
        AlreadyFriends,
        AlreadyRequested,
        NoPendingRequest,
        NotFriends,
        Blocked,
        AlreadyBlocked,
        NotBlocked,
        ConversationNotFound,
        EmptyBody,
        BodyTooLong,
        InvalidIdempotencyKey,
        InvalidCursor,
        Internal,
        ShuttingDown,
        Unavailable,
    ];
    for code in codes {
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, format!("\"{}\"", code.as_str()));
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        assert!(
            doc.contains(&format!("| `{}` |", code.as_str())),
            "{} missing from the error table",
            code.as_str()
        );
    }
    assert_eq!(
        serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
        ErrorCode::Unknown
    );
}

#[test]
fn unknown_server_frames_are_tolerated() {
    let f = ServerFrame::decode(r#"{"type":"reaction","emoji":"👍"}"#).unwrap();
    assert_eq!(f, ServerFrame::Unknown);
}

/// `synced` is an event: it carries no `re` (only `auth_ok` answers `auth`), and a `re` from a
/// server that still sends one is ignored.
#[test]
fn synced_is_an_event_without_re() {
    let f = ServerFrame::Push(Push::Synced {
        state: Default::default(),
    });
    let v: Value = serde_json::from_str(&f.encode()).unwrap();
    assert_eq!(v["type"], "synced");
    assert!(v.get("re").is_none(), "{v}");
    let old = r#"{"type":"synced","re":"1","conversations":[],"friends":[],"truncated":[]}"#;
    assert_eq!(ServerFrame::decode(old).unwrap(), f);
}

#[test]
fn client_decode_errors_are_typed_and_echo_the_id() {
    let cases = [
        ("not json", None, ErrorCode::BadFrame),
        ("[1,2]", None, ErrorCode::BadFrame),
        // An array is not a frame, even one shaped like a frame's values in order (serde's
        // tagged enums used to read this as a ping).
        (r#"["ping","1"]"#, None, ErrorCode::BadFrame),
        (r#"{"id":"a"}"#, Some("a"), ErrorCode::BadFrame),
        (
            r#"{"type":"warp","id":"b"}"#,
            Some("b"),
            ErrorCode::UnknownType,
        ),
        (
            r#"{"type":"send","id":"c","conversation":"dm.x.y","body":"hi","idempotency_key":"k"}"#,
            Some("c"),
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"mark_read","id":"d","conversation":"dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422","seq":"ten"}"#,
            Some("d"),
            ErrorCode::InvalidField,
        ),
        (r#"{"type":"ping"}"#, None, ErrorCode::InvalidField),
        (
            &format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65)),
            None,
            ErrorCode::InvalidField,
        ),
    ];
    for (text, re, code) in cases {
        let err = ClientFrame::decode(text).unwrap_err();
        assert_eq!(
            (err.re.as_ref().map(|r| r.as_str()), err.code),
            (re, code),
            "{text}"
        );
        assert!(!err.message.is_empty());
    }
    // Unknown fields are ignored (forward compatibility).
    assert!(ClientFrame::decode(r#"{"type":"ping","id":"e","future":1}"#).is_ok());
}

/// The documented system message is one (reserved sender, `kind`), and `kind` only says what
/// the sender id decides: a person's message never gains it, a forged `kind` is dropped.
#[test]
fn system_message_example_is_marked() {
    let system: Vec<_> = examples()
        .into_iter()
        .filter(|e| e.json.contains(r#""kind": "system""#))
        .collect();
    assert_eq!(system.len(), 1, "one documented system message");
    let ServerFrame::Push(Push::Message { message }) =
        ServerFrame::decode(&system[0].json).expect("decodes")
    else {
        panic!("the system example is a message frame");
    };
    assert!(message.is_system());
    assert_eq!(message.sender, zajel_core::UserId::SYSTEM);
    let forged = system[0].json.replace(
        "00000000-0000-0000-0000-000000000000",
        "6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422",
    );
    let ServerFrame::Push(Push::Message { message }) =
        ServerFrame::decode(&forged).expect("decodes")
    else {
        panic!("a message frame");
    };
    assert!(!message.is_system());
    assert!(!message_frame_has_kind(&ServerFrame::Push(Push::Message {
        message
    })));
}

fn message_frame_has_kind(frame: &ServerFrame) -> bool {
    serde_json::from_str::<Value>(&frame.encode()).unwrap()["message"]
        .get("kind")
        .is_some()
}
