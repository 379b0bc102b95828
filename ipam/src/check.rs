//! Consistency check and repair (`ginghamctl ipam check [--fix]`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use gingham_api::datastore::Datastore;
use gingham_api::resources::{handle_name, BlockAffinity, GinghamNode, IPAMBlock, IPAMHandle};
use ipnetwork::IpNetwork;

use crate::block::{self, ReleaseCheck};
use crate::{Ipam, Result, ATTR_NODE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeakReason {
    /// No IPAMHandle exists for the allocation's handle, so a release by handle cannot find it.
    HandleMissing,
    /// The allocation was made for a node that no longer exists.
    NodeMissing(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    pub address: IpAddr,
    pub handle: Option<String>,
    pub sequence: Option<u64>,
    pub reason: LeakReason,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub blocks: usize,
    pub allocations: usize,
    pub leaks: Vec<Leak>,
    /// Addresses allocated in more than one block (possible only with overlapping blocks).
    pub duplicates: Vec<IpAddr>,
    /// Blocks affine to a node that does not exist.
    pub orphan_blocks: Vec<IpNetwork>,
    /// Affinities whose block does not exist (a claim that never finished).
    pub dangling_affinities: Vec<String>,
    /// Handles whose per-block counts disagree with the blocks: (handle, block, counted, found).
    pub handle_mismatches: Vec<(String, String, u32, u32)>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty()
            && self.duplicates.is_empty()
            && self.orphan_blocks.is_empty()
            && self.dangling_affinities.is_empty()
            && self.handle_mismatches.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub released: Vec<IpAddr>,
    pub blocks_released: Vec<IpNetwork>,
    pub affinities_deleted: Vec<String>,
    pub handles_fixed: Vec<String>,
}

impl<D: Datastore> Ipam<D> {
    /// Reads everything and reports what is inconsistent; changes nothing.
    pub async fn check(&self) -> Result<CheckReport> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let (handles, _) = self.store.list::<IPAMHandle>().await?;
        let (nodes, _) = self.store.list::<GinghamNode>().await?;
        let (affinities, _) = self.store.list::<BlockAffinity>().await?;
        let nodes: HashSet<String> = nodes.into_iter().filter_map(|n| n.metadata.name).collect();
        let handle_ids: HashSet<&str> = handles.iter().map(|h| h.spec.handle_id.as_str()).collect();

        let mut report = CheckReport { blocks: blocks.len(), ..Default::default() };
        let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
        // (handle, block) -> addresses found in the block.
        let mut found: BTreeMap<(String, String), u32> = BTreeMap::new();
        for b in &blocks {
            if let Some(node) = block::affine_node(&b.spec) {
                if !nodes.contains(node) {
                    report.orphan_blocks.push(b.spec.cidr.parse().expect("stored blocks are valid"));
                }
            }
            for (address, attr) in block::allocations(&b.spec) {
                report.allocations += 1;
                *seen.entry(address).or_default() += 1;
                let handle = attr.handle_id.clone();
                if let Some(h) = &handle {
                    *found.entry((h.clone(), b.spec.cidr.clone())).or_default() += 1;
                }
                let sequence = block::sequence_of(&b.spec, address);
                let reason = match attr.secondary.get(ATTR_NODE) {
                    Some(node) if !nodes.contains(node) => Some(LeakReason::NodeMissing(node.clone())),
                    _ if handle.as_deref().is_none_or(|h| !handle_ids.contains(h)) => Some(LeakReason::HandleMissing),
                    _ => None,
                };
                if let Some(reason) = reason {
                    report.leaks.push(Leak { address, handle, sequence, reason });
                }
            }
        }
        report.duplicates = seen.into_iter().filter(|(_, n)| *n > 1).map(|(a, _)| a).collect();
        let block_cidrs: HashSet<&str> = blocks.iter().map(|b| b.spec.cidr.as_str()).collect();
        report.dangling_affinities =
            affinities.iter().filter(|a| !block_cidrs.contains(a.spec.cidr.as_str())).filter_map(|a| a.metadata.name.clone()).collect();
        for h in &handles {
            let keys: BTreeSet<&String> = h.spec.block.keys().collect();
            for cidr in keys {
                let counted = h.spec.block[cidr];
                let actual = found.get(&(h.spec.handle_id.clone(), cidr.clone())).copied().unwrap_or(0);
                if counted != actual {
                    report.handle_mismatches.push((h.spec.handle_id.clone(), cidr.clone(), counted, actual));
                }
            }
        }
        for ((handle, cidr), n) in &found {
            if handle_ids.contains(handle.as_str())
                && !handles.iter().any(|h| &h.spec.handle_id == handle && h.spec.block.contains_key(cidr))
            {
                report.handle_mismatches.push((handle.clone(), cidr.clone(), 0, *n));
            }
        }
        Ok(report)
    }

    /// Fixes what [`Ipam::check`] finds: frees leaked addresses (only if they still carry the
    /// sequence number the check saw), releases orphaned blocks once empty, deletes dangling
    /// affinities and rewrites wrong handle counts. Run it when no node is mid-claim: a claim
    /// in flight looks exactly like a dangling affinity.
    pub async fn repair(&self) -> Result<RepairReport> {
        let report = self.check().await?;
        let mut out = RepairReport::default();
        let checks: Vec<(IpAddr, ReleaseCheck)> =
            report.leaks.iter().map(|l| (l.address, ReleaseCheck { handle: l.handle.clone(), sequence: l.sequence })).collect();
        out.released = self.release_checked(&checks).await?;
        let orphan_nodes: BTreeSet<String> = {
            let (blocks, _) = self.store.list::<IPAMBlock>().await?;
            blocks
                .iter()
                .filter(|b| report.orphan_blocks.iter().any(|o| o.to_string() == b.spec.cidr))
                .filter_map(|b| block::affine_node(&b.spec).map(str::to_string))
                .collect()
        };
        for node in orphan_nodes {
            out.blocks_released.extend(self.release_node(&node).await?.released);
        }
        for name in &report.dangling_affinities {
            if self.store.delete_latest::<BlockAffinity>(name).await? {
                out.affinities_deleted.push(name.clone());
            }
        }
        // Recount handles from the blocks as they are now.
        let after = self.check().await?;
        for (handle, cidr, _, actual) in after.handle_mismatches {
            let name = handle_name(&handle);
            crate::cas::modify::<D, IPAMHandle, _>(&self.store, &name, |h| {
                if actual == 0 {
                    h.spec.block.remove(&cidr);
                } else {
                    h.spec.block.insert(cidr.clone(), actual);
                }
                if h.spec.block.is_empty() {
                    crate::cas::Edit::Delete(())
                } else {
                    crate::cas::Edit::Write(())
                }
            })
            .await?;
            out.handles_fixed.push(handle);
        }
        Ok(out)
    }
}
