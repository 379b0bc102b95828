//! The interop topology shared by the tests and `gingham-lab interop`: our speaker peering
//! with BIRD, FRR and GoBGP, each over iBGP and eBGP, IPv4 and IPv6, 2- and 4-octet ASNs.
//!
//! ```text
//!   h1 gingham 198.18.0.11 / 2001:db8:18::b
//!   h2 bird    198.18.0.12 / 2001:db8:18::c     all on one bridge (gfab-*)
//!   h3 frr     198.18.0.13 / 2001:db8:18::d
//!   h4 gobgp   198.18.0.14 / 2001:db8:18::e
//! ```
//!
//! | session     | transport | family | our AS     | their AS   | kind        |
//! |-------------|-----------|--------|------------|------------|-------------|
//! | bird-ibgp   | IPv4      | ipv4   | 65000      | 65000      | iBGP 2-oct  |
//! | bird-ebgp   | IPv6      | ipv6   | 4200000001 | 4200000002 | eBGP 4-oct  |
//! | frr-ibgp    | IPv4      | ipv4   | 65000      | 65000      | iBGP 2-oct  |
//! | frr-ebgp    | IPv6      | ipv6   | 4200000001 | 65000      | eBGP mixed  |
//! | gobgp-ebgp  | IPv4      | ipv4   | 65000      | 65014      | eBGP 2-oct  |
//! | gobgp-ibgp  | IPv6      | ipv6   | 4200000001 | 4200000001 | iBGP 4-oct  |
//! | bird-as2    | IPv4 (.112) | ipv4 | 65100      | 65000      | eBGP, BIRD without the 4-octet capability: 4-octet ASNs in paths travel as AS_TRANS + AS4_PATH both ways |
//!
//! Each daemon originates 198.19.N.0/24 and 2001:db8:N::/48 (N = 2 BIRD, 3 FRR, 4 GoBGP); we
//! originate 198.19.1.0/24 and 2001:db8:1::/48 on every session.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use gingham_bgp::fsm::FsmConfig;
use gingham_bgp::session::{PeerConfig, Transport};
use gingham_bgp::wire::{AsPath, Family, MpReach, NextHop, Origin, PathAttributes, Update};

use crate::daemons::{Bird, Frr, GoBgp};
use crate::netns::{wait_for, Fabric};
use crate::sessions::Sessions;

pub const OUR_V4: &str = "198.18.0.11";
pub const OUR_V6: &str = "2001:db8:18::b";
pub const OUR_PREFIX_V4: &str = "198.19.1.0/24";
pub const OUR_PREFIX_V6: &str = "2001:db8:1::/48";

/// One session of the matrix.
#[derive(Clone, Debug)]
pub struct Session {
    pub name: &'static str,
    pub peer: IpAddr,
    pub local_as: u32,
    pub peer_as: u32,
    pub family: Family,
}

impl Session {
    pub fn ebgp(&self) -> bool {
        self.local_as != self.peer_as
    }
}

pub fn sessions() -> Vec<Session> {
    let s = |name, peer: &str, local_as, peer_as, family| Session { name, peer: peer.parse().unwrap(), local_as, peer_as, family };
    vec![
        s("bird-ibgp", "198.18.0.12", 65000, 65000, Family::IPV4_UNICAST),
        s("bird-ebgp", "2001:db8:18::c", 4_200_000_001, 4_200_000_002, Family::IPV6_UNICAST),
        s("frr-ibgp", "198.18.0.13", 65000, 65000, Family::IPV4_UNICAST),
        s("frr-ebgp", "2001:db8:18::d", 4_200_000_001, 65000, Family::IPV6_UNICAST),
        s("gobgp-ebgp", "198.18.0.14", 65000, 65014, Family::IPV4_UNICAST),
        s("gobgp-ibgp", "2001:db8:18::e", 4_200_000_001, 4_200_000_001, Family::IPV6_UNICAST),
        s("bird-as2", "198.18.0.112", 65100, 65000, Family::IPV4_UNICAST),
    ]
}

pub fn bird_config() -> String {
    r#"
router id 198.18.0.12;
protocol device {}
protocol direct { ipv4; ipv6; }
protocol static s4 { ipv4; route 198.19.2.0/24 unreachable; }
protocol static s6 { ipv6; route 2001:db8:2::/48 unreachable; }
protocol bgp bird_ibgp {
  local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000;
  hold time 9; keepalive time 3;
  ipv4 { import all; export where net = 198.19.2.0/24; };
}
protocol static s5 { ipv4; route 198.19.5.0/24 unreachable; }
# An "old" 2-octet session: 4-octet ASNs in paths travel as AS_TRANS plus AS4_PATH, both ways.
# (BIRD reads a 4-octet capability even with as4 off, so our AS on this session is 2-octet.)
protocol bgp bird_as2 {
  local 198.18.0.112 as 65000; neighbor 198.18.0.111 as 65100;
  enable as4 off; hold time 9; keepalive time 3;
  ipv4 {
    import all;
    export filter { if net = 198.19.5.0/24 then { bgp_path.prepend(4200000099); accept; } reject; };
  };
}
protocol bgp bird_ebgp {
  local 2001:db8:18::c as 4200000002; neighbor 2001:db8:18::b as 4200000001;
  hold time 9; keepalive time 3;
  ipv6 { import all; export where source = RTS_STATIC; };
}
"#
    .into()
}

pub fn frr_config() -> String {
    r#"
router bgp 65000
 bgp router-id 198.18.0.13
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 65000
 neighbor 198.18.0.11 timers 3 9
 neighbor 2001:db8:18::b remote-as 4200000001
 neighbor 2001:db8:18::b timers 3 9
 address-family ipv4 unicast
  network 198.19.3.0/24
  neighbor 198.18.0.11 activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:3::/48
  neighbor 2001:db8:18::b activate
 exit-address-family
"#
    .into()
}

pub fn gobgp_config() -> String {
    r#"
[global.config]
  as = 65014
  router-id = "198.18.0.14"
  local-address-list = ["198.18.0.14", "2001:db8:18::e"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.11"
    peer-as = 65000
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8:18::b"
    peer-as = 4200000001
    local-as = 4200000001
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
    .into()
}

/// Our peer configuration for one session of the matrix.
pub fn peer_config(s: &Session) -> PeerConfig {
    let mut fsm = FsmConfig::new(s.local_as, OUR_V4.parse().unwrap(), s.peer_as);
    fsm.families = vec![s.family];
    fsm.hold_time = 9;
    fsm.connect_retry = Duration::from_secs(2);
    fsm.hostname = Some("gingham-h1".into());
    let mut t = Transport::new(SocketAddr::new(s.peer, 179));
    // bird-as2 uses our second address: BIRD wants one neighbor address per protocol.
    t.local_addr = Some(match s.peer {
        IpAddr::V4(a) if a.octets()[3] > 100 => "198.18.0.111".parse().unwrap(),
        IpAddr::V4(_) => OUR_V4.parse().unwrap(),
        IpAddr::V6(_) => OUR_V6.parse().unwrap(),
    });
    PeerConfig::new(fsm, t)
}

/// The UPDATE we originate on a session: our prefix of its family, then End-of-RIB.
pub fn our_routes(s: &Session) -> Vec<Update> {
    let mut attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(match (s.ebgp(), s.name) {
            // As if relayed from a 4-octet AS: the 2-octet session must carry it in AS4_PATH.
            (true, "bird-as2") => AsPath::sequence([s.local_as, 4_200_000_077]),
            (true, _) => AsPath::sequence([s.local_as]),
            (false, _) => AsPath::default(),
        }),
        ..Default::default()
    };
    if !s.ebgp() {
        attrs.local_pref = Some(100);
    }
    let mut u = Update::default();
    if s.family == Family::IPV4_UNICAST {
        attrs.next_hop = Some(OUR_V4.parse::<Ipv4Addr>().unwrap());
        u.nlri = vec![OUR_PREFIX_V4.parse().unwrap()];
    } else {
        attrs.mp_reach = Some(MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: NextHop::V6 { global: OUR_V6.parse().unwrap(), link_local: None },
            nlri: vec![OUR_PREFIX_V6.parse().unwrap()],
        });
    }
    u.attributes = attrs;
    vec![u, Update::end_of_rib(s.family)]
}

pub struct InteropLab {
    pub speaker: Sessions,
    pub bird: Bird,
    pub frr: Frr,
    pub gobgp: GoBgp,
    // Declared last: namespaces go after the processes in them.
    pub fabric: Fabric,
}

impl InteropLab {
    pub fn up() -> Result<InteropLab> {
        let fabric = Fabric::new(4)?;
        let mut speaker = Sessions::start(&fabric.hosts[0].ns, vec!["0.0.0.0:179".parse()?, "[::]:179".parse()?])?;
        let bird = Bird::start(&fabric.hosts[1].ns, &bird_config())?;
        let frr = Frr::start(&fabric.hosts[2].ns, &frr_config())?;
        let gobgp = GoBgp::start(&fabric.hosts[3].ns, &gobgp_config())?;
        gobgp.cli(&["global", "rib", "add", "-a", "ipv4", "198.19.4.0/24"])?;
        gobgp.cli(&["global", "rib", "add", "-a", "ipv6", "2001:db8:4::/48"])?;
        for s in sessions() {
            speaker.add_peer(s.name, peer_config(&s));
        }
        Ok(InteropLab { speaker, bird, frr, gobgp, fabric })
    }

    /// Waits until every session is Established on both sides, then originates our routes.
    pub fn converge(&self, timeout: Duration) -> Result<()> {
        for s in sessions() {
            let addr = SocketAddr::new(s.peer, 179);
            wait_for(&format!("{} Established", s.name), timeout, || self.speaker.view().established.contains_key(&addr).then_some(()))?;
            self.speaker.send(s.name, our_routes(&s));
        }
        Ok(())
    }

    /// What the daemons' logs say, for a failing test's message.
    pub fn logs(&self) -> String {
        let ours: Vec<String> = self.speaker.snapshots().into_iter().map(|(n, s)| format!("{n}: {} {:?}", s.state, s.last_error)).collect();
        format!(
            "--- gingham\n{}\n--- bird\n{}\n--- frr\n{}\n--- gobgp\n{}",
            ours.join("\n"),
            self.bird.daemon.log_tail(),
            self.frr.daemon.log_tail(),
            self.gobgp.daemon.log_tail()
        )
    }
}
