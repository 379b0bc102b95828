//! The resource kinds of API group `gingham.io/v1`. Field names follow Calico's v3 resources so
//! that a Calico operator recognises them; every kind is cluster-scoped, as in Calico.
//!
//! Each kind is a kube `CustomResource` (so the CRDs in `manifests/crds/` are generated from these
//! types) and implements [`Kind`], which the datastore uses to store it and `validate` to refuse a
//! bad object with the field and the reason.

mod bgp;
mod bgpfilter;
pub mod core;
mod ipam;
mod ippool;
mod node;
mod strict;
pub use strict::unknown_fields;
pub mod validate;

pub use bgp::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, BfdSpec, BindMode, Community, CommunityValue, MaxPrefixAction,
    MaxPrefixes, NextHopMode, PeerPassword, PrefixAdvertisement, SecretKeyRef, ServiceCidr, SourceAddress,
};
pub use bgpfilter::{BGPFilter, BGPFilterRule, BGPFilterSpec, FilterAction, FilterSource, MatchOperator, PrefixCondition, PrefixLength};
pub use ipam::{
    affinity_name, block_name, handle_name, AffinityState, AllocationAttribute, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
    IPAMConfiguration, IPAMConfigurationSpec, IPAMHandle, IPAMHandleSpec, IPReservation, IPReservationSpec,
};
pub use ippool::{AllowedUse, IPPool, IPPoolSpec};
pub use node::{GinghamNode, GinghamNodeBgp, GinghamNodeSpec, OrchRef, K8S_ORCHESTRATOR};
pub use validate::ValidationError;

use kube::core::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const GROUP: &str = "gingham.io";
pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "gingham.io/v1";

/// The name of the cluster-wide singleton of `BGPConfiguration` and `IPAMConfiguration`.
pub const DEFAULT_NAME: &str = "default";

/// A stored resource kind: how to name it and how to check it. Gingham's own kinds and the few
/// Kubernetes kinds Gingham reads ([`core`]) alike.
pub trait Kind: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    const INFO: KindInfo;

    /// Checks everything the type system does not; the error names the field.
    fn validate(&self) -> Result<(), ValidationError>;

    /// The datastore key: the name, or `namespace/name` for a namespaced kind.
    fn key(&self) -> String {
        let meta = self.meta();
        let name = meta.name.as_deref().unwrap_or_default();
        match (Self::INFO.scope, meta.namespace.as_deref()) {
            (Scope::Cluster, _) => name.to_string(),
            (Scope::Namespaced(_), ns) => format!("{}/{name}", ns.unwrap_or_default()),
        }
    }
}

/// The kind names the datastore keys objects by, with their plurals and the aliases the CLI takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub aliases: &'static [&'static str],
    /// `gingham.io/v1`, or a Kubernetes group's (`v1` for the core group).
    pub api_version: &'static str,
    pub scope: Scope,
    /// Lists and watches carry only metadata (Kubernetes' PartialObjectMetadata): for kinds
    /// Gingham follows by name and labels, whose specs and statuses are large.
    pub metadata_only: bool,
}

/// Where objects of a kind live. Namespaced objects are keyed `namespace/name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Cluster,
    Namespaced(Watched),
}

/// Which namespaces a list or watch of a namespaced kind covers on the kubernetes backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Watched {
    /// Only the process's own namespace (its service account's): what a namespaced Role grants.
    OwnNamespace,
    AllNamespaces,
}

impl KindInfo {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    pub fn version(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or(self.api_version, |(_, v)| v)
    }

    pub fn is_namespaced(&self) -> bool {
        matches!(self.scope, Scope::Namespaced(_))
    }

    /// Splits a datastore key into (namespace, name); the namespace is `None` for cluster kinds.
    /// The datastore key of an object of this kind given as JSON (what [`Kind::key`] is for a
    /// typed one): its name, `namespace/name` when namespaced; `None` without them.
    pub fn key_of(&self, value: &serde_json::Value) -> Option<String> {
        let name = value.pointer("/metadata/name").and_then(|n| n.as_str())?;
        match self.scope {
            Scope::Cluster => Some(name.to_string()),
            Scope::Namespaced(_) => Some(format!("{}/{name}", value.pointer("/metadata/namespace").and_then(|n| n.as_str())?)),
        }
    }

    pub fn split_key<'a>(&self, key: &'a str) -> (Option<&'a str>, &'a str) {
        match self.scope {
            Scope::Cluster => (None, key),
            Scope::Namespaced(_) => key.split_once('/').map_or((None, key), |(ns, n)| (Some(ns), n)),
        }
    }
}

const fn gingham(kind: &'static str, plural: &'static str, aliases: &'static [&'static str]) -> KindInfo {
    KindInfo { kind, plural, aliases, api_version: API_VERSION, scope: Scope::Cluster, metadata_only: false }
}

pub const IPPOOL: KindInfo = gingham("IPPool", "ippools", &["ippool", "pool", "pools"]);
pub const BGP_CONFIGURATION: KindInfo = gingham("BGPConfiguration", "bgpconfigurations", &["bgpconfiguration", "bgpconfig", "bgpconfigs"]);
pub const BGP_PEER: KindInfo = gingham("BGPPeer", "bgppeers", &["bgppeer", "peer", "peers"]);
pub const BGP_FILTER: KindInfo = gingham("BGPFilter", "bgpfilters", &["bgpfilter", "filter", "filters"]);
pub const GINGHAM_NODE: KindInfo = gingham("GinghamNode", "ginghamnodes", &["ginghamnode", "node", "nodes"]);
pub const IPAM_BLOCK: KindInfo = gingham("IPAMBlock", "ipamblocks", &["ipamblock", "block", "blocks"]);
pub const BLOCK_AFFINITY: KindInfo = gingham("BlockAffinity", "blockaffinities", &["blockaffinity", "affinity", "affinities"]);
pub const IPAM_HANDLE: KindInfo = gingham("IPAMHandle", "ipamhandles", &["ipamhandle", "handle", "handles"]);
pub const IP_RESERVATION: KindInfo = gingham("IPReservation", "ipreservations", &["ipreservation", "reservation", "reservations"]);
pub const IPAM_CONFIGURATION: KindInfo = gingham("IPAMConfiguration", "ipamconfigurations", &["ipamconfiguration", "ipamconfig"]);
pub const GINGHAM_NODE_STATUS: KindInfo =
    gingham("GinghamNodeStatus", "ginghamnodestatuses", &["ginghamnodestatus", "nodestatus", "nodestatuses"]);

/// Every kind, in the order `manifests/crds/` lists them.
pub fn all_kinds() -> &'static [KindInfo] {
    &[
        IPPOOL,
        BGP_CONFIGURATION,
        BGP_PEER,
        BGP_FILTER,
        GINGHAM_NODE,
        IPAM_BLOCK,
        BLOCK_AFFINITY,
        IPAM_HANDLE,
        IP_RESERVATION,
        IPAM_CONFIGURATION,
        GINGHAM_NODE_STATUS,
    ]
}

/// Every kind `ginghamctl` reads and writes: Gingham's own and the Kubernetes kinds that sqlite
/// mode stores in place of an API server ([`core::stored_kinds`]).
pub fn cli_kinds() -> impl Iterator<Item = KindInfo> {
    all_kinds().iter().chain(core::stored_kinds()).copied()
}

/// Looks a kind up by kind name, plural or alias, case-insensitively (`pool`, `IPPools`, ...).
pub fn find_kind(name: &str) -> Option<KindInfo> {
    let name = name.to_ascii_lowercase();
    cli_kinds().find(|k| k.kind.to_ascii_lowercase() == name || k.plural == name || k.aliases.contains(&name.as_str()))
}

/// The CustomResourceDefinition of every kind, in [`all_kinds`] order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![
        IPPool::crd(),
        BGPConfiguration::crd(),
        BGPPeer::crd(),
        BGPFilter::crd(),
        GinghamNode::crd(),
        IPAMBlock::crd(),
        BlockAffinity::crd(),
        IPAMHandle::crd(),
        IPReservation::crd(),
        IPAMConfiguration::crd(),
        crate::status::GinghamNodeStatus::crd(),
    ]
}

/// The checked-in CRD files: (file name, YAML), one per kind, generated from the types.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", GROUP, crd.spec.names.plural);
            let yaml = serde_yaml_ng::to_string(&crd).expect("a CRD always serialises");
            (file, format!("# Generated from api/src/resources by `GINGHAM_UPDATE_CRDS=1 cargo test -p gingham-api --test crds`.\n{yaml}"))
        })
        .collect()
}

/// Parses one object of any kind from JSON (apiVersion + kind decide the type) and validates it.
/// A field the kind does not have is refused, with its path.
pub fn validate_value(value: &serde_json::Value) -> Result<(), ValidationError> {
    let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| ValidationError::new("kind", "missing"))?;
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
    let expected = find_kind(kind).filter(|k| k.kind == kind).map_or(API_VERSION, |k| k.api_version);
    if api_version != expected {
        return Err(ValidationError::new("apiVersion", format!("{api_version:?} is not {expected}")));
    }
    fn check<K: Kind>(value: &serde_json::Value) -> Result<(), ValidationError> {
        let obj: K = serde_json::from_value(value.clone()).map_err(ValidationError::from_serde)?;
        if obj.meta().name.as_deref().unwrap_or_default().is_empty() {
            return Err(ValidationError::new("metadata.name", "missing"));
        }
        for (key, value) in obj.meta().labels.iter().flatten() {
            validate::label("metadata.labels", key, value)?;
        }
        if K::INFO.is_namespaced() && obj.meta().namespace.as_deref().unwrap_or_default().is_empty() {
            return Err(ValidationError::new("metadata.namespace", format!("missing: a {} lives in a namespace", K::INFO.kind)));
        }
        obj.validate()
    }
    strict::refuse_unknown_fields(kind, value)?;
    match kind {
        "Secret" => check::<core::Secret>(value),
        "Service" => check::<core::Service>(value),
        "EndpointSlice" => check::<core::EndpointSlice>(value),
        "IPPool" => check::<IPPool>(value),
        "BGPConfiguration" => check::<BGPConfiguration>(value),
        "BGPPeer" => check::<BGPPeer>(value),
        "BGPFilter" => check::<BGPFilter>(value),
        "GinghamNode" => check::<GinghamNode>(value),
        "IPAMBlock" => check::<IPAMBlock>(value),
        "BlockAffinity" => check::<BlockAffinity>(value),
        "IPAMHandle" => check::<IPAMHandle>(value),
        "IPReservation" => check::<IPReservation>(value),
        "IPAMConfiguration" => check::<IPAMConfiguration>(value),
        "GinghamNodeStatus" => check::<crate::status::GinghamNodeStatus>(value),
        other => Err(ValidationError::new("kind", format!("unknown kind {other:?}"))),
    }
}

/// Built by the derive: every kind is `{ metadata, spec }`.
pub trait HasSpec: Sized {
    type Spec;
    fn with_spec(name: &str, spec: Self::Spec) -> Self;
    fn spec(&self) -> &Self::Spec;
    fn spec_mut(&mut self) -> &mut Self::Spec;
}

macro_rules! has_spec {
    ($($kind:ident => $spec:ident),* $(,)?) => {$(
        impl HasSpec for $kind {
            type Spec = $spec;
            fn with_spec(name: &str, spec: $spec) -> Self {
                $kind::new(name, spec)
            }
            fn spec(&self) -> &$spec {
                &self.spec
            }
            fn spec_mut(&mut self) -> &mut $spec {
                &mut self.spec
            }
        }
    )*};
}

has_spec! {
    IPPool => IPPoolSpec,
    BGPConfiguration => BGPConfigurationSpec,
    BGPPeer => BGPPeerSpec,
    BGPFilter => BGPFilterSpec,
    GinghamNode => GinghamNodeSpec,
    IPAMBlock => IPAMBlockSpec,
    BlockAffinity => BlockAffinitySpec,
    IPAMHandle => IPAMHandleSpec,
    IPReservation => IPReservationSpec,
    IPAMConfiguration => IPAMConfigurationSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_table_matches_the_derived_types() {
        let crds = crds();
        assert_eq!(crds.len(), all_kinds().len());
        for (crd, info) in crds.iter().zip(all_kinds()) {
            assert_eq!(crd.spec.names.kind, info.kind);
            assert_eq!(crd.spec.names.plural, info.plural);
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
        }
    }

    #[test]
    fn kinds_are_found_by_any_name() {
        assert_eq!(find_kind("pool").unwrap().kind, "IPPool");
        assert_eq!(find_kind("IPPools").unwrap().kind, "IPPool");
        assert_eq!(find_kind("bgppeer").unwrap().kind, "BGPPeer");
        assert_eq!(find_kind("BlockAffinities").unwrap().kind, "BlockAffinity");
        assert!(find_kind("deployment").is_none());
    }
}
