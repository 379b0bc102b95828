//! The watch cache: one reflector per kind and process, shared by every consumer in it.
//!
//! A reflector lists its kind once, then only watches from the list's revision, applying each
//! event to an in-memory map. When the backend says events were lost (`Resync`, a 410 from the
//! API server) or the configured full resync comes due, it lists again and turns the
//! difference into the events that were missed: nothing dropped, nothing twice. Consumers
//! either read consistent snapshots ([`Reflector::snapshot`], [`Reflector::changed`]) or follow
//! the events ([`Reflector::events`]).
//!
//! | backend    | at rest                                      | full resync            |
//! |------------|----------------------------------------------|------------------------|
//! | kubernetes | one watch per kind, re-issued from the last revision when the server ends it | every `resync` (default 10 min) |
//! | sqlite     | the store's one change poller (a pragma per 100 ms) | every `resync`  |

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::datastore::{Datastore, Revision, Store, TypedEvent};
use crate::resources::Kind;

/// Every object of one kind at one revision.
#[derive(Debug)]
pub struct Snapshot<K> {
    /// Shared with later snapshots, so publishing one costs a pointer per object.
    pub objects: BTreeMap<String, Arc<K>>,
    pub revision: Revision,
    /// False until the first list has been applied.
    pub synced: bool,
}

impl<K> Snapshot<K> {
    pub fn get(&self, name: &str) -> Option<&K> {
        self.objects.get(name).map(|o| &**o)
    }

    pub fn values(&self) -> impl Iterator<Item = &K> {
        self.objects.values().map(|o| &**o)
    }

    /// The objects, cloned (for code that wants a plain slice).
    pub fn to_vec(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CacheOptions {
    /// A full list this often even when the watch never failed (a safety net, not a poll).
    pub resync: Duration,
    /// How long to wait before listing again after an error.
    pub retry: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { resync: Duration::from_secs(600), retry: Duration::from_secs(2) }
    }
}

/// Events a receiver may fall behind by before it gets `Lagged`.
const EVENTS_KEPT: usize = 1024;

/// A kind's event channel, made by its first subscriber: a channel keeps all its slots from
/// the start (32 KB a kind, touched as it is made), and no consumer in a node agent follows
/// events. They go out as `Arc`s: slots the size of a whole resource were 0.5 to 0.9 MB a kind.
type Events<K> = Arc<OnceLock<broadcast::Sender<Arc<TypedEvent<K>>>>>;

/// A handle on one kind's reflector; clones share it.
pub struct Reflector<K> {
    snapshot: watch::Receiver<Arc<Snapshot<K>>>,
    events: Events<K>,
}

impl<K> Clone for Reflector<K> {
    fn clone(&self) -> Self {
        Reflector { snapshot: self.snapshot.clone(), events: self.events.clone() }
    }
}

impl<K: Kind> Reflector<K> {
    /// Starts the reflector task; it ends when every handle is gone.
    pub fn start<D: Datastore>(store: Store<D>, options: CacheOptions) -> Reflector<K> {
        let empty = Snapshot { objects: BTreeMap::new(), revision: Revision(String::new()), synced: false };
        let (tx, snapshot) = watch::channel(Arc::new(empty));
        let events = Events::default();
        tokio::spawn(run(store, options, tx, events.clone()));
        Reflector { snapshot, events }
    }

    /// The current snapshot (cheap: a reference count).
    pub fn snapshot(&self) -> Arc<Snapshot<K>> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn changed(&self) -> watch::Receiver<Arc<Snapshot<K>>> {
        self.snapshot.clone()
    }

    /// Waits until the first list is in.
    pub async fn synced(&self) -> Arc<Snapshot<K>> {
        let mut rx = self.snapshot.clone();
        let ready = rx.wait_for(|s| s.synced).await.map(|s| s.clone());
        ready.unwrap_or_else(|_| self.snapshot())
    }

    /// Every change from now on, as events. A receiver that falls more than 1024 events behind
    /// (`EVENTS_KEPT`) gets `Lagged` and should read a snapshot.
    pub fn events(&self) -> broadcast::Receiver<Arc<TypedEvent<K>>> {
        self.events.get_or_init(|| broadcast::channel(EVENTS_KEPT).0).subscribe()
    }
}

/// The events that turn `old` into `new` (by revision), in name order.
pub fn diff<K: Kind>(old: &BTreeMap<String, Arc<K>>, new: &BTreeMap<String, Arc<K>>) -> Vec<TypedEvent<K>> {
    let mut out = Vec::new();
    for (name, obj) in new {
        match old.get(name) {
            None => out.push(TypedEvent::Added((**obj).clone())),
            Some(before) if before.meta().resource_version != obj.meta().resource_version => {
                out.push(TypedEvent::Modified((**obj).clone()))
            }
            Some(_) => {}
        }
    }
    for (name, obj) in old {
        if !new.contains_key(name) {
            out.push(TypedEvent::Deleted((**obj).clone()));
        }
    }
    out
}

async fn run<K: Kind, D: Datastore>(store: Store<D>, options: CacheOptions, tx: watch::Sender<Arc<Snapshot<K>>>, events: Events<K>) {
    // Only while someone listens: an event nobody reads is a clone of its object for nothing.
    let listened = || events.get().filter(|e| e.receiver_count() > 0);
    let mut objects: BTreeMap<String, Arc<K>> = BTreeMap::new();
    loop {
        if tx.is_closed() {
            return;
        }
        let (items, revision) = match store.list::<K>().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(kind = K::INFO.kind, error = %e, "cache list failed; retrying");
                tokio::time::sleep(options.retry).await;
                continue;
            }
        };
        let listed: BTreeMap<String, Arc<K>> = items.into_iter().map(|o| (o.key(), Arc::new(o))).collect();
        if let Some(events) = listened() {
            for event in diff(&objects, &listed) {
                let _ = events.send(Arc::new(event));
            }
        }
        objects = listed;
        let _ = tx.send(Arc::new(Snapshot { objects: objects.clone(), revision: revision.clone(), synced: true }));
        let mut watch = match store.watch::<K>(&revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(kind = K::INFO.kind, error = %e, "cache watch failed; listing again");
                tokio::time::sleep(options.retry).await;
                continue;
            }
        };
        let resync_at = tokio::time::Instant::now() + options.resync;
        'watching: loop {
            let first = tokio::select! {
                e = watch.next() => e,
                _ = tokio::time::sleep_until(resync_at) => break,
                _ = tx.closed() => return,
            };
            // A burst of events becomes one snapshot.
            let mut batch = vec![first];
            while let Some(more) = watch.try_next() {
                batch.push(Some(more));
            }
            let mut revision = None;
            for event in batch {
                let event = match event {
                    None => break 'watching,
                    Some(Err(e)) => {
                        tracing::warn!(kind = K::INFO.kind, error = %e, "cache watch event does not decode; listing again");
                        break 'watching;
                    }
                    Some(Ok(TypedEvent::Resync)) => break 'watching,
                    Some(Ok(e)) => e,
                };
                match &event {
                    TypedEvent::Deleted(o) => {
                        objects.remove(&o.key());
                        revision = o.meta().resource_version.clone();
                    }
                    TypedEvent::Added(o) | TypedEvent::Modified(o) => {
                        objects.insert(o.key(), Arc::new(o.clone()));
                        revision = o.meta().resource_version.clone();
                    }
                    TypedEvent::Resync => {}
                }
                if let Some(events) = listened() {
                    let _ = events.send(Arc::new(event));
                }
            }
            if let Some(revision) = revision {
                let _ = tx.send(Arc::new(Snapshot { objects: objects.clone(), revision: Revision(revision), synced: true }));
            }
        }
    }
}
