//! What `ginghamctl apply` reads: a YAML (or JSON) stream of resources, each checked by
//! `validate_value`. Properties: no panic, and a document accepted once is accepted again after
//! a trip through JSON text (what the datastore stores).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for doc in serde_yaml_ng::Deserializer::from_str(text).take(16) {
        let Ok(value) = serde_json::Value::deserialize(doc) else { return };
        if gingham_api::resources::validate_value(&value).is_ok() {
            let stored: serde_json::Value = serde_json::from_str(&value.to_string()).expect("JSON text parses");
            assert!(gingham_api::resources::validate_value(&stored).is_ok(), "accepted, then refused after storing: {value}");
        }
    }
});
