//! The watch cache against each backend: it follows changes, turns a resync into exactly the
//! missed events, and at rest costs no lists (counted on the fake API server).

mod support;

use std::time::Duration;

use gingham_api::cache::{CacheOptions, Reflector, Snapshot};
use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::memory::MemoryStore;
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::{Datastore, Store, TypedEvent};
use gingham_api::resources::{BGPPeer, BGPPeerSpec, IPPool, IPPoolSpec};
use support::fake_apiserver::FakeApiServer;

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec { cidr: cidr.into(), ..Default::default() })
}

fn cidrs(s: &Snapshot<IPPool>) -> Vec<(String, String)> {
    s.objects.iter().map(|(n, p)| (n.clone(), p.spec.cidr.clone())).collect()
}

async fn until<D: Datastore>(r: &Reflector<IPPool>, _store: &Store<D>, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let mut rx = r.changed();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| cidrs(s) == want))
        .await
        .unwrap_or_else(|_| panic!("cache never reached {want:?}; it has {:?}", cidrs(&r.snapshot())))
        .unwrap();
}

fn describe(e: &TypedEvent<IPPool>) -> String {
    match e {
        TypedEvent::Added(p) => format!("added {}", p.metadata.name.as_deref().unwrap()),
        TypedEvent::Modified(p) => format!("modified {} {}", p.metadata.name.as_deref().unwrap(), p.spec.cidr),
        TypedEvent::Deleted(p) => format!("deleted {}", p.metadata.name.as_deref().unwrap()),
        TypedEvent::Resync => "resync".into(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn memory_cache_follows_and_a_resync_emits_exactly_what_was_missed() {
    let backend = MemoryStore::new();
    let handle = backend.clone();
    let store = Store::new(backend);
    let a = store.create(&pool("a", "198.19.0.0/16")).await.unwrap();
    let b = store.create(&pool("b", "198.18.128.0/24")).await.unwrap();
    let r = Reflector::<IPPool>::start(store.clone(), CacheOptions::default());
    assert!(r.synced().await.synced);
    until(&r, &store, &[("a", "198.19.0.0/16"), ("b", "198.18.128.0/24")]).await;
    let mut events = r.events();

    let mut a2 = a.clone();
    a2.spec.cidr = "198.19.0.0/17".into();
    store.update(&a2).await.unwrap();
    until(&r, &store, &[("a", "198.19.0.0/17"), ("b", "198.18.128.0/24")]).await;
    assert_eq!(describe(&events.recv().await.unwrap()), "modified a 198.19.0.0/17");

    // Changes the watch cannot deliver (history compacted before it read them): the reflector
    // lists again and emits the difference, once each.
    let a3 = store.get::<IPPool>("a").await.unwrap().unwrap();
    let mut a3b = a3.clone();
    a3b.spec.cidr = "198.19.0.0/18".into();
    store.update(&a3b).await.unwrap();
    store.delete(&b).await.unwrap();
    store.create(&pool("c", "198.18.129.0/24")).await.unwrap();
    handle.compact();
    until(&r, &store, &[("a", "198.19.0.0/18"), ("c", "198.18.129.0/24")]).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(describe(&e));
    }
    assert_eq!(seen, ["modified a 198.19.0.0/18", "added c", "deleted b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cache_sees_another_process_writes_through_one_poller() {
    let dir = support::TempDir::new();
    let path = dir.path().join("gingham.db");
    let ours = Store::new(SqliteStore::open(&path).unwrap());
    let other = Store::new(SqliteStore::open(&path).unwrap());
    ours.create(&pool("a", "198.19.0.0/16")).await.unwrap();
    let pools = Reflector::<IPPool>::start(ours.clone(), CacheOptions::default());
    let peers = Reflector::<BGPPeer>::start(ours.clone(), CacheOptions::default());
    until(&pools, &ours, &[("a", "198.19.0.0/16")]).await;
    other.create(&pool("b", "198.18.128.0/24")).await.unwrap();
    let peer = BGPPeer::new("tor", BGPPeerSpec { peer_ip: Some("198.18.0.1".into()), as_number: Some(65001), ..Default::default() });
    other.create(&peer).await.unwrap();
    until(&pools, &ours, &[("a", "198.19.0.0/16"), ("b", "198.18.128.0/24")]).await;
    let mut rx = peers.changed();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.get("tor").is_some())).await.unwrap().unwrap();
    assert_eq!(pools.snapshot().len(), 2, "each kind sees only its own objects");
}

#[tokio::test(flavor = "current_thread")]
async fn kubernetes_cache_lists_once_and_then_only_watches() {
    let server = FakeApiServer::new();
    let store = Store::new(KubeStore::new(server.client()));
    store.create(&pool("a", "198.19.0.0/16")).await.unwrap();
    let pools = Reflector::<IPPool>::start(store.clone(), CacheOptions::default());
    let peers = Reflector::<BGPPeer>::start(store.clone(), CacheOptions::default());
    pools.synced().await;
    peers.synced().await;
    for i in 0..20 {
        store.create(&pool(&format!("p{i}"), &format!("198.18.{i}.0/24"))).await.unwrap();
    }
    let mut rx = pools.changed();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.len() == 21)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = |verb: &str, plural: &str| server.requests().iter().filter(|(v, p)| v == verb && p == plural).count();
    assert_eq!(count("list", "ippools"), 1, "{:?}", server.requests());
    assert_eq!(count("list", "bgppeers"), 1);
    assert_eq!(count("watch", "ippools"), 1, "one watch, kept open");
    assert_eq!(count("watch", "bgppeers"), 1);

    // A 410 (history compacted) costs a list for that kind, and the cache is right after it.
    server.compact();
    store.create(&pool("late", "198.18.200.0/24")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.get("late").is_some())).await.unwrap().unwrap();
    assert_eq!(pools.snapshot().len(), 22);
}
