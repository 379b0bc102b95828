//! Assignment: own blocks, then a newly claimed block, then borrowing.

use std::collections::{BTreeMap, HashSet};

use gingham_api::datastore::{Datastore, DatastoreError};
use gingham_api::resources::{
    affinity_name, block_name, handle_name, AffinityState, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMHandle, IPAMHandleSpec,
};
use ipnetwork::IpNetwork;

use crate::block::{self, affine_node};
use crate::cas::{modify, modify_from, Edit};
use crate::pools::{eligible, Family, Pool};
use crate::{AssignArgs, Assigned, Assignment, Context, Ipam, IpamError, Result, MAX_CONFLICTS};

/// Claims and refills one assignment may go through before giving up (others may fill a block
/// between our claim and our allocation).
const MAX_ROUNDS: usize = 20;

/// Up to this many affine blocks are read one by one; a node with more (small blocks) reads all
/// blocks in one list, as a claim would next, rather than one read per full block.
const FEW_BLOCKS: usize = 4;

impl<D: Datastore> Ipam<D> {
    /// Assigns one IPv4 and/or one IPv6 address to `args.handle` on `args.node`. A handle that
    /// already holds an address of a family gets that address back (a retried CNI ADD must not
    /// take a second one). When the second family fails, the first is released again.
    pub async fn assign(&self, args: &AssignArgs) -> Result<Assigned> {
        let ctx = self.context(&args.node).await?;
        let mut out = Assigned::default();
        if args.ipv4 {
            out.ipv4 = Some(self.assign_family(args, Family::V4, &ctx).await?);
        }
        if args.ipv6 {
            match self.assign_family(args, Family::V6, &ctx).await {
                Ok(a) => out.ipv6 = Some(a),
                Err(e) => {
                    if let Some(v4) = &out.ipv4 {
                        self.release_addresses(&[v4.address]).await?;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn assign_family(&self, args: &AssignArgs, family: Family, ctx: &Context) -> Result<Assignment> {
        let pools = eligible(&ctx.pools, family, &ctx.labels);
        if pools.is_empty() {
            return Err(IpamError::NoPool { node: args.node.clone(), family });
        }
        if let Some(existing) = self.existing(args, family).await? {
            return Ok(existing);
        }
        let strict_everywhere = pools.iter().all(|p| p.strict_affinity.unwrap_or(ctx.config.strict_affinity));
        for _ in 0..MAX_ROUNDS {
            let (affinities, _) = self.store.list::<BlockAffinity>().await?;
            let mine = own_blocks(&affinities, &args.node, &pools);
            let listed = if mine.len() > FEW_BLOCKS { Some(self.store.list::<IPAMBlock>().await?.0) } else { None };
            let by_cidr: BTreeMap<&str, &IPAMBlock> = listed.iter().flatten().map(|b| (b.spec.cidr.as_str(), b)).collect();
            for cidr in &mine {
                let known = match &listed {
                    Some(_) => match by_cidr.get(cidr.to_string().as_str()) {
                        Some(b) => Some((*b).clone()),
                        None => continue,
                    },
                    None => None,
                };
                if let Some(a) = self.assign_in_block(*cidr, args, ctx, Some(&args.node), known).await? {
                    return Ok(a);
                }
            }
            let auto = ctx.config.auto_allocate_blocks.unwrap_or(true);
            let limit = ctx.config.max_blocks_per_host.unwrap_or(0) as usize;
            let node_blocks = affinities.iter().filter(|a| a.spec.node == args.node).count();
            let claimable = auto && (limit == 0 || node_blocks < limit);
            if claimable {
                if let Some(claimed) = self.claim_block(&args.node, &pools, ctx, listed).await? {
                    // Straight into the new block; only when others filled it first does the
                    // next round look at every block again.
                    if let Some(a) = self.assign_in_block(claimed, args, ctx, Some(&args.node), None).await? {
                        return Ok(a);
                    }
                    continue;
                }
            }
            if strict_everywhere {
                return Err(IpamError::Exhausted { node: args.node.clone(), family, strict: true });
            }
            return match self.borrow(args, &pools, ctx).await? {
                Some(a) => Ok(a),
                None => Err(IpamError::Exhausted { node: args.node.clone(), family, strict: false }),
            };
        }
        Err(IpamError::TooManyConflicts { what: format!("assigning an {family} address to {:?}", args.handle), attempts: MAX_ROUNDS })
    }

    /// The address of `family` the handle already holds, if any.
    pub(crate) async fn existing(&self, args: &AssignArgs, family: Family) -> Result<Option<Assignment>> {
        let Some(handle) = self.store.get::<IPAMHandle>(&handle_name(&args.handle)).await? else { return Ok(None) };
        for cidr in handle.spec.block.keys().filter_map(|c| c.parse::<IpNetwork>().ok()).filter(|c| Family::of(c) == family) {
            let Some(b) = self.store.get::<IPAMBlock>(&block_name(&cidr.to_string())).await? else { continue };
            let found = block::allocations(&b.spec).into_iter().find(|(_, a)| a.handle_id.as_deref() == Some(args.handle.as_str()));
            if let Some((address, _)) = found {
                let sequence = block::sequence_of(&b.spec, address).unwrap_or_default();
                let borrowed = affine_node(&b.spec) != Some(args.node.as_str());
                return Ok(Some(Assignment { address, block: cidr, sequence, borrowed }));
            }
        }
        Ok(None)
    }

    /// One address from block `cidr`; `None` when it has none free (or is no longer affine to
    /// `affine_to`, when given). `known` is a copy the caller read moments ago (the write is a
    /// compare-and-swap, so a stale copy costs a retry, never a double assignment); without it
    /// the block is read. The handle is counted first, as in Calico: a crash between the
    /// two writes leaves a count too high (harmless) rather than an allocation nobody can find.
    pub(crate) async fn assign_in_block(
        &self,
        cidr: IpNetwork,
        args: &AssignArgs,
        ctx: &Context,
        affine_to: Option<&str>,
        known: Option<IPAMBlock>,
    ) -> Result<Option<Assignment>> {
        let name = block_name(&cidr.to_string());
        let reserved = |a| ctx.reserved(a);
        let b = match known {
            Some(b) => b,
            None => match self.store.get::<IPAMBlock>(&name).await? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        if !block::has_free(&b.spec, &reserved) {
            return Ok(None);
        }
        self.count_handle(&args.handle, cidr, 1).await?;
        let attrs = &args.attrs;
        let made = modify_from::<D, IPAMBlock, _>(&self.store, &name, Some(b), |b| {
            if affine_to.is_some_and(|n| affine_node(&b.spec) != Some(n)) {
                return Edit::Keep(None);
            }
            match block::assign(&mut b.spec, &args.handle, attrs, &reserved) {
                Some(a) => Edit::Write(Some((a, affine_node(&b.spec) != Some(args.node.as_str())))),
                None => Edit::Keep(None),
            }
        })
        .await?
        .flatten();
        match made {
            Some((a, borrowed)) => Ok(Some(Assignment { address: a.address, block: cidr, sequence: a.sequence, borrowed })),
            None => {
                self.count_handle(&args.handle, cidr, -1).await?;
                Ok(None)
            }
        }
    }

    /// Claims a free block of the first pool that has one; `None` when every block is taken.
    /// `listed` is a list of all blocks the caller just made (saving a second one).
    async fn claim_block(&self, node: &str, pools: &[Pool], ctx: &Context, listed: Option<Vec<IPAMBlock>>) -> Result<Option<IpNetwork>> {
        let blocks = match listed {
            Some(blocks) => blocks,
            None => self.store.list::<IPAMBlock>().await?.0,
        };
        let mut taken: HashSet<IpNetwork> = blocks.iter().filter_map(|b| b.spec.cidr.parse().ok()).collect();
        for pool in pools {
            let strict = pool.strict_affinity.unwrap_or(ctx.config.strict_affinity);
            while let Some(cidr) = pool.free_block(node, &taken) {
                if self.claim(node, cidr, strict).await? {
                    return Ok(Some(cidr));
                }
                taken.insert(cidr);
            }
        }
        Ok(None)
    }

    /// The two-step claim: affinity pending, block created (the CAS that decides who wins),
    /// affinity confirmed. False when another node created the block first.
    async fn claim(&self, node: &str, cidr: IpNetwork, strict: bool) -> Result<bool> {
        let cidr_text = cidr.to_string();
        let aff_name = affinity_name(node, &cidr_text);
        let pending = BlockAffinity::new(
            &aff_name,
            BlockAffinitySpec { state: AffinityState::Pending, node: node.into(), cidr: cidr_text.clone(), deleted: false },
        );
        match self.store.create(&pending).await {
            // Left by an earlier claim of ours that did not finish; carry on with it.
            Ok(_) | Err(DatastoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let block = IPAMBlock::new(&block_name(&cidr_text), block::new_block(cidr, Some(node), strict));
        match self.store.create(&block).await {
            Ok(_) => {}
            Err(DatastoreError::AlreadyExists { .. }) => {
                let existing = self.store.get::<IPAMBlock>(&block_name(&cidr_text)).await?;
                if existing.as_ref().and_then(|b| affine_node(&b.spec)) != Some(node) {
                    self.store.delete_latest::<BlockAffinity>(&aff_name).await?;
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
        modify::<D, BlockAffinity, _>(&self.store, &aff_name, |a| {
            a.spec.state = AffinityState::Confirmed;
            Edit::Write(())
        })
        .await?;
        tracing::info!(node, block = %cidr, "claimed block");
        Ok(true)
    }

    /// One address from any other node's (or no node's) block with room.
    async fn borrow(&self, args: &AssignArgs, pools: &[Pool], ctx: &Context) -> Result<Option<Assignment>> {
        let (blocks, _) = self.store.list::<IPAMBlock>().await?;
        let reserved = |a| ctx.reserved(a);
        let mut candidates: Vec<(IpNetwork, IPAMBlock)> = blocks
            .into_iter()
            .filter(|b| affine_node(&b.spec) != Some(args.node.as_str()) && !b.spec.strict_affinity)
            .filter(|b| block::has_free(&b.spec, &reserved))
            .filter_map(|b| Some((b.spec.cidr.parse::<IpNetwork>().ok()?, b)))
            .filter(|(c, _)| pools.iter().any(|p| !p.strict_affinity.unwrap_or(ctx.config.strict_affinity) && p.cidr.contains(c.network())))
            .collect();
        candidates.sort_by_key(|(c, _)| *c);
        for (cidr, b) in candidates {
            if let Some(a) = self.assign_in_block(cidr, args, ctx, None, Some(b)).await? {
                tracing::info!(node = %args.node, address = %a.address, block = %cidr, "borrowed an address from another node's block");
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Adds `delta` to the handle's count for `block`, creating the handle on first use and
    /// deleting it when it holds nothing any more.
    pub(crate) async fn count_handle(&self, handle: &str, block: IpNetwork, delta: i64) -> Result<()> {
        let name = handle_name(handle);
        let key = block.to_string();
        for _ in 0..MAX_CONFLICTS {
            let done = modify::<D, IPAMHandle, _>(&self.store, &name, |h| {
                let count = h.spec.block.entry(key.clone()).or_default();
                *count = (*count as i64 + delta).max(0) as u32;
                if *count == 0 {
                    h.spec.block.remove(&key);
                }
                if h.spec.block.is_empty() {
                    Edit::Delete(())
                } else {
                    Edit::Write(())
                }
            })
            .await?;
            if done.is_some() || delta <= 0 {
                return Ok(());
            }
            let spec =
                IPAMHandleSpec { handle_id: handle.to_string(), block: BTreeMap::from([(key.clone(), delta as u32)]), deleted: false };
            match self.store.create(&IPAMHandle::new(&name, spec)).await {
                Ok(_) => return Ok(()),
                Err(DatastoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyConflicts { what: format!("counting handle {handle:?}"), attempts: MAX_CONFLICTS })
    }
}

/// The node's confirmed blocks in `pools`, in address order (the order they are filled in).
pub(crate) fn own_blocks(affinities: &[BlockAffinity], node: &str, pools: &[Pool]) -> Vec<IpNetwork> {
    let mut mine: Vec<IpNetwork> = affinities
        .iter()
        .filter(|a| a.spec.node == node && a.spec.state == AffinityState::Confirmed)
        .filter_map(|a| a.spec.cidr.parse().ok())
        .filter(|c: &IpNetwork| pools.iter().any(|p| p.cidr.contains(c.network())))
        .collect();
    mine.sort();
    mine
}
