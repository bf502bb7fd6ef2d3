//! Socket.IO v5 packets inside Engine.IO v4 packets, as they travel in WebSocket text frames
//! (one Engine.IO packet per frame with the `websocket` transport).
//!
//! Engine.IO: `0{…}` open (the server's handshake: sid, pingInterval, …), `1` close, `2` ping
//! (from the server in v4; the client answers `3` pong), `4<socket.io packet>` message.
//! Socket.IO inside `4`: `0` connect (client: `40`; server: `40{"sid":…}`), `1` disconnect,
//! `2` event (`42["name",args…]`, with an ack id `42<id>["name",…]`), `3` ack
//! (`43<id>[args…]`), `4` connect error (`44{"message":…}`). Only the default namespace `/` is
//! used, so no namespace part appears.

use anyhow::{Result, bail};

/// One incoming frame, borrowed from its text.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO handshake; the JSON object.
    Open(&'a str),
    /// Engine.IO close.
    Close,
    /// Engine.IO ping: answer [`PONG`].
    Ping,
    /// Engine.IO pong.
    Pong,
    /// Socket.IO connect accepted (`40{"sid":…}`); the JSON object (may be empty).
    Connect(&'a str),
    /// Socket.IO disconnect (`41`).
    Disconnect,
    /// Socket.IO event: the JSON array `["name", args…]` and the ack id it asks for.
    Event { ack: Option<u64>, data: &'a str },
    /// Socket.IO ack: the id and the JSON array of the callback's arguments.
    Ack { id: u64, data: &'a str },
    /// Socket.IO connect refused (`44{…}`); the JSON object.
    ConnectError(&'a str),
}

/// The client's answer to a [`Packet::Ping`].
pub const PONG: &str = "3";
/// The client's connect to the default namespace.
pub const CONNECT: &str = "40";

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Packet<'_>> {
    let Some(eio) = text.chars().next() else {
        bail!("empty Engine.IO packet")
    };
    let rest = &text[eio.len_utf8()..];
    match eio {
        '0' => Ok(Packet::Open(rest)),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping),
        '3' => Ok(Packet::Pong),
        '4' => parse_socketio(rest),
        '6' => bail!("Engine.IO noop is a polling packet"),
        other => bail!("unknown Engine.IO packet type {other:?}"),
    }
}

fn parse_socketio(text: &str) -> Result<Packet<'_>> {
    let Some(kind) = text.chars().next() else {
        bail!("empty Socket.IO packet")
    };
    let rest = &text[kind.len_utf8()..];
    // An ack id: the digits before the JSON (only for events and acks).
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = || -> Result<Option<u64>> {
        if digits == 0 {
            return Ok(None);
        }
        match rest[..digits].parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => bail!("ack id out of range"),
        }
    };
    match kind {
        '0' => Ok(Packet::Connect(rest)),
        '1' => Ok(Packet::Disconnect),
        '2' => Ok(Packet::Event {
            ack: id()?,
            data: &rest[digits..],
        }),
        '3' => match id()? {
            Some(id) => Ok(Packet::Ack {
                id,
                data: &rest[digits..],
            }),
            None => bail!("ack without an id"),
        },
        '4' => Ok(Packet::ConnectError(rest)),
        '5' | '6' => bail!("binary Socket.IO packets are not used here"),
        other => bail!("unknown Socket.IO packet type {other:?}"),
    }
}

/// `42<ack>["<name>",<args_json>]`: an event asking for an ack; `args_json` is one JSON value.
pub fn event_with_ack(ack: u64, name: &str, args_json: &str) -> String {
    format!("42{ack}[\"{name}\",{args_json}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_socketio_4_server_sends() {
        let open = r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(parse(open).ok(), Some(Packet::Open(&open[1..])));
        assert_eq!(parse("2").ok(), Some(Packet::Ping));
        assert_eq!(parse("1").ok(), Some(Packet::Close));
        assert_eq!(
            parse(r#"40{"sid":"abc"}"#).ok(),
            Some(Packet::Connect(r#"{"sid":"abc"}"#))
        );
        assert_eq!(parse("41").ok(), Some(Packet::Disconnect));
        assert_eq!(
            parse(r#"42["message",{"seq":1}]"#).ok(),
            Some(Packet::Event {
                ack: None,
                data: r#"["message",{"seq":1}]"#
            })
        );
        assert_eq!(
            parse(r#"4317[{"message":{"seq":3}}]"#).ok(),
            Some(Packet::Ack {
                id: 17,
                data: r#"[{"message":{"seq":3}}]"#
            })
        );
        assert_eq!(
            parse(r#"44{"message":"user id required"}"#).ok(),
            Some(Packet::ConnectError(r#"{"message":"user id required"}"#))
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "4",
            "9",
            "6",
            "43[{}]",
            "451-[\"x\",{\"_placeholder\":true,\"num\":0}]",
            "4399999999999999999999[]",
            "4x",
            "é",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn writes_events_with_ack_ids() {
        assert_eq!(
            event_with_ack(7, "send", r#"{"body":"hi"}"#),
            r#"427["send",{"body":"hi"}]"#
        );
        let sent = event_with_ack(42, "send", "{}");
        assert_eq!(
            parse(&sent).ok(),
            Some(Packet::Event {
                ack: Some(42),
                data: r#"["send",{}]"#
            })
        );
    }
}
