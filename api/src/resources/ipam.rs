//! The IPAM bookkeeping kinds, laid out as Calico's so that its semantics carry over:
//! an IPAMBlock per claimed block with one slot per address, a BlockAffinity tying a block to
//! a node, an IPAMHandle per container counting its addresses per block, IPReservations that
//! are never handed out, and the global IPAMConfiguration.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, ValidationError};
use super::{Kind, KindInfo};

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "IPAMBlock", plural = "ipamblocks")]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    pub cidr: String,
    /// `host:NODE` while a node holds the block; absent for an orphaned block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(default)]
    pub strict_affinity: bool,
    /// One slot per address of the block: the index into `attributes` of its allocation.
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals, in the order they will be handed out (released ones go to the back, so a
    /// just-freed address is the last to be reused).
    pub unallocated: Vec<u32>,
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every allocation; `sequenceNumberForAllocation[ordinal]` records the value an
    /// address got, so a release naming an older number cannot free a reused address.
    #[serde(default)]
    pub sequence_number: u64,
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set while the block is being deleted so nobody allocates from it meanwhile.
    #[serde(default)]
    pub deleted: bool,
}

/// Calico spells these two in snake case; kept for a familiar `kubectl get -o yaml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AllocationAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

impl Kind for IPAMBlock {
    const INFO: KindInfo = super::IPAM_BLOCK;

    fn validate(&self) -> Check {
        let net = validate::cidr("spec.cidr", &self.spec.cidr)?;
        let size = match net {
            ipnetwork::IpNetwork::V4(n) => 1u64 << (32 - n.prefix()),
            ipnetwork::IpNetwork::V6(n) => 1u64 << (128 - n.prefix()).min(63),
        };
        if size > 65536 {
            return Err(ValidationError::new("spec.cidr", "a block holds at most 65536 addresses"));
        }
        if self.spec.allocations.len() as u64 != size {
            return Err(ValidationError::new(
                "spec.allocations",
                format!("has {} slots for a block of {size}", self.spec.allocations.len()),
            ));
        }
        let n_attrs = self.spec.attributes.len() as u32;
        for (i, a) in self.spec.allocations.iter().enumerate() {
            if a.is_some_and(|a| a >= n_attrs) {
                return Err(ValidationError::new(format!("spec.allocations[{i}]"), "points past attributes"));
            }
        }
        for (i, &u) in self.spec.unallocated.iter().enumerate() {
            if u as u64 >= size || self.spec.allocations[u as usize].is_some() {
                return Err(ValidationError::new(format!("spec.unallocated[{i}]"), format!("ordinal {u} is out of range or allocated")));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Written before the block exists: the claim is in progress.
    #[default]
    Pending,
    Confirmed,
    PendingDeletion,
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "BlockAffinity", plural = "blockaffinities")]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    pub state: AffinityState,
    pub node: String,
    pub cidr: String,
    #[serde(default)]
    pub deleted: bool,
}

impl Kind for BlockAffinity {
    const INFO: KindInfo = super::BLOCK_AFFINITY;

    fn validate(&self) -> Check {
        validate::cidr("spec.cidr", &self.spec.cidr)?;
        validate::object_name("spec.node", &self.spec.node)
    }
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "IPAMHandle", plural = "ipamhandles")]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandleSpec {
    /// The container ID (or another caller's key) exactly as given; the object name is a
    /// sanitised form of it.
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Addresses held, per block CIDR.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
}

impl Kind for IPAMHandle {
    const INFO: KindInfo = super::IPAM_HANDLE;

    fn validate(&self) -> Check {
        if self.spec.handle_id.is_empty() {
            return Err(ValidationError::new("spec.handleID", "must not be empty"));
        }
        for cidr in self.spec.block.keys() {
            validate::cidr("spec.block", cidr)?;
        }
        Ok(())
    }
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "IPReservation", plural = "ipreservations")]
#[serde(rename_all = "camelCase")]
pub struct IPReservationSpec {
    /// Addresses or CIDRs IPAM must never hand out.
    #[serde(rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

impl Kind for IPReservation {
    const INFO: KindInfo = super::IP_RESERVATION;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())?;
        for (i, c) in self.spec.reserved_cidrs.iter().enumerate() {
            validate::address_with_prefix(&format!("spec.reservedCIDRs[{i}]"), c)?;
        }
        Ok(())
    }
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "IPAMConfiguration", plural = "ipamconfigurations")]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfigurationSpec {
    /// Never borrow an address from another node's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Claim blocks on demand (default true); when false only existing affine blocks are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
    /// At most this many blocks per node; 0 or absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<u32>,
}

impl Kind for IPAMConfiguration {
    const INFO: KindInfo = super::IPAM_CONFIGURATION;

    fn validate(&self) -> Check {
        if self.metadata.name.as_deref() != Some(super::DEFAULT_NAME) {
            return Err(ValidationError::new("metadata.name", "the IPAM configuration is a singleton named \"default\""));
        }
        Ok(())
    }
}

/// `198.19.0.64/26` -> `198-19-0-64-26` (Calico's naming, valid for every backend).
pub fn block_name(cidr: &str) -> String {
    cidr.replace(['.', ':', '/'], "-").to_ascii_lowercase()
}

/// The affinity of `node` for the block `cidr`.
pub fn affinity_name(node: &str, cidr: &str) -> String {
    format!("{node}-{}", block_name(cidr))
}

/// A valid object name for a handle: the handle itself when it already is one, else a
/// sanitised form plus a hash of the original, so distinct handles never share a name.
pub fn handle_name(handle: &str) -> String {
    if validate::object_name("", handle).is_ok() && handle.len() <= 200 {
        return handle.to_string();
    }
    let mut clean: String =
        handle.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(200).collect();
    clean = clean.trim_matches('-').to_string();
    // FNV-1a: a stable hash without another dependency; collisions would need a 64-bit clash.
    let hash = handle.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    if clean.is_empty() {
        format!("h-{hash:016x}")
    } else {
        format!("{clean}-{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(block_name("198.19.0.64/26"), "198-19-0-64-26");
        assert_eq!(block_name("2001:db8::/122"), "2001-db8---122");
        assert_eq!(affinity_name("node-1", "198.19.0.64/26"), "node-1-198-19-0-64-26");
        assert_eq!(handle_name("abc123"), "abc123");
        let a = handle_name("ABC_123");
        let b = handle_name("abc-123");
        assert_ne!(a, b);
        assert!(validate::object_name("", &a).is_ok(), "{a}");
        assert!(validate::object_name("", &handle_name("___")).is_ok());
    }
}
