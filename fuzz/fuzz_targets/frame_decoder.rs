//! The client frame decoder, the server's first contact with untrusted input (every WebSocket
//! text frame goes through `ClientFrame::decode`). Any input: no panic, a typed error code, and
//! a frame that decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zajel_core::ErrorCode;
use zajel_core::protocol::ClientFrame;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (the socket layer rejects anything else).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::decode(text) {
        Ok(frame) => {
            let again = ClientFrame::decode(&frame.encode()).expect("an encoded frame decodes");
            assert_eq!(again, frame, "round trip");
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidField
                ),
                "untyped code {:?}",
                e.code
            );
            assert!(!e.message.is_empty());
        }
    }
});
