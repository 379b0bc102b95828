//! Release by handle, by address, and of a departed node's blocks. All idempotent: releasing
//! what is already free succeeds and changes nothing.

use std::net::IpAddr;

use gingham_api::datastore::Datastore;
use gingham_api::resources::{block_name, handle_name, AffinityState, BlockAffinity, IPAMBlock, IPAMHandle};
use ipnetwork::IpNetwork;

use crate::block::{self, ReleaseCheck};
use crate::cas::{modify, Edit};
use crate::{Ipam, Result};

/// What [`Ipam::release_node`] did with a node's blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRelease {
    /// Empty blocks deleted together with their affinity.
    pub released: Vec<IpNetwork>,
    /// Blocks kept because addresses in them are still allocated (see `check`).
    pub kept: Vec<IpNetwork>,
}

/// What [`Ipam::retire_node`] released.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRetirement {
    /// Handles whose allocations were made for the node, released with every address they held.
    pub handles: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub blocks: NodeRelease,
}

impl<D: Datastore> Ipam<D> {
    /// A node is gone for good (its Kubernetes Node was deleted, or `ginghamctl delete node`):
    /// release every handle allocated for it (in its own blocks and borrowed from others), then
    /// its now-empty blocks and their affinities. Idempotent.
    pub async fn retire_node(&self, node: &str) -> Result<NodeRetirement> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let handles: std::collections::BTreeSet<String> = blocks
            .iter()
            .flat_map(|b| block::allocations(&b.spec))
            .filter(|(_, attr)| attr.secondary.get(crate::ATTR_NODE).map(String::as_str) == Some(node))
            .filter_map(|(_, attr)| attr.handle_id.clone())
            .collect();
        let handles: Vec<String> = handles.into_iter().collect();
        let addresses = self.release_handles(&handles).await?.into_iter().flatten().collect();
        let blocks = self.release_node(node).await?;
        Ok(NodeRetirement { handles, addresses, blocks })
    }

    /// Frees every address `handle` holds; returns them (empty when it held none).
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        Ok(self.release_handles(&[handle.to_string()]).await?.pop().unwrap_or_default())
    }

    /// Frees every address of several handles at once: each block is rewritten once for all of
    /// them (what a burst of CNI DELs on one node needs). Returns the freed addresses per handle.
    pub async fn release_handles(&self, handles: &[String]) -> Result<Vec<Vec<IpAddr>>> {
        let mut by_block: std::collections::BTreeMap<String, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, handle) in handles.iter().enumerate() {
            if let Some(h) = self.store.get::<IPAMHandle>(&handle_name(handle)).await? {
                for cidr in h.spec.block.keys() {
                    by_block.entry(cidr.clone()).or_default().push(i);
                }
            }
        }
        let mut freed = vec![Vec::new(); handles.len()];
        for (cidr, members) in by_block {
            let got = modify::<D, IPAMBlock, _>(&self.store, &block_name(&cidr), |b| {
                let per: Vec<(usize, Vec<IpAddr>)> =
                    members.iter().map(|&i| (i, block::release_handle(&mut b.spec, &handles[i]))).collect();
                if per.iter().all(|(_, a)| a.is_empty()) {
                    Edit::Keep(per)
                } else {
                    Edit::Write(per)
                }
            })
            .await?;
            for (i, addrs) in got.unwrap_or_default() {
                freed[i].extend(addrs);
            }
        }
        for handle in handles {
            self.store.delete_latest::<IPAMHandle>(&handle_name(handle)).await?;
        }
        Ok(freed)
    }

    /// Frees each address (whoever holds it); returns those that were allocated.
    pub async fn release_addresses(&self, addrs: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let checks: Vec<(IpAddr, ReleaseCheck)> = addrs.iter().map(|a| (*a, ReleaseCheck::default())).collect();
        self.release_checked(&checks).await
    }

    /// Frees each address only if its check still holds (handle, sequence number): a release
    /// based on an old read cannot free an address someone else got since.
    pub async fn release_checked(&self, addrs: &[(IpAddr, ReleaseCheck)]) -> Result<Vec<IpAddr>> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let mut freed = Vec::new();
        for (addr, check) in addrs {
            let Some(cidr) = blocks.iter().filter_map(|b| b.spec.cidr.parse::<IpNetwork>().ok()).find(|c| c.contains(*addr)) else {
                continue;
            };
            let holder = modify::<D, IPAMBlock, _>(&self.store, &block_name(&cidr.to_string()), |b| {
                match block::release(&mut b.spec, *addr, check) {
                    Some(handle) => Edit::Write(Some(handle)),
                    None => Edit::Keep(None),
                }
            })
            .await?
            .flatten();
            if let Some(handle) = holder {
                if let Some(handle) = handle {
                    self.count_handle(&handle, cidr, -1).await?;
                }
                freed.push(*addr);
            }
        }
        Ok(freed)
    }

    /// A node left the cluster: delete its empty blocks and their affinities. Blocks still
    /// holding addresses stay (their pods may still be draining); `check` reports them and
    /// `repair` frees them once the node is gone for good.
    pub async fn release_node(&self, node: &str) -> Result<NodeRelease> {
        let (affinities, _) = self.store.list::<BlockAffinity>().await?;
        let mut out = NodeRelease::default();
        for aff in affinities.into_iter().filter(|a| a.spec.node == node) {
            let Ok(cidr) = aff.spec.cidr.parse::<IpNetwork>() else { continue };
            let aff_name = aff.metadata.name.clone().unwrap_or_default();
            // Announce the deletion first so nobody confirms or allocates meanwhile.
            modify::<D, BlockAffinity, _>(&self.store, &aff_name, |a| {
                a.spec.state = AffinityState::PendingDeletion;
                Edit::Write(())
            })
            .await?;
            let emptied = modify::<D, IPAMBlock, _>(&self.store, &block_name(&aff.spec.cidr), |b| {
                if block::affine_node(&b.spec) != Some(node) {
                    Edit::Keep(true)
                } else if block::in_use(&b.spec) == 0 {
                    Edit::Delete(true)
                } else {
                    Edit::Keep(false)
                }
            })
            .await?
            .unwrap_or(true);
            if emptied {
                self.store.delete_latest::<BlockAffinity>(&aff_name).await?;
                out.released.push(cidr);
            } else {
                modify::<D, BlockAffinity, _>(&self.store, &aff_name, |a| {
                    a.spec.state = AffinityState::Confirmed;
                    Edit::Write(())
                })
                .await?;
                out.kept.push(cidr);
            }
        }
        Ok(out)
    }
}
