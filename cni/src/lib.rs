//! The CNI side of Gingham: the request the `gingham-cni` plugin forwards to the agent over its
//! unix socket, the agent's reply, and the CNI spec's error codes. Deliberately small (serde
//! only) so the plugin starts in a millisecond; the agent depends on this crate too, so the two
//! sides cannot drift apart.
//!
//! Wire format on the socket: one JSON [`Request`] per connection, the client shuts down its
//! write side, the agent answers with one JSON [`Reply`] and closes.

use serde::{Deserialize, Serialize};

/// CNI versions the plugin speaks (the result format is the same for both).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// Where the agent listens unless the network configuration says `agentSocket`.
pub const DEFAULT_SOCKET: &str = "/var/run/gingham/cni.sock";

/// CNI spec error codes (SPEC.md, "Error").
pub mod install;

pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Gingham's own (the spec leaves 100+ to plugins): no address could be assigned.
    pub const IPAM_FAILURE: u32 = 100;
    /// Gingham's own: the interface could not be set up.
    pub const DATAPLANE_FAILURE: u32 = 101;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// What the plugin forwards: the runtime's environment and network configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    #[serde(default)]
    pub container_id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ... from `CNI_ARGS`.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// The network configuration from stdin.
    pub config: NetConf,
}

/// The network configuration the runtime passes on stdin: the fields Gingham reads, typed, and
/// every other field kept as given (prevResult, capabilities, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Pod interface MTU; the agent's `--mtu` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Where the agent listens; [`DEFAULT_SOCKET`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_socket: Option<String>,
    /// GC: the attachments still in use. The spec's key, or the spelling one version of the
    /// spec text used (which libcni therefore also sends).
    #[serde(default, rename = "cni.dev/valid-attachments", alias = "cni.dev/attachments", skip_serializing_if = "Option::is_none")]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// Checks the configuration ([`validate_config`]) and reads it.
    pub fn parse(config: serde_json::Value) -> Result<NetConf, CniError> {
        validate_config(&config)?;
        serde_json::from_value(config)
            .map_err(|e| CniError::new(code::INVALID_NETWORK_CONFIG, "the network configuration is invalid", e.to_string()))
    }
}

impl Request {
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The CNI error object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError { cni_version: "1.1.0".into(), code, msg: msg.into(), details: details.into() }
    }
}

/// The agent's answer: a CNI result (printed as is) or an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(serde_json::Value),
    Err(CniError),
}

/// Checks a network configuration as the plugin receives it (one plugin entry of a conflist,
/// with `cniVersion` and `name` filled in by the runtime): supported version, `type`, no
/// foreign `ipam`, a sane `mtu`.
pub fn validate_config(config: &serde_json::Value) -> Result<(), CniError> {
    let version = config.get("cniVersion").and_then(|v| v.as_str()).unwrap_or_default();
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {version:?} is not supported"),
            format!("supported: {SUPPORTED_VERSIONS:?}"),
        ));
    }
    if config.get("type").and_then(|v| v.as_str()) != Some("gingham") {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "this plugin is type \"gingham\"",
            format!("the configuration says type {:?}", config.get("type")),
        ));
    }
    if let Some(ipam) = config.get("ipam").filter(|v| !v.is_null()) {
        let kind = ipam.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if kind != "gingham" {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("ipam type {kind:?} is not supported"),
                "gingham-agent assigns addresses from its IPPools; remove the ipam section (or set type \"gingham\")",
            ));
        }
    }
    if let Some(mtu) = config.get("mtu") {
        if !mtu.as_u64().is_some_and(|m| (576..=65535).contains(&m)) {
            return Err(CniError::new(code::INVALID_NETWORK_CONFIG, format!("mtu {mtu} is out of range"), "use 576..=65535"));
        }
    }
    Ok(())
}

/// `K1=V1;K2=V2` (CNI_ARGS) into pairs; malformed entries are an error naming them.
pub fn parse_cni_args(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("CNI_ARGS entry {kv:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_parse() {
        let args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(args.len(), 3);
        assert_eq!(args[2], ("K8S_POD_NAME".into(), "web-0".into()));
        assert!(parse_cni_args("novalue").is_err());
        assert!(parse_cni_args("").unwrap().is_empty());
    }

    /// Found by the `cni_request` fuzz target: `=` parsed as a pair with an empty key.
    #[test]
    fn cni_args_without_a_key_are_refused() {
        assert!(parse_cni_args("=").is_err());
        assert!(parse_cni_args("K8S_POD_NAME=web;=x").unwrap_err().contains("\"=x\""));
        assert_eq!(parse_cni_args("A==b").unwrap(), [("A".to_string(), "=b".to_string())], "a value may hold '='");
    }

    #[test]
    fn netconf_reads_both_attachment_spellings_and_keeps_the_rest() {
        let base = serde_json::json!({"cniVersion": "1.1.0", "name": "gingham", "type": "gingham", "mtu": 1400, "prevResult": {"ips": []}});
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let mut v = base.clone();
            v[key] = serde_json::json!([{"containerID": "c1", "ifname": "eth0"}]);
            let conf = NetConf::parse(v).unwrap();
            assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c1", "{key}");
        }
        let conf = NetConf::parse(base.clone()).unwrap();
        assert_eq!((conf.mtu, conf.valid_attachments.is_none()), (Some(1400), true));
        assert_eq!(serde_json::to_value(&conf).unwrap(), base, "unread fields survive the trip to the agent");
        let mut bad = base;
        bad["agentSocket"] = serde_json::json!(7);
        assert_eq!(NetConf::parse(bad).unwrap_err().code, code::INVALID_NETWORK_CONFIG);
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::Err(CniError::new(code::TRY_AGAIN_LATER, "agent busy", ""));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), r);
        assert!(text.contains("\"code\":11"));
    }
}

/// The CNI result of an ADD (SPEC.md "Success"), as the agent builds it and the plugin prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteConfig>,
    pub dns: Dns,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The namespace path, for interfaces inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation: the address with its prefix length.
    pub address: String,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings; Gingham leaves them to the runtime, so this is always empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {}
