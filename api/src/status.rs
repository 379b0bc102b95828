//! The agent's `/status` document: written by `gingham-agent`, read by `ginghamctl node status`
//! and the lab. One type on both sides, so neither can drift from the other. The agent also
//! stores it as a [`GinghamNodeStatus`] so `ginghamctl node status NODE` works from any machine
//! with datastore access.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::validate::{self, Check};
use crate::resources::{Kind, KindInfo};

/// A node's last reported status, named after the node (Calico has CalicoNodeStatus). Written
/// by the node's agent when something an operator looks at changes (peer states, readiness,
/// problems) and every few minutes besides; no agent watches it, so a report costs one write.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "GinghamNodeStatus", plural = "ginghamnodestatuses")]
#[serde(rename_all = "camelCase")]
pub struct GinghamNodeStatusSpec {
    /// When the agent wrote this (RFC 3339); `sinceSeconds` count back from here.
    pub reported_at: String,
    pub status: NodeStatus,
}

impl GinghamNodeStatus {
    /// A report of `status` as of now.
    pub fn report(status: NodeStatus) -> GinghamNodeStatus {
        let now = k8s_openapi::jiff::Timestamp::now();
        let reported_at = now.round(k8s_openapi::jiff::Unit::Second).unwrap_or(now).to_string();
        GinghamNodeStatus::new(&status.node.clone(), GinghamNodeStatusSpec { reported_at, status })
    }

    /// How old the report is (`None` when `reportedAt` does not parse or lies in the future).
    pub fn age(&self) -> Option<std::time::Duration> {
        let at: k8s_openapi::jiff::Timestamp = self.spec.reported_at.parse().ok()?;
        std::time::Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(at)).ok()
    }
}

impl NodeStatus {
    /// What an operator looks at, without the counters and ages that move all the time: a
    /// report is written when this changes.
    pub fn significant(&self) -> NodeStatus {
        let mut s = self.clone();
        for p in &mut s.peers {
            p.since_seconds = None;
            p.prefixes_received = 0;
            p.prefixes_accepted = 0;
            p.prefixes_advertised = 0;
            if let Some(b) = &mut p.bfd {
                b.since_seconds = 0;
            }
        }
        s.routes = RouteStatus { problems: s.routes.problems.clone(), not_installed: s.routes.not_installed, ..Default::default() };
        s
    }
}

impl Kind for GinghamNodeStatus {
    const INFO: KindInfo = crate::resources::GINGHAM_NODE_STATUS;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// The BFD session beside it, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<PeerBfdStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerBfdStatus {
    /// `Up`, `Down`, `Init` or `AdminDown`.
    pub state: String,
    /// Why it last changed state (RFC 5880 4.1 diagnostic), e.g. `control detection time expired`.
    pub diagnostic: String,
    pub since_seconds: u64,
    /// The detection time in force, once the peer has been heard.
    pub detection_time_ms: Option<u64>,
    /// Up to Down transitions since the session was configured.
    pub downs: u64,
    /// The BGP session waits for BFD (`waitForUp`) and BFD is not Up.
    pub holding_bgp: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Kernel routes the agent wants.
    pub wanted: u64,
    pub programmed: u64,
    pub removed: u64,
    pub repaired: u64,
    /// Routes that gained gateways through their nexthop group taking them in place (no route
    /// written).
    #[serde(default)]
    pub regrouped: u64,
    /// Wanted routes not in the kernel now.
    pub not_installed: u64,
    /// The first of those, with the reason.
    pub problems: Vec<RouteProblem>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteProblem {
    pub prefix: String,
    pub metric: u32,
    /// A short label: `unreachable`, `next-hop-local`, `occupied`, `kernel`, `no-next-hop`.
    pub reason: String,
    pub message: String,
}
