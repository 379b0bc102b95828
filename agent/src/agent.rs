//! The agent's core: node registration, CNI requests (IPAM + endpoint + host route), and the
//! reconcile loop that turns the datastore into speaker peers, exports and block blackholes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{
    AffinityState, BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPPeer, BindMode, BlockAffinity, CommunityValue, GinghamNode,
    GinghamNodeBgp, GinghamNodeSpec, IPAMBlock, IPPool, DEFAULT_NAME,
};
use gingham_bgp::speaker::SpeakerHandle;
use gingham_cni::{code, CniError, Command, Reply, Request};
use gingham_ipam::{block, AssignArgs, Ipam, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD};
use ipnetwork::IpNetwork;
use tokio::sync::{Mutex, Notify};

use crate::endpoint;
use crate::fib::{Class, FibHandle, Target};
use crate::metrics::Metrics;
use crate::peers::{self, DesiredPeer, PeerKind};

/// How often the reconcile loop runs without being kicked.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// A handle to release, and where to send the addresses it held.
type ReleaseRequest = (String, tokio::sync::oneshot::Sender<Result<Vec<IpAddr>, String>>);

pub struct Agent {
    pub node: String,
    pub address: IpNetwork,
    pub address6: Option<IpNetwork>,
    pub store: Store<AnyDatastore>,
    pub ipam: Ipam<AnyDatastore>,
    pub speaker: SpeakerHandle,
    pub fib: FibHandle,
    pub netlink: rtnetlink::Handle,
    pub mtu: u32,
    pub hold_time: u16,
    pub restart_time: u16,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    kick: Notify,
    /// Host-side veths (by index) waiting to be deleted by the reaper task.
    reaper: tokio::sync::mpsc::UnboundedSender<u32>,
    /// One IPAM writer per node: concurrent CNI requests on one node would otherwise race each
    /// other's compare-and-swap on the same block and retry quadratically.
    ipam_turn: Arc<Mutex<()>>,
    /// Releases queued for the release task, which frees a burst of them in one pass.
    releases: tokio::sync::mpsc::UnboundedSender<ReleaseRequest>,
    /// What the reconcile loop last applied (owned by it; the mutex only lets `status` read).
    applied: Mutex<Applied>,
    /// Follows `logSeverityScreen`; `None` when GINGHAM_LOG fixes the level.
    log_level: Option<crate::LogLevelSetter>,
}

#[derive(Default)]
struct Applied {
    peers: BTreeMap<IpAddr, DesiredPeer>,
    /// What we originate, with the communities prefixAdvertisements attach.
    exports: BTreeMap<IpNetwork, Vec<CommunityValue>>,
    listen: Vec<SocketAddr>,
    log_filter: &'static str,
    /// The nftables script last written for natOutgoing, and the last failure to write one.
    nat_script: Option<String>,
    nat_error: Option<String>,
    blackholes: BTreeSet<IpNetwork>,
    /// Routes to peers via their `reachableBy` gateway.
    statics: BTreeMap<IpNetwork, IpAddr>,
    last_error: Option<String>,
    datastore_ok: bool,
}

/// Writes (or refreshes) this node's GinghamNode; idempotent across restarts and keeps labels
/// someone else added.
pub async fn register_node(
    store: &Store<AnyDatastore>,
    node: &str,
    address: IpNetwork,
    address6: Option<IpNetwork>,
    as_number: Option<u32>,
    labels: &BTreeMap<String, String>,
    cluster_id: Option<&str>,
) -> anyhow::Result<GinghamNode> {
    for _ in 0..20 {
        let existing = store.get::<GinghamNode>(node).await?;
        let mut obj = existing.clone().unwrap_or_else(|| GinghamNode::new(node, GinghamNodeSpec::default()));
        let bgp = obj.spec.bgp.get_or_insert_with(GinghamNodeBgp::default);
        bgp.ipv4_address = Some(address.to_string());
        bgp.ipv6_address = address6.map(|a| a.to_string());
        if as_number.is_some() {
            bgp.as_number = as_number;
        }
        if cluster_id.is_some() {
            bgp.route_reflector_cluster_id = cluster_id.map(String::from);
        }
        let mut all = obj.metadata.labels.clone().unwrap_or_default();
        all.extend(labels.clone());
        obj.metadata.labels = Some(all);
        let result = match existing {
            Some(_) => store.update(&obj).await,
            None => store.create(&obj).await,
        };
        match result {
            Ok(o) => return Ok(o),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not write GinghamNode {node}: too many conflicting writes")
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        address: IpNetwork,
        address6: Option<IpNetwork>,
        store: Store<AnyDatastore>,
        speaker: SpeakerHandle,
        fib: FibHandle,
        netlink: rtnetlink::Handle,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
        log_level: Option<crate::LogLevelSetter>,
    ) -> Arc<Agent> {
        let (reaper, mut doomed) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let nl = netlink.clone();
        // Deleting a veth costs the kernel ~20 ms (an RCU grace period); DEL does not wait for it.
        // By index, so a pod re-added under the same name keeps its new interface.
        tokio::spawn(async move {
            while let Some(index) = doomed.recv().await {
                if let Err(e) = nl.link().del(index).execute().await {
                    if !crate::netlink::is_errno(&e, libc::ENODEV) {
                        tracing::warn!(index, error = %e, "deleting a pod interface failed");
                    }
                }
            }
        });
        let ipam_turn = Arc::new(Mutex::new(()));
        let (releases, mut queued) = tokio::sync::mpsc::unbounded_channel::<ReleaseRequest>();
        let (ipam, turn) = (Ipam::new(store.clone()), ipam_turn.clone());
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = queued.try_recv() {
                    batch.push(more);
                }
                let handles: Vec<String> = batch.iter().map(|(h, _)| h.clone()).collect();
                let _turn = turn.lock().await;
                match ipam.release_handles(&handles).await {
                    Ok(freed) => {
                        for ((_, reply), addrs) in batch.into_iter().zip(freed) {
                            let _ = reply.send(Ok(addrs));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Arc::new(Agent {
            reaper,
            releases,
            ipam_turn,
            node,
            address,
            address6,
            ipam: Ipam::new(store.clone()),
            store,
            speaker,
            fib,
            netlink,
            mtu: config.mtu,
            hold_time: config.hold_time,
            restart_time: config.restart_time,
            metrics,
            started: Instant::now(),
            kick: Notify::new(),
            applied: Mutex::new(Applied::default()),
            log_level,
        })
    }

    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Every allocation made for a pod on this node, with its block.
    fn node_allocations<'a>(
        &self,
        blocks: &'a [IPAMBlock],
    ) -> Vec<(&'a IPAMBlock, IpAddr, &'a gingham_api::resources::AllocationAttribute)> {
        blocks
            .iter()
            .flat_map(|b| block::allocations(&b.spec).into_iter().map(move |(addr, attr)| (b, addr, attr)))
            .filter(|(_, _, attr)| attr.secondary.get(ATTR_NODE) == Some(&self.node))
            .collect()
    }

    /// Re-declares the host routes of the pods already on this node (after a restart the
    /// veths are still there; their routes must stay wanted or the FIB syncer would drop them).
    pub async fn adopt_endpoints(&self) -> anyhow::Result<usize> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let mut routes = Vec::new();
        for (_, addr, attr) in self.node_allocations(&blocks) {
            let name = endpoint::host_veth_name(
                attr.secondary.get(ATTR_NAMESPACE).map(String::as_str),
                attr.secondary.get(ATTR_POD).map(String::as_str),
                attr.handle_id.as_deref().unwrap_or_default(),
            );
            if let Some(link) = crate::netlink::link_by_name(&self.netlink, &name).await? {
                routes.push((endpoint::host_route(addr), Some(Target::Device(link.header.index))));
            }
        }
        let n = routes.len();
        self.fib.set_class(Class::Endpoint, routes).await;
        Ok(n)
    }

    pub async fn handle_cni(self: &Arc<Self>, req: Request) -> Reply {
        let started = Instant::now();
        let command = req.command;
        let reply = match command {
            Command::Add => self.cni_add(&req).await,
            Command::Del => self.cni_del(&req).await,
            Command::Check => self.cni_check(&req).await,
            Command::Status => self.cni_status().await,
            Command::Gc => self.cni_gc(&req).await,
        };
        self.metrics.observe_cni(command, started.elapsed(), reply.is_ok());
        match reply {
            Ok(v) => Reply::Ok(v),
            Err(e) => {
                tracing::warn!(?command, container = %req.container_id, code = e.code, msg = %e.msg, "CNI request failed");
                Reply::Err(e)
            }
        }
    }

    fn pod_names(req: &Request) -> (Option<&str>, Option<&str>) {
        (req.arg("K8S_POD_NAMESPACE"), req.arg("K8S_POD_NAME"))
    }

    async fn cni_add(self: &Arc<Self>, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        let mut attrs = BTreeMap::from([(ATTR_NODE.to_string(), self.node.clone())]);
        if let Some(ns) = namespace {
            attrs.insert(ATTR_NAMESPACE.into(), ns.into());
        }
        if let Some(p) = pod {
            attrs.insert(ATTR_POD.into(), p.into());
        }
        let ipv6 = self.address6.is_some() && self.has_ipv6_pool().await;
        let args = AssignArgs { handle: req.container_id.clone(), node: self.node.clone(), attrs, ipv4: true, ipv6 };
        let assigned = self
            .ipam
            .assign(&args)
            .await
            .map_err(|e| CniError::new(code::IPAM_FAILURE, "no pod address could be assigned", e.to_string()))?;
        let v4 = assigned.ipv4.clone().expect("asked for IPv4");
        let addresses: Vec<IpAddr> = [Some(v4.address), assigned.ipv6.as_ref().map(|a| a.address)].into_iter().flatten().collect();
        let mtu = req.config.get("mtu").and_then(|m| m.as_u64()).map(|m| m as u32).unwrap_or(self.mtu);
        let created = endpoint::create(&self.netlink, &host_ifname, Path::new(&req.netns), &req.ifname, &addresses, mtu).await;
        let ep = match created {
            Ok(ep) => ep,
            Err(e) => {
                // Nothing half-made stays: the address goes back, the veth goes.
                let _ = endpoint::delete(&self.netlink, &host_ifname).await;
                let _turn = self.ipam_turn.lock().await;
                let _ = self.ipam.release_handle(&req.container_id).await;
                return Err(CniError::new(
                    code::DATAPLANE_FAILURE,
                    format!("could not set up {} in {}", req.ifname, req.netns),
                    format!("{e:#}"),
                ));
            }
        };
        self.fib
            .set_class(Class::Endpoint, addresses.iter().map(|a| (endpoint::host_route(*a), Some(Target::Device(ep.host_index)))))
            .await;
        // A new block or a borrowed address changes what we export: reconcile now, not later.
        self.kick();
        let version = req.config.get("cniVersion").and_then(|v| v.as_str()).unwrap_or("1.1.0");
        Ok(serde_json::json!({
            "cniVersion": version,
            "interfaces": [
                {"name": ep.host_ifname, "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": req.ifname, "mac": ep.pod_mac, "sandbox": req.netns},
            ],
            "ips": addresses.iter().map(|a| serde_json::json!({
                "address": endpoint::host_route(*a).to_string(),
                "interface": 1,
                "gateway": if a.is_ipv4() { endpoint::GATEWAY_V4.to_string() } else { endpoint::GATEWAY_V6.to_string() },
            })).collect::<Vec<_>>(),
            "routes": addresses.iter().map(|a| if a.is_ipv4() {
                serde_json::json!({"dst": "0.0.0.0/0", "gw": endpoint::GATEWAY_V4.to_string()})
            } else {
                serde_json::json!({"dst": "::/0", "gw": endpoint::GATEWAY_V6.to_string()})
            }).collect::<Vec<_>>(),
            "dns": {},
        }))
    }

    /// Whether an enabled IPv6 pool exists (pods then get an IPv6 address too).
    async fn has_ipv6_pool(&self) -> bool {
        let Ok((pools, _)) = self.store.list::<gingham_api::resources::IPPool>().await else { return false };
        pools.iter().any(|p| !p.spec.disabled && p.spec.network().is_some_and(|n| n.is_ipv6()))
    }

    async fn cni_del(self: &Arc<Self>, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        // if_nametoindex avoids netlink (and the RTNL lock a deletion in progress holds).
        if let Some(index) = crate::netlink::index_of(&host_ifname) {
            let _ = self.reaper.send(index);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.releases.send((req.container_id.clone(), tx));
        let freed = rx
            .await
            .map_err(|_| "the release task stopped".to_string())
            .and_then(|r| r)
            .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, "could not release the pod's address", e))?;
        self.fib.set_class(Class::Endpoint, freed.iter().map(|a| (endpoint::host_route(*a), None))).await;
        self.kick();
        Ok(serde_json::json!({}))
    }

    async fn cni_check(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        let held = self
            .held_address(&req.container_id)
            .await
            .ok_or_else(|| CniError::new(code::UNKNOWN_CONTAINER, format!("container {} holds no address", req.container_id), ""))?;
        endpoint::check(&self.netlink, &host_ifname, Path::new(&req.netns), &req.ifname, held)
            .await
            .map_err(|e| CniError::new(code::DATAPLANE_FAILURE, "the pod's network is not as ADD left it", format!("{e:#}")))?;
        Ok(serde_json::json!({}))
    }

    async fn held_address(&self, handle: &str) -> Option<IpAddr> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await.ok()?;
        blocks.iter().flat_map(|b| block::allocations(&b.spec)).find(|(_, a)| a.handle_id.as_deref() == Some(handle)).map(|(addr, _)| addr)
    }

    async fn cni_status(&self) -> Result<serde_json::Value, CniError> {
        if !self.applied.lock().await.datastore_ok {
            return Err(CniError::new(code::NOT_AVAILABLE, "gingham-agent cannot reach its datastore yet", ""));
        }
        Ok(serde_json::json!({}))
    }

    /// GC: frees the addresses of this node's containers the runtime no longer knows.
    async fn cni_gc(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let valid: BTreeSet<String> = req
            .config
            .get("cni.dev/valid-attachments")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.get("containerID").and_then(|c| c.as_str()).map(String::from)).collect())
            .unwrap_or_default();
        let (blocks, _) =
            self.store.list::<IPAMBlock>().await.map_err(|e| CniError::new(code::TRY_AGAIN_LATER, "datastore", e.to_string()))?;
        let stale: BTreeSet<String> =
            self.node_allocations(&blocks).into_iter().filter_map(|(_, _, a)| a.handle_id.clone()).filter(|h| !valid.contains(h)).collect();
        for handle in stale {
            tracing::info!(%handle, "GC: releasing an attachment the runtime no longer has");
            if let Ok(freed) = self.ipam.release_handle(&handle).await {
                self.fib.set_class(Class::Endpoint, freed.iter().map(|a| (endpoint::host_route(*a), None))).await;
            }
        }
        Ok(serde_json::json!({}))
    }

    /// Kicks the reconcile loop on every change of the kinds it reads, so a node joining or a
    /// BGPPeer appearing takes effect at once rather than at the next periodic pass.
    pub fn watch_datastore(self: &Arc<Self>) {
        use gingham_api::resources::Kind;
        fn follow<K: Kind>(agent: Arc<Agent>) {
            tokio::spawn(async move {
                loop {
                    let from = match agent.store.list::<K>().await {
                        Ok((_, rev)) => rev,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            continue;
                        }
                    };
                    let Ok(mut watch) = agent.store.watch::<K>(&from).await else {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    };
                    while let Some(event) = watch.next().await {
                        if event.is_err() {
                            break;
                        }
                        agent.kick();
                    }
                }
            });
        }
        follow::<GinghamNode>(self.clone());
        follow::<BGPPeer>(self.clone());
        follow::<BGPConfiguration>(self.clone());
        follow::<BlockAffinity>(self.clone());
        follow::<BGPFilter>(self.clone());
        follow::<IPPool>(self.clone());
    }

    /// The loop: datastore -> desired peers and exports -> speaker and FIB, as diffs.
    pub async fn reconcile_forever(self: Arc<Self>) {
        loop {
            let result = self.reconcile_once().await;
            {
                let mut applied = self.applied.lock().await;
                applied.datastore_ok = result.is_ok();
                applied.last_error = result.as_ref().err().map(|e| format!("{e:#}"));
            }
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "reconcile failed; retrying");
            }
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    async fn reconcile_once(&self) -> anyhow::Result<()> {
        let (nodes, _) = self.store.list::<GinghamNode>().await?;
        let (bgp_peers, _) = self.store.list::<BGPPeer>().await?;
        let config = self.store.get::<BGPConfiguration>(DEFAULT_NAME).await?.map(|c| c.spec).unwrap_or_default();
        let me = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(self.node.as_str())).cloned();
        let Some(me) = me else { anyhow::bail!("GinghamNode {} is gone", self.node) };
        let no_secret = |_: &str, _: &str| None;
        let (filters, _) = self.store.list::<BGPFilter>().await?;
        let (pool_objects, _) = self.store.list::<IPPool>().await?;
        let pools: Vec<IpNetwork> = pool_objects.iter().filter(|p| !p.spec.disabled).filter_map(|p| p.spec.network()).collect();
        let nat_script = crate::nat::script(&pool_objects.iter().map(|p| p.spec.clone()).collect::<Vec<_>>());
        let mut want = peers::desired(&peers::View {
            me: &me,
            nodes: &nodes,
            peers: &bgp_peers,
            config: &config,
            filters: &filters,
            pools: &pools,
            secret: &no_secret,
        });
        for p in want.values_mut() {
            p.config.hold_time = self.hold_time;
            p.config.graceful_restart = p.config.graceful_restart.map(|_| self.restart_time);
        }

        // Exports: every block affine to us, and every address we borrowed from another block.
        let (affinities, _) = self.store.list::<BlockAffinity>().await?;
        let blocks_mine: BTreeSet<IpNetwork> = affinities
            .iter()
            .filter(|a| a.spec.node == self.node && a.spec.state == AffinityState::Confirmed)
            .filter_map(|a| a.spec.cidr.parse().ok())
            .collect();
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let borrowed: BTreeSet<IpNetwork> = self
            .node_allocations(&blocks)
            .into_iter()
            .filter(|(b, _, _)| block::affine_node(&b.spec) != Some(self.node.as_str()))
            .map(|(_, addr, _)| endpoint::host_route(addr))
            .collect();
        let exports: BTreeMap<IpNetwork, Vec<CommunityValue>> =
            blocks_mine.iter().chain(borrowed.iter()).map(|p| (*p, config.communities_for(p))).collect();
        let listen = listen_addresses(&config, self.address, self.address6);

        let mut applied = self.applied.lock().await;
        for (addr, old) in &applied.peers {
            if !want.contains_key(addr) {
                tracing::info!(peer = %addr, kind = ?old.kind, "removing BGP peer");
                self.speaker.remove_peer(*addr).await?;
            }
        }
        for (addr, p) in &want {
            if applied.peers.get(addr) != Some(p) {
                tracing::info!(peer = %addr, kind = ?p.kind, passive = p.config.passive, "configuring BGP peer");
                self.speaker.add_peer(p.config.clone()).await?;
            }
        }
        let statics: BTreeMap<IpNetwork, IpAddr> =
            want.iter().filter_map(|(addr, p)| p.reachable_by.map(|gw| (IpNetwork::from(*addr), gw))).collect();
        let mut static_changes: Vec<(IpNetwork, Option<Target>)> =
            applied.statics.keys().filter(|k| !statics.contains_key(k)).map(|k| (*k, None)).collect();
        static_changes.extend(
            statics.iter().filter(|(k, gw)| applied.statics.get(k) != Some(gw)).map(|(k, gw)| (*k, Some(Target::Gateways(vec![*gw])))),
        );
        applied.statics = statics;
        applied.peers = want;
        let (n_peers, n_exports) = (applied.peers.len(), exports.len());
        if applied.nat_script.as_ref() != Some(&nat_script) {
            let script = nat_script.clone();
            let result = tokio::task::spawn_blocking(move || crate::nat::apply(&script)).await?;
            match result {
                Ok(()) => {
                    tracing::info!("natOutgoing rules up to date");
                    applied.nat_script = Some(nat_script);
                    applied.nat_error = None;
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if applied.nat_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "natOutgoing rules not written; retrying at each reconcile");
                    }
                    applied.nat_error = Some(e);
                }
            }
        }
        let level = log_filter(config.log_severity_screen.as_deref());
        if let Some(set) = self.log_level.as_ref().filter(|_| applied.log_filter != level) {
            match set(level) {
                Ok(()) => tracing::info!(level, "log level from BGPConfiguration logSeverityScreen"),
                Err(e) => tracing::warn!(error = %e, "could not change the log level"),
            }
            applied.log_filter = level;
        }
        if applied.listen != listen {
            self.speaker.listen(listen.clone()).await?;
            applied.listen = listen;
        }
        for gone in applied.exports.keys().filter(|p| !exports.contains_key(p)) {
            self.speaker.withdraw(*gone).await?;
        }
        for (prefix, tags) in &exports {
            if applied.exports.get(prefix) != Some(tags) {
                tracing::info!(%prefix, ?tags, "advertising");
                let (standard, large) = split_communities(tags);
                self.speaker.originate_tagged(*prefix, standard, large).await?;
            }
        }
        applied.exports = exports;
        let mut fib = Vec::new();
        fib.extend(applied.blackholes.difference(&blocks_mine).map(|b| (*b, None)));
        fib.extend(blocks_mine.difference(&applied.blackholes).map(|b| (*b, Some(Target::Blackhole))));
        applied.blackholes = blocks_mine;
        drop(applied);
        self.fib.set_class(Class::Blackhole, fib).await;
        self.fib.set_class(Class::Static, static_changes).await;
        self.metrics.set_ipam(&blocks, &self.node);
        tracing::debug!(peers = n_peers, exports = n_exports, "reconciled");
        Ok(())
    }

    /// Peers as `node status` shows them.
    pub async fn status(&self) -> serde_json::Value {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        let applied = self.applied.lock().await;
        let peers: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                let kind = applied.peers.get(&s.config.address).map(|p| p.kind).unwrap_or(PeerKind::Global);
                serde_json::json!({
                    "address": s.config.address.to_string(),
                    "asNumber": s.config.peer_as,
                    "type": kind,
                    "state": format!("{:?}", s.state),
                    "sinceSeconds": s.uptime.map(|u| u.as_secs()),
                    "info": s.last_error.clone().unwrap_or_default(),
                    "problems": applied.peers.get(&s.config.address).map(|p| p.problems.clone()).unwrap_or_default(),
                    "prefixesReceived": s.prefixes_received,
                    "prefixesAccepted": s.prefixes_accepted,
                    "prefixesAdvertised": s.prefixes_advertised,
                })
            })
            .collect();
        let fib = self.fib.stats().await;
        serde_json::json!({
            "node": self.node,
            "version": env!("CARGO_PKG_VERSION"),
            "address": self.address.to_string(),
            "ready": self.ready_with(&statuses, &applied),
            "datastore": if applied.datastore_ok { "ok".to_string() } else { applied.last_error.clone().unwrap_or("not yet read".into()) },
            "synced": self.speaker.is_synced(),
            "peers": peers,
            "exports": applied.exports.keys().map(|p| p.to_string()).collect::<Vec<_>>(),
            "routes": fib,
            "natOutgoing": applied.nat_error.clone().unwrap_or_else(|| "ok".into()),
        })
    }

    /// Calico's readiness rule: during the first 30 s every desired peer must be Established,
    /// afterwards at least one (when there are any); the datastore must answer.
    fn ready_with(&self, statuses: &[gingham_bgp::speaker::PeerStatus], applied: &Applied) -> bool {
        if !applied.datastore_ok {
            return false;
        }
        let up = statuses.iter().filter(|s| s.state == gingham_bgp::fsm::State::Established).count();
        if statuses.is_empty() {
            return true;
        }
        if self.started.elapsed() < Duration::from_secs(30) {
            up == statuses.len()
        } else {
            up > 0
        }
    }

    pub async fn ready(&self) -> bool {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        let applied = self.applied.lock().await;
        self.ready_with(&statuses, &applied)
    }
}

/// Calico's severities as tracing filters (tracing has no Fatal: Error is the closest).
fn log_filter(severity: Option<&str>) -> &'static str {
    match severity {
        Some("Debug") => "debug",
        Some("Warning") => "warn",
        Some("Error") | Some("Fatal") => "error",
        _ => "info",
    }
}

fn split_communities(tags: &[CommunityValue]) -> (Vec<u32>, Vec<gingham_bgp::wire::LargeCommunity>) {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for t in tags {
        match *t {
            CommunityValue::Standard(c) => standard.push(c),
            CommunityValue::Large(global, local1, local2) => large.push(gingham_bgp::wire::LargeCommunity { global, local1, local2 }),
        }
    }
    (standard, large)
}

/// Where BGP listens: every address (Calico's default `bindMode: None`) or the node's own.
pub fn listen_addresses(config: &BGPConfigurationSpec, address: IpNetwork, address6: Option<IpNetwork>) -> Vec<SocketAddr> {
    let port = config.effective_listen_port();
    let (v4, v6): (IpAddr, Option<IpAddr>) = match config.bind_mode {
        Some(BindMode::NodeIP) => (address.ip(), address6.map(|a| a.ip())),
        _ => (Ipv4Addr::UNSPECIFIED.into(), address6.map(|_| std::net::Ipv6Addr::UNSPECIFIED.into())),
    };
    std::iter::once(v4).chain(v6).map(|ip| SocketAddr::new(ip, port)).collect()
}

/// The node's router id: its IPv4 address.
pub fn router_id(address: IpNetwork) -> Ipv4Addr {
    match address.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::new(198, 18, 255, 255),
    }
}

impl Agent {
    /// Brings the BGP and route gauges up to date before a scrape.
    pub async fn refresh_metrics(&self) {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        self.metrics.sessions.clear();
        for s in &statuses {
            self.metrics.sessions.get_or_create(&crate::metrics::StateLabel { state: format!("{:?}", s.state) }).inc();
        }
        self.metrics.prefixes_received.set(statuses.iter().map(|s| s.prefixes_received as i64).sum());
        self.metrics.prefixes_advertised.set(statuses.iter().map(|s| s.prefixes_advertised as i64).sum());
        let fib = self.fib.stats().await;
        self.metrics.routes_programmed.set(fib.wanted as u64);
        self.metrics.routes_not_installed.set(fib.not_installed as u64);
    }
}
