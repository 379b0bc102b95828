//! Feeds arbitrary bytes to the framer and decoder under every codec. Properties: no panic;
//! whatever decodes re-encodes (when it fits) and decodes back to the same message.
#![no_main]

use bytes::BytesMut;
use gingham_bgp::wire::{decode_frame, split_frame, SessionCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let codec = SessionCodec::new(flags & 1 != 0, flags & 2 != 0);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(frame)) = split_frame(&mut buf) {
        if let Ok(d) = decode_frame(&frame, &codec) {
            if let Ok(bytes) = d.message.to_bytes(&codec) {
                let again = gingham_bgp::wire::decode(&bytes, &codec).expect("our encoding decodes");
                assert_eq!(again.message, d.message);
            }
        }
    }
});
