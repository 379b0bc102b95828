//! `datastore migrate` between backends: sqlite -> kubernetes (the fake API server, which
//! assigns its own resourceVersions, uids and timestamps) -> sqlite gives back exactly the
//! export it started from.

mod support;

use std::collections::BTreeMap;

use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::migrate::{export, import, kinds};
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{BGPPeer, BGPPeerSpec, GinghamNode, GinghamNodeSpec, IPPool, IPPoolSpec};
use support::fake_apiserver::FakeApiServer;

#[tokio::test]
async fn sqlite_to_kubernetes_and_back_round_trips_exactly() {
    let dir = std::env::temp_dir().join(format!("gingham-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Store::new(SqliteStore::open(dir.join("a.db")).unwrap());
    let mut pool = IPPool::new("pods", IPPoolSpec { cidr: "198.19.0.0/16".into(), nat_outgoing: true, ..Default::default() });
    pool.metadata.labels = Some(BTreeMap::from([("zone".to_string(), "a".to_string())]));
    a.create(&pool).await.unwrap();
    a.create(&GinghamNode::new("node-1", GinghamNodeSpec::default())).await.unwrap();
    a.create(&BGPPeer::new("tor", BGPPeerSpec { peer_ip: Some("198.18.0.1".into()), as_number: Some(65001), ..Default::default() }))
        .await
        .unwrap();
    let kinds = kinds(false);
    let from_sqlite = export(a.backend(), &kinds).await.unwrap();
    assert_eq!(from_sqlite.len(), 3);

    let server = FakeApiServer::new();
    let kube = KubeStore::new(server.client());
    assert_eq!(import(&kube, &from_sqlite, &kinds).await.unwrap().created, 3);
    let stored = server.object("ippools", "pods").expect("the pool is in the API server");
    assert!(stored.pointer("/metadata/resourceVersion").is_some());
    let from_kube = export(&kube, &kinds).await.unwrap();
    assert_eq!(from_kube, from_sqlite, "what the API server assigned itself is not exported");

    let b = Store::new(SqliteStore::open(dir.join("b.db")).unwrap());
    assert_eq!(import(b.backend(), &from_kube, &kinds).await.unwrap().created, 3);
    assert_eq!(export(b.backend(), &kinds).await.unwrap(), from_sqlite);
    let _ = std::fs::remove_dir_all(&dir);
}
