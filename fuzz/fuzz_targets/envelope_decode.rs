//! Fuzzes the agent⇄server frame decoder: any text decodes or fails with a
//! typed error, and whatever decodes survives encode → decode unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rm_protocol::Frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Frame::decode(text) {
        Ok(frame) => {
            let again = Frame::decode(&frame.encode());
            assert_eq!(again.ok().as_ref(), Some(&frame), "round trip of {text:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
