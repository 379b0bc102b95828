//! The plugin binary as a runtime runs it: environment variables and stdin in, a CNI result or
//! error object and an exit code out. These cases need no agent: they are refused (or fail to
//! reach the agent) before anything else happens.

use std::io::Write;
use std::process::{Command, Stdio};

const PLUGIN: &str = env!("CARGO_BIN_EXE_gingham-cni");

fn run(env: &[(&str, &str)], stdin: &str) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(PLUGIN);
    cmd.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // A request refused on its environment alone is answered without reading stdin: the
    // plugin may be gone before the write, which is then a broken pipe and not a failure.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (out.status.success(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}")))
}

fn add_env() -> Vec<(&'static str, &'static str)> {
    vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_NETNS", "/var/run/netns/none"), ("CNI_IFNAME", "eth0")]
}

fn conf(extra: &str) -> String {
    format!(r#"{{"cniVersion":"1.1.0","name":"gingham","type":"gingham","agentSocket":"/nonexistent/gingham-test.sock"{extra}}}"#)
}

fn code_of(v: &serde_json::Value) -> u64 {
    v["code"].as_u64().unwrap_or_else(|| panic!("no code in {v}"))
}

#[test]
fn version_lists_the_supported_versions() {
    let (ok, v) = run(&[("CNI_COMMAND", "VERSION")], "");
    assert!(ok);
    let versions: Vec<&str> = v["supportedVersions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
}

#[test]
fn an_unreachable_agent_is_try_again_later_naming_the_socket() {
    let (ok, v) = run(&add_env(), &conf(""));
    assert!(!ok);
    assert_eq!(code_of(&v), 11);
    assert!(v["msg"].as_str().unwrap().contains("/nonexistent/gingham-test.sock"), "{v}");
    let (ok, v) = run(&[("CNI_COMMAND", "STATUS")], &conf(""));
    assert!(!ok);
    assert_eq!(code_of(&v), 50, "STATUS reports the plugin unavailable: {v}");
}

#[test]
fn bad_requests_get_the_spec_error_codes() {
    type Env = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Env, String, u64)> = vec![
        (add_env(), conf("").replace("1.1.0", "0.3.1"), 1),
        (vec![("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")], conf(""), 4),
        (vec![("CNI_COMMAND", "FROB")], conf(""), 4),
        (add_env(), "not json".to_string(), 6),
        (add_env(), conf(r#","ipam":{"type":"host-local"}"#), 7),
        (add_env(), conf("").replace(r#""type":"gingham""#, r#""type":"bridge""#), 7),
        (add_env(), conf(r#","mtu":70000"#), 7),
        (
            vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "a"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", "broken")],
            conf(""),
            4,
        ),
    ];
    for (env, stdin, want) in cases {
        let (ok, v) = run(&env, &stdin);
        assert!(!ok, "{env:?} {stdin} succeeded");
        assert_eq!(code_of(&v), want, "{env:?} {stdin} -> {v}");
        assert!(!v["msg"].as_str().unwrap().is_empty());
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}

/// The conflist the install-cni init container writes (from the ConfigMap in
/// manifests/gingham.yaml) is one the plugin accepts, as a runtime hands it over.
#[test]
fn the_shipped_conflist_is_accepted() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/gingham.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let configmap = text.split("\n---\n").find(|d| d.contains("kind: ConfigMap")).expect("a ConfigMap");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(configmap).unwrap();
    let conflist: serde_json::Value = serde_json::from_str(doc["data"]["10-gingham.conflist"].as_str().unwrap()).unwrap();
    let mut plugin = conflist["plugins"][0].clone();
    // A runtime copies the list's version and name into each plugin's configuration.
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin["name"] = conflist["name"].clone();
    gingham_cni::validate_config(&plugin).unwrap();
    assert_eq!(plugin["agentSocket"], gingham_cni::DEFAULT_SOCKET);
}
