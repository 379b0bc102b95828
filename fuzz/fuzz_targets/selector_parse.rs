//! Calico-syntax label selectors (BGPPeer and IPPool `nodeSelector`, `peerSelector`).
//! Properties: no panic; a selector that parses prints as text that parses to the same
//! selector, and matching never panics.
#![no_main]

use std::collections::BTreeMap;
use std::str::FromStr;

use gingham_api::selector::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(sel) = Selector::from_str(text) else { return };
    let printed = sel.to_string();
    let again = Selector::from_str(&printed).unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(again.to_string(), printed);
    let labels = BTreeMap::from([("rack".to_string(), "r1".to_string()), ("zone".to_string(), text.to_string())]);
    let _ = sel.matches(&labels);
});
