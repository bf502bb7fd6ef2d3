//! Property tests of the client frame decoder, the server's first contact with untrusted input:
//! arbitrary bytes, arbitrary JSON values and mutated valid frames must never panic, must fail
//! with one of the decoder's typed codes, must recover the request id whenever the frame carried
//! a readable one, and a frame that decodes must survive a round trip.
//!
//! Bounded for CI: `PROPTEST_CASES` (default 256 per property) sets the cases; the three
//! properties together take well under a second of CPU at the default.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use zajel_core::ErrorCode;
use zajel_core::protocol::{ClientFrame, FrameError, RequestId};

const A: &str = "1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11";
const CONV: &str = "dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422";

/// One valid frame of every client type.
fn valid_frames() -> Vec<Value> {
    vec![
        json!({"type": "auth", "id": "1", "protocol": 1, "token": "zs1.x.y",
            "resume": {"cursors": {CONV: 4}, "unlisted": "skip"}}),
        json!({"type": "ping", "id": "2"}),
        json!({"type": "friend_request", "id": "3", "username": "bob"}),
        json!({"type": "friend_accept", "id": "4", "user_id": A}),
        json!({"type": "friend_decline", "id": "5", "user_id": A}),
        json!({"type": "friend_cancel", "id": "6", "user_id": A}),
        json!({"type": "friend_remove", "id": "7", "user_id": A}),
        json!({"type": "block", "id": "8", "user_id": A}),
        json!({"type": "unblock", "id": "9", "user_id": A}),
        json!({"type": "friends_list", "id": "10"}),
        json!({"type": "send", "id": "11", "conversation": CONV, "body": "hi", "idempotency_key": "k"}),
        json!({"type": "history", "id": "12", "conversation": CONV, "before": 9, "after": 2, "limit": 5}),
        json!({"type": "conversations", "id": "13", "limit": 20}),
        json!({"type": "mark_read", "id": "14", "conversation": CONV, "seq": 3}),
        json!({"type": "typing", "conversation": CONV, "active": true}),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        // Strings a field check may care about: ids, type names, numbers, case variants.
        Just(A.to_uppercase()),
        Just(A.replace('-', "")),
        Just(format!("{{{A}}}")),
        Just(format!("urn:uuid:{A}")),
        Just(CONV.to_owned()),
        Just("x".repeat(65)),
        proptest::sample::select(ClientFrame::TYPES).prop_map(str::to_owned),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::num::f64::NORMAL.prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a frame object.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replace (or add) a field known to some frame with any value.
    Set(&'static str, Value),
    /// Remove a field.
    Remove(&'static str),
    /// Add a field no frame knows (must be ignored).
    Unknown(String, Value),
}

const FIELDS: &[&str] = &[
    "type",
    "id",
    "protocol",
    "token",
    "resume",
    "username",
    "user_id",
    "conversation",
    "body",
    "idempotency_key",
    "before",
    "after",
    "limit",
    "seq",
    "active",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = proptest::sample::select(FIELDS);
    prop_oneof![
        (field.clone(), json_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        field.prop_map(Mutation::Remove),
        (
            proptest::collection::vec(proptest::char::range('a', 'z'), 1..4)
                .prop_map(|s| format!("zz_{}", String::from_iter(s))),
            json_value(),
        )
            .prop_map(|(k, v)| Mutation::Unknown(k, v)),
    ]
}

/// `value` written with its `type` first (how clients write frames: the decoder's fast path),
/// if it is an object with a `type`. `Value::to_string` sorts keys, which mostly puts `type`
/// after other fields (the buffered path).
fn type_first(value: &Value) -> Option<String> {
    let obj = value.as_object()?;
    let ty = obj.get("type")?;
    let mut rest = obj.clone();
    rest.remove("type");
    let rest = Value::Object(rest).to_string();
    let sep = if rest == "{}" { "" } else { "," };
    Some(format!("{{\"type\":{ty}{sep}{}", &rest[1..]))
}

/// The decoder's contract for any input, and the same verdict whatever the key order.
fn check(text: &str) -> Result<(), TestCaseError> {
    check_one(text)?;
    if let Some(first) = serde_json::from_str::<Value>(text)
        .ok()
        .as_ref()
        .and_then(type_first)
    {
        check_one(&first)?;
        let (a, b) = (ClientFrame::decode(text), ClientFrame::decode(&first));
        prop_assert_eq!(
            a.as_ref().map_err(|e| (e.code, e.re.clone())),
            b.as_ref().map_err(|e| (e.code, e.re.clone())),
            "key order changed the result: {} vs {}",
            text,
            first
        );
    }
    Ok(())
}

fn check_one(text: &str) -> Result<(), TestCaseError> {
    match ClientFrame::decode(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("a decoded frame serializes");
            prop_assert_eq!(ClientFrame::decode(&again).ok(), Some(frame));
        }
        Err(FrameError { re, code, message }) => {
            prop_assert!(
                matches!(
                    code,
                    ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidField
                ),
                "untyped code {code:?}"
            );
            prop_assert!(!message.is_empty());
            let value: Option<Value> = serde_json::from_str(text).ok();
            let want_re = value
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .and_then(|s| RequestId::new(s).ok());
            prop_assert_eq!(re, want_re, "the request id is recovered whenever readable");
            if !value.as_ref().is_some_and(Value::is_object) {
                prop_assert_eq!(code, ErrorCode::BadFrame);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        check(&value.to_string())?;
    }

    #[test]
    fn mutated_valid_frames_fail_typed_or_decode(
        base in proptest::sample::select(valid_frames()),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let mut frame = base.clone();
        let obj = frame.as_object_mut().expect("frames are objects");
        let only_unknown = mutations.iter().all(|m| matches!(m, Mutation::Unknown(..)));
        for m in mutations {
            match m {
                Mutation::Set(k, v) => { obj.insert(k.to_owned(), v); }
                Mutation::Remove(k) => { obj.remove(k); }
                Mutation::Unknown(k, v) => { obj.insert(k, v); }
            }
        }
        let text = frame.to_string();
        check(&text)?;
        if only_unknown {
            prop_assert_eq!(
                ClientFrame::decode(&text).ok(),
                ClientFrame::decode(&base.to_string()).ok(),
                "unknown fields are ignored"
            );
        }
    }
}

#[test]
fn every_valid_frame_decodes() {
    for f in valid_frames() {
        assert!(ClientFrame::decode(&f.to_string()).is_ok(), "{f}");
    }
}

/// Ids have one spelling: any other form of a UUID is `invalid_field`, never canonicalized.
#[test]
fn other_spellings_of_an_id_are_invalid_fields() {
    let forms = [
        A.to_uppercase(),
        A.replace('-', ""),
        format!("{{{A}}}"),
        format!("urn:uuid:{A}"),
        format!(" {A}"),
    ];
    for form in forms {
        let conv = CONV.replacen(A, &form, 1);
        for frame in [
            json!({"type": "friend_accept", "id": "7", "user_id": form}),
            json!({"type": "block", "id": "7", "user_id": form}),
            json!({"type": "send", "id": "7", "conversation": conv, "body": "b", "idempotency_key": "k"}),
            json!({"type": "history", "id": "7", "conversation": conv}),
        ] {
            let err = ClientFrame::decode(&frame.to_string()).expect_err("refused");
            assert_eq!(
                (err.code, err.re.as_ref().map(RequestId::as_str)),
                (ErrorCode::InvalidField, Some("7")),
                "{frame}"
            );
        }
    }
}
