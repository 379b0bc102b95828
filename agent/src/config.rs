//! Flags and environment variables (the names ../shared/DESIGN.md fixes).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug, Clone)]
#[command(name = "gingham-agent", version, about = "Gingham node agent: IPAM, pod interfaces, routes and BGP for one node")]
pub struct Config {
    /// This node's name (the DaemonSet sets it from the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The agent's namespace (the DaemonSet sets it from the downward API): BGPPeer passwords
    /// are read from Secrets there, on the kubernetes datastore and in sqlite mode alike.
    #[arg(long, env = "POD_NAMESPACE", default_value = "gingham-system")]
    pub namespace: String,
    /// `sqlite:PATH` or `kubernetes`.
    #[arg(long, env = "GINGHAM_DATASTORE", default_value = "sqlite:/var/lib/gingham/gingham.db")]
    pub datastore: String,
    /// The node's BGP address: `autodetect`, `kubernetes-internal-ip`, an address (optionally
    /// /prefix), `interface=REGEX` or `can-reach=ADDR`. Used for a new GinghamNode, or when the
    /// stored address is no longer on the host.
    #[arg(long = "ip", env = "GINGHAM_IP", default_value = "autodetect")]
    pub ip: String,
    /// The node's IPv6 BGP address: `none` (IPv4 only), or any method `--ip` takes. With one,
    /// the node peers over IPv6 too and pods get an IPv6 address when an IPv6 pool selects it.
    #[arg(long = "ip6", env = "GINGHAM_IP6", default_value = "none")]
    pub ip6: String,
    /// This node's AS for a new GinghamNode (the BGPConfiguration `default`'s AS otherwise);
    /// afterwards the GinghamNode's `asNumber` is the truth.
    #[arg(long, env = "GINGHAM_AS_NUMBER")]
    pub as_number: Option<u32>,
    /// Flags (`--ip`, `--ip6`, `--as-number`, `--route-reflector-cluster-id`) replace what an
    /// existing GinghamNode says instead of only seeding a new one.
    #[arg(long, env = "GINGHAM_OVERRIDE_NODE_CONFIG")]
    pub override_node_config: bool,
    /// Labels for this node's GinghamNode, `k=v,k2=v2` (BGPPeer and IPPool selectors match them).
    #[arg(long, env = "GINGHAM_NODE_LABELS", default_value = "")]
    pub node_labels: String,
    /// Makes a new node a route reflector with this cluster ID.
    #[arg(long, env = "GINGHAM_RR_CLUSTER_ID")]
    pub route_reflector_cluster_id: Option<String>,
    /// When no IPPool exists yet, create `default-ipv4-ippool` with this CIDR (as Calico's
    /// CALICO_IPV4POOL_CIDR does); existing pools are never changed.
    #[arg(long, env = "GINGHAM_POOL_CIDR")]
    pub pool_cidr: Option<String>,
    /// Block size of that default pool.
    #[arg(long, env = "GINGHAM_BLOCK_SIZE")]
    pub block_size: Option<u8>,
    #[arg(long, env = "GINGHAM_CNI_SOCKET", default_value = gingham_cni::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,
    /// `/healthz`, `/readyz`, `/status` (and `/metrics`): probes and ginghamctl reach it on the
    /// node itself.
    #[arg(long, env = "GINGHAM_STATUS_ADDR", default_value = "127.0.0.1:9099")]
    pub status_addr: SocketAddr,
    /// Also serve `/metrics` (only) here, e.g. `0.0.0.0:9091` for Prometheus; off by default.
    #[arg(long, env = "GINGHAM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// MTU of pod interfaces unless the CNI configuration says `mtu`.
    #[arg(long, env = "GINGHAM_MTU", default_value_t = 1500)]
    pub mtu: u32,
    /// Graceful-restart time advertised to peers, seconds.
    #[arg(long, env = "GINGHAM_RESTART_TIME", default_value_t = 120)]
    pub restart_time: u16,
    /// BGP hold time, seconds.
    #[arg(long, env = "GINGHAM_HOLD_TIME", default_value_t = 90)]
    pub hold_time: u16,
    /// Kernel metric of routes learned over BGP. Keep it above the metrics of the node's own
    /// default and connected routes, so that those win where a peer announces the same prefix
    /// (IPv6 ones are at 256 and 1024 by default). 0-2 and 1024-1026 are the metrics of pod,
    /// block and peer routes.
    #[arg(long, env = "GINGHAM_LEARNED_ROUTE_METRIC", default_value_t = crate::fib::DEFAULT_LEARNED_METRIC,
          value_parser = learned_metric)]
    pub learned_route_metric: u32,
    /// Routes through gateways name kernel nexthop objects (Linux 5.3+; one per gateway and one
    /// per ECMP set, so a gateway that goes away is one operation instead of one per route).
    /// `false` writes the gateways into every route, as on kernels without them (the agent
    /// also falls back to that by itself when the kernel cannot list nexthop objects).
    #[arg(long, env = "GINGHAM_KERNEL_NEXTHOPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub kernel_nexthops: bool,
    /// Seconds a pod's interface may be missing (namespace gone without a CNI DEL) before its
    /// addresses are released.
    #[arg(long, env = "GINGHAM_RECLAIM_GRACE", default_value_t = 30)]
    pub reclaim_grace: u16,
    /// Seconds between the watch cache's full re-lists (a safety net: changes arrive by watch).
    #[arg(long, env = "GINGHAM_CACHE_RESYNC", default_value_t = 600, value_parser = clap::value_parser!(u64).range(60..))]
    pub cache_resync: u64,
    #[arg(long, env = "GINGHAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn learned_metric(text: &str) -> Result<u32, String> {
    let m: u32 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if m <= 2 || (1024..=1026).contains(&m) {
        return Err(format!("{m} is the metric of pod, block or peer routes; choose another"));
    }
    Ok(m)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    pub fn labels(&self) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        self.node_labels
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--node-labels entry {kv:?} is not k=v"))
            })
            .collect()
    }
}
