//! What the CNI plugin reads from a runtime: `CNI_ARGS` (`K=V;K=V`) and the network
//! configuration on stdin. The first line of the input is CNI_ARGS, the rest stdin.
//! Properties: no panic; a configuration that parses serialises and parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (args, stdin) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(pairs) = gingham_cni::parse_cni_args(args) {
        assert!(pairs.iter().all(|(k, _)| !k.is_empty() && !k.contains(';')), "{pairs:?}");
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(stdin) else { return };
    if let Ok(conf) = gingham_cni::NetConf::parse(value) {
        let again = serde_json::to_value(&conf).expect("a NetConf serialises");
        let reparsed = gingham_cni::NetConf::parse(again).expect("what we serialise parses");
        assert_eq!(reparsed, conf);
    }
});
