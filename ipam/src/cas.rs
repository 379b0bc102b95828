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
/// `Ok(None)` when the object does not exist. `edit` may run several times, each time on a
/// fresh copy, so it must not have side effects.
pub(crate) async fn modify<D: Datastore, K: Kind, T>(
    store: &Store<D>,
    name: &str,
    edit: impl FnMut(&mut K) -> Edit<T>,
) -> Result<Option<T>> {
    modify_from(store, name, None, edit).await
}

/// [`modify`] starting from a copy the caller just read, saving a read when nobody else wrote.
pub(crate) async fn modify_from<D: Datastore, K: Kind, T>(
    store: &Store<D>,
    name: &str,
    mut first: Option<K>,
    mut edit: impl FnMut(&mut K) -> Edit<T>,
) -> Result<Option<T>> {
    for _ in 0..MAX_CONFLICTS {
        let current = match first.take() {
            Some(obj) => Some(obj),
            None => store.get::<K>(name).await?,
        };
        let Some(mut obj) = current else { return Ok(None) };
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
