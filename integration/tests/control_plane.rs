//! The agent's control plane at scale against the HTTP-level fake API server: N nodes' caches,
//! IPAM writers, speakers and controllers (no pods, no sessions: the mesh is off), all inside a
//! namespace of the test's own. After the first sync, a rest period costs no list requests and
//! keeps exactly one watch per kind per node open; pod churn costs requests in proportion to the
//! pods, not to the nodes. The request counts are printed as the README's table.

// Shared with the api crate's tests; this test uses part of it.
#[allow(dead_code)]
#[path = "../../api/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use gingham_agent::cluster::ClusterCache;
use gingham_agent::controller::Controller;
use gingham_agent::desired::Identity;
use gingham_agent::ipam_writer::IpamWriter;
use gingham_api::cache::CacheOptions;
use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{BGPConfiguration, BGPConfigurationSpec, IPPool, IPPoolSpec};
use gingham_bgp::speaker::{self, SpeakerConfig};
use gingham_integration::netns::Netns;
use gingham_ipam::AssignArgs;

const NODES: usize = 20;
const KINDS: usize = 9;
const REST: Duration = Duration::from_secs(30);
const PODS: usize = 100;

fn counts(requests: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (verb, _) in requests {
        *out.entry(verb.clone()).or_default() += 1;
    }
    out
}

#[test]
fn control_planes_at_rest_make_no_lists_and_keep_one_watch_per_kind() {
    let ns = Netns::new("gcp").unwrap();
    // Each simulated node's BGP listener binds its own address (bindMode NodeIP).
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    for i in 0..NODES {
        ns.ip(&["addr", "add", &format!("198.18.1.{}/32", i + 1), "dev", "lo"]).unwrap();
    }
    let file = std::fs::File::open(ns.path()).unwrap();
    let report = std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(scenario())
    })
    .join()
    .unwrap();
    println!("{report}");
}

async fn scenario() -> String {
    let server = FakeApiServer::new();
    let store = Store::new(AnyDatastore::Kubernetes(KubeStore::new(server.client_in("gingham-system"))));
    store.create(&IPPool::new("pool", IPPoolSpec { cidr: "198.19.0.0/16".into(), ..Default::default() })).await.unwrap();
    let bgp = BGPConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        bind_mode: Some(gingham_api::resources::BindMode::NodeIP),
        ..Default::default()
    };
    store.create(&BGPConfiguration::new("default", bgp)).await.unwrap();
    let mut statuses = Vec::new();
    let mut writers = Vec::new();
    for i in 0..NODES {
        let name = format!("node-{i}");
        let address = format!("198.18.1.{}/24", i + 1).parse().unwrap();
        let registration = gingham_agent::node::Registration { kubernetes: true, ..gingham_agent::node::Registration::new(&name, address) };
        gingham_agent::node::register_node(&store, &registration).await.unwrap();
        let cache = ClusterCache::start(&store, CacheOptions::default());
        let ipam = IpamWriter::start(store.clone(), &name).await.unwrap();
        let mut config = SpeakerConfig::new(gingham_agent::node::router_id(address), 64512);
        config.listen = Vec::new();
        let (speaker, mut changes) = speaker::spawn(config).unwrap();
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        let fib = gingham_agent::fib::spawn(gingham_agent::netlink::connect().unwrap(), Default::default());
        let id = Identity { node: name, namespace: "gingham-system".into(), address, address6: None, hold_time: 9, restart_time: 30 };
        let controller = Controller {
            id,
            cache,
            held: ipam.held_changes(),
            speaker,
            bfd: gingham_bfd::driver::spawn(Default::default()).0,
            adverts: gingham_agent::router_adverts::RouterAdverts::spawn(),
            fib,
            metrics: Arc::new(gingham_agent::metrics::Metrics::new()),
            log_level: None,
        };
        statuses.push(controller.spawn());
        writers.push(ipam);
    }
    for s in &mut statuses {
        let ok = tokio::time::timeout(Duration::from_secs(60), s.wait_for(|s| s.datastore.is_ok())).await.is_ok();
        assert!(ok, "a control plane never got going: {:?}", s.borrow().datastore);
    }
    let synced = server.requests().len();
    let watches = counts(&server.requests()).get("watch").copied().unwrap_or(0);
    assert_eq!(watches, NODES * KINDS, "one watch per kind per node");

    tokio::time::sleep(REST).await;
    let at_rest = server.requests()[synced..].to_vec();
    assert!(!at_rest.iter().any(|(verb, _)| verb == "list"), "lists at rest: {at_rest:?}");
    assert!(at_rest.len() <= NODES * KINDS, "at rest only re-issued watches: {at_rest:?}");

    // Churn: pods come, each through its node's IPAM writer; every controller sees the new
    // blocks through its watches.
    let before = server.requests().len();
    for p in 0..PODS {
        let w = &writers[p % NODES];
        let args =
            AssignArgs { handle: format!("pod-{p}"), node: format!("node-{}", p % NODES), attrs: BTreeMap::new(), ipv4: true, ipv6: false };
        w.assign(args).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let churn = server.requests()[before..].to_vec();
    let churn_counts = counts(&churn);
    let lists_during_churn = churn_counts.get("list").copied().unwrap_or(0);
    let per_minute = |n: usize, d: Duration| n as f64 / NODES as f64 / d.as_secs_f64() * 60.0;
    format!(
        "API requests, {NODES} nodes on the fake API server\n\
         phase                       lists  watches    all   per node per minute\n\
         initial sync (all kinds)    {:>5}  {:>7}  {:>5}\n\
         rest, {} s                  {:>5}  {:>7}  {:>5}   {:.2}\n\
         {PODS} pods (IPAM + reaction) {:>5}  {:>7}  {:>5}   ({:.1} requests per pod)\n",
        counts(&server.requests()[..synced]).get("list").copied().unwrap_or(0),
        watches,
        synced,
        REST.as_secs(),
        0,
        at_rest.iter().filter(|(v, _)| v == "watch").count(),
        at_rest.len(),
        per_minute(at_rest.len(), REST),
        lists_during_churn,
        churn_counts.get("watch").copied().unwrap_or(0),
        churn.len(),
        churn.len() as f64 / PODS as f64,
    )
}
