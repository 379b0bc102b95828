//! Several assignments of one node at once, as a node's CNI requests queue up when many pods
//! start together: what every assignment reads (the node, the configuration, the pools, the
//! affinities) is read once, and the addresses that go into one of the node's blocks are written
//! to it in one compare-and-swap instead of one each.

use std::collections::{HashMap, HashSet};

use gingham_api::datastore::Datastore;
use gingham_api::resources::{block_name, BlockAffinity, IPAMBlock};
use ipnetwork::IpNetwork;

use crate::assign::own_blocks;
use crate::block::{self, address_of, affine_node};
use crate::cas::{modify_from, Edit};
use crate::pools::{eligible, Family};
use crate::{AssignArgs, Assigned, Assignment, Context, Ipam, Result};

impl<D: Datastore> Ipam<D> {
    /// Assigns for every request in `batch` what [`Ipam::assign`] would, one after another;
    /// results come in the order of the batch. Requests of one node that its own blocks can
    /// serve share their reads and block writes; the rest (a block to claim, an address to
    /// borrow, a handle that appears twice, requests of several nodes) go through
    /// [`Ipam::assign`]'s steps one by one, after them.
    pub async fn assign_many(&self, batch: &[AssignArgs]) -> Vec<Result<Assigned>> {
        let one_node = batch.windows(2).all(|w| w[0].node == w[1].node);
        let ctx = match batch.first() {
            Some(first) if batch.len() > 1 && one_node => self.context(&first.node).await.ok(),
            _ => None,
        };
        let Some(ctx) = ctx else {
            let mut out = Vec::with_capacity(batch.len());
            for args in batch {
                out.push(self.assign(args).await);
            }
            return out;
        };
        let mut results: Vec<Result<Assigned>> = batch.iter().map(|_| Ok(Assigned::default())).collect();
        for family in [Family::V4, Family::V6] {
            let wanted: Vec<usize> = (0..batch.len())
                .filter(|&i| results[i].is_ok() && if family == Family::V4 { batch[i].ipv4 } else { batch[i].ipv6 })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let mut placed = self.fill_own_blocks(batch, &wanted, family, &ctx).await;
            for i in wanted {
                let got = match placed.remove(&i) {
                    Some(a) => Ok(a),
                    None => self.assign_family(&batch[i], family, &ctx).await,
                };
                let Ok(assigned) = &mut results[i] else { continue };
                match got {
                    Ok(a) if family == Family::V4 => assigned.ipv4 = Some(a),
                    Ok(a) => assigned.ipv6 = Some(a),
                    Err(e) => {
                        // As in `assign`: when the second family fails, the first goes back.
                        let back = match &assigned.ipv4 {
                            Some(v4) if family == Family::V6 => self.release_addresses(&[v4.address]).await.err(),
                            _ => None,
                        };
                        results[i] = Err(back.unwrap_or(e));
                    }
                }
            }
        }
        results
    }

    /// The addresses of `family` for the requests at `wanted` that the node's own blocks hold
    /// or have room for, by index. Whatever is not here (an error on the way included) is left
    /// to the one-by-one path, which meets the same error or does better.
    async fn fill_own_blocks(&self, batch: &[AssignArgs], wanted: &[usize], family: Family, ctx: &Context) -> HashMap<usize, Assignment> {
        let mut placed = HashMap::new();
        let node = &batch[wanted[0]].node;
        let pools = eligible(&ctx.pools, family, &ctx.labels);
        if pools.is_empty() {
            return placed;
        }
        // A handle twice in one batch (a runtime retrying an ADD still queued) gets its second
        // answer from the one-by-one path, which finds the first's address.
        let mut handles = HashSet::new();
        let mut pending = Vec::new();
        for &i in wanted {
            if !handles.insert(batch[i].handle.as_str()) {
                continue;
            }
            match self.existing(&batch[i], family).await {
                Ok(Some(a)) => {
                    placed.insert(i, a);
                }
                Ok(None) => pending.push(i),
                Err(_) => return placed,
            }
        }
        let Ok((affinities, _)) = self.store.list::<BlockAffinity>().await else { return placed };
        for cidr in own_blocks(&affinities, node, &pools) {
            if pending.is_empty() {
                break;
            }
            match self.fill_block(cidr, node, batch, &pending, ctx).await {
                Ok(got) => {
                    pending.retain(|i| !got.contains_key(i));
                    placed.extend(got);
                }
                Err(e) => {
                    tracing::debug!(block = %cidr, error = %e, "assigning a batch in the node's block failed; one by one instead");
                    break;
                }
            }
        }
        placed
    }

    /// As many of `pending` (in order) as block `cidr` has room for, in one write of the block.
    /// The handles are counted first, as in `assign_in_block`; those the write did not place are
    /// counted down again (a count left too high by an error is harmless, an allocation nobody
    /// can find is not).
    async fn fill_block(
        &self,
        cidr: IpNetwork,
        node: &str,
        batch: &[AssignArgs],
        pending: &[usize],
        ctx: &Context,
    ) -> Result<HashMap<usize, Assignment>> {
        let name = block_name(&cidr.to_string());
        let reserved = |a| ctx.reserved(a);
        let Some(b) = self.store.get::<IPAMBlock>(&name).await? else { return Ok(HashMap::new()) };
        let room = b.spec.unallocated.iter().filter(|&&o| !reserved(address_of(cidr, o))).count();
        let take: Vec<usize> = pending.iter().copied().take(room).collect();
        if take.is_empty() || affine_node(&b.spec) != Some(node) {
            return Ok(HashMap::new());
        }
        for &i in &take {
            self.count_handle(&batch[i].handle, cidr, 1).await?;
        }
        let made = modify_from::<D, IPAMBlock, _>(&self.store, &name, Some(b), |b| {
            let mut got = Vec::new();
            if affine_node(&b.spec) != Some(node) {
                return Edit::Keep(got);
            }
            for &i in &take {
                match block::assign(&mut b.spec, &batch[i].handle, &batch[i].attrs, &reserved) {
                    Some(a) => got.push((i, a)),
                    None => break,
                }
            }
            if got.is_empty() {
                Edit::Keep(got)
            } else {
                Edit::Write(got)
            }
        })
        .await;
        let made: HashMap<usize, Assignment> = match made {
            Ok(made) => made
                .unwrap_or_default()
                .into_iter()
                .map(|(i, a)| (i, Assignment { address: a.address, block: cidr, sequence: a.sequence, borrowed: false }))
                .collect(),
            Err(e) => {
                self.uncount(batch, &take, cidr).await;
                return Err(e);
            }
        };
        let unplaced: Vec<usize> = take.iter().copied().filter(|i| !made.contains_key(i)).collect();
        self.uncount(batch, &unplaced, cidr).await;
        Ok(made)
    }

    async fn uncount(&self, batch: &[AssignArgs], which: &[usize], cidr: IpNetwork) {
        for &i in which {
            if let Err(e) = self.count_handle(&batch[i].handle, cidr, -1).await {
                tracing::warn!(handle = %batch[i].handle, block = %cidr, error = %e, "a handle's count stays one too high");
            }
        }
    }
}
