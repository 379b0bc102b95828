//! Read-modify-write with compare-and-swap, retried on conflict: the one way IPAM writes.

use gingham_api::datastore::{Datastore, DatastoreError, Store};
use gingham_api::resources::Kind;

use crate::{IpamError, Result, MAX_CONFLICTS};

/// What an edit decided.
pub(crate) enum Edit<T> {
    /// Write the changed object, then return the value.
    Write(T),
    /// Delete the object, then return the value.
    Delete(T),
    /// Leave the object alone and return the value.
    Keep(T),
}

/// Applies `edit` to the current `name` until the write lands on an unchanged revision.
/// `Ok(None)` when the object does not exist.
pub(crate) async fn modify<D: Datastore, K: Kind, T>(
    store: &Store<D>,
    name: &str,
    mut edit: impl FnMut(&mut K) -> Edit<T>,
) -> Result<Option<T>> {
    for _ in 0..MAX_CONFLICTS {
        let Some(mut obj) = store.get::<K>(name).await? else { return Ok(None) };
        let outcome = match edit(&mut obj) {
            Edit::Keep(t) => return Ok(Some(t)),
            Edit::Write(t) => store.update(&obj).await.map(|_| t),
            Edit::Delete(t) => store.delete(&obj).await.map(|_| t),
        };
        match outcome {
            Ok(t) => return Ok(Some(t)),
            Err(DatastoreError::NotFound { .. }) => return Ok(None),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::TooManyConflicts { what: format!("updating {} {name:?}", K::INFO.kind), attempts: MAX_CONFLICTS })
}
