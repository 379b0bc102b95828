//! Block IPAM with Calico's semantics over [`gingham_api::datastore`].
//!
//! Pools are split into blocks (a /26 by default); a node claims a free block when it needs
//! addresses (BlockAffinity pending -> IPAMBlock created -> affinity confirmed, each step CAS),
//! assigns from its own blocks first, claims another when they are full, and only then borrows
//! single addresses from other nodes' blocks (never under strictAffinity). Every allocation
//! carries a handle (the container ID) whose IPAMHandle counts its addresses per block, so a
//! release by handle finds them all; release by handle or by address is idempotent.
//!
//! Every address of a block is usable, the block's first and last included: blocks are not
//! subnets (pods get /32 or /128 routes), which is Calico's choice on Linux too.
//! IPReservations are never handed out.

mod assign;
mod assign_many;
pub mod block;
mod cas;
mod check;
mod load_balancer;
pub mod pools;
mod release;

use std::collections::BTreeMap;
use std::net::IpAddr;

use gingham_api::datastore::{Datastore, DatastoreError, Store};
use gingham_api::resources::{GinghamNode, IPAMConfiguration, IPAMConfigurationSpec, IPPool, IPReservation, DEFAULT_NAME};
use ipnetwork::IpNetwork;
use thiserror::Error;

pub use block::ReleaseCheck;
pub use check::{CheckReport, Leak, LeakReason, RepairReport};
pub use load_balancer::{LoadBalancerRequest, Wanted, ATTR_SERVICE};
pub use pools::Family;
pub use release::{NodeRelease, NodeRetirement};

/// Attribute keys Calico records with each allocation.
pub const ATTR_NAMESPACE: &str = "namespace";
pub const ATTR_POD: &str = "pod";
pub const ATTR_NODE: &str = "node";
/// The pod's UID (a Gingham addition): a pod recreated under the same name has another, so a
/// handle of the old one is recognised as stale.
pub const ATTR_POD_UID: &str = "uid";

#[derive(Debug, Error)]
pub enum IpamError {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error("no enabled {family} IPPool selects node {node:?}: create one or check its nodeSelector")]
    NoPool { node: String, family: Family },
    #[error("no free {family} address for node {node:?}: every block of its pools is full{}", if *.strict { " and strictAffinity forbids borrowing from other nodes' blocks" } else { "" })]
    Exhausted { node: String, family: Family, strict: bool },
    #[error("{address} is already held by {holder}")]
    AddressInUse { address: IpAddr, holder: String },
    #[error("{address} is in no enabled LoadBalancer IPPool{}", in_pools(.pools))]
    NotInLoadBalancerPool { address: IpAddr, pools: Option<Vec<String>> },
    #[error("{address} is reserved by an IPReservation")]
    Reserved { address: IpAddr },
    #[error("no enabled {family} LoadBalancer IPPool{}: create one with allowedUses: [LoadBalancer]", in_pools(.pools))]
    NoLoadBalancerPool { family: Family, pools: Option<Vec<String>> },
    #[error("IPPool {pool:?} {reason}")]
    BadPool { pool: String, reason: &'static str },
    #[error("no free {family} address in the LoadBalancer IPPools{}: every block is full", in_pools(.pools))]
    LoadBalancerExhausted { family: Family, pools: Option<Vec<String>> },
    #[error("block {block} lies in a LoadBalancer IPPool but belongs to a node: do two pools overlap?")]
    NotALoadBalancerBlock { block: IpNetwork },
    #[error("gave up {what} after {attempts} conflicting writes; the datastore is too busy, try again")]
    TooManyConflicts { what: String, attempts: usize },
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;

fn in_pools(pools: &Option<Vec<String>>) -> String {
    pools.as_ref().map(|p| format!(" among {p:?}")).unwrap_or_default()
}

/// What to assign.
#[derive(Clone, Debug, Default)]
pub struct AssignArgs {
    /// Who holds the addresses: the container ID for a pod.
    pub handle: String,
    pub node: String,
    /// Recorded with the allocation (`namespace`, `pod`, `node`, ...).
    pub attrs: BTreeMap<String, String>,
    pub ipv4: bool,
    pub ipv6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub address: IpAddr,
    pub block: IpNetwork,
    /// The block's sequence number for this allocation (see [`ReleaseCheck::sequence`]).
    pub sequence: u64,
    /// Taken from another node's block: the node must advertise it as its own /32 (/128).
    pub borrowed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assigned {
    pub ipv4: Option<Assignment>,
    pub ipv6: Option<Assignment>,
}

/// Bound on compare-and-swap retries of one write before giving up with
/// [`IpamError::TooManyConflicts`].
pub(crate) const MAX_CONFLICTS: usize = 100;

/// The IPAM client. Cheap to clone; several may run against one datastore at once.
pub struct Ipam<D> {
    store: Store<D>,
}

impl<D> Clone for Ipam<D> {
    fn clone(&self) -> Self {
        Ipam { store: self.store.clone() }
    }
}

/// The cluster state one assignment decides on.
struct Context {
    pools: Vec<IPPool>,
    labels: BTreeMap<String, String>,
    config: IPAMConfigurationSpec,
    reserved: Vec<IpNetwork>,
}

impl Context {
    fn reserved(&self, addr: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(addr))
    }
}

impl<D: Datastore> Ipam<D> {
    pub fn new(store: Store<D>) -> Self {
        Ipam { store }
    }

    pub fn store(&self) -> &Store<D> {
        &self.store
    }

    async fn context(&self, node: &str) -> Result<Context> {
        let labels = self.store.get::<GinghamNode>(node).await?.map(|n| n.labels()).unwrap_or_default();
        let config = self.store.get::<IPAMConfiguration>(DEFAULT_NAME).await?.map(|c| c.spec).unwrap_or_default();
        Ok(Context { labels, config, ..self.pools_context().await? })
    }

    /// The pools and reservations, for assignments that no node's labels or limits apply to.
    async fn pools_context(&self) -> Result<Context> {
        let (pools, _) = self.store.list::<IPPool>().await?;
        let (reservations, _) = self.store.list::<IPReservation>().await?;
        let reserved = reservations.iter().flat_map(|r| r.spec.reserved_cidrs.iter()).filter_map(|c| c.parse().ok()).collect();
        Ok(Context { pools, labels: BTreeMap::new(), config: IPAMConfigurationSpec::default(), reserved })
    }
}
