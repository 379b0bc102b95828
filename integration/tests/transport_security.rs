//! TCP MD5 (RFC 2385) and GTSM (RFC 5082) against FRR bgpd. Needs root.
//!
//! ```text
//!   h1 gingham  .11 .111 .211 .221      h2 FRR AS 65000  .12 .112 .212 .222   (198.18.0.x/24)
//! ```
//! Verifies:
//! 1. md5-good: same key on both sides -> Established, FRR reports the session up;
//! 2. md5-bad: different keys -> never Established on either side (15 s);
//! 3. gtsm: FRR `ttl-security hops 1` and our GTSM -> Established;
//! 4. gtsm-enforced: we require GTSM, FRR sends eBGP with TTL 1 -> never Established, which
//!    shows our minimum-TTL check drops its packets.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gingham_bgp::fsm::{FsmConfig, State};
use gingham_bgp::session::{PeerConfig, Transport, TtlMode};
use gingham_integration::daemons::Frr;
use gingham_integration::netns::{wait_for, Fabric};
use gingham_integration::sessions::Sessions;

const FRR_CONF: &str = r#"
router bgp 65000
 bgp router-id 198.18.0.12
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 65000
 neighbor 198.18.0.11 update-source 198.18.0.12
 neighbor 198.18.0.11 password gingham-secret
 neighbor 198.18.0.11 timers connect 2
 neighbor 198.18.0.111 remote-as 65000
 neighbor 198.18.0.111 update-source 198.18.0.112
 neighbor 198.18.0.111 password gingham-secret
 neighbor 198.18.0.111 timers connect 2
 neighbor 198.18.0.211 remote-as 65211
 neighbor 198.18.0.211 update-source 198.18.0.212
 neighbor 198.18.0.211 ttl-security hops 1
 neighbor 198.18.0.211 timers connect 2
 neighbor 198.18.0.221 remote-as 65221
 neighbor 198.18.0.221 update-source 198.18.0.222
 neighbor 198.18.0.221 timers connect 2
"#;

fn peer(local: &str, remote: &str, local_as: u32, md5: Option<&str>, ttl: TtlMode) -> PeerConfig {
    let mut fsm = FsmConfig::new(local_as, "198.18.0.11".parse().unwrap(), 65000);
    fsm.connect_retry = Duration::from_secs(2);
    let mut t = Transport::new(SocketAddr::new(remote.parse().unwrap(), 179));
    t.local_addr = Some(local.parse().unwrap());
    t.md5_key = md5.map(str::to_owned);
    t.ttl = ttl;
    PeerConfig::new(fsm, t)
}

#[test]
fn md5_and_gtsm_with_frr() {
    let fabric = Fabric::new(2).unwrap();
    for (host, addrs) in [(0, ["198.18.0.211", "198.18.0.221"]), (1, ["198.18.0.212", "198.18.0.222"])] {
        for a in addrs {
            fabric.hosts[host].ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"]).unwrap();
        }
    }
    let frr = Frr::start(&fabric.hosts[1].ns, FRR_CONF).unwrap();
    let mut speaker = Sessions::start(&fabric.hosts[0].ns, vec!["0.0.0.0:179".parse().unwrap()]).unwrap();
    speaker.add_peer("md5-good", peer("198.18.0.11", "198.18.0.12", 65000, Some("gingham-secret"), TtlMode::Send(255)));
    speaker.add_peer("md5-bad", peer("198.18.0.111", "198.18.0.112", 65000, Some("not-the-secret"), TtlMode::Send(255)));
    speaker.add_peer("gtsm", peer("198.18.0.211", "198.18.0.212", 65211, None, TtlMode::Gtsm { hops: 1 }));
    speaker.add_peer("gtsm-enforced", peer("198.18.0.221", "198.18.0.222", 65221, None, TtlMode::Gtsm { hops: 1 }));

    let up = |name: &str| speaker.snapshot(name).map(|s| s.state) == Some(State::Established);
    let fail = |e: anyhow::Error| -> ! { panic!("{e}\n--- frr\n{}", frr.daemon.log_tail()) };
    wait_for("md5-good Established", Duration::from_secs(30), || up("md5-good").then_some(())).unwrap_or_else(|e| fail(e));
    assert!(frr.established("198.18.0.11"), "FRR agrees md5-good is up");
    wait_for("gtsm Established", Duration::from_secs(30), || up("gtsm").then_some(())).unwrap_or_else(|e| fail(e));
    assert!(frr.established("198.18.0.211"), "FRR agrees gtsm is up");

    // Give the failing ones time for several connect attempts each way.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        assert!(!up("md5-bad"), "session with a wrong MD5 key came up");
        assert!(!up("gtsm-enforced"), "session with a TTL-1 peer came up despite GTSM");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!frr.established("198.18.0.111"));
    assert!(!frr.established("198.18.0.221"));
    // The good sessions were never disturbed by the bad ones.
    assert!(up("md5-good") && up("gtsm"));
    let _ip: IpAddr = "198.18.0.11".parse().unwrap();
}
