//! `gingham-controllers`: the work no single node owns, done by one active replica per cluster
//! (a Lease elects it, [`leader`]). It follows Nodes and Pods (metadata only), GinghamNodes and
//! IPAM blocks through the watch cache and, on every change and every few seconds:
//!
//! - mirrors each Kubernetes Node's labels onto its GinghamNode ([`labels`]);
//! - retires the GinghamNode, its status report, addresses and blocks of a deleted Node
//!   ([`node_gc`]);
//! - releases the addresses of pods that no longer exist, after a grace ([`pod_gc`]).
//!
//! It needs the kubernetes datastore: in sqlite mode there are no Nodes or Pods to follow
//! (`ginghamctl delete node` retires a node, and the agents reclaim their pods' addresses).

pub mod labels;
pub mod leader;
pub mod node_gc;
pub mod pod_gc;
#[cfg(test)]
mod testing;

use std::time::Duration;

use gingham_api::cache::{CacheOptions, Reflector};
use gingham_api::datastore::{Datastore, Store};
use gingham_api::resources::core::{NodeMetadata, PodMetadata};
use gingham_api::resources::{GinghamNode, IPAMBlock};
use gingham_ipam::Ipam;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long a pod must be gone before its addresses are released.
    pub pod_grace: Duration,
    pub cache: CacheOptions,
}

/// What the controllers have done since they started leading (logged, and read by tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub nodes_retired: u64,
    pub node_addresses_released: u64,
    pub pod_handles_released: u64,
    pub pod_addresses_released: u64,
    pub label_updates: u64,
}

/// The controllers' work while leading; runs until dropped. `totals` follows what was done.
pub async fn run<D: Datastore>(store: Store<D>, options: Options, totals: watch::Sender<Totals>) {
    let ginghams: Reflector<GinghamNode> = Reflector::start(store.clone(), options.cache);
    let nodes: Reflector<NodeMetadata> = Reflector::start(store.clone(), options.cache);
    let pods: Reflector<PodMetadata> = Reflector::start(store.clone(), options.cache);
    let blocks: Reflector<IPAMBlock> = Reflector::start(store.clone(), options.cache);
    ginghams.synced().await;
    nodes.synced().await;
    pods.synced().await;
    blocks.synced().await;
    tracing::info!("caches synced; collecting");
    let ipam = Ipam::new(store.clone());
    let mut pod_gc = pod_gc::PodGc::new(options.pod_grace);
    // Pods waiting out their grace are looked at again this often even when nothing changes.
    let tick = (options.pod_grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let (mut g_rx, mut n_rx, mut p_rx, mut b_rx) = (ginghams.changed(), nodes.changed(), pods.changed(), blocks.changed());
    loop {
        g_rx.mark_unchanged();
        n_rx.mark_unchanged();
        p_rx.mark_unchanged();
        b_rx.mark_unchanged();
        let mut done = totals.borrow().clone();
        if let Err(e) = pass(&store, &ipam, &ginghams, &nodes, &pods, &blocks, &mut pod_gc, &mut done).await {
            tracing::warn!(error = %e, "controller pass failed; retrying");
        }
        totals.send_if_modified(|t| std::mem::replace(t, done.clone()) != done);
        tokio::select! {
            _ = g_rx.changed() => {}
            _ = n_rx.changed() => {}
            _ = p_rx.changed() => {}
            _ = b_rx.changed() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pass<D: Datastore>(
    store: &Store<D>,
    ipam: &Ipam<D>,
    ginghams: &Reflector<GinghamNode>,
    nodes: &Reflector<NodeMetadata>,
    pods: &Reflector<PodMetadata>,
    blocks: &Reflector<IPAMBlock>,
    pod_gc: &mut pod_gc::PodGc,
    done: &mut Totals,
) -> anyhow::Result<()> {
    let (g, n) = (ginghams.snapshot(), nodes.snapshot());
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
    let owners = pod_gc::owners(&blocks.snapshot());
    let due = pod_gc.due(&owners, &pods.snapshot(), Instant::now());
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
