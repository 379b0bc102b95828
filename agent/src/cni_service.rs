//! CNI requests: ADD, DEL, CHECK, STATUS and GC, each served on a task of its own so that pod
//! interfaces are built concurrently, while every address goes through the node's one IPAM
//! writer ([`IpamWriter`]) and every route through the FIB syncer. A veth reaper task deletes
//! host interfaces off the DEL path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gingham_cni::{code, CniError, CniResult, Command, Dns, Interface, IpConfig, Reply, Request, RouteConfig};
use gingham_ipam::{AssignArgs, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_POD_UID};
use tokio::sync::{mpsc, watch};

use crate::cluster::ClusterCache;
use crate::controller::ControllerStatus;
use crate::endpoint;
use crate::fib::{Class, FibHandle, Target};
use crate::ipam_writer::IpamWriter;
use crate::metrics::Metrics;

/// Everything a request needs; immutable, shared by the request tasks.
pub struct CniService {
    pub node: String,
    pub ipv6: bool,
    pub mtu: u32,
    pub netlink: rtnetlink::Handle,
    pub fib: FibHandle,
    pub ipam: IpamWriter,
    pub cache: ClusterCache,
    pub controller: watch::Receiver<ControllerStatus>,
    pub metrics: Arc<Metrics>,
    /// Host-side veths (by index) for the reaper to delete.
    reaper: mpsc::UnboundedSender<u32>,
}

impl CniService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        ipv6: bool,
        mtu: u32,
        netlink: rtnetlink::Handle,
        fib: FibHandle,
        ipam: IpamWriter,
        cache: ClusterCache,
        controller: watch::Receiver<ControllerStatus>,
        metrics: Arc<Metrics>,
    ) -> Arc<CniService> {
        let (reaper, mut doomed) = mpsc::unbounded_channel::<u32>();
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
        Arc::new(CniService { node, ipv6, mtu, netlink, fib, ipam, cache, controller, metrics, reaper })
    }

    /// Re-declares the host routes of the pods already on this node (after a restart the veths
    /// are still there; their routes must stay wanted or the FIB syncer would drop them).
    pub async fn adopt_endpoints(&self) -> anyhow::Result<usize> {
        let mut routes = Vec::new();
        for (addr, held) in self.ipam.held().iter() {
            let name = endpoint::host_veth_name(held.namespace.as_deref(), held.pod.as_deref(), &held.handle);
            if let Some(link) = crate::netlink::link_by_name(&self.netlink, &name).await? {
                routes.push((endpoint::host_route(*addr), Some(Target::Device(link.header.index))));
            }
        }
        let n = routes.len();
        self.fib.set_class(Class::Endpoint, routes).await;
        Ok(n)
    }

    /// Local reclamation: a pod whose interface vanished without a DEL (its namespace was
    /// removed by a runtime that crashed, or that sends no GC) gets its addresses, routes and
    /// handle released after a grace period in which no new ADD brought the interface back.
    /// Releases go by handle, so an address since reused by another pod is never freed.
    pub fn spawn_reclaimer(self: &Arc<Self>, every: Duration, grace: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut missing: BTreeMap<String, Instant> = BTreeMap::new();
            loop {
                tokio::time::sleep(every).await;
                let held = me.ipam.held();
                let mut seen = BTreeSet::new();
                for h in held.values() {
                    if !seen.insert(h.handle.clone()) {
                        continue;
                    }
                    let veth = endpoint::host_veth_name(h.namespace.as_deref(), h.pod.as_deref(), &h.handle);
                    // Another sandbox of the same pod owns the interface name now: the late-DEL
                    // rule applies to this one, not reclamation.
                    let replaced = h.namespace.is_some()
                        && held.values().any(|o| o.handle != h.handle && o.namespace == h.namespace && o.pod == h.pod);
                    if crate::netlink::index_of(&veth).is_some() || replaced {
                        missing.remove(&h.handle);
                        continue;
                    }
                    let since = *missing.entry(h.handle.clone()).or_insert_with(Instant::now);
                    if since.elapsed() < grace {
                        continue;
                    }
                    match me.ipam.release(&h.handle).await {
                        Ok(freed) => {
                            tracing::info!(handle = %h.handle, ?freed, "reclaimed the addresses of a pod whose interface vanished without a DEL");
                            me.metrics.reclaimed.inc_by(freed.len() as u64);
                            me.fib.set_class(Class::Endpoint, freed.iter().map(|a| (endpoint::host_route(*a), None))).await;
                            missing.remove(&h.handle);
                        }
                        Err(e) => tracing::warn!(handle = %h.handle, error = %e, "reclaiming a vanished pod's addresses failed; retrying"),
                    }
                }
                missing.retain(|handle, _| seen.contains(handle));
            }
        });
    }

    pub async fn handle(self: &Arc<Self>, req: Request) -> Reply {
        let started = Instant::now();
        let command = req.command;
        let reply = match command {
            Command::Add => self.add(&req).await,
            Command::Del => self.del(&req).await,
            Command::Check => self.check(&req).await,
            Command::Status => self.status(),
            Command::Gc => self.gc(&req).await,
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

    fn has_ipv6_pool(&self) -> bool {
        pods_get_ipv6(self.cache.pools.snapshot().values())
    }

    async fn add(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        let mut attrs = BTreeMap::from([(ATTR_NODE.to_string(), self.node.clone())]);
        if let Some(ns) = namespace {
            attrs.insert(ATTR_NAMESPACE.into(), ns.into());
        }
        if let Some(p) = pod {
            attrs.insert(ATTR_POD.into(), p.into());
        }
        if let Some(uid) = req.arg("K8S_POD_UID") {
            attrs.insert(ATTR_POD_UID.into(), uid.into());
        }
        let ipv6 = self.ipv6 && self.has_ipv6_pool();
        let args = AssignArgs { handle: req.container_id.clone(), node: self.node.clone(), attrs, ipv4: true, ipv6 };
        let asked = Instant::now();
        let assigned = self.ipam.assign(args).await;
        self.metrics.observe_ipam_assign(asked.elapsed());
        let assigned = assigned.map_err(|e| CniError::new(code::IPAM_FAILURE, "no pod address could be assigned", e))?;
        let v4 = assigned.ipv4.clone().expect("asked for IPv4");
        let addresses: Vec<IpAddr> = [Some(v4.address), assigned.ipv6.as_ref().map(|a| a.address)].into_iter().flatten().collect();
        let mtu = req.config.mtu.unwrap_or(self.mtu);
        let created = endpoint::create(&self.netlink, &host_ifname, Path::new(&req.netns), &req.ifname, &addresses, mtu).await;
        let ep = match created {
            Ok(ep) => ep,
            Err(e) => {
                // Nothing half-made stays: the address goes back, the veth goes.
                let _ = endpoint::delete(&self.netlink, &host_ifname).await;
                let _ = self.ipam.release(&req.container_id).await;
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
        let version = &req.config.cni_version;
        let gateway = |a: &IpAddr| if a.is_ipv4() { endpoint::GATEWAY_V4.to_string() } else { endpoint::GATEWAY_V6.to_string() };
        let result = CniResult {
            cni_version: version.to_string(),
            interfaces: vec![
                Interface { name: ep.host_ifname.clone(), mac: "ee:ee:ee:ee:ee:ee".into(), sandbox: None },
                Interface { name: req.ifname.clone(), mac: ep.pod_mac.clone(), sandbox: Some(req.netns.clone()) },
            ],
            ips: addresses
                .iter()
                .map(|a| IpConfig { address: endpoint::host_route(*a).to_string(), interface: Some(1), gateway: Some(gateway(a)) })
                .collect(),
            routes: addresses
                .iter()
                .map(|a| RouteConfig { dst: if a.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.into(), gw: Some(gateway(a)) })
                .collect(),
            dns: Dns::default(),
        };
        Ok(serde_json::to_value(result).expect("a CNI result serialises"))
    }

    async fn del(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        // The host veth is named after the pod, not the sandbox: a late DEL for an old sandbox
        // must leave the interface of the pod's current one alone.
        let current = namespace.is_some()
            && self
                .ipam
                .held()
                .values()
                .any(|h| h.handle != req.container_id && h.namespace.as_deref() == namespace && h.pod.as_deref() == pod);
        if current {
            tracing::info!(container = %req.container_id, "DEL of a sandbox the pod has replaced: its interface stays");
        } else if let Some(index) = crate::netlink::index_of(&host_ifname) {
            // if_nametoindex avoids netlink (and the RTNL lock a deletion in progress holds).
            let _ = self.reaper.send(index);
        }
        let freed = self
            .ipam
            .release(&req.container_id)
            .await
            .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, "could not release the pod's address", e))?;
        self.fib.set_class(Class::Endpoint, freed.iter().map(|a| (endpoint::host_route(*a), None))).await;
        Ok(serde_json::json!({}))
    }

    async fn check(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let (namespace, pod) = Self::pod_names(req);
        let host_ifname = endpoint::host_veth_name(namespace, pod, &req.container_id);
        let held = self.ipam.held();
        let address = held
            .iter()
            .find(|(_, h)| h.handle == req.container_id)
            .map(|(a, _)| *a)
            .ok_or_else(|| CniError::new(code::UNKNOWN_CONTAINER, format!("container {} holds no address", req.container_id), ""))?;
        endpoint::check(&self.netlink, &host_ifname, Path::new(&req.netns), &req.ifname, address)
            .await
            .map_err(|e| CniError::new(code::DATAPLANE_FAILURE, "the pod's network is not as ADD left it", format!("{e:#}")))?;
        Ok(serde_json::json!({}))
    }

    fn status(&self) -> Result<serde_json::Value, CniError> {
        if let Err(why) = &self.controller.borrow().datastore {
            return Err(CniError::new(code::NOT_AVAILABLE, "gingham-agent cannot use its datastore yet", why.clone()));
        }
        Ok(serde_json::json!({}))
    }

    /// GC: frees the addresses of this node's containers the runtime no longer knows. Without
    /// the list of valid attachments nothing is known to be stale, so nothing is freed.
    async fn gc(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let Some(list) = &req.config.valid_attachments else {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "GC needs cni.dev/valid-attachments",
                "without the list of attachments still in use nothing can be known to be stale; nothing was released",
            ));
        };
        let valid: BTreeSet<&str> = list.iter().map(|a| a.container_id.as_str()).collect();
        let stale: BTreeSet<String> = self.ipam.held().values().map(|h| h.handle.clone()).filter(|h| !valid.contains(h.as_str())).collect();
        for handle in stale {
            tracing::info!(%handle, "GC: releasing an attachment the runtime no longer has");
            if let Ok(freed) = self.ipam.release(&handle).await {
                self.fib.set_class(Class::Endpoint, freed.iter().map(|a| (endpoint::host_route(*a), None))).await;
            }
        }
        Ok(serde_json::json!({}))
    }
}

/// Whether pods get an IPv6 address too: an enabled IPv6 pool for pods exists (a LoadBalancer
/// pool's addresses are Services').
fn pods_get_ipv6<'a>(pools: impl IntoIterator<Item = &'a gingham_api::resources::IPPool>) -> bool {
    use gingham_api::resources::AllowedUse;
    pools.into_iter().any(|p| !p.spec.disabled && p.spec.allows(AllowedUse::Workload) && p.spec.network().is_some_and(|n| n.is_ipv6()))
}

#[cfg(test)]
mod tests {
    use gingham_api::resources::{AllowedUse, IPPool, IPPoolSpec};

    #[test]
    fn an_ipv6_load_balancer_pool_does_not_make_pods_dual_stack() {
        let pool = |cidr: &str, uses: Option<Vec<AllowedUse>>| {
            IPPool::new("p", IPPoolSpec { cidr: cidr.into(), allowed_uses: uses, ..Default::default() })
        };
        let v4 = pool("198.19.0.0/16", None);
        let lb6 = pool("2001:db8:113::/112", Some(vec![AllowedUse::LoadBalancer]));
        assert!(!super::pods_get_ipv6([&v4, &lb6]));
        assert!(super::pods_get_ipv6([&v4, &pool("2001:db8:19::/48", None)]));
    }
}
