//! The Kubernetes kinds Gingham reads besides its own: Secrets (BGP passwords), Nodes and Pods
//! (what `gingham-controllers` garbage-collects against) and Leases (its leader election).
//! They are the `k8s-openapi` types, stored and watched through the same [`Datastore`]
//! contract as Gingham's kinds; in sqlite mode, where there is no API server, Secrets are kept
//! in the datastore itself ([`stored_kinds`]) so `ginghamctl apply` can provide them.
//!
//! [`Datastore`]: crate::datastore::Datastore

use kube::core::PartialObjectMeta;

use super::validate::{Check, ValidationError};
use super::{Kind, KindInfo, Scope, Watched};

pub type Secret = k8s_openapi::api::core::v1::Secret;
pub type Node = k8s_openapi::api::core::v1::Node;
pub type Lease = k8s_openapi::api::coordination::v1::Lease;
/// A Node's metadata only: labels and existence are all the controllers need, and a full Node
/// carries kilobytes of status (images, conditions) per node.
pub type NodeMetadata = PartialObjectMeta<Node>;
/// A Pod's metadata only: namespace, name and UID are what an IPAM handle records.
pub type PodMetadata = PartialObjectMeta<k8s_openapi::api::core::v1::Pod>;

pub const SECRET: KindInfo = KindInfo {
    kind: "Secret",
    plural: "secrets",
    aliases: &["secret"],
    api_version: "v1",
    scope: Scope::Namespaced(Watched::OwnNamespace),
    metadata_only: false,
};
pub const NODE: KindInfo =
    KindInfo { kind: "Node", plural: "nodes", aliases: &[], api_version: "v1", scope: Scope::Cluster, metadata_only: false };
pub const NODE_METADATA: KindInfo = KindInfo { metadata_only: true, ..NODE };
pub const POD_METADATA: KindInfo = KindInfo {
    kind: "Pod",
    plural: "pods",
    aliases: &[],
    api_version: "v1",
    scope: Scope::Namespaced(Watched::AllNamespaces),
    metadata_only: true,
};
pub const LEASE: KindInfo = KindInfo {
    kind: "Lease",
    plural: "leases",
    aliases: &[],
    api_version: "coordination.k8s.io/v1",
    scope: Scope::Namespaced(Watched::OwnNamespace),
    metadata_only: false,
};

/// The Kubernetes kinds `ginghamctl` stores in a sqlite datastore.
pub fn stored_kinds() -> &'static [KindInfo] {
    &[SECRET]
}

impl Kind for Secret {
    const INFO: KindInfo = SECRET;

    fn validate(&self) -> Check {
        let keys = self.data.iter().flat_map(|d| d.keys()).chain(self.string_data.iter().flat_map(|d| d.keys()));
        for key in keys {
            // The API server's rule for Secret keys.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(ValidationError::new(format!("data.{key}"), "a key consists of alphanumerics, '-', '_' or '.'"));
            }
        }
        Ok(())
    }
}

impl Kind for Node {
    const INFO: KindInfo = NODE;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for NodeMetadata {
    const INFO: KindInfo = NODE_METADATA;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for PodMetadata {
    const INFO: KindInfo = POD_METADATA;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for Lease {
    const INFO: KindInfo = LEASE;

    fn validate(&self) -> Check {
        let spec = self.spec.as_ref();
        if spec.and_then(|s| s.lease_duration_seconds).is_some_and(|d| d <= 0) {
            return Err(ValidationError::new("spec.leaseDurationSeconds", "must be positive"));
        }
        Ok(())
    }
}

/// The value of `key` in a Secret: `data` (base64 on the wire, decoded by the type) or, as
/// sqlite mode stores what `ginghamctl apply` was given, `stringData`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}
