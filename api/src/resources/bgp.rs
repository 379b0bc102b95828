//! BGPConfiguration (the cluster's AS and mesh switch) and BGPPeer (sessions beyond the mesh).

use std::net::{IpAddr, SocketAddr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, ValidationError};
use super::{Kind, KindInfo, DEFAULT_NAME};

/// The AS every node uses unless its GinghamNode overrides it (Calico's default).
pub const DEFAULT_AS_NUMBER: u32 = 64512;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "BGPConfiguration", plural = "bgpconfigurations")]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// Default 64512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Default true: every node peers with every other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Calico's name: `Debug`, `Info`, `Warning`, `Error`, `Fatal`; default `Info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Service ClusterIP ranges every node advertises (routers spread the traffic with ECMP;
    /// kube-proxy on the node takes it from there).
    #[serde(default, rename = "serviceClusterIPs", skip_serializing_if = "Option::is_none")]
    pub service_cluster_ips: Option<Vec<ServiceCidr>>,
    /// Service external IP ranges every node advertises.
    #[serde(default, rename = "serviceExternalIPs", skip_serializing_if = "Option::is_none")]
    pub service_external_ips: Option<Vec<ServiceCidr>>,
    /// Service LoadBalancer IP ranges every node advertises.
    #[serde(default, rename = "serviceLoadBalancerIPs", skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_ips: Option<Vec<ServiceCidr>>,
    /// Named communities for `prefixAdvertisements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Communities attached to our routes inside each CIDR (blocks, borrowed addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// `None` (default): BGP listens on every address; `NodeIP`: on the node's BGP addresses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    /// Interfaces (globs such as `kube-ipvs*`) never picked by address autodetection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    /// Gingham extension: BFD on every node-to-node session (the mesh and route-reflector
    /// sessions); absent means none.
    #[serde(default, rename = "nodeToNodeMeshBFD", skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_bfd: Option<BfdSpec>,
}

/// BFD (RFC 5880 asynchronous mode, RFC 5881 single hop) beside a BGP session: a path failure
/// closes the session within `multiplier` x the slower of our `minRxMs` and the peer's
/// transmit interval (900 ms with the defaults) instead of the hold time. Gingham extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSpec {
    /// The fastest rate at which we accept packets, in milliseconds (10-60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx_ms: Option<u32>,
    /// The rate at which we would like to send, in milliseconds (10-60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_ms: Option<u32>,
    /// Packets missed before the path is declared down (1-255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u8>,
    /// Start the BGP session only once BFD is Up, and stop it whenever BFD is down (default
    /// false: BGP runs regardless and BFD only tears an Established session down).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_up: bool,
}

impl BfdSpec {
    pub const DEFAULT_INTERVAL_MS: u32 = 300;
    pub const DEFAULT_MULTIPLIER: u8 = 3;

    /// (minRx, minTx, multiplier) with the defaults filled in.
    pub fn effective(&self) -> (std::time::Duration, std::time::Duration, u8) {
        let ms = |v: Option<u32>| std::time::Duration::from_millis(v.unwrap_or(Self::DEFAULT_INTERVAL_MS).into());
        (ms(self.min_rx_ms), ms(self.min_tx_ms), self.multiplier.unwrap_or(Self::DEFAULT_MULTIPLIER))
    }

    fn validate(&self, field: &str) -> Check {
        for (name, v) in [("minRxMs", self.min_rx_ms), ("minTxMs", self.min_tx_ms)] {
            if v.is_some_and(|ms| !(10..=60_000).contains(&ms)) {
                return Err(ValidationError::new(format!("{field}.{name}"), "must be 10-60000 milliseconds"));
            }
        }
        if self.multiplier == Some(0) {
            return Err(ValidationError::new(format!("{field}.multiplier"), "must be 1-255"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Community {
    pub name: String,
    /// `AA:NN` (standard, 16 bits each) or `A:B:C` (large, 32 bits each).
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrefixAdvertisement {
    pub cidr: String,
    /// Names from `communities`, or literal values.
    #[serde(default)]
    pub communities: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BindMode {
    None,
    NodeIP,
}

/// A parsed community value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommunityValue {
    Standard(u32),
    Large(u32, u32, u32),
}

impl std::str::FromStr for CommunityValue {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let bad = || format!("{text:?} is not a community (AA:NN or A:B:C)");
        match parts[..] {
            [a, n] => {
                let (a, n): (u16, u16) = (a.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
                Ok(CommunityValue::Standard((u32::from(a) << 16) | u32::from(n)))
            }
            [a, b, c] => {
                Ok(CommunityValue::Large(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?))
            }
            _ => Err(bad()),
        }
    }
}

impl BGPConfigurationSpec {
    /// The communities to attach to one of our routes: those of every prefixAdvertisement
    /// whose CIDR contains it, names resolved. Call after validation.
    pub fn communities_for(&self, prefix: &ipnetwork::IpNetwork) -> Vec<CommunityValue> {
        let mut out: Vec<CommunityValue> = self
            .prefix_advertisements
            .iter()
            .filter(|a| {
                a.cidr
                    .parse::<ipnetwork::IpNetwork>()
                    .is_ok_and(|c| c.is_ipv4() == prefix.is_ipv4() && c.prefix() <= prefix.prefix() && c.contains(prefix.network()))
            })
            .flat_map(|a| a.communities.iter())
            .filter_map(|c| self.community(c).ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn community(&self, name_or_value: &str) -> Result<CommunityValue, String> {
        match self.communities.iter().find(|c| c.name == name_or_value) {
            Some(c) => c.value.parse(),
            None => name_or_value.parse().map_err(|e| format!("not a name from spec.communities, and {e}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceCidr {
    pub cidr: String,
}

impl BGPConfigurationSpec {
    pub fn effective_as_number(&self) -> u32 {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn effective_listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(179)
    }

    /// Every CIDR of `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs`
    /// (each node advertises them all). Call after validation.
    pub fn service_cidrs(&self) -> Vec<ipnetwork::IpNetwork> {
        [&self.service_cluster_ips, &self.service_external_ips, &self.service_load_balancer_ips]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|s| s.cidr.parse::<ipnetwork::IpNetwork>().ok())
            .map(|n| ipnetwork::IpNetwork::new(n.network(), n.prefix()).unwrap_or(n))
            .collect()
    }
}

impl Kind for BGPConfiguration {
    const INFO: KindInfo = super::BGP_CONFIGURATION;

    fn validate(&self) -> Check {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        validate::object_name("metadata.name", name)?;
        let spec = &self.spec;
        if let Some(asn) = spec.as_number {
            validate::as_number("spec.asNumber", asn)?;
        }
        if name != DEFAULT_NAME && spec.as_number.is_some() {
            // Calico: only the global resource carries the AS; a per-node one would be ambiguous.
            return Err(ValidationError::new("spec.asNumber", "only BGPConfiguration \"default\" may set the AS number"));
        }
        if spec.listen_port == Some(0) {
            return Err(ValidationError::new("spec.listenPort", "port 0 cannot be listened on"));
        }
        if let Some(level) = &spec.log_severity_screen {
            if !["Debug", "Info", "Warning", "Error", "Fatal"].contains(&level.as_str()) {
                return Err(ValidationError::new(
                    "spec.logSeverityScreen",
                    format!("{level:?} is not one of Debug, Info, Warning, Error, Fatal"),
                ));
            }
        }
        for (i, c) in spec.communities.iter().enumerate() {
            if c.name.is_empty() || spec.communities[..i].iter().any(|o| o.name == c.name) {
                return Err(ValidationError::new(format!("spec.communities[{i}].name"), "names must be present and unique"));
            }
            c.value.parse::<CommunityValue>().map_err(|e| ValidationError::new(format!("spec.communities[{i}].value"), e))?;
        }
        for (i, a) in spec.prefix_advertisements.iter().enumerate() {
            validate::cidr(&format!("spec.prefixAdvertisements[{i}].cidr"), &a.cidr)?;
            for (j, c) in a.communities.iter().enumerate() {
                spec.community(c).map_err(|e| ValidationError::new(format!("spec.prefixAdvertisements[{i}].communities[{j}]"), e))?;
            }
        }
        for (i, g) in spec.ignored_interfaces.iter().enumerate() {
            if g.is_empty() || g.contains(char::is_whitespace) {
                return Err(ValidationError::new(format!("spec.ignoredInterfaces[{i}]"), "an interface name or glob such as kube-ipvs*"));
            }
        }
        if let Some(bfd) = &spec.node_to_node_mesh_bfd {
            bfd.validate("spec.nodeToNodeMeshBFD")?;
        }
        for (field, list) in [
            ("spec.serviceClusterIPs", &spec.service_cluster_ips),
            ("spec.serviceExternalIPs", &spec.service_external_ips),
            ("spec.serviceLoadBalancerIPs", &spec.service_load_balancer_ips),
        ] {
            for (i, svc) in list.iter().flatten().enumerate() {
                validate::cidr(&format!("{field}[{i}].cidr"), &svc.cidr)?;
            }
        }
        Ok(())
    }
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "BGPPeer", plural = "bgppeers")]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// Only this node has the session (exclusive with `nodeSelector`); neither means every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The nodes that have the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port: `198.18.0.1`, `198.18.0.1:1179`,
    /// `[2001:db8::1]:179`. An IPv6 link-local address names its interface (unnumbered
    /// links): `fe80::2%eth1`, `[fe80::2%eth1]:179`. Exclusive with `peerSelector`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Peer with the nodes this selects instead of a fixed address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    /// Required with `peerIP`; with `peerSelector` the selected nodes' own AS is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// TCP MD5 key (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PeerPassword>,
    /// Do not rewrite the next hop on eBGP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    /// Graceful-restart time we advertise to this peer (Go duration, default `120s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// `UseNodeIP` (default: the session is sourced from the node's BGP address) or `None`
    /// (the kernel picks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// Gingham extension: reflect iBGP routes to this peer (it is our route-reflector client).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub route_reflector_client: bool,
    /// BGPFilters applied to this session, in order (first matching rule wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The AS we present on this session instead of the node's.
    #[serde(default, rename = "localASNumber", skip_serializing_if = "Option::is_none")]
    pub local_as_number: Option<u32>,
    /// `Auto` (default: ourselves towards eBGP peers, unchanged towards iBGP), `Self` (always
    /// ourselves, reflected routes included) or `Keep` (never changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// KEEPALIVE interval (Go duration; default a third of the hold time, and never more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// How often our own AS may appear in a received AS_PATH (default 0).
    #[serde(default, rename = "numAllowedLocalASNumbers", skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u8>,
    /// The gateway through which the peer is reached: a /32 (/128) route to the peer via it is
    /// installed while the session is configured, so the session never depends on routes it
    /// carries itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    /// Gingham extension: a limit on the prefixes the peer may send, per address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<MaxPrefixes>,
    /// Gingham extension: BFD with the peer (single hop: the peer is on a connected network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
    /// Gingham extension: carry IPv4 routes over this IPv6 session with IPv6 next hops
    /// (RFC 8950, FRR's `capability extended-nexthop`), both ways, when the peer agrees. Only for
    /// IPv6 sessions (with `peerSelector`, the IPv6 sessions it makes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extended_next_hop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NextHopMode {
    Auto,
    #[serde(rename = "Self")]
    NextHopSelf,
    Keep,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxPrefixes {
    pub limit: u32,
    /// `Warn` (default: log and count) or `Teardown` (close with Cease/1, RFC 4486).
    #[serde(default)]
    pub action: MaxPrefixAction,
    /// With `Teardown`: start the session again after this many seconds (default: stay down
    /// until the BGPPeer changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MaxPrefixAction {
    #[default]
    Warn,
    Teardown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SourceAddress {
    UseNodeIP,
    None,
}

/// Where the MD5 key comes from: a Secret (kubernetes datastore) or the literal (sqlite).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerPassword {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl BGPPeerSpec {
    /// The peer's socket address (port 179 unless given); `None` for a `peerSelector` peer.
    pub fn peer_socket(&self) -> Option<Result<SocketAddr, ValidationError>> {
        self.peer_ip.as_deref().map(|text| parse_peer_ip(text).map(|(addr, _)| addr))
    }

    /// The interface of a link-local `peerIP` (`fe80::2%eth1`).
    pub fn peer_interface(&self) -> Option<String> {
        self.peer_ip.as_deref().and_then(|text| parse_peer_ip(text).ok()).and_then(|(_, interface)| interface)
    }
}

/// `ADDR`, `ADDR:PORT`, `[V6ADDR]:PORT`, where a link-local V6ADDR carries `%INTERFACE`.
fn parse_peer_ip(text: &str) -> Result<(SocketAddr, Option<String>), ValidationError> {
    let bad = || ValidationError::new("spec.peerIP", format!("{text:?} is not an address, ADDR:PORT or [V6ADDR]:PORT"));
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        None => match text.parse::<SocketAddr>() {
            Ok(addr) => return Ok((addr, None)),
            Err(_) => (text, 179),
        },
    };
    let (addr, interface) = match host.split_once('%') {
        Some((addr, interface)) => (addr, Some(interface)),
        None => (host, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    match (link_local, interface) {
        (true, None) => Err(ValidationError::new("spec.peerIP", "a link-local address needs its interface: fe80::2%eth1")),
        (false, Some(_)) => Err(ValidationError::new("spec.peerIP", "only an IPv6 link-local address takes %INTERFACE")),
        (_, Some(name)) if !validate::is_interface_name(name) => {
            Err(ValidationError::new("spec.peerIP", format!("{name:?} is not an interface name (1-15 characters, no '/', ':' or spaces)")))
        }
        (_, interface) => Ok((SocketAddr::new(ip, port), interface.map(str::to_owned))),
    }
}

impl Kind for BGPPeer {
    const INFO: KindInfo = super::BGP_PEER;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())?;
        let spec = &self.spec;
        if spec.node.is_some() && spec.node_selector.is_some() {
            return Err(ValidationError::new("spec.nodeSelector", "set either node or nodeSelector, not both"));
        }
        if let Some(sel) = &spec.node_selector {
            validate::selector("spec.nodeSelector", sel)?;
        }
        match (&spec.peer_ip, &spec.peer_selector) {
            (Some(_), Some(_)) => return Err(ValidationError::new("spec.peerSelector", "set either peerIP or peerSelector, not both")),
            (None, None) => return Err(ValidationError::new("spec.peerIP", "one of peerIP or peerSelector is required")),
            (Some(ip), None) => {
                let (addr, interface) = parse_peer_ip(ip)?;
                if interface.is_some() {
                    // Not built for link-local sessions; refused rather than half applied.
                    if spec.password.is_some() {
                        return Err(ValidationError::new("spec.password", "TCP MD5 on a link-local session is not supported"));
                    }
                    if spec.bfd.is_some() {
                        return Err(ValidationError::new("spec.bfd", "BFD on a link-local session is not supported"));
                    }
                    if spec.reachable_by.is_some() {
                        return Err(ValidationError::new("spec.reachableBy", "a link-local peer is on its link: no gateway"));
                    }
                }
                if addr.port() == 0 {
                    return Err(ValidationError::new("spec.peerIP", "port 0 cannot be connected to"));
                }
                if spec.as_number.is_none() {
                    return Err(ValidationError::new("spec.asNumber", "required with peerIP"));
                }
            }
            (None, Some(sel)) => {
                validate::selector("spec.peerSelector", sel)?;
            }
        }
        if let Some(asn) = spec.as_number {
            validate::as_number("spec.asNumber", asn)?;
        }
        if let Some(pw) = &spec.password {
            match (&pw.secret_key_ref, &pw.literal) {
                (Some(_), Some(_)) => return Err(ValidationError::new("spec.password", "set either secretKeyRef or literal, not both")),
                (None, None) => return Err(ValidationError::new("spec.password", "needs secretKeyRef or literal")),
                (Some(r), None) if r.name.is_empty() || r.key.is_empty() => {
                    return Err(ValidationError::new("spec.password.secretKeyRef", "name and key are required"))
                }
                // The kernel's TCP_MD5SIG key buffer is 80 octets.
                (None, Some(l)) if l.is_empty() || l.len() > 80 => {
                    return Err(ValidationError::new("spec.password.literal", "must be 1..=80 octets (the kernel's TCP MD5 key limit)"))
                }
                _ => {}
            }
        }
        if let Some(t) = &spec.max_restart_time {
            let d = validate::duration("spec.maxRestartTime", t)?;
            if d.as_secs() > 4095 {
                return Err(ValidationError::new("spec.maxRestartTime", "at most 4095s: the graceful-restart capability has 12 bits"));
            }
        }
        if spec.ttl_security == Some(0) {
            return Err(ValidationError::new("spec.ttlSecurity", "hop count must be 1..=255"));
        }
        for (i, f) in spec.filters.iter().enumerate() {
            validate::object_name(&format!("spec.filters[{i}]"), f)?;
        }
        if let Some(asn) = spec.local_as_number {
            validate::as_number("spec.localASNumber", asn)?;
        }
        if spec.keep_original_next_hop && spec.next_hop_mode.is_some_and(|m| m != NextHopMode::Keep) {
            return Err(ValidationError::new("spec.nextHopMode", "contradicts keepOriginalNextHop: true (set one of them)"));
        }
        if let Some(t) = &spec.keepalive_time {
            let d = validate::duration("spec.keepaliveTime", t)?;
            if d.as_secs() < 1 || d.as_secs() > 21845 {
                return Err(ValidationError::new("spec.keepaliveTime", "must be 1s..=21845s (a third of the largest hold time)"));
            }
        }
        if let Some(gw) = &spec.reachable_by {
            let gw: IpAddr = gw.parse().map_err(|_| ValidationError::new("spec.reachableBy", format!("{gw:?} is not an address")))?;
            match spec.peer_socket() {
                Some(Ok(peer)) if peer.ip().is_ipv4() != gw.is_ipv4() => {
                    return Err(ValidationError::new("spec.reachableBy", "must be of the peer address's family"))
                }
                None => return Err(ValidationError::new("spec.reachableBy", "only with peerIP")),
                _ => {}
            }
        }
        if let Some(m) = &spec.max_prefixes {
            if m.limit == 0 {
                return Err(ValidationError::new("spec.maxPrefixes.limit", "must be at least 1"));
            }
            if m.restart_seconds.is_some() && m.action != MaxPrefixAction::Teardown {
                return Err(ValidationError::new("spec.maxPrefixes.restartSeconds", "only with action Teardown"));
            }
        }
        if spec.extended_next_hop && spec.peer_socket().is_some_and(|s| s.is_ok_and(|a| a.is_ipv4())) {
            return Err(ValidationError::new("spec.extendedNextHop", "only on an IPv6 session: peerIP is an IPv4 address"));
        }
        if let Some(bfd) = &spec.bfd {
            bfd.validate("spec.bfd")?;
            if spec.ttl_security.is_some_and(|hops| hops > 1) {
                // RFC 5881 is single hop; multihop BFD (RFC 5883) is not built.
                return Err(ValidationError::new("spec.bfd", "BFD is single hop: not with ttlSecurity above 1 (a multihop peer)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(spec: BGPPeerSpec) -> BGPPeer {
        BGPPeer::new("tor", spec)
    }

    #[test]
    fn peer_ip_takes_an_optional_port() {
        let p = BGPPeerSpec { peer_ip: Some("198.18.0.1:1179".into()), ..Default::default() };
        assert_eq!(p.peer_socket().unwrap().unwrap(), "198.18.0.1:1179".parse().unwrap());
        let p = BGPPeerSpec { peer_ip: Some("2001:db8::1".into()), ..Default::default() };
        assert_eq!(p.peer_socket().unwrap().unwrap().port(), 179);
    }

    #[test]
    fn a_link_local_peer_names_its_interface() {
        let p = BGPPeerSpec { peer_ip: Some("fe80::2%eth1".into()), as_number: Some(65010), ..Default::default() };
        assert_eq!(p.peer_socket().unwrap().unwrap(), "[fe80::2]:179".parse().unwrap());
        assert_eq!(p.peer_interface().as_deref(), Some("eth1"));
        assert!(peer(p.clone()).validate().is_ok());
        let p = BGPPeerSpec { peer_ip: Some("[fe80::2%swp1]:1179".into()), ..p };
        assert_eq!(p.peer_socket().unwrap().unwrap().port(), 1179);
        assert_eq!(p.peer_interface().as_deref(), Some("swp1"));
        assert_eq!(BGPPeerSpec { peer_ip: Some("2001:db8::1".into()), ..Default::default() }.peer_interface(), None);

        let base = BGPPeerSpec { peer_ip: Some("fe80::2%eth1".into()), as_number: Some(65010), ..Default::default() };
        let refused = |spec: BGPPeerSpec| peer(spec).validate().unwrap_err();
        for (text, why) in [
            ("fe80::2", "needs its interface"),
            ("2001:db8::1%eth1", "only an IPv6 link-local"),
            ("198.18.0.1%eth1", "only an IPv6 link-local"),
            ("fe80::2%", "not an interface name"),
            ("fe80::2%a-name-far-too-long", "not an interface name"),
            ("fe80::2%eth/1", "not an interface name"),
            ("[fe80::2%eth1]", "not an address"),
        ] {
            let e = refused(BGPPeerSpec { peer_ip: Some(text.into()), ..base.clone() });
            assert_eq!(e.field, "spec.peerIP", "{text}");
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        let password = Some(PeerPassword { literal: Some("k".into()), ..Default::default() });
        assert_eq!(refused(BGPPeerSpec { password, ..base.clone() }).field, "spec.password");
        assert_eq!(refused(BGPPeerSpec { bfd: Some(BfdSpec::default()), ..base.clone() }).field, "spec.bfd");
        assert_eq!(refused(BGPPeerSpec { reachable_by: Some("fe80::1".into()), ..base.clone() }).field, "spec.reachableBy");
    }

    #[test]
    fn each_mistake_names_its_field() {
        let base = BGPPeerSpec { peer_ip: Some("198.18.0.1".into()), as_number: Some(65001), ..Default::default() };
        assert!(peer(base.clone()).validate().is_ok());
        let cases = [
            (BGPPeerSpec { as_number: Some(0), ..base.clone() }, "spec.asNumber"),
            (BGPPeerSpec { as_number: None, ..base.clone() }, "spec.asNumber"),
            (BGPPeerSpec { peer_ip: Some("198.18.0.999".into()), ..base.clone() }, "spec.peerIP"),
            (BGPPeerSpec { peer_selector: Some("all()".into()), ..base.clone() }, "spec.peerSelector"),
            (BGPPeerSpec { node_selector: Some("rack in {'a'".into()), ..base.clone() }, "spec.nodeSelector"),
            (BGPPeerSpec { max_restart_time: Some("2 minutes".into()), ..base.clone() }, "spec.maxRestartTime"),
            (BGPPeerSpec { ttl_security: Some(0), ..base.clone() }, "spec.ttlSecurity"),
            (BGPPeerSpec { filters: vec!["Bad_Name".into()], ..base.clone() }, "spec.filters[0]"),
            (BGPPeerSpec { local_as_number: Some(23456), ..base.clone() }, "spec.localASNumber"),
            (
                BGPPeerSpec { keep_original_next_hop: true, next_hop_mode: Some(NextHopMode::NextHopSelf), ..base.clone() },
                "spec.nextHopMode",
            ),
            (BGPPeerSpec { keepalive_time: Some("0s".into()), ..base.clone() }, "spec.keepaliveTime"),
            (BGPPeerSpec { reachable_by: Some("2001:db8::1".into()), ..base.clone() }, "spec.reachableBy"),
            (
                BGPPeerSpec {
                    max_prefixes: Some(MaxPrefixes { limit: 10, action: MaxPrefixAction::Warn, restart_seconds: Some(5) }),
                    ..base.clone()
                },
                "spec.maxPrefixes.restartSeconds",
            ),
            (
                BGPPeerSpec { password: Some(PeerPassword { literal: Some("x".repeat(81)), ..Default::default() }), ..base.clone() },
                "spec.password.literal",
            ),
            (BGPPeerSpec { bfd: Some(BfdSpec { min_rx_ms: Some(5), ..Default::default() }), ..base.clone() }, "spec.bfd.minRxMs"),
            (BGPPeerSpec { bfd: Some(BfdSpec { min_tx_ms: Some(60_001), ..Default::default() }), ..base.clone() }, "spec.bfd.minTxMs"),
            (BGPPeerSpec { bfd: Some(BfdSpec { multiplier: Some(0), ..Default::default() }), ..base.clone() }, "spec.bfd.multiplier"),
            (BGPPeerSpec { bfd: Some(BfdSpec::default()), ttl_security: Some(2), ..base.clone() }, "spec.bfd"),
            (BGPPeerSpec { extended_next_hop: true, ..base.clone() }, "spec.extendedNextHop"),
        ];
        for (spec, field) in cases {
            let e = peer(spec.clone()).validate().unwrap_err();
            assert_eq!(e.field, field, "{spec:?} -> {e}");
        }
    }

    #[test]
    fn communities_by_name_or_value_attach_to_prefixes_inside_the_cidr() {
        let spec: BGPConfigurationSpec = serde_json::from_value(serde_json::json!({
            "communities": [{"name": "rack", "value": "64512:300:100"}],
            "prefixAdvertisements": [
                {"cidr": "198.19.0.0/16", "communities": ["rack", "64512:120"]},
                {"cidr": "198.19.4.0/24", "communities": ["64512:7"]},
            ],
        }))
        .unwrap();
        assert!(BGPConfiguration::new("default", spec.clone()).validate().is_ok());
        let block: ipnetwork::IpNetwork = "198.19.4.64/26".parse().unwrap();
        assert_eq!(
            spec.communities_for(&block),
            [
                CommunityValue::Standard((64512 << 16) | 7),
                CommunityValue::Standard((64512 << 16) | 120),
                CommunityValue::Large(64512, 300, 100)
            ]
        );
        assert!(spec.communities_for(&"198.18.0.0/24".parse().unwrap()).is_empty());
        let mut bad = spec.clone();
        bad.prefix_advertisements[0].communities.push("nope".into());
        assert_eq!(BGPConfiguration::new("default", bad).validate().unwrap_err().field, "spec.prefixAdvertisements[0].communities[2]");
        let mut bad = spec;
        bad.communities[0].value = "70000:1".into();
        assert_eq!(BGPConfiguration::new("default", bad).validate().unwrap_err().field, "spec.communities[0].value");
    }

    #[test]
    fn only_the_default_configuration_sets_the_as() {
        let spec = BGPConfigurationSpec { as_number: Some(65000), ..Default::default() };
        assert!(BGPConfiguration::new("default", spec.clone()).validate().is_ok());
        assert_eq!(BGPConfiguration::new("node.x", spec).validate().unwrap_err().field, "spec.asNumber");
        let d = BGPConfigurationSpec::default();
        assert_eq!((d.effective_as_number(), d.mesh_enabled(), d.effective_listen_port()), (64512, true, 179));
    }
}
