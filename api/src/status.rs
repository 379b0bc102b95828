//! The agent's `/status` document: written by `gingham-agent`, read by `ginghamctl node status`
//! and the lab. One type on both sides, so neither can drift from the other.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub version: String,
    /// The node's BGP address with its prefix length.
    pub address: String,
    pub ready: bool,
    /// `ok`, or why the datastore cannot be used.
    pub datastore: String,
    /// Every peer has sent End-of-RIB since the agent started (or the deadline passed).
    pub synced: bool,
    pub peers: Vec<PeerStatus>,
    /// What the node originates.
    pub exports: Vec<String>,
    pub routes: RouteStatus,
    /// `ok`, or why the natOutgoing rules could not be written.
    pub nat_outgoing: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub address: String,
    pub as_number: u32,
    /// `mesh`, `route-reflector`, `global` or `node`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The BGP state (`Established`, `Active`, ...).
    pub state: String,
    pub since_seconds: Option<u64>,
    /// The last error, when there is one.
    pub info: String,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    /// Configuration the session runs without, and why.
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Kernel routes the agent wants.
    pub wanted: u64,
    pub programmed: u64,
    pub removed: u64,
    pub repaired: u64,
    /// Wanted routes not in the kernel now.
    pub not_installed: u64,
    /// The first of those, with the reason.
    pub problems: Vec<RouteProblem>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteProblem {
    pub prefix: String,
    pub metric: u32,
    /// A short label: `unreachable`, `next-hop-local`, `occupied`, `kernel`, `no-next-hop`.
    pub reason: String,
    pub message: String,
}
