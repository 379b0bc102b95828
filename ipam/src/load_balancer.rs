//! LoadBalancer addresses: Services' addresses from the IPPools with `allowedUses:
//! [LoadBalancer]`, in the same blocks, handles and compare-and-swap writes as pods' addresses,
//! so an address is never handed out twice and a release by handle finds everything. The blocks
//! belong to no node (affinity `virtual:load-balancer`, as Calico writes it, and no
//! BlockAffinity): no node advertises them as its own, and pods never get their addresses
//! because node assignment only considers Workload pools.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use gingham_api::datastore::{Datastore, DatastoreError};
use gingham_api::resources::{block_name, AllowedUse, IPAMBlock};
use ipnetwork::IpNetwork;

use crate::block::{self, Unavailable, LOAD_BALANCER_AFFINITY};
use crate::cas::{modify_from, Edit};
use crate::pools::{Family, Pool};
use crate::{AssignArgs, Context, Ipam, IpamError, Result, ATTR_NAMESPACE};

/// The allocation attribute naming the Service (with [`ATTR_NAMESPACE`]).
pub const ATTR_SERVICE: &str = "service";

/// Where free LoadBalancer blocks are looked for first (the node name a node's claims start from).
const CLAIM_SEED: &str = "load-balancer";

/// One address for a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerRequest {
    pub handle: String,
    /// Recorded with the allocation (namespace, service, uid).
    pub attrs: BTreeMap<String, String>,
    pub want: Wanted,
    /// Only these pools (the Service's pool annotation); every enabled LoadBalancer pool when
    /// `None`.
    pub pools: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// This address (`spec.loadBalancerIP` or the addresses annotation).
    Address(IpAddr),
    /// Any free address of the family.
    Any(Family),
}

impl<D: Datastore> Ipam<D> {
    /// Assigns the address `request` asks for to its handle and returns it. Asking again for
    /// what the handle holds returns the same address without a second allocation.
    pub async fn assign_load_balancer(&self, request: &LoadBalancerRequest) -> Result<IpAddr> {
        let ctx = self.pools_context().await?;
        let args = AssignArgs { handle: request.handle.clone(), attrs: request.attrs.clone(), ..Default::default() };
        match request.want {
            Wanted::Address(address) => {
                let pools = load_balancer_pools(&ctx, Family::of(&IpNetwork::from(address)), request.pools.as_deref())?;
                let pool = pools
                    .iter()
                    .find(|p| p.cidr.contains(address))
                    .ok_or_else(|| IpamError::NotInLoadBalancerPool { address, pools: request.pools.clone() })?;
                if ctx.reserved(address) {
                    return Err(IpamError::Reserved { address });
                }
                let cidr = pool.block_of(address).expect("the pool contains the address");
                self.assign_named(cidr, address, &args).await
            }
            Wanted::Any(family) => {
                let pools = load_balancer_pools(&ctx, family, request.pools.as_deref())?;
                if let Some(held) = self.existing(&args, family).await? {
                    if pools.iter().any(|p| p.cidr.contains(held.address)) {
                        return Ok(held.address);
                    }
                }
                self.assign_any(&pools, &args, &ctx, request.pools.clone(), family).await
            }
        }
    }

    async fn assign_named(&self, cidr: IpNetwork, address: IpAddr, args: &AssignArgs) -> Result<IpAddr> {
        let current = self.load_balancer_block(cidr).await?;
        if block::holder(&current.spec, address).is_some_and(|a| a.handle_id.as_deref() == Some(args.handle.as_str())) {
            return Ok(address);
        }
        // The handle is counted first, as for pods (see `assign_in_block`).
        self.count_handle(&args.handle, cidr, 1).await?;
        let outcome = modify_from::<D, IPAMBlock, _>(&self.store, &block_name(&cidr.to_string()), Some(current), |b| {
            if block::holder(&b.spec, address).is_some_and(|a| a.handle_id.as_deref() == Some(args.handle.as_str())) {
                return Edit::Keep(Named::Mine);
            }
            match block::assign_address(&mut b.spec, address, &args.handle, &args.attrs) {
                Ok(_) => Edit::Write(Named::Taken),
                Err(Unavailable::Held(attr)) => Edit::Keep(Named::Held(describe(&attr.handle_id, &attr.secondary))),
                Err(Unavailable::NotHere) => Edit::Keep(Named::Gone),
            }
        })
        .await?
        .unwrap_or(Named::Gone);
        if !matches!(outcome, Named::Taken) {
            self.count_handle(&args.handle, cidr, -1).await?;
        }
        match outcome {
            Named::Taken | Named::Mine => Ok(address),
            Named::Held(holder) => Err(IpamError::AddressInUse { address, holder }),
            Named::Gone => {
                Err(IpamError::TooManyConflicts { what: format!("taking {address} (its block was being deleted)"), attempts: 1 })
            }
        }
    }

    async fn assign_any(
        &self,
        pools: &[Pool],
        args: &AssignArgs,
        ctx: &Context,
        named: Option<Vec<String>>,
        family: Family,
    ) -> Result<IpAddr> {
        for _ in 0..crate::MAX_CONFLICTS {
            let (blocks, _) = self.store.list::<IPAMBlock>().await?;
            let reserved = |a| ctx.reserved(a);
            let mut ours: Vec<(usize, IpNetwork, &IPAMBlock)> = blocks
                .iter()
                .filter(|b| block::is_load_balancer(&b.spec) && block::has_free(&b.spec, &reserved))
                .filter_map(|b| Some((b.spec.cidr.parse::<IpNetwork>().ok()?, b)))
                .filter_map(|(c, b)| pools.iter().position(|p| p.cidr.contains(c.network())).map(|i| (i, c, b)))
                .collect();
            ours.sort_by_key(|(i, c, _)| (*i, *c));
            for (_, cidr, b) in ours {
                if let Some(a) = self.assign_in_block(cidr, args, ctx, None, Some(b.clone())).await? {
                    return Ok(a.address);
                }
            }
            let mut taken: HashSet<IpNetwork> = blocks.iter().filter_map(|b| b.spec.cidr.parse().ok()).collect();
            let mut claimed = false;
            'pools: for pool in pools {
                while let Some(cidr) = pool.free_block(CLAIM_SEED, &taken) {
                    match self.store.create(&IPAMBlock::new(&block_name(&cidr.to_string()), new_load_balancer_block(cidr))).await {
                        Ok(_) => {
                            tracing::info!(block = %cidr, pool = %pool.name, "LoadBalancer block created");
                            claimed = true;
                            break 'pools;
                        }
                        Err(DatastoreError::AlreadyExists { .. }) => {
                            taken.insert(cidr);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if !claimed {
                return Err(IpamError::LoadBalancerExhausted { family, pools: named });
            }
        }
        Err(IpamError::TooManyConflicts {
            what: format!("assigning a LoadBalancer address to {:?}", args.handle),
            attempts: crate::MAX_CONFLICTS,
        })
    }

    /// The LoadBalancer block `cidr`, created when it does not exist yet.
    async fn load_balancer_block(&self, cidr: IpNetwork) -> Result<IPAMBlock> {
        let name = block_name(&cidr.to_string());
        loop {
            if let Some(b) = self.store.get::<IPAMBlock>(&name).await? {
                if !block::is_load_balancer(&b.spec) {
                    return Err(IpamError::NotALoadBalancerBlock { block: cidr });
                }
                return Ok(b);
            }
            match self.store.create(&IPAMBlock::new(&name, new_load_balancer_block(cidr))).await {
                Ok(b) => return Ok(b),
                Err(DatastoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

enum Named {
    Taken,
    Mine,
    Held(String),
    Gone,
}

fn new_load_balancer_block(cidr: IpNetwork) -> gingham_api::resources::IPAMBlockSpec {
    let mut spec = block::new_block(cidr, None, true);
    spec.affinity = Some(LOAD_BALANCER_AFFINITY.into());
    spec
}

/// Who holds an allocation, in words: the Service when the attributes name one.
fn describe(handle: &Option<String>, attrs: &BTreeMap<String, String>) -> String {
    match (attrs.get(ATTR_NAMESPACE), attrs.get(ATTR_SERVICE), attrs.get(crate::ATTR_POD)) {
        (Some(ns), Some(svc), _) => format!("Service {ns}/{svc}"),
        (Some(ns), None, Some(pod)) => format!("pod {ns}/{pod}"),
        _ => format!("handle {:?}", handle.as_deref().unwrap_or_default()),
    }
}

/// The pools a request may use: the named ones (each must exist and be a LoadBalancer pool) or
/// every LoadBalancer pool; enabled and of `family` in both cases, in name order.
fn load_balancer_pools(ctx: &Context, family: Family, named: Option<&[String]>) -> Result<Vec<Pool>> {
    if let Some(names) = named {
        for name in names {
            let pool = ctx.pools.iter().find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
            match pool {
                None => return Err(IpamError::BadPool { pool: name.clone(), reason: "does not exist" }),
                Some(p) if !p.spec.allows(AllowedUse::LoadBalancer) => {
                    return Err(IpamError::BadPool { pool: name.clone(), reason: "is not a LoadBalancer pool (allowedUses)" })
                }
                Some(_) => {}
            }
        }
    }
    let mut out: Vec<Pool> = ctx
        .pools
        .iter()
        .filter(|p| !p.spec.disabled && p.spec.allows(AllowedUse::LoadBalancer))
        .filter(|p| named.is_none_or(|n| n.iter().any(|n| p.metadata.name.as_deref() == Some(n.as_str()))))
        .filter_map(Pool::from_resource)
        .filter(|p| Family::of(&p.cidr) == family)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        return Err(IpamError::NoLoadBalancerPool { family, pools: named.map(<[String]>::to_vec) });
    }
    Ok(out)
}
