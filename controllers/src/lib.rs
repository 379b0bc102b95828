//! `gingham-controllers`: the work no single node owns, done by one active replica per cluster
//! (a Lease elects it, [`leader`]). It follows Nodes and Pods (metadata only), GinghamNodes and
//! IPAM blocks through the watch cache and, on every change and every few seconds:
//!
//! - mirrors each Kubernetes Node's labels onto its GinghamNode ([`labels`]);
//! - retires the GinghamNode, its status report, addresses and blocks of a deleted Node
//!   ([`node_gc`]);
//! - releases the addresses of pods that no longer exist, after a grace ([`pod_gc`]);
//! - hands out and releases Services' LoadBalancer addresses and writes their status
//!   ([`load_balancer`]), following Services, IPPools and the blocks.
//!
//! The garbage collection needs the kubernetes datastore (in sqlite mode there are no Nodes or
//! Pods to follow: `ginghamctl delete node` retires a node, and the agents reclaim their pods'
//! addresses); LoadBalancer IPAM runs on either.

pub mod labels;
pub mod leader;
pub mod load_balancer;
pub mod node_gc;
pub mod pod_gc;
#[cfg(test)]
mod testing;

use std::time::Duration;

use gingham_api::cache::{CacheOptions, Reflector, Snapshot};
use gingham_api::datastore::{Datastore, DatastoreError, Store};
use gingham_api::resources::core::{NodeMetadata, PodMetadata, Service};
use gingham_api::resources::{GinghamNode, IPAMBlock, IPPool};
use gingham_ipam::{Ipam, IpamError, ReleaseCheck};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long a pod must be gone before its addresses are released.
    pub pod_grace: Duration,
    pub cache: CacheOptions,
    /// Node and pod garbage collection and label sync: they follow Kubernetes Nodes and Pods,
    /// so only on the kubernetes datastore.
    pub collect_garbage: bool,
}

/// What the controllers have done since they started leading (logged, and read by tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub nodes_retired: u64,
    pub node_addresses_released: u64,
    pub pod_handles_released: u64,
    pub pod_addresses_released: u64,
    pub label_updates: u64,
    pub load_balancer_assigned: u64,
    pub load_balancer_released: u64,
    pub service_status_writes: u64,
}

/// The caches garbage collection reads.
struct GcCaches {
    ginghams: Reflector<GinghamNode>,
    nodes: Reflector<NodeMetadata>,
    pods: Reflector<PodMetadata>,
}

/// The controllers' work while leading; runs until dropped. `totals` follows what was done.
pub async fn run<D: Datastore>(store: Store<D>, options: Options, totals: watch::Sender<Totals>) {
    let blocks: Reflector<IPAMBlock> = Reflector::start(store.clone(), options.cache);
    let services: Reflector<Service> = Reflector::start(store.clone(), options.cache);
    let pools: Reflector<IPPool> = Reflector::start(store.clone(), options.cache);
    let gc = options.collect_garbage.then(|| GcCaches {
        ginghams: Reflector::start(store.clone(), options.cache),
        nodes: Reflector::start(store.clone(), options.cache),
        pods: Reflector::start(store.clone(), options.cache),
    });
    blocks.synced().await;
    services.synced().await;
    pools.synced().await;
    if let Some(gc) = &gc {
        gc.ginghams.synced().await;
        gc.nodes.synced().await;
        gc.pods.synced().await;
    }
    tracing::info!(garbage_collection = gc.is_some(), "caches synced");
    let ipam = Ipam::new(store.clone());
    let mut pod_gc = pod_gc::PodGc::new(options.pod_grace);
    // Pods waiting out their grace, and LoadBalancer work that failed, are looked at again this
    // often even when nothing changes.
    let tick = (options.pod_grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let (mut b_rx, mut s_rx, mut pool_rx) = (blocks.changed(), services.changed(), pools.changed());
    let mut gc_rx = gc.as_ref().map(|gc| (gc.ginghams.changed(), gc.nodes.changed(), gc.pods.changed()));
    let mut load_balancers_due = true;
    loop {
        b_rx.mark_unchanged();
        s_rx.mark_unchanged();
        pool_rx.mark_unchanged();
        if let Some((g, n, p)) = gc_rx.as_mut() {
            g.mark_unchanged();
            n.mark_unchanged();
            p.mark_unchanged();
        }
        let mut done = totals.borrow().clone();
        if let Some(gc) = &gc {
            if let Err(e) = collect(&store, &ipam, gc, &blocks.snapshot(), &mut pod_gc, &mut done).await {
                tracing::warn!(error = %e, "garbage collection failed; retrying");
            }
        }
        if load_balancers_due {
            match load_balancers(&store, &ipam, &services.snapshot(), &blocks.snapshot(), &pools.snapshot(), &mut done).await {
                Ok(()) => load_balancers_due = false,
                Err(e) => tracing::warn!(error = %e, "LoadBalancer IPAM failed; retrying"),
            }
        }
        totals.send_if_modified(|t| std::mem::replace(t, done.clone()) != done);
        let gc_changed = async {
            match gc_rx.as_mut() {
                Some((g, n, p)) => tokio::select! {
                    _ = g.changed() => {}
                    _ = n.changed() => {}
                    _ = p.changed() => {}
                },
                None => std::future::pending().await,
            }
        };
        // A failed LoadBalancer pass stays due and is retried on the tick.
        tokio::select! {
            _ = b_rx.changed() => load_balancers_due = true,
            _ = s_rx.changed() => load_balancers_due = true,
            _ = pool_rx.changed() => load_balancers_due = true,
            _ = gc_changed => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// Label sync, node and pod garbage collection.
async fn collect<D: Datastore>(
    store: &Store<D>,
    ipam: &Ipam<D>,
    caches: &GcCaches,
    blocks: &Snapshot<IPAMBlock>,
    pod_gc: &mut pod_gc::PodGc,
    done: &mut Totals,
) -> anyhow::Result<()> {
    let (g, n) = (caches.ginghams.snapshot(), caches.nodes.snapshot());
    for gingham in g.values() {
        let Some(node) = gingham.k8s_node_name().and_then(|name| n.get(name)) else { continue };
        if let Some(updated) = labels::mirrored(gingham, node) {
            match store.update(&updated).await {
                Ok(_) => {
                    done.label_updates += 1;
                    tracing::info!(node = %gingham.metadata.name.as_deref().unwrap_or_default(), "Node labels mirrored");
                }
                // The next pass sees the newer copy.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for name in node_gc::gone(&g, &n) {
        let retired = ipam.retire_node(&name).await?;
        // The cache may still show a node this loop retired a moment ago: retiring is
        // idempotent, and only the deletion counts.
        if !store.delete_latest::<GinghamNode>(&name).await? {
            continue;
        }
        store.delete_latest::<gingham_api::status::GinghamNodeStatus>(&name).await?;
        done.nodes_retired += 1;
        done.node_addresses_released += retired.addresses.len() as u64;
        tracing::info!(
            node = %name,
            pods = retired.handles.len(),
            addresses = retired.addresses.len(),
            blocks = retired.blocks.released.len(),
            blocks_kept = retired.blocks.kept.len(),
            "Node deleted: GinghamNode, addresses and blocks released"
        );
    }
    let owners = pod_gc::owners(blocks);
    let due = pod_gc.due(&owners, &caches.pods.snapshot(), Instant::now());
    if !due.is_empty() {
        let freed = ipam.release_handles(&due).await?;
        let addresses: usize = freed.iter().map(Vec::len).sum();
        done.pod_handles_released += due.len() as u64;
        done.pod_addresses_released += addresses as u64;
        for (handle, addrs) in due.iter().zip(&freed) {
            let owner = &owners[handle];
            tracing::info!(%handle, namespace = %owner.namespace, pod = %owner.pod, ?addrs, "pod gone: addresses released");
        }
        tracing::info!(handles = due.len(), addresses, total = done.pod_addresses_released, "pod garbage collection");
    }
    Ok(())
}

/// LoadBalancer IPAM: carries out [`load_balancer::plan`]. A request the IPAM refuses (taken,
/// no pool, full) is the Service's problem and goes to its status; a datastore failure ends
/// the pass, to be retried.
async fn load_balancers<D: Datastore>(
    store: &Store<D>,
    ipam: &Ipam<D>,
    services: &Snapshot<Service>,
    blocks: &Snapshot<IPAMBlock>,
    pools: &Snapshot<IPPool>,
    done: &mut Totals,
) -> anyhow::Result<()> {
    let holdings = load_balancer::holdings(blocks);
    let plan = load_balancer::plan(services, &holdings, &pools.to_vec());
    for handle in &plan.orphans {
        let freed = ipam.release_handle(handle).await?;
        done.load_balancer_released += freed.len() as u64;
        tracing::info!(%handle, service = %holdings[handle].key, ?freed, "LoadBalancer addresses released: the Service is gone or no longer of type LoadBalancer");
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    for work in plan.services {
        let mut addresses = work.keep.clone();
        let mut problems = work.problems.clone();
        if !work.release.is_empty() {
            let checks: Vec<_> =
                work.release.iter().map(|a| (*a, ReleaseCheck { handle: Some(work.handle.clone()), sequence: None })).collect();
            let freed = ipam.release_checked(&checks).await?;
            done.load_balancer_released += freed.len() as u64;
            tracing::info!(service = %work.key, ?freed, "LoadBalancer addresses released: no longer asked for");
        }
        for request in &work.assign {
            match ipam.assign_load_balancer(request).await {
                Ok(a) => {
                    done.load_balancer_assigned += 1;
                    tracing::info!(service = %work.key, address = %a, "LoadBalancer address assigned");
                    addresses.push(a);
                }
                Err(e @ (IpamError::Datastore(_) | IpamError::TooManyConflicts { .. })) => return Err(e.into()),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let Some(svc) = services.get(&work.key) else { continue };
        if let Some(updated) = load_balancer::with_status(svc, &addresses, &problems, now.clone()) {
            if !problems.is_empty() {
                tracing::warn!(service = %work.key, problems = %problems.join("; "), "LoadBalancer addresses not assigned");
            }
            write_status(store, &updated, done).await?;
        }
    }
    for key in &plan.cleared {
        if let Some(updated) = services.get(key).and_then(load_balancer::without_our_status) {
            write_status(store, &updated, done).await?;
        }
    }
    Ok(())
}

async fn write_status<D: Datastore>(store: &Store<D>, svc: &Service, done: &mut Totals) -> anyhow::Result<()> {
    match store.update_status(svc).await {
        Ok(_) => {
            done.service_status_writes += 1;
            Ok(())
        }
        // Changed or deleted since the cache saw it: the cache brings the news and another pass.
        Err(e) if e.is_conflict() || matches!(e, DatastoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
