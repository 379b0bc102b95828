//! Typed access: objects of a [`Kind`] in and out, validated before every write.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Datastore, DatastoreError, RawObject, Result, Revision, WatchEvent, WatchStream};
use crate::resources::Kind;

/// A cheap-to-clone handle on a backend.
pub struct Store<D> {
    backend: Arc<D>,
}

impl<D> Clone for Store<D> {
    fn clone(&self) -> Self {
        Store { backend: self.backend.clone() }
    }
}

impl<D: Datastore> Store<D> {
    pub fn new(backend: D) -> Self {
        Store { backend: Arc::new(backend) }
    }

    pub fn backend(&self) -> &D {
        &self.backend
    }

    pub async fn get<K: Kind>(&self, name: &str) -> Result<Option<K>> {
        self.backend.get(K::INFO, name).await?.map(decode::<K>).transpose()
    }

    /// Every object of the kind, and the revision to watch from.
    pub async fn list<K: Kind>(&self) -> Result<(Vec<K>, Revision)> {
        let list = self.backend.list(K::INFO).await?;
        let items = list.items.into_iter().map(decode::<K>).collect::<Result<Vec<_>>>()?;
        Ok((items, list.revision))
    }

    /// Validates and creates; the returned object carries its revision.
    pub async fn create<K: Kind>(&self, obj: &K) -> Result<K> {
        let name = checked_name(obj)?;
        let value = encode(obj, &name)?;
        decode(self.backend.create(K::INFO, &name, value).await?)
    }

    /// Validates and writes `obj` if the stored revision is still `obj`'s resourceVersion.
    pub async fn update<K: Kind>(&self, obj: &K) -> Result<K> {
        self.replace(obj, false).await
    }

    /// Writes `obj`'s status if the stored revision is still `obj`'s resourceVersion (see
    /// [`Datastore::update_status`]).
    pub async fn update_status<K: Kind>(&self, obj: &K) -> Result<K> {
        self.replace(obj, true).await
    }

    async fn replace<K: Kind>(&self, obj: &K, status_only: bool) -> Result<K> {
        let name = checked_name(obj)?;
        let revision = revision_of(obj, &name)?;
        let value = encode(obj, &name)?;
        let stored = match status_only {
            true => self.backend.update_status(K::INFO, &name, value, &revision).await?,
            false => self.backend.update(K::INFO, &name, value, &revision).await?,
        };
        // What was stored is what we sent, apart from the revision: no need to decode it back.
        let mut out = obj.clone();
        out.meta_mut().resource_version = Some(stored.revision.0);
        Ok(out)
    }

    /// Deletes `obj` if the stored revision is still `obj`'s resourceVersion.
    pub async fn delete<K: Kind>(&self, obj: &K) -> Result<()> {
        let name = obj.key();
        let revision = revision_of(obj, &name)?;
        self.backend.delete(K::INFO, &name, &revision).await
    }

    /// Reads the current object and deletes it, retrying while others change it; true when it
    /// existed.
    pub async fn delete_latest<K: Kind>(&self, name: &str) -> Result<bool> {
        loop {
            let Some(obj) = self.get::<K>(name).await? else { return Ok(false) };
            match self.delete(&obj).await {
                Ok(()) => return Ok(true),
                Err(DatastoreError::NotFound { .. }) => return Ok(false),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Changes of kind `K` after `from`.
    pub async fn watch<K: Kind>(&self, from: &Revision) -> Result<TypedWatch<K>> {
        Ok(TypedWatch { raw: self.backend.watch(K::INFO, from).await?, kind: PhantomData })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypedEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    Resync,
}

pub struct TypedWatch<K> {
    raw: WatchStream,
    kind: PhantomData<K>,
}

impl<K: Kind> TypedWatch<K> {
    /// The next change; `None` when the store is gone. An object that no longer decodes is
    /// reported as an error rather than skipped, so nobody acts on a partial view.
    pub async fn next(&mut self) -> Option<Result<TypedEvent<K>>> {
        let event = self.raw.recv().await?;
        Some(Self::typed(event))
    }

    /// The next change if one is already waiting.
    pub fn try_next(&mut self) -> Option<Result<TypedEvent<K>>> {
        self.raw.try_recv().ok().map(Self::typed)
    }

    fn typed(event: WatchEvent) -> Result<TypedEvent<K>> {
        match event {
            WatchEvent::Added(o) => decode(o).map(TypedEvent::Added),
            WatchEvent::Modified(o) => decode(o).map(TypedEvent::Modified),
            WatchEvent::Deleted(o) => decode(o).map(TypedEvent::Deleted),
            WatchEvent::Resync => Ok(TypedEvent::Resync),
        }
    }
}

/// Validates `obj` and returns its datastore key (`namespace/name` for namespaced kinds).
fn checked_name<K: Kind>(obj: &K) -> Result<String> {
    let name = obj.key();
    obj.validate().map_err(|source| DatastoreError::Invalid { kind: K::INFO.kind, name: name.clone(), source })?;
    let missing = |field: &str| {
        let source = crate::resources::ValidationError::new(field, "missing");
        DatastoreError::Invalid { kind: K::INFO.kind, name: name.clone(), source }
    };
    if obj.meta().name.as_deref().unwrap_or_default().is_empty() {
        return Err(missing("metadata.name"));
    }
    if K::INFO.is_namespaced() && obj.meta().namespace.as_deref().unwrap_or_default().is_empty() {
        return Err(missing("metadata.namespace"));
    }
    Ok(name)
}

fn revision_of<K: Kind>(obj: &K, name: &str) -> Result<Revision> {
    match obj.meta().resource_version.as_deref() {
        Some(r) if !r.is_empty() => Ok(Revision(r.to_string())),
        _ => Err(DatastoreError::NoRevision { kind: K::INFO.kind, name: name.to_string() }),
    }
}

fn encode<K: Kind>(obj: &K, name: &str) -> Result<serde_json::Value> {
    let value =
        serde_json::to_value(obj).map_err(|e| DatastoreError::Decode { kind: K::INFO.kind, name: name.into(), reason: e.to_string() })?;
    Ok(super::strip_revision(value))
}

fn decode<K: Kind>(raw: RawObject) -> Result<K> {
    serde_json::from_value(raw.value).map_err(|e| DatastoreError::Decode { kind: K::INFO.kind, name: raw.name, reason: e.to_string() })
}
