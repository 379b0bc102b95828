//! `ginghamctl datastore migrate export|import`: every Gingham object of one datastore, as
//! plain documents, into another (sqlite <-> kubernetes). What a datastore assigns on write
//! (resourceVersion, uid, timestamps, managed fields) is left out, so an export of an import is
//! the export itself. Node status reports are not carried (each agent writes a new one within
//! seconds); Secrets only when asked, since an export is often shared; Services and
//! EndpointSlices never (they are the cluster's, which sqlite mode only stands in for).

use serde_json::Value;

use super::{Datastore, Result};
use crate::resources::{all_kinds, core, find_kind, validate_value, KindInfo, GINGHAM_NODE_STATUS};

/// Fields every backend assigns itself; an import must not carry them over.
pub const ASSIGNED: &[&str] = &["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"];

/// The kinds an export holds, in an order an import can create them in.
pub fn kinds(with_secrets: bool) -> Vec<KindInfo> {
    // Services and EndpointSlices belong to the cluster, not to Gingham: never carried.
    let secrets = core::stored_kinds().iter().filter(|k| with_secrets && k.kind == core::SECRET.kind);
    all_kinds().iter().filter(|k| k.kind != GINGHAM_NODE_STATUS.kind).chain(secrets).copied().collect()
}

/// `value` without the metadata a datastore assigns (and without empty annotations).
pub fn strip_assigned(mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ASSIGNED {
            meta.remove(*field);
        }
        if meta.get("annotations").and_then(Value::as_object).is_some_and(|a| a.is_empty()) {
            meta.remove("annotations");
        }
    }
    value
}

/// Every object of `kinds`, by kind then name.
pub async fn export<D: Datastore>(store: &D, kinds: &[KindInfo]) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for &kind in kinds {
        let mut items = store.list(kind).await?.items;
        items.sort_by(|a, b| a.name.cmp(&b.name));
        docs.extend(items.into_iter().map(|o| strip_assigned(o.value)));
    }
    Ok(docs)
}

#[derive(Debug, Default, PartialEq)]
pub struct Imported {
    pub created: usize,
}

/// Creates every document in `store`. Checks them all first (valid, of an exported kind, none
/// already present) and writes nothing if one fails; a failure part-way through a write is
/// reported with how far it got.
pub async fn import<D: Datastore>(store: &D, docs: &[Value], kinds: &[KindInfo]) -> std::result::Result<Imported, String> {
    let mut problems = Vec::new();
    let mut plan = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let what = format!(
            "document {} ({} {:?})",
            i + 1,
            doc.get("kind").and_then(Value::as_str).unwrap_or("?"),
            doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?")
        );
        if let Err(e) = validate_value(doc) {
            problems.push(format!("{what}: {}: {}", e.field, e.reason));
            continue;
        }
        let kind = find_kind(doc["kind"].as_str().unwrap_or_default()).expect("validated");
        if !kinds.iter().any(|k| k.kind == kind.kind) {
            problems.push(format!("{what}: kind {} is not part of a migration", kind.kind));
            continue;
        }
        // Validated: the name (and namespace) are there.
        let key = kind.key_of(doc).unwrap_or_default();
        match store.get(kind, &key).await {
            Ok(Some(_)) => problems.push(format!("{what}: already in the target datastore")),
            Ok(None) => plan.push((kind, key, strip_assigned(doc.clone()))),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(format!("nothing was imported:\n  {}", problems.join("\n  ")));
    }
    let mut imported = Imported::default();
    for (kind, key, doc) in plan {
        match store.create(kind, &key, doc).await {
            Ok(_) => imported.created += 1,
            Err(e) => {
                return Err(format!("{} {key:?}: {e}; {} of {} objects were created before it", kind.kind, imported.created, docs.len()))
            }
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::memory::MemoryStore;
    use crate::resources::{IPPool, IPPoolSpec, IPPOOL};

    #[tokio::test]
    async fn an_export_imported_elsewhere_exports_the_same_and_a_second_import_is_refused() {
        let a = MemoryStore::new();
        let mut pool = serde_json::to_value(IPPool::new("p", IPPoolSpec { cidr: "198.18.0.0/16".into(), ..Default::default() })).unwrap();
        pool["metadata"]["labels"] = serde_json::json!({"zone": "a"});
        a.create(IPPOOL, "p", pool).await.unwrap();
        let kinds = kinds(false);
        let exported = export(&a, &kinds).await.unwrap();
        assert_eq!(exported.len(), 1);
        assert!(exported[0].pointer("/metadata/resourceVersion").is_none());
        let b = MemoryStore::new();
        assert_eq!(import(&b, &exported, &kinds).await.unwrap().created, 1);
        assert_eq!(export(&b, &kinds).await.unwrap(), exported);
        let again = import(&b, &exported, &kinds).await.unwrap_err();
        assert!(again.contains("already in the target datastore"), "{again}");
    }
}
