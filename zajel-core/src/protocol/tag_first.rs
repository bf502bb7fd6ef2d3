//! `Deserialize` for [`ClientFrame`] that reads the `type` tag first and then the variant's
//! fields straight from the input.
//!
//! serde's derived internally tagged enums buffer the whole frame into a private `Content`
//! tree (every key and string copied or referenced, every value boxed into the tree) before
//! they look at `type`, then deserialize the variant from that tree: a second walk and a pile
//! of allocations for every frame. Clients put `type` first (the derived `Serialize` does),
//! so the fast path reads the tag and hands the rest of the same map to the variant's fields.
//! A frame whose `type` comes later is buffered once into `serde_json::Value`s (the slow path,
//! correct for any key order). Both paths accept and reject exactly what the derived decoder
//! did, with one deliberate exception: a JSON *array* is no longer read as a frame (serde's
//! tagged enums took `["ping","1"]` as a ping); a frame is an object.
//!
//! [`client_frames!`] declares the enum once and generates, from the same field list, the
//! per-variant field structs and the `type` tag enum, so the two can never drift apart.

use super::ClientFrame;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, MapDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::fmt;

/// Declares `ClientFrame` (with its derived `Serialize`, tagged by `type`) and generates what
/// its hand-written `Deserialize` needs: `FrameType` (the tag) and `fields::<Variant>` (each
/// variant's fields as a struct with the same serde attributes), plus `FrameType::fields`,
/// which deserializes a variant's fields and builds the frame.
macro_rules! client_frames {
    (
        $(#[$enum_meta:meta])*
        pub enum ClientFrame {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident {
                    $(
                        $(#[$field_meta:meta])*
                        $field:ident : $ty:ty
                    ),* $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(#[$enum_meta])*
        pub enum ClientFrame {
            $(
                $(#[$variant_meta])*
                $variant {
                    $( $(#[$field_meta])* $field: $ty ),*
                }
            ),*
        }

        /// Each frame type's fields, deserialized once the `type` is known.
        mod fields {
            #[allow(clippy::wildcard_imports)]
            use super::*;
            $(
                #[derive(serde::Deserialize)]
                pub(super) struct $variant {
                    $( $(#[$field_meta])* pub(super) $field: $ty ),*
                }
            )*
        }

        /// The `type` tag of a client frame.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub(super) enum FrameType {
            $( $variant ),*
        }

        impl FrameType {
            /// Deserializes the fields of a frame of this type (the map without `type`).
            pub(super) fn fields<'de, D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<ClientFrame, D::Error> {
                match self {
                    $(
                        FrameType::$variant => {
                            let fields::$variant { $($field),* } =
                                serde::Deserialize::deserialize(d)?;
                            Ok(ClientFrame::$variant { $($field),* })
                        }
                    )*
                }
            }
        }
    };
}
pub(super) use client_frames;

const TAG: &str = "type";

impl<'de> de::Deserialize<'de> for ClientFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = ClientFrame;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a client frame: a JSON object with a \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientFrame, A::Error> {
        let Some(first) = map.next_key::<Key<'de>>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first.as_str() == TAG {
            // Fast path: the fields follow in the same map, read once without buffering.
            let ty: super::client::FrameType = map.next_value()?;
            return ty.fields(MapAccessDeserializer::new(NoSecondTag(map)));
        }
        // Slow path: `type` comes later; buffer the entries (in order, duplicates kept so the
        // field structs still reject them), then decode the variant from the buffer.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4) + 1);
        entries.push((first.into_string(), map.next_value::<serde_json::Value>()?));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            entries.push((key.into_string(), map.next_value::<serde_json::Value>()?));
        }
        let mut tags = entries.iter().filter(|(k, _)| k == TAG);
        let tag = match (tags.next(), tags.next()) {
            (Some((_, v)), None) => v.clone(),
            (None, _) => return Err(de::Error::missing_field(TAG)),
            (Some(_), Some(_)) => return Err(de::Error::duplicate_field(TAG)),
        };
        entries.retain(|(k, _)| k != TAG);
        let ty: super::client::FrameType =
            serde::Deserialize::deserialize(tag).map_err(de::Error::custom)?;
        let rest = MapDeserializer::<_, serde_json::Error>::new(entries.into_iter());
        ty.fields(rest).map_err(de::Error::custom)
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The rest of a frame's map after its leading `type`: passes every entry to the variant's
/// fields, except a second `type`, which is an error (as in serde's tagged enums) rather than
/// an unknown field to ignore.
struct NoSecondTag<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for NoSecondTag<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.0.next_key::<Key<'de>>()? else {
            return Ok(None);
        };
        if key.as_str() == TAG {
            return Err(de::Error::duplicate_field(TAG));
        }
        match key {
            Key::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::new(s)),
            Key::Owned(s) => seed.deserialize(s.into_deserializer()),
        }
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::FrameType;
    use super::*;

    #[test]
    fn every_listed_type_is_a_tag_and_back() {
        for ty in ClientFrame::TYPES {
            let tag: FrameType = serde_json::from_value(serde_json::json!(ty)).expect(ty);
            let _ = tag;
        }
        // No tag missing from TYPES (the decoder's unknown-type check reads TYPES).
        assert_eq!(ClientFrame::TYPES.len(), 15);
    }

    /// The tag first or last, escaped keys and values, and a second tag: the same frame or
    /// the same refusal whichever path reads it.
    #[test]
    fn key_order_does_not_change_the_result() {
        let conv = "dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422";
        let first = format!(
            r#"{{"type":"send","id":"1","conversation":"{conv}","body":"hi","idempotency_key":"k"}}"#
        );
        let last = format!(
            r#"{{"id":"1","conversation":"{conv}","body":"hi","idempotency_key":"k","type":"send"}}"#
        );
        let escaped = format!(
            r#"{{"\u0074ype":"s\u0065nd","\u0069d":"1","conversation":"{conv}","body":"h\u0069","idempotency_key":"k"}}"#
        );
        let a: ClientFrame = serde_json::from_str(&first).expect("tag first");
        let b: ClientFrame = serde_json::from_str(&last).expect("tag last");
        let c: ClientFrame = serde_json::from_str(&escaped).expect("escaped");
        assert_eq!(a, b);
        assert_eq!(a, c);
        let from_value: ClientFrame =
            serde_json::from_value(serde_json::from_str(&last).expect("json")).expect("value");
        assert_eq!(a, from_value);
        // Same verdict whichever path reads the frame (the tag first, or buffered).
        for (text, ok) in [
            (r#"{"type":"ping","id":"1","type":"ping"}"#, false),
            (r#"{"id":"1","type":"ping","type":"ping"}"#, false),
            (r#"{"type":"ping","id":"1","id":"2"}"#, false),
            (r#"{"id":"1","id":"2","type":"ping"}"#, false),
            (r#"{"type":"ping"}"#, false),
            (r#"{"id":"1"}"#, false),
            (r#"{}"#, false),
            (r#"["ping","1"]"#, false),
            (
                r#"{"type":"ping","id":"1","zz":[1,{"a":null}],"active":"x"}"#,
                true,
            ),
            (
                r#"{"id":"1","zz":[1,{"a":null}],"active":"x","type":"ping"}"#,
                true,
            ),
        ] {
            let got = serde_json::from_str::<ClientFrame>(text);
            assert_eq!(got.is_ok(), ok, "{text}: {got:?}");
        }
    }
}
