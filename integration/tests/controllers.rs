//! gingham-controllers and the agent's control plane on the HTTP-level fake API server, the
//! way they meet on a cluster: Node labels mirrored onto GinghamNodes move a BGPPeer's
//! nodeSelector match; a BGPPeer's password follows its Secret (created, rotated, deleted); a
//! deleted Pod's addresses are released after the grace; a deleted Node's GinghamNode,
//! addresses and blocks are released and the other node's control plane drops its peer; and
//! when the leading controller dies, the standby takes the Lease over and carries on.
//! Runs inside a network namespace of its own (the agent's speaker and FIB need one).

#[allow(dead_code)]
#[path = "../../api/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::{needed_grants, FakeApiServer};
use gingham_agent::cluster::ClusterCache;
use gingham_agent::controller::{Controller, ControllerStatus};
use gingham_agent::desired::Identity;
use gingham_agent::ipam_writer::IpamWriter;
use gingham_agent::node::Registration;
use gingham_api::cache::CacheOptions;
use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{
    AllowedUse, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, GinghamNode, IPAMHandle, IPPool, IPPoolSpec, PeerPassword,
    SecretKeyRef, ServiceCidr,
};
use gingham_bgp::speaker::{self, SpeakerConfig, SpeakerHandle};
use gingham_controllers::leader::{Elector, LeaseConfig};
use gingham_controllers::{Options, Totals};
use gingham_integration::netns::Netns;
use gingham_ipam::{AssignArgs, Ipam};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "gingham-system";
const GRACE: Duration = Duration::from_secs(2);
const TOR: &str = "198.18.1.100";

#[test]
fn controllers_and_agents_on_the_fake_api_server() {
    let ns = Netns::new("gctl").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.1.1/32", "dev", "lo"]).unwrap();
    let file = std::fs::File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(scenario())
    })
    .join()
    .unwrap();
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, uid: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": uid}, "spec": {"nodeName": "n1"}})
}

fn secret(ns: &str, password: &str) -> serde_json::Value {
    let b64 = |s: &str| {
        let bytes = s.as_bytes();
        let value = k8s_openapi::ByteString(bytes.to_vec());
        serde_json::to_value(value).unwrap()
    };
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp", "namespace": ns}, "data": {"password": b64(password)}})
}

async fn assign(ipam: &Ipam<AnyDatastore>, handle: &str, node: &str, pod: (&str, &str, &str)) -> IpAddr {
    let attrs = BTreeMap::from([
        ("node".to_string(), node.to_string()),
        ("namespace".to_string(), pod.0.to_string()),
        ("pod".to_string(), pod.1.to_string()),
        ("uid".to_string(), pod.2.to_string()),
    ]);
    let args = AssignArgs { handle: handle.into(), node: node.into(), attrs, ipv4: true, ipv6: false };
    ipam.assign(&args).await.unwrap().ipv4.unwrap().address
}

/// Node n1's agent control plane: cache, IPAM writer, speaker, FIB, controller.
async fn agent(store: &Store<AnyDatastore>) -> (watch::Receiver<ControllerStatus>, SpeakerHandle) {
    let address = "198.18.1.1/24".parse().unwrap();
    let registration = Registration { kubernetes: true, ..Registration::new("n1", address) };
    gingham_agent::node::register_node(store, &registration).await.unwrap();
    let cache = ClusterCache::start(store, CacheOptions::default());
    let ipam = IpamWriter::start(store.clone(), "n1").await.unwrap();
    let mut config = SpeakerConfig::new(gingham_agent::node::router_id(address), 64512);
    config.listen = Vec::new();
    let (speaker, mut changes) = speaker::spawn(config).unwrap();
    tokio::spawn(async move { while changes.recv().await.is_some() {} });
    let fib = gingham_agent::fib::spawn(gingham_agent::netlink::connect().unwrap(), Default::default());
    let id = Identity { node: "n1".into(), namespace: NS.into(), address, address6: None, hold_time: 9, restart_time: 30 };
    let controller = Controller {
        id,
        cache,
        held: ipam.held_changes(),
        speaker: speaker.clone(),
        bfd: gingham_bfd::driver::spawn(Default::default()).0,
        adverts: gingham_agent::router_adverts::RouterAdverts::spawn(),
        fib,
        metrics: Arc::new(gingham_agent::metrics::Metrics::new()),
        log_level: None,
    };
    // The writer must outlive the test: it owns the node's allocations.
    std::mem::forget(ipam);
    (controller.spawn(), speaker)
}

/// One controllers replica: (its totals, a switch that kills it without a goodbye).
fn replica(store: &Store<AnyDatastore>, identity: &str) -> (watch::Receiver<Totals>, tokio::task::JoinHandle<()>) {
    let lease = LeaseConfig {
        namespace: NS.into(),
        name: "gingham-controllers".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry: Duration::from_millis(200),
    };
    let (totals_tx, totals) = watch::channel(Totals::default());
    let totals_tx = Arc::new(totals_tx);
    let store2 = store.clone();
    let options = Options { pod_grace: GRACE, cache: CacheOptions::default(), collect_garbage: true };
    let elector = Elector::new(store.clone(), lease);
    let task = tokio::spawn(elector.run(
        move || {
            let (store, tx) = (store2.clone(), totals_tx.clone());
            async move {
                // Each term starts from the totals of the last, so a test sees one running count.
                let (inner_tx, mut inner_rx) = watch::channel(tx.borrow().clone());
                let forward = async move {
                    while inner_rx.changed().await.is_ok() {
                        tx.send_replace(inner_rx.borrow().clone());
                    }
                };
                tokio::join!(gingham_controllers::run(store, options, inner_tx), forward);
            }
        },
        std::future::pending(),
    ));
    (totals, task)
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server.object("leases", &format!("{NS}/gingham-controllers"))?.pointer("/spec/holderIdentity")?.as_str().map(str::to_owned)
}

async fn scenario() {
    let server = FakeApiServer::new();
    // Three clients, so that each one's calls can be held against its RBAC: the test's own
    // (kubectl, kubelet, pods' CNI ADDs), the agent's and the controllers'.
    let store = Store::new(AnyDatastore::Kubernetes(KubeStore::new(server.client_as(NS, "test"))));
    let agent_store = Store::new(AnyDatastore::Kubernetes(KubeStore::new(server.client_as(NS, "agent"))));
    let controllers_store = Store::new(AnyDatastore::Kubernetes(KubeStore::new(server.client_as(NS, "controllers"))));
    store.create(&IPPool::new("pool", IPPoolSpec { cidr: "198.19.0.0/16".into(), ..Default::default() })).await.unwrap();
    store.create(&BGPConfiguration::new("default", BGPConfigurationSpec::default())).await.unwrap();
    server.put("nodes", node("n1", json!({"kubernetes.io/hostname": "n1"})));
    server.put("nodes", node("n2", json!({})));
    let n2 = Registration { kubernetes: true, ..Registration::new("n2", "198.18.1.2/24".parse().unwrap()) };
    gingham_agent::node::register_node(&store, &n2).await.unwrap();
    // n2's agent has reported its status once.
    let report =
        gingham_api::status::GinghamNodeStatus::report(gingham_api::status::NodeStatus { node: "n2".into(), ..Default::default() });
    store.create(&report).await.unwrap();
    let (status, speaker) = agent(&agent_store).await;
    let peers = || status.borrow().peers.clone();
    eventually("n1 peers with n2", || peers().contains_key(&"198.18.1.2".parse().unwrap()).then_some(())).await;

    let (totals_a, a) = replica(&controllers_store, "replica-a");
    eventually("replica-a leads", || (holder(&server)? == "replica-a").then_some(())).await;
    let (totals_b, _b) = replica(&controllers_store, "replica-b");

    // Node labels -> GinghamNode labels -> a BGPPeer's nodeSelector selects n1.
    let password = PeerPassword { literal: None, secret_key_ref: Some(SecretKeyRef { name: "bgp".into(), key: "password".into() }) };
    let tor = BGPPeerSpec {
        node_selector: Some("topology.kubernetes.io/zone == 'z1'".into()),
        peer_ip: Some(TOR.into()),
        as_number: Some(65001),
        password: Some(password),
        ..Default::default()
    };
    store.create(&BGPPeer::new("tor", tor)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!peers().contains_key(&TOR.parse().unwrap()), "n1 is in no zone yet");
    server.put("nodes", node("n1", json!({"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z1"})));
    let tor_peer = eventually("the zone's BGPPeer selects n1", || peers().get(&TOR.parse().unwrap()).cloned()).await;
    let g: GinghamNode = store.get("n1").await.unwrap().unwrap();
    assert_eq!(g.metadata.labels.unwrap()["topology.kubernetes.io/zone"], "z1");

    // Secrets: missing -> not started, with the reason; created, rotated, deleted -> follows.
    assert_eq!(tor_peer.blocked.as_deref(), Some("password: Secret gingham-system/bgp not found"));
    server.put("secrets", secret("team-x", "wrong-namespace"));
    server.put("secrets", secret(NS, "k1"));
    let md5 = || async { speaker.peers().await.unwrap().into_iter().find(|p| p.config.address.to_string() == TOR)?.config.md5_key };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while md5().await.as_deref() != Some("k1") {
        assert!(tokio::time::Instant::now() < deadline, "the session never got the Secret's key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.put("secrets", secret(NS, "k2"));
    while md5().await.as_deref() != Some("k2") {
        assert!(tokio::time::Instant::now() < deadline, "the rotated key never reached the session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.remove("secrets", &format!("{NS}/bgp"));
    eventually("the peer stops without its Secret", || peers().get(&TOR.parse().unwrap())?.blocked.clone()).await;
    assert!(md5().await.is_none(), "no session runs without its key");

    // Services and EndpointSlices through the agent's watches: a Local Service's external IP is
    // n1's to advertise while n1 has a ready endpoint of it, and only inside the configured range.
    let mut config: BGPConfiguration = store.get("default").await.unwrap().unwrap();
    config.spec.service_external_ips = Some(vec![ServiceCidr { cidr: "198.18.112.0/24".into() }]);
    store.update(&config).await.unwrap();
    server.put(
        "services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"type": "LoadBalancer", "externalIPs": ["198.18.112.10", "203.0.113.10"], "externalTrafficPolicy": "Local"}}),
    );
    let slice = |node: &str, ready: bool| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": ["198.19.0.9"], "nodeName": node, "conditions": {"ready": ready}}]})
    };
    let host: ipnetwork::IpNetwork = "198.18.112.10/32".parse().unwrap();
    let exported = || status.borrow().exports.contains(&host);
    server.put("endpointslices", slice("n1", true));
    eventually("n1 exports the Local Service's external IP", || exported().then_some(())).await;
    assert!(!status.borrow().exports.contains(&"203.0.113.10/32".parse().unwrap()), "outside the range");
    server.put("endpointslices", slice("n1", false));
    eventually("withdrawn when the endpoint is not ready", || (!exported()).then_some(())).await;
    server.put("endpointslices", slice("n1", true));
    eventually("back when it is ready again", || exported().then_some(())).await;
    server.put("endpointslices", slice("n2", true));
    eventually("withdrawn when the endpoint moves to n2", || (!exported()).then_some(())).await;

    // LoadBalancer IPAM: the controllers give web an address from the LoadBalancer pool through
    // the Service's status subresource; n1 advertises it while it has web's endpoint.
    let lb = IPPoolSpec { cidr: "198.18.113.0/24".into(), allowed_uses: Some(vec![AllowedUse::LoadBalancer]), ..Default::default() };
    store.create(&IPPool::new("lb", lb.clone())).await.unwrap();
    store.create(&IPPool::new("lb6", IPPoolSpec { cidr: "2001:db8:113::/112".into(), ..lb })).await.unwrap();
    let mut config: BGPConfiguration = store.get("default").await.unwrap().unwrap();
    config.spec.service_load_balancer_ips = Some(vec![ServiceCidr { cidr: "198.18.113.0/24".into() }]);
    store.update(&config).await.unwrap();
    let ingress = |key: &str| server.object("services", key)?.pointer("/status/loadBalancer/ingress/0/ip")?.as_str().map(str::to_owned);
    let lb_ip = eventually("web gets a LoadBalancer address", || ingress("shop/web")).await;
    assert!(lb_ip.starts_with("198.18.113."), "{lb_ip}");
    let lb_host: ipnetwork::IpNetwork = format!("{lb_ip}/32").parse().unwrap();
    let lb_exported = || status.borrow().exports.contains(&lb_host);
    server.put("endpointslices", slice("n1", true));
    eventually("n1 exports web's LoadBalancer address", || lb_exported().then_some(())).await;
    // A dual-stack Service asking for that address (and an IPv6 one) is told who holds it, and
    // gets only the IPv6 address.
    let both = json!([lb_ip, "2001:db8:113::5"]).to_string();
    server.put(
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "copy", "namespace": "shop", "annotations": {"gingham.io/loadBalancerIPs": both}},
               "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"]}}),
    );
    let condition = |key: &str| {
        let svc = server.object("services", key)?;
        svc.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "gingham.io/LoadBalancerAddresses").cloned()
    };
    let refused = eventually("copy is refused", || condition("shop/copy").filter(|c| c["status"] == "False")).await;
    assert_eq!(refused["message"], format!("{lb_ip} is already held by Service shop/web"));
    assert_eq!(ingress("shop/copy").as_deref(), Some("2001:db8:113::5"));
    // web deleted: its address is released and withdrawn, and goes to copy, which asked for it.
    server.remove("services", "shop/web");
    eventually("n1 withdraws web's address", || (!lb_exported()).then_some(())).await;
    eventually("copy gets the released address", || (ingress("shop/copy")? == lb_ip).then_some(())).await;
    eventually("copy's condition clears", || condition("shop/copy").filter(|c| c["status"] == "True")).await;
    server.remove("services", "shop/copy");
    let mut t = totals_a.clone();
    tokio::time::timeout(Duration::from_secs(20), t.wait_for(|t| t.load_balancer_released == 3))
        .await
        .expect("copy's addresses released with the Service")
        .unwrap();
    let (handles, _) = store.list::<IPAMHandle>().await.unwrap();
    assert!(!handles.iter().any(|h| h.spec.handle_id.starts_with("lb.")), "no LoadBalancer handle left");

    // Pods: a deleted Pod's addresses go after the grace; a live one's stay.
    let ipam = Ipam::new(store.clone());
    server.put("pods", pod("team", "web", "u-web"));
    server.put("pods", pod("team", "api", "u-api"));
    let web = assign(&ipam, "sandbox-web", "n2", ("team", "web", "u-web")).await;
    let api = assign(&ipam, "sandbox-api", "n1", ("team", "api", "u-api")).await;
    server.remove("pods", "team/api");
    let removed = tokio::time::Instant::now();
    let mut t = totals_a.clone();
    tokio::time::timeout(Duration::from_secs(20), t.wait_for(|t| t.pod_handles_released == 1))
        .await
        .expect("the pod's handle released")
        .unwrap();
    assert!(removed.elapsed() >= GRACE, "not before the grace");
    assert!(store.get::<IPAMHandle>("sandbox-api").await.unwrap().is_none());
    assert!(store.get::<IPAMHandle>("sandbox-web").await.unwrap().is_some(), "the live pod keeps its address");
    assert_eq!(t.borrow().pod_addresses_released, 1);
    let _ = (web, api);

    // Node n2 deleted: its GinghamNode, pods' addresses and blocks go; n1 drops the peer.
    server.remove("nodes", "n2");
    eventually("n2's GinghamNode retired", || server.object("ginghamnodes", "n2").is_none().then_some(())).await;
    eventually("n2's status report removed", || server.object("ginghamnodestatuses", "n2").is_none().then_some(())).await;
    assert!(store.get::<IPAMHandle>("sandbox-web").await.unwrap().is_none(), "n2's pod released");
    let check = ipam.check().await.unwrap();
    assert!(check.is_clean(), "{check:?}");
    assert!(check.orphan_blocks.is_empty());
    eventually("n1 dropped its session to n2", || (!peers().contains_key(&"198.18.1.2".parse().unwrap())).then_some(())).await;
    assert_eq!(totals_a.borrow().nodes_retired, 1);

    // Handover: replica-a dies without releasing the lease; replica-b takes over after the
    // lease duration and carries on with the work.
    a.abort();
    let died = tokio::time::Instant::now();
    eventually("replica-b takes the lease over", || (holder(&server)? == "replica-b").then_some(())).await;
    let took = died.elapsed();
    assert!(took >= Duration::from_millis(1500), "taken over after {took:?}: before the lease could expire");
    server.put("pods", pod("team", "job", "u-job"));
    assign(&ipam, "sandbox-job", "n1", ("team", "job", "u-job")).await;
    server.remove("pods", "team/job");
    let mut t = totals_b.clone();
    tokio::time::timeout(Duration::from_secs(20), t.wait_for(|t| t.pod_handles_released == 1)).await.expect("replica-b collects").unwrap();
    assert_eq!(totals_a.borrow().pod_handles_released, 1, "the dead replica did nothing more");
    eprintln!("lease taken over {:.1} s after the leader died", took.as_secs_f64());

    // RBAC: the controllers' roles grant exactly what they called; the agent called nothing
    // its roles do not grant.
    use gingham_integration::manifests::grants;
    let (cluster, namespaced) = needed_grants(&server.calls("controllers"), NS);
    assert_eq!(cluster, grants("ClusterRole", "gingham-controllers"), "ClusterRole gingham-controllers vs the calls");
    assert_eq!(namespaced, grants("Role", "gingham-controllers"), "Role gingham-controllers vs the calls");
    let (cluster, namespaced) = needed_grants(&server.calls("agent"), NS);
    let granted = grants("ClusterRole", "gingham-agent");
    let missing: Vec<_> = cluster.difference(&granted).collect();
    assert!(missing.is_empty(), "agent calls its ClusterRole does not grant: {missing:?}");
    let granted = grants("Role", "gingham-agent");
    let missing: Vec<_> = namespaced.difference(&granted).collect();
    assert!(missing.is_empty(), "agent calls its Role does not grant: {missing:?}");
}
