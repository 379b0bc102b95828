//! One behaviour, three backends: the memory store, sqlite on a real file, and the kubernetes
//! backend against an HTTP-level fake API server. Each case states something a caller relies
//! on: revisions make writes compare-and-swap, nothing is lost under concurrent updates, and a
//! watch replays every change after the revision it starts from.

mod support;

use std::future::Future;
use std::time::Duration;

use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::memory::MemoryStore;
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::{Datastore, DatastoreError, Store, TypedEvent, TypedWatch};
use gingham_api::resources::{IPAMHandle, IPAMHandleSpec, IPPool, IPPoolSpec, Kind};
use support::fake_apiserver::FakeApiServer;

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec { cidr: cidr.into(), ..Default::default() })
}

async fn next<K: Kind>(w: &mut TypedWatch<K>) -> TypedEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watch event within 10 s").expect("watch open").expect("decodes")
}

fn name_of<K: Kind>(e: &TypedEvent<K>) -> (&'static str, String) {
    match e {
        TypedEvent::Added(o) => ("added", o.meta().name.clone().unwrap()),
        TypedEvent::Modified(o) => ("modified", o.meta().name.clone().unwrap()),
        TypedEvent::Deleted(o) => ("deleted", o.meta().name.clone().unwrap()),
        TypedEvent::Resync => ("resync", String::new()),
    }
}

async fn create_get_update_delete<D: Datastore>(store: &Store<D>) {
    let created = store.create(&pool("a", "198.19.0.0/16")).await.unwrap();
    let rev1 = created.metadata.resource_version.clone().expect("a revision on create");
    let got: IPPool = store.get("a").await.unwrap().expect("created object is readable");
    assert_eq!(got.spec, created.spec);
    assert_eq!(got.metadata.resource_version.as_deref(), Some(rev1.as_str()));
    assert!(matches!(store.create(&pool("a", "198.19.0.0/16")).await, Err(DatastoreError::AlreadyExists { .. })));

    let mut changed = got.clone();
    changed.spec.block_size = Some(28);
    let updated = store.update(&changed).await.unwrap();
    assert_ne!(updated.metadata.resource_version.as_deref(), Some(rev1.as_str()), "an update moves the revision");
    assert_eq!(store.get::<IPPool>("a").await.unwrap().unwrap().spec.block_size, Some(28));

    // The stale copy (revision 1) must not overwrite the newer one, nor delete it.
    let mut stale = got.clone();
    stale.spec.disabled = true;
    assert!(matches!(store.update(&stale).await, Err(DatastoreError::Conflict { .. })), "stale update accepted");
    assert!(matches!(store.delete(&got).await, Err(DatastoreError::Conflict { .. })), "stale delete accepted");
    assert_eq!(store.get::<IPPool>("a").await.unwrap().unwrap().spec.block_size, Some(28));

    store.delete(&updated).await.unwrap();
    assert!(store.get::<IPPool>("a").await.unwrap().is_none());
    assert!(matches!(store.delete(&updated).await, Err(DatastoreError::NotFound { .. })));
    assert!(matches!(store.update(&updated).await, Err(DatastoreError::NotFound { .. })));
}

async fn invalid_objects_are_refused<D: Datastore>(store: &Store<D>) {
    let e = store.create(&pool("bad", "198.19.0.1/16")).await.unwrap_err();
    match e {
        DatastoreError::Invalid { source, .. } => assert_eq!(source.field, "spec.cidr"),
        other => panic!("expected Invalid, got {other}"),
    }
    assert!(store.get::<IPPool>("bad").await.unwrap().is_none(), "an invalid object was stored");
    let mut unread = pool("unread", "198.19.0.0/16");
    unread.metadata.resource_version = None;
    assert!(matches!(store.update(&unread).await, Err(DatastoreError::NoRevision { .. })));
}

async fn list_is_per_kind_and_watch_follows_it<D: Datastore>(store: &Store<D>) {
    store.create(&pool("p1", "198.19.0.0/16")).await.unwrap();
    store.create(&pool("p2", "198.20.0.0/16")).await.unwrap();
    store.create(&IPAMHandle::new("h1", IPAMHandleSpec { handle_id: "h1".into(), ..Default::default() })).await.unwrap();
    let (pools, rev) = store.list::<IPPool>().await.unwrap();
    let names: Vec<_> = pools.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["p1", "p2"]);

    let mut watch = store.watch::<IPPool>(&rev).await.unwrap();
    store.create(&pool("p3", "198.21.0.0/16")).await.unwrap();
    let mut p1 = store.get::<IPPool>("p1").await.unwrap().unwrap();
    p1.spec.disabled = true;
    store.update(&p1).await.unwrap();
    // A change of another kind must not show up in the IPPool watch.
    store.delete_latest::<IPAMHandle>("h1").await.unwrap();
    store.delete_latest::<IPPool>("p2").await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(name_of(&next(&mut watch).await));
    }
    assert_eq!(seen, [("added", "p3".into()), ("modified", "p1".into()), ("deleted", "p2".into())]);
    let quiet = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(quiet.is_err(), "unexpected extra event {:?}", quiet.map(|e| e.map(|e| e.map(|e| name_of(&e)))));

    // Watching from the old list revision again replays the same three changes.
    let mut replay = store.watch::<IPPool>(&rev).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(name_of(&next(&mut replay).await));
    }
    assert_eq!(again, seen);
}

/// 4 writers x 25 read-modify-write increments of one counter, retrying on conflict: a lost
/// update would show as a total below 100.
async fn concurrent_updates_lose_nothing<D: Datastore>(store: &Store<D>) {
    store.create(&IPAMHandle::new("counter", IPAMHandleSpec { handle_id: "counter".into(), ..Default::default() })).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..25 {
                loop {
                    let mut h: IPAMHandle = store.get("counter").await.unwrap().unwrap();
                    *h.spec.block.entry("198.19.0.0/26".into()).or_default() += 1;
                    match store.update(&h).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                    tokio::task::yield_now().await;
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h: IPAMHandle = store.get("counter").await.unwrap().unwrap();
    assert_eq!(h.spec.block["198.19.0.0/26"], 100);
}

async fn compacted_watch_asks_for_resync<D: Datastore, F: Future<Output = ()>>(store: &Store<D>, compact: impl FnOnce() -> F) {
    let (_, old) = store.list::<IPPool>().await.unwrap();
    store.create(&pool("c1", "198.19.0.0/16")).await.unwrap();
    compact().await;
    let mut watch = store.watch::<IPPool>(&old).await.unwrap();
    assert_eq!(name_of(&next(&mut watch).await).0, "resync");
    // After a resync the watch goes on with new changes.
    store.create(&pool("c2", "198.20.0.0/16")).await.unwrap();
    assert_eq!(name_of(&next(&mut watch).await), ("added", "c2".into()));
}

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_get_update_delete() {
                let (store, _guard, _compact) = $make;
                super::create_get_update_delete(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invalid_objects_are_refused() {
                let (store, _guard, _compact) = $make;
                super::invalid_objects_are_refused(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_is_per_kind_and_watch_follows_it() {
                let (store, _guard, _compact) = $make;
                super::list_is_per_kind_and_watch_follows_it(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_updates_lose_nothing() {
                let (store, _guard, _compact) = $make;
                super::concurrent_updates_lose_nothing(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compacted_watch_asks_for_resync() {
                let (store, _guard, compact) = $make;
                super::compacted_watch_asks_for_resync(&store, compact).await;
            }
        }
    };
}

conformance!(memory, {
    let backend = MemoryStore::new();
    let handle = backend.clone();
    (Store::new(backend), (), move || async move { handle.compact() })
});

conformance!(sqlite, {
    let dir = support::TempDir::new();
    let backend = SqliteStore::open(dir.path().join("gingham.db")).unwrap();
    let handle = backend.clone();
    (Store::new(backend), dir, move || async move { handle.compact().await.unwrap() })
});

conformance!(kubernetes, {
    let server = FakeApiServer::new();
    let handle = server.clone();
    (Store::new(KubeStore::new(server.client())), server, move || async move { handle.compact() })
});
