//! Several agents restarting at once (RFC 4724 4.1): restarted nodes exchange their routes as
//! soon as their sessions are up instead of each waiting for the other's End-of-RIB, helpers
//! keep the stale routes until the new ones replace them, and a pod made on a restarted node is
//! reachable at once. Pods ping each other every 50 ms throughout; not one ping may be lost.
//! Blocks are /32 here, so every new pod is a new block that must be advertised, and the
//! agents' restart time is 15 s, so the pings outlast it: a restarted node that held its
//! routes back until its sync deadline would lose pings when the helpers' stale routes expire,
//! and its new pods would wait for that deadline. Needs root; each test removes what it built.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use gingham_integration::lab::{pinger_counts, start_pinger, Cluster, LabOptions};
use gingham_integration::netns::wait_for;

fn logs(lab: &Cluster) -> String {
    lab.nodes.iter().filter_map(|n| n.agent.as_ref().map(|a| a.log_tail())).collect::<Vec<_>>().join("\n---\n")
}

#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Term,
}

fn stop(lab: &mut Cluster, i: usize, how: Stop) {
    let agent = lab.nodes[i].agent.as_mut().unwrap();
    match how {
        Stop::Kill => agent.kill(),
        Stop::Term => agent.stop(),
    }
}

/// Stops the agents of `nodes` together, waits `down`, starts them again.
fn restart(lab: &mut Cluster, nodes: &[usize], how: Stop, down: Duration) {
    for &i in nodes {
        stop(lab, i, how);
    }
    std::thread::sleep(down);
    for &i in nodes {
        lab.start_agent(i).unwrap();
    }
}

/// Stops the agents of `nodes` one after another, `apart` between stops; each is started again
/// `down` after its own stop, so one node comes back while the next is going down.
fn restart_staggered(lab: &mut Cluster, nodes: &[usize], how: Stop, down: Duration, apart: Duration) {
    let start = Instant::now();
    let mut events: Vec<(Duration, usize, bool)> = Vec::new();
    for (k, &i) in nodes.iter().enumerate() {
        let stop_at = apart * k as u32;
        events.push((stop_at, i, false));
        events.push((stop_at + down, i, true));
    }
    events.sort_by_key(|e| (e.0, e.2));
    for (at, i, starting) in events {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        if starting {
            lab.start_agent(i).unwrap();
        } else {
            stop(lab, i, how);
        }
    }
}

/// Pings between every ordered pair of the lab's first pods while `act` runs; asserts none lost.
fn no_loss_during(lab: &mut Cluster, secs: u32, act: impl FnOnce(&mut Cluster)) {
    let addrs: Vec<Ipv4Addr> = lab.pods.iter().map(|p| p.address).collect();
    let mut pings = Vec::new();
    for from in 0..addrs.len() {
        for (to, addr) in addrs.iter().enumerate() {
            if from != to {
                pings.push((from, to, start_pinger(&lab.pods[from], *addr, "0.05", secs.into()).unwrap()));
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    act(lab);
    let mut lost = Vec::new();
    for (from, to, ping) in pings {
        let (sent, received) = pinger_counts(ping).unwrap();
        assert!(sent > 100, "pod {from} -> pod {to}: only {sent} sent");
        if sent != received {
            lost.push(format!("pod {from} -> pod {to}: {} of {sent} lost", sent - received));
        }
    }
    assert!(lost.is_empty(), "pings lost: {lost:?}\n{}", logs(lab));
}

/// A pod added on node `i` now: seconds until a pod elsewhere reaches it.
fn new_pod_reachable_after(lab: &mut Cluster, i: usize, name: &str, from: usize) -> f64 {
    let added = Instant::now();
    let addr = lab.add_pod(i, name).unwrap().address;
    wait_for(&format!("{name} reachable"), Duration::from_secs(150), || {
        let ok = lab.pods[from].ns.exec("ping", &["-c", "1", "-W", "1", &addr.to_string()]).is_ok();
        ok.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(lab)));
    added.elapsed().as_secs_f64()
}

const RESTART_TIME: u16 = 15;
/// Longer than the restart time.
const PING_SECS: u32 = 30;

fn options(nodes: usize) -> LabOptions {
    let mut options = LabOptions::new(nodes);
    options.block_size = 32;
    options.restart_time = Some(RESTART_TIME);
    options
}

fn mesh_with_pods(nodes: usize) -> Cluster {
    let mut lab = Cluster::new(options(nodes)).unwrap();
    for i in 0..nodes {
        lab.add_pod(i, &format!("p{i}")).unwrap();
    }
    lab.wait_established(Duration::from_secs(60)).unwrap();
    // Every node routes to every other node's pod before the clock starts.
    for from in 0..nodes {
        for to in 0..nodes {
            let addr = lab.pods[to].address;
            wait_for("initial reachability", Duration::from_secs(20), || lab.ping(&lab.pods[from], addr).then_some(())).unwrap();
        }
    }
    lab
}

/// While pods ping each other, `restart` restarts agents; then a pod made on node `new_on`
/// must be reachable from node `from`'s pod without waiting for any restart deadline.
fn assert_lossless_restart(lab: &mut Cluster, ping_secs: u32, (new_on, from): (usize, usize), restart: impl FnOnce(&mut Cluster)) {
    let mut took = 0.0;
    no_loss_during(lab, ping_secs, |lab| {
        restart(lab);
        lab.wait_established(Duration::from_secs(30)).unwrap();
        // A new pod (a new /32 block) on a restarted node, while the others still ping.
        took = new_pod_reachable_after(lab, new_on, "after-restart", from);
    });
    eprintln!("pod on a restarted node reachable {took:.2} s after its ADD");
    assert!(took < 5.0, "a new pod waited {took:.1} s for a restarted node to send its routes");
}

#[test]
fn two_nodes_killed_together_lose_nothing_and_a_new_pod_is_reachable_at_once() {
    let mut lab = mesh_with_pods(3);
    assert_lossless_restart(&mut lab, PING_SECS, (0, 2), |lab| restart(lab, &[0, 1], Stop::Kill, Duration::from_secs(1)));
}

#[test]
fn all_nodes_stopped_together_and_restarted_ten_seconds_later_lose_nothing() {
    let mut lab = mesh_with_pods(3);
    assert_lossless_restart(&mut lab, PING_SECS + 10, (1, 0), |lab| restart(lab, &[0, 1, 2], Stop::Term, Duration::from_secs(10)));
}

#[test]
fn a_client_and_its_route_reflector_restart_together_and_lose_nothing() {
    let mut options = options(3);
    options.mesh = false;
    options.reflectors = vec![0];
    let mut lab = Cluster::new(options).unwrap();
    for i in 0..3 {
        lab.add_pod(i, &format!("p{i}")).unwrap();
    }
    lab.wait_established(Duration::from_secs(60)).unwrap();
    let addr = lab.pods[2].address;
    wait_for("reflected routes", Duration::from_secs(20), || lab.ping(&lab.pods[1], addr).then_some(())).unwrap();
    let addr = lab.pods[1].address;
    wait_for("reflected routes", Duration::from_secs(20), || lab.ping(&lab.pods[2], addr).then_some(())).unwrap();
    // A pod on the restarted client reaches the other client through the restarted reflector.
    assert_lossless_restart(&mut lab, PING_SECS, (1, 2), |lab| restart(lab, &[0, 1], Stop::Kill, Duration::from_secs(1)));
}

#[test]
fn three_of_four_nodes_killed_one_second_apart_lose_nothing() {
    let mut lab = mesh_with_pods(4);
    let second = Duration::from_secs(1);
    assert_lossless_restart(&mut lab, PING_SECS, (2, 3), |lab| restart_staggered(lab, &[0, 1, 2], Stop::Kill, second, second));
}

#[test]
fn two_nodes_terminated_ten_seconds_apart_lose_nothing() {
    let mut lab = mesh_with_pods(3);
    let ten = Duration::from_secs(10);
    // Node 1 goes down while node 0 is still resynchronising after its own restart.
    assert_lossless_restart(&mut lab, PING_SECS + 10, (0, 2), |lab| restart_staggered(lab, &[0, 1], Stop::Term, ten, ten));
}
