//! BGPPeer and BGPConfiguration options seen by real daemons: `nextHopMode: Self` on a route
//! reflector (FRR's table), `keepaliveTime` (counted on the wire), `prefixAdvertisements`
//! communities (BIRD's table), `maxPrefixes` Teardown (GoBGP gets Cease), and `listenPort`
//! changed without restarting the agents. Needs root; each test removes what it built.

use std::process::Stdio;
use std::time::Duration;

use gingham_api::resources::{
    BGPConfiguration, BGPFilter, BGPFilterRule, BGPFilterSpec, BGPPeer, BGPPeerSpec, Community, FilterAction, FilterSource, MatchOperator,
    MaxPrefixAction, MaxPrefixes, NextHopMode, PeerPassword, PrefixAdvertisement, SecretKeyRef,
};
use gingham_integration::daemons::{Bird, Frr, GoBgp};
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::wait_for;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn block_of(addr: std::net::Ipv4Addr) -> String {
    format!("{}/26", ipnetwork::Ipv4Network::new(addr, 26).unwrap().network())
}

fn logs(lab: &Cluster) -> String {
    lab.nodes.iter().filter_map(|n| n.agent.as_ref().map(|a| a.log_tail())).collect::<Vec<_>>().join("\n---\n")
}

/// FRR's next hop for `prefix`.
fn frr_next_hop(frr: &Frr, prefix: &str) -> Option<String> {
    let route = frr.route("ipv4", prefix)?;
    route.pointer("/paths/0/nexthops/0/ip").and_then(|v| v.as_str()).map(str::to_owned)
}

const FRR_CLIENT: &str = r#"
router bgp 64512
 bgp router-id 198.18.0.13
 no bgp default ipv4-unicast
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 timers connect 2
 address-family ipv4 unicast
  neighbor 198.18.0.11 activate
 exit-address-family
"#;

const BIRD_TOR: &str = r#"
router id 198.18.0.14;
protocol device {}
protocol bgp node1 { local 198.18.0.14 as 65001; neighbor 198.18.0.11 as 64512; ipv4 { import all; export none; }; }
"#;

#[test]
fn next_hop_self_on_a_reflector_keepalive_and_communities() {
    // node-1 reflects for node-2 (no mesh); FRR is node-1's iBGP client too; BIRD a ToR.
    let mut options = LabOptions::new(2);
    options.mesh = false;
    options.reflectors = vec![0];
    options.extra_hosts = 2;
    let mut lab = Cluster::new(options).unwrap();
    let frr = Frr::start(&lab.fabric.hosts[2].ns, FRR_CLIENT).unwrap();
    let bird = Bird::start(&lab.fabric.hosts[3].ns, BIRD_TOR).unwrap();
    let store = lab.store().unwrap();
    // FRR is no node: like any router it gets only node-1's own routes unless a filter lets the
    // cluster's through.
    let client = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some("198.18.0.13".into()),
        as_number: Some(64512),
        route_reflector_client: true,
        filters: vec!["cluster-routes".into()],
        ..Default::default()
    };
    let cluster_routes = BGPFilterSpec {
        export_v4: vec![BGPFilterRule {
            action: FilterAction::Accept,
            cidr: Some("198.19.0.0/16".into()),
            match_operator: Some(MatchOperator::In),
            source: Some(FilterSource::RemotePeers),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tor = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some("198.18.0.14".into()),
        as_number: Some(65001),
        keepalive_time: Some("1s".into()),
        ..Default::default()
    };
    rt().block_on(async {
        store.create(&BGPFilter::new("cluster-routes", cluster_routes)).await.unwrap();
        store.create(&BGPPeer::new("frr-client", client)).await.unwrap();
        store.create(&BGPPeer::new("tor", tor)).await.unwrap();
    });
    let a = lab.add_pod(0, "a").unwrap().address;
    let b = lab.add_pod(1, "b").unwrap().address;
    let t = Duration::from_secs(40);
    wait_for("FRR learning node-2's block", t, || frr_next_hop(&frr, &block_of(b))).unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert_eq!(frr_next_hop(&frr, &block_of(b)).as_deref(), Some("198.18.0.12"), "a reflector keeps the client's next hop");
    assert_eq!(frr_next_hop(&frr, &block_of(a)).as_deref(), Some("198.18.0.11"));

    lab.modify::<BGPPeer>("frr-client", |p| p.spec.next_hop_mode = Some(NextHopMode::NextHopSelf)).unwrap();
    wait_for("nextHopMode: Self", t, || (frr_next_hop(&frr, &block_of(b)).as_deref() == Some("198.18.0.11")).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", frr.vtysh("show bgp ipv4 unicast").unwrap_or_default()));

    // keepaliveTime 1s: KEEPALIVEs from node-1 to BIRD on the wire, about one a second (the
    // lab's hold time 9 would otherwise give one every 3 s).
    wait_for("BIRD session", t, || bird.established("node1").then_some(())).unwrap();
    let capture = lab.fabric.hosts[0]
        .ns
        .command("tshark")
        .args(["-i", "eth0", "-a", "duration:6", "-Y", "bgp.type == 4", "-T", "fields", "-e", "frame.time_relative"])
        .args(["-f", "tcp port 179 and src host 198.18.0.11 and dst host 198.18.0.14"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let keepalives = String::from_utf8_lossy(&capture.stdout).lines().count();
    assert!(keepalives >= 4, "{keepalives} KEEPALIVEs in 6 s");

    // prefixAdvertisements: our blocks carry the communities, by name and by value.
    lab.modify::<BGPConfiguration>("default", |c| {
        c.spec.communities = vec![Community { name: "rack".into(), value: "64512:300:100".into() }];
        c.spec.prefix_advertisements =
            vec![PrefixAdvertisement { cidr: "198.19.0.0/16".into(), communities: vec!["rack".into(), "64512:120".into()] }];
    })
    .unwrap();
    wait_for("BIRD seeing the communities", t, || {
        let r = bird.route_all(&block_of(a));
        (r.contains("(64512,120)") && r.contains("(64512, 300, 100)")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bird.route_all(&block_of(a))));
}

#[test]
fn max_prefixes_from_a_resource_and_a_live_listen_port_change() {
    let mut options = LabOptions::new(2);
    options.extra_hosts = 1;
    let lab = Cluster::new(options).unwrap();
    let gobgp = GoBgp::start(
        &lab.fabric.hosts[2].ns,
        "[global.config]\n  as = 65002\n  router-id = \"198.18.0.13\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"198.18.0.11\"\n    peer-as = 64512\n",
    )
    .unwrap();
    for i in 0..3 {
        gobgp.cli(&["global", "rib", "add", "-a", "ipv4", &format!("198.18.{}.0/24", 120 + i)]).unwrap();
    }
    let store = lab.store().unwrap();
    let spec = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some("198.18.0.13".into()),
        as_number: Some(65002),
        max_prefixes: Some(MaxPrefixes { limit: 2, action: MaxPrefixAction::Teardown, restart_seconds: None }),
        ..Default::default()
    };
    rt().block_on(store.create(&BGPPeer::new("gobgp", spec))).unwrap();
    let notifications = || gobgp.notifications_received("198.18.0.11");
    wait_for("GoBGP told the limit was crossed", Duration::from_secs(40), || (notifications() >= 1).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", gobgp.daemon.log_tail(), logs(&lab)));
    let status = lab.status(0).unwrap();
    let peer = status["peers"].as_array().unwrap().iter().find(|p| p["address"] == "198.18.0.13").cloned().unwrap();
    assert_ne!(peer["state"], "Established", "{peer}");
    assert!(peer["info"].as_str().unwrap_or_default().contains("MaximumPrefixesReached"), "{peer}");
    assert!(!lab.routes(0).unwrap().contains("198.18.120.0/24"), "its routes are gone");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(notifications(), 1, "no restart without restartSeconds");

    // listenPort: both agents move to port 1790 and the mesh comes back, no restart.
    lab.wait_established(Duration::from_secs(1)).err();
    lab.modify::<BGPConfiguration>("default", |c| c.spec.listen_port = Some(1790)).unwrap();
    wait_for("agents listening on 1790", Duration::from_secs(20), || {
        (0..2).all(|i| lab.fabric.hosts[i].ns.exec("ss", &["-Hltn", "sport = :1790"]).is_ok_and(|o| o.contains("1790"))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    wait_for("the mesh on the new port", Duration::from_secs(40), || {
        let up = lab.status(1).ok()?["peers"].as_array()?.iter().any(|p| p["address"] == "198.18.0.11" && p["state"] == "Established");
        let port = lab.fabric.hosts[1].ns.exec("ss", &["-Htn", "state", "established", "( sport = :1790 or dport = :1790 )"]).ok()?;
        (up && port.contains("198.18.0.11")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert!(lab.nodes.iter().all(|n| n.agent.is_some()));

    // logSeverityScreen takes effect without a restart too.
    let debug_lines = || std::fs::read_to_string(&lab.nodes[0].log).unwrap_or_default().lines().filter(|l| l.contains("DEBUG")).count();
    assert_eq!(debug_lines(), 0);
    lab.modify::<BGPConfiguration>("default", |c| c.spec.log_severity_screen = Some("Debug".into())).unwrap();
    wait_for("debug logging", Duration::from_secs(20), || (debug_lines() > 0).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
}

const FRR_MD5: &str = r#"
router bgp 65010
 bgp router-id 198.18.0.12
 no bgp ebgp-requires-policy
 neighbor 198.18.0.11 remote-as 64512
 neighbor 198.18.0.11 password first-key
 neighbor 198.18.0.11 timers connect 2
"#;

/// `password.secretKeyRef`: a BGPPeer whose Secret is missing stays down with the reason shown
/// (never up without MD5); a Secret stored with `ginghamctl apply` brings the MD5 session up
/// with FRR; rotating the key on both sides re-keys it; deleting the Secret takes it down.
#[test]
fn md5_password_from_a_secret_follows_rotation_and_deletion() {
    let mut options = LabOptions::new(1);
    options.extra_hosts = 1;
    let lab = Cluster::new(options).unwrap();
    let frr = Frr::start(&lab.fabric.hosts[1].ns, FRR_MD5).unwrap();
    let fail = |e: anyhow::Error| -> ! { panic!("{e}\n--- frr\n{}\n--- agent\n{}", frr.daemon.log_tail(), logs(&lab)) };
    let spec = BGPPeerSpec {
        node: Some("node-1".into()),
        peer_ip: Some("198.18.0.12".into()),
        as_number: Some(65010),
        password: Some(PeerPassword {
            literal: None,
            secret_key_ref: Some(SecretKeyRef { name: "bgp-tor".into(), key: "password".into() }),
        }),
        ..Default::default()
    };
    rt().block_on(lab.store().unwrap().create(&BGPPeer::new("tor", spec))).unwrap();
    let peer = || lab.status(0).ok()?["peers"].as_array()?.iter().find(|p| p["address"] == "198.18.0.12").cloned();
    let shown = wait_for("the peer shown as not started", Duration::from_secs(20), || peer().filter(|p| p["state"] == "Idle"))
        .unwrap_or_else(|e| fail(e));
    assert_eq!(shown["info"], "not started: password: Secret gingham-system/bgp-tor not found", "{shown}");
    let metrics = lab.http_get(0, "/metrics").unwrap();
    assert!(metrics.contains("gingham_bgp_peers_not_started 1"), "{metrics}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!frr.established("198.18.0.11"), "no session without its password");
    let ctl = gingham_integration::lab::workspace_binary("ginghamctl").unwrap();
    let ctl_status = lab.fabric.hosts[0].ns.exec(ctl.to_str().unwrap(), &["node", "status"]).unwrap();
    assert!(ctl_status.contains("Secret gingham-system/bgp-tor not found"), "{ctl_status}");

    // The Secret, as an operator writes it (base64 data), stored with ginghamctl.
    let apply = |password: &str| {
        let file = lab.dir.path.join("secret.yaml");
        let encoded = base64(password.as_bytes());
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bgp-tor\n  namespace: gingham-system\ndata:\n  password: {encoded}\n"
            ),
        )
        .unwrap();
        let datastore = format!("sqlite:{}", lab.db.display());
        let out = std::process::Command::new(&ctl).args(["--datastore", &datastore, "apply", "-f"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    apply("first-key");
    wait_for("MD5 session up with FRR", Duration::from_secs(30), || frr.established("198.18.0.11").then_some(()))
        .unwrap_or_else(|e| fail(e));
    let up = peer().unwrap();
    assert_eq!(up["state"], "Established", "{up}");

    // Rotation: FRR first (the session drops), then the Secret.
    frr.configure(&["router bgp 65010", "neighbor 198.18.0.11 password second-key"]).unwrap();
    wait_for("FRR drops the old key", Duration::from_secs(30), || (!frr.established("198.18.0.11")).then_some(()))
        .unwrap_or_else(|e| fail(e));
    let rotated = std::time::Instant::now();
    apply("second-key");
    wait_for("MD5 session up with the new key", Duration::from_secs(30), || frr.established("198.18.0.11").then_some(()))
        .unwrap_or_else(|e| fail(e));
    eprintln!("re-keyed and Established {:.1} s after the Secret changed", rotated.elapsed().as_secs_f64());

    // Deleting the Secret takes the session down rather than leave it running unauthenticated.
    let datastore = format!("sqlite:{}", lab.db.display());
    let out =
        std::process::Command::new(&ctl).args(["--datastore", &datastore, "delete", "secret", "gingham-system/bgp-tor"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("peer down after the Secret is deleted", Duration::from_secs(20), || peer().filter(|p| p["state"] == "Idle"))
        .unwrap_or_else(|e| fail(e));
    wait_for("FRR sees it down", Duration::from_secs(20), || (!frr.established("198.18.0.11")).then_some(())).unwrap_or_else(|e| fail(e));
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
