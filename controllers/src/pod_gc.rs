//! Pod garbage collection: an address whose handle records a pod (namespace, name, UID, as the
//! agent writes them at CNI ADD) that no longer exists is released once it has been missing for
//! the grace period. The grace covers a pod whose Pod object reaches the cache after its
//! addresses do, and a runtime that is still tearing the sandbox down. A pod recreated under the
//! same name has another UID: the old sandbox's handle is released, the new one's never.
//! Releasing by handle frees only that handle's slots, so a reused address is never freed.

use std::collections::BTreeMap;
use std::time::Duration;

use gingham_api::cache::Snapshot;
use gingham_api::resources::core::PodMetadata;
use gingham_api::resources::IPAMBlock;
use gingham_ipam::{block, ATTR_NAMESPACE, ATTR_POD, ATTR_POD_UID};
use tokio::time::Instant;

/// The pod a handle's allocations were made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
}

/// Every handle that records a pod, from the blocks' allocation attributes.
pub fn owners(blocks: &Snapshot<IPAMBlock>) -> BTreeMap<String, Owner> {
    let mut out = BTreeMap::new();
    for b in blocks.values() {
        for (_, attr) in block::allocations(&b.spec) {
            let (Some(handle), Some(namespace), Some(pod)) =
                (attr.handle_id.as_ref(), attr.secondary.get(ATTR_NAMESPACE), attr.secondary.get(ATTR_POD))
            else {
                continue;
            };
            let uid = attr.secondary.get(ATTR_POD_UID).cloned();
            out.insert(handle.clone(), Owner { namespace: namespace.clone(), pod: pod.clone(), uid });
        }
    }
    out
}

/// Remembers since when each handle's pod has been missing.
#[derive(Debug)]
pub struct PodGc {
    grace: Duration,
    missing_since: BTreeMap<String, Instant>,
}

impl PodGc {
    pub fn new(grace: Duration) -> Self {
        PodGc { grace, missing_since: BTreeMap::new() }
    }

    /// The handles whose pod has been gone for the whole grace period (they are forgotten
    /// here: the caller releases them).
    pub fn due(&mut self, owners: &BTreeMap<String, Owner>, pods: &Snapshot<PodMetadata>, now: Instant) -> Vec<String> {
        if !pods.synced {
            return Vec::new();
        }
        self.missing_since.retain(|handle, _| owners.contains_key(handle));
        let mut due = Vec::new();
        for (handle, owner) in owners {
            let pod = pods.get(&format!("{}/{}", owner.namespace, owner.pod));
            let alive = pod.is_some_and(|p| owner.uid.is_none() || p.metadata.uid == owner.uid);
            if alive {
                self.missing_since.remove(handle);
                continue;
            }
            let since = *self.missing_since.entry(handle.clone()).or_insert(now);
            if now.duration_since(since) >= self.grace {
                self.missing_since.remove(handle);
                due.push(handle.clone());
            }
        }
        due
    }

    /// How many handles are waiting out their grace.
    pub fn pending(&self) -> usize {
        self.missing_since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, snapshot};

    fn owner(ns: &str, name: &str, uid: Option<&str>) -> Owner {
        Owner { namespace: ns.into(), pod: name.into(), uid: uid.map(String::from) }
    }

    #[test]
    fn released_after_the_grace_only_when_the_pod_stays_gone() {
        let owners = BTreeMap::from([
            ("alive".to_string(), owner("ns", "web", Some("u1"))),
            ("old-sandbox-of-recreated".to_string(), owner("ns", "db", Some("u-old"))),
            ("gone".to_string(), owner("ns", "job", None)),
            ("comes-back".to_string(), owner("ns", "late", None)),
        ]);
        let t0 = Instant::now();
        let mut gc = PodGc::new(Duration::from_secs(10));
        let pods = snapshot(vec![pod("ns", "web", "u1"), pod("ns", "db", "u-new")]);
        assert!(gc.due(&owners, &pods, t0).is_empty(), "nothing before the grace");
        assert_eq!(gc.pending(), 3);
        let pods_later = snapshot(vec![pod("ns", "web", "u1"), pod("ns", "db", "u-new"), pod("ns", "late", "u9")]);
        assert!(gc.due(&owners, &pods_later, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(gc.pending(), 2, "the late pod arrived: no longer counted");
        let mut due = gc.due(&owners, &pods_later, t0 + Duration::from_secs(10));
        due.sort();
        assert_eq!(due, ["gone", "old-sandbox-of-recreated"]);
        assert_eq!(gc.pending(), 0);
    }

    #[test]
    fn nothing_before_the_pod_list_is_in() {
        let owners = BTreeMap::from([("h".to_string(), owner("ns", "p", None))]);
        let unsynced = crate::testing::unsynced::<PodMetadata>();
        let mut gc = PodGc::new(Duration::ZERO);
        assert!(gc.due(&owners, &unsynced, Instant::now()).is_empty());
    }
}
