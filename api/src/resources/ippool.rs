//! IPPool: a range pods take addresses from, split into blocks that nodes claim.

use ipnetwork::IpNetwork;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, ValidationError};
use super::{Kind, KindInfo};

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "IPPool", plural = "ippools")]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The pool's range, e.g. `198.19.0.0/16`.
    pub cidr: String,
    /// Prefix length of the blocks nodes claim: default 26 for IPv4 (64 addresses), 122 for IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// Which nodes may take blocks from this pool (Calico selector syntax); default `all()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// A disabled pool hands out nothing new; existing allocations stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// What the pool's addresses are for; default `[Workload]`. `[LoadBalancer]` makes it a pool
    /// of Service addresses: gingham-controllers hands them to Services of type LoadBalancer and
    /// pods never get one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    /// Gingham extension: never borrow addresses from other nodes' blocks of this pool, whatever
    /// IPAMConfiguration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_affinity: Option<bool>,
    /// Masquerade traffic from this pool's pods to destinations outside every IP pool to the
    /// node's address (Calico's field; default false, true on the pool the agent creates).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AllowedUse {
    Workload,
    /// Calico's tunnel-address use; Gingham has no tunnels, so such a pool only keeps pods out.
    Tunnel,
    LoadBalancer,
}

impl IPPoolSpec {
    /// The parsed pool range; `None` only for an object that never passed validation.
    pub fn network(&self) -> Option<IpNetwork> {
        self.cidr.parse().ok()
    }

    pub fn effective_block_size(&self) -> u8 {
        self.block_size.unwrap_or(match self.network() {
            Some(IpNetwork::V6(_)) => 122,
            _ => 26,
        })
    }

    pub fn effective_node_selector(&self) -> &str {
        self.node_selector.as_deref().unwrap_or("all()")
    }

    pub fn allows(&self, usage: AllowedUse) -> bool {
        self.allowed_uses.as_ref().map_or(usage == AllowedUse::Workload, |u| u.contains(&usage))
    }
}

impl Kind for IPPool {
    const INFO: KindInfo = super::IPPOOL;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())?;
        let spec = &self.spec;
        let net = validate::cidr("spec.cidr", &spec.cidr)?;
        let block = spec.effective_block_size();
        // Calico's bounds: blocks of 64..4096 addresses would be 20..32 / 116..128.
        let (min, max) = match net {
            IpNetwork::V4(_) => (20, 32),
            IpNetwork::V6(_) => (116, 128),
        };
        if !(min..=max).contains(&block) {
            return Err(ValidationError::new("spec.blockSize", format!("{block} is outside {min}..={max} for this address family")));
        }
        if block < net.prefix() {
            return Err(ValidationError::new(
                "spec.blockSize",
                format!("blocks of /{block} do not fit in the pool {} (a block cannot be larger than its pool)", spec.cidr),
            ));
        }
        if let Some(sel) = &spec.node_selector {
            validate::selector("spec.nodeSelector", sel)?;
        }
        if spec.allowed_uses.as_ref().is_some_and(|u| u.is_empty()) {
            return Err(ValidationError::new("spec.allowedUses", "an empty list allows nothing; omit it for [Workload]"));
        }
        if spec.allows(AllowedUse::LoadBalancer) {
            load_balancer_pool(spec)?;
        }
        Ok(())
    }
}

/// A LoadBalancer pool's addresses belong to Services, not to pods or nodes: the fields that
/// only mean something for pods' addresses are refused rather than ignored.
fn load_balancer_pool(spec: &IPPoolSpec) -> Check {
    let field = "spec.allowedUses";
    if spec.allowed_uses.as_ref().is_some_and(|u| u.len() > 1) {
        return Err(ValidationError::new(
            field,
            "LoadBalancer cannot be combined with other uses: an address goes to a pod or to a Service",
        ));
    }
    if spec.node_selector.as_deref().is_some_and(|s| s.trim() != "all()") {
        return Err(ValidationError::new("spec.nodeSelector", "a LoadBalancer pool's blocks belong to no node; omit nodeSelector"));
    }
    if spec.nat_outgoing {
        return Err(ValidationError::new("spec.natOutgoing", "masquerades traffic from pods' addresses; a LoadBalancer pool has none"));
    }
    if spec.strict_affinity.is_some() {
        return Err(ValidationError::new("spec.strictAffinity", "is about borrowing between nodes' blocks; a LoadBalancer pool has none"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, block: Option<u8>) -> IPPool {
        IPPool::new("p", IPPoolSpec { cidr: cidr.into(), block_size: block, ..Default::default() })
    }

    #[test]
    fn defaults_follow_calico() {
        assert_eq!(pool("198.19.0.0/16", None).spec.effective_block_size(), 26);
        assert_eq!(pool("2001:db8:19::/48", None).spec.effective_block_size(), 122);
        assert!(pool("198.19.0.0/16", None).spec.allows(AllowedUse::Workload));
        assert!(!pool("198.19.0.0/16", None).spec.allows(AllowedUse::Tunnel));
    }

    #[test]
    fn block_size_outside_the_pool_is_refused() {
        let e = pool("198.19.0.0/29", Some(26)).validate().unwrap_err();
        assert_eq!(e.field, "spec.blockSize");
        assert!(e.reason.contains("do not fit"), "{e}");
        let e = pool("198.19.0.0/16", Some(33)).validate().unwrap_err();
        assert_eq!(e.field, "spec.blockSize");
        let e = pool("198.19.0.0/16", Some(19)).validate().unwrap_err();
        assert!(e.reason.contains("20..=32"), "{e}");
        assert!(pool("198.19.0.0/29", Some(30)).validate().is_ok());
    }

    #[test]
    fn load_balancer_pools_refuse_what_only_pods_use() {
        let lb = |edit: fn(&mut IPPoolSpec)| {
            let mut p = pool("198.18.113.0/24", None);
            p.spec.allowed_uses = Some(vec![AllowedUse::LoadBalancer]);
            edit(&mut p.spec);
            p.validate().map_err(|e| e.field)
        };
        assert_eq!(lb(|_| {}), Ok(()));
        assert_eq!(lb(|s| s.node_selector = Some("all()".into())), Ok(()));
        assert_eq!(lb(|s| s.allowed_uses = Some(vec![AllowedUse::LoadBalancer, AllowedUse::Workload])), Err("spec.allowedUses".into()));
        assert_eq!(lb(|s| s.node_selector = Some("rack == 'a'".into())), Err("spec.nodeSelector".into()));
        assert_eq!(lb(|s| s.nat_outgoing = true), Err("spec.natOutgoing".into()));
        assert_eq!(lb(|s| s.strict_affinity = Some(true)), Err("spec.strictAffinity".into()));
        let p = IPPoolSpec { allowed_uses: Some(vec![AllowedUse::LoadBalancer]), ..Default::default() };
        assert!(!p.allows(AllowedUse::Workload), "pods never take a LoadBalancer pool's addresses");
    }

    #[test]
    fn bad_cidr_and_selector_name_their_field() {
        assert_eq!(pool("198.19.0.300/16", None).validate().unwrap_err().field, "spec.cidr");
        let mut p = pool("198.19.0.0/16", None);
        p.spec.node_selector = Some("zone == ".into());
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "spec.nodeSelector");
    }
}
