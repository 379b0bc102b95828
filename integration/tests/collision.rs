//! Connection collision (RFC 4271 6.8) for real: both sides dial at once and exactly one
//! TCP connection survives. Needs root.
//!
//! To make both dial at once, the fabric ports are down while both sides start: their SYNs
//! retransmit, the ports come up, and the next retransmissions cross.
//!
//! Verifies, for two of our speakers and for ours against BIRD:
//! 1. both sides Established, with exactly one established TCP connection on port 179;
//! 2. a collision was actually resolved (a Cease/Connection Collision Resolution was sent or
//!    received), so the test exercised the collision path;
//! 3. the session stays up afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use gingham_bgp::fsm::{FsmConfig, State};
use gingham_bgp::session::{PeerConfig, Transport};
use gingham_integration::daemons::Bird;
use gingham_integration::netns::{wait_for, Fabric, Netns};
use gingham_integration::sessions::Sessions;

fn peer(local: &str, remote: &str) -> PeerConfig {
    let mut fsm = FsmConfig::new(65000, local.parse().unwrap(), 65000);
    fsm.connect_retry = Duration::from_secs(30);
    let mut t = Transport::new(SocketAddr::new(remote.parse().unwrap(), 179));
    t.local_addr = Some(local.parse().unwrap());
    t.connect_timeout = Duration::from_secs(20);
    PeerConfig::new(fsm, t)
}

fn ports(fabric: &Fabric, state: &str) {
    for i in 1..=fabric.hosts.len() {
        fabric.bridge.ip(&["link", "set", &format!("p{i}"), state]).unwrap();
    }
}

fn established_bgp_connections(ns: &Netns) -> usize {
    let out = ns.exec("ss", &["-Htn", "state", "established", "( sport = :179 or dport = :179 )"]).unwrap();
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn two_of_our_speakers_keep_exactly_one_connection() {
    let fabric = Fabric::new(2).unwrap();
    ports(&fabric, "down");
    let mut a = Sessions::start(&fabric.hosts[0].ns, vec!["0.0.0.0:179".parse().unwrap()]).unwrap();
    let mut b = Sessions::start(&fabric.hosts[1].ns, vec!["0.0.0.0:179".parse().unwrap()]).unwrap();
    a.add_peer("b", peer("198.18.0.11", "198.18.0.12"));
    b.add_peer("a", peer("198.18.0.12", "198.18.0.11"));
    std::thread::sleep(Duration::from_millis(1500));
    ports(&fabric, "up");

    let up = |s: &Sessions, n: &str| s.snapshot(n).map(|s| s.state) == Some(State::Established);
    wait_for("both Established", Duration::from_secs(30), || (up(&a, "b") && up(&b, "a")).then_some(())).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(established_bgp_connections(&fabric.hosts[0].ns), 1);
    assert_eq!(established_bgp_connections(&fabric.hosts[1].ns), 1);
    let collisions = a.snapshot("b").unwrap().collisions + b.snapshot("a").unwrap().collisions;
    assert!(collisions >= 1, "no collision happened; the test did not exercise resolution");
    std::thread::sleep(Duration::from_secs(3));
    assert!(up(&a, "b") && up(&b, "a"));
    assert!(a.view().downs.is_empty() && b.view().downs.is_empty(), "{:?} {:?}", a.view().downs, b.view().downs);
}

#[test]
fn our_speaker_and_bird_keep_exactly_one_connection() {
    let fabric = Fabric::new(2).unwrap();
    ports(&fabric, "down");
    let bird = Bird::start(
        &fabric.hosts[1].ns,
        r#"
router id 198.18.0.12;
protocol device {}
protocol bgp gingham {
  local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000;
  connect delay time 1; connect retry time 30;
  ipv4 { import all; export none; };
}
"#,
    )
    .unwrap();
    let mut a = Sessions::start(&fabric.hosts[0].ns, vec!["0.0.0.0:179".parse().unwrap()]).unwrap();
    a.add_peer("bird", peer("198.18.0.11", "198.18.0.12"));
    std::thread::sleep(Duration::from_millis(2500));
    ports(&fabric, "up");

    let up = || a.snapshot("bird").map(|s| s.state) == Some(State::Established) && bird.established("gingham");
    wait_for("both Established", Duration::from_secs(40), || up().then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", bird.daemon.log_tail()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(established_bgp_connections(&fabric.hosts[0].ns), 1, "{}", bird.daemon.log_tail());
    assert!(
        a.snapshot("bird").unwrap().collisions >= 1,
        "no collision happened; the test did not exercise resolution\n{}",
        bird.daemon.log_tail()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(up());
    assert!(a.view().downs.is_empty(), "{:?}", a.view().downs);
}
