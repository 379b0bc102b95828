//! BFD (RFC 5880/5881) against BIRD's `protocol bfd` and FRR's bfdd, IPv4 and IPv6, in
//! namespaces. Needs root.
//!
//! ```text
//!   h1 gingham-bfd driver 198.18.0.11 / 2001:db8:18::b
//!   h2 BIRD               198.18.0.12 / 2001:db8:18::c     one bridge
//!   h3 FRR bfdd           198.18.0.13 / 2001:db8:18::d
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gingham_bfd::driver::{self, BfdHandle, Change, DriverConfig, Peering, SessionStatus};
use gingham_bfd::{ControlPacket, Diagnostic, State};
use gingham_integration::daemons::{Bfdd, Bird};
use gingham_integration::netns::{wait_for, Fabric, Netns};
use gingham_integration::sessions::NsRuntime;

const T: Duration = Duration::from_secs(20);

fn peering(local: IpAddr, tx_ms: u64) -> Peering {
    Peering { local: Some(local), min_tx: Duration::from_millis(tx_ms), min_rx: Duration::from_millis(300), multiplier: 3 }
}

struct Ours {
    rt: NsRuntime,
    handle: BfdHandle,
    changes: Arc<Mutex<Vec<(Instant, Change)>>>,
}

impl Ours {
    fn start(ns: &Netns) -> Ours {
        let _already =
            tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let rt = NsRuntime::new(ns).expect("runtime in h1");
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = changes.clone();
        let handle = rt.block_on(async move {
            let (handle, mut rx) = driver::spawn(DriverConfig::default());
            tokio::spawn(async move {
                while let Some(c) = rx.recv().await {
                    sink.lock().unwrap().push((Instant::now(), c));
                }
            });
            handle
        });
        Ours { rt, handle, changes }
    }

    fn set(&self, want: &[(IpAddr, Peering)]) {
        let h = self.handle.clone();
        let want: BTreeMap<IpAddr, Peering> = want.iter().copied().collect();
        self.rt.block_on(async move { h.set(want).await }).expect("sessions set");
    }

    fn session(&self, peer: IpAddr) -> Option<SessionStatus> {
        let h = self.handle.clone();
        self.rt.block_on(async move { h.sessions().await }).ok()?.into_iter().find(|s| s.peer == peer)
    }

    fn state(&self, peer: IpAddr) -> Option<State> {
        self.session(peer).map(|s| s.state)
    }

    fn changes_for(&self, peer: IpAddr) -> Vec<(Instant, Change)> {
        self.changes.lock().unwrap().iter().filter(|(_, c)| c.peer == peer).copied().collect()
    }
}

/// Sends one control packet from inside `ns` with the given TTL, as an attacker (or a
/// misrouted packet) would.
fn send_from(ns: &Netns, from: IpAddr, to: IpAddr, ttl: u32, packet: ControlPacket) {
    let file = File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this short-lived thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let sock = std::net::UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
        sock.set_ttl(ttl).unwrap();
        let mut buf = BytesMut::new();
        packet.encode(&mut buf);
        sock.send_to(&buf, SocketAddr::new(to, driver::CONTROL_PORT)).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn sessions_with_bird_and_frr_come_up_detect_a_cut_link_keep_gtsm_and_change_intervals_without_a_flap() {
    let fabric = Fabric::new(3).expect("fabric");
    let (h1, h2, h3) = (&fabric.hosts[0], &fabric.hosts[1], &fabric.hosts[2]);
    let (us4, us6) = (IpAddr::V4(h1.v4), IpAddr::V6(h1.v6));
    let (bird4, bird6) = (IpAddr::V4(h2.v4), IpAddr::V6(h2.v6));
    let (frr4, frr6) = (IpAddr::V4(h3.v4), IpAddr::V6(h3.v6));
    let bird = Bird::start(
        &h2.ns,
        &format!(
            r#"router id {bird4};
protocol device {{}}
protocol bfd {{
  interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};
  neighbor {us4} local {bird4};
  neighbor {us6} local {bird6};
}}
"#
        ),
    )
    .expect("BIRD");
    let bfdd = Bfdd::start(
        &h3.ns,
        &format!(
            "bfd\n peer {us4} local-address {frr4}\n  receive-interval 300\n  transmit-interval 300\n !\n peer {us6} local-address {frr6}\n  receive-interval 300\n  transmit-interval 300\n !\n!\n"
        ),
    )
    .expect("bfdd");
    let ours = Ours::start(&h1.ns);
    let all = [(bird4, peering(us4, 300)), (bird6, peering(us6, 300)), (frr4, peering(us4, 300)), (frr6, peering(us6, 300))];
    ours.set(&all);
    let logs = || format!("{}\n{}", bird.daemon.log_tail(), bfdd.daemon.log_tail());
    let check = |what: &str, ok: &dyn Fn() -> bool| {
        if let Err(e) = wait_for(what, T, || ok().then_some(())) {
            panic!("{e}\n{}", logs());
        }
    };

    // 1. Up on both ends, both families, both daemons.
    for peer in [bird4, bird6, frr4, frr6] {
        check(&format!("our session with {peer} Up"), &|| ours.state(peer) == Some(State::Up));
    }
    check("BIRD sees us Up (v4)", &|| bird.bfd_state(&us4.to_string()).as_deref() == Some("Up"));
    check("BIRD sees us Up (v6)", &|| bird.bfd_state(&us6.to_string()).as_deref() == Some("Up"));
    check("bfdd sees us up (v4)", &|| bfdd.status(&us4.to_string()).as_deref() == Some("up"));
    check("bfdd sees us up (v6)", &|| bfdd.status(&us6.to_string()).as_deref() == Some("up"));
    let s = ours.session(frr4).unwrap();
    assert_eq!(s.detection_time, Some(Duration::from_millis(900)), "3 x max(300 ms, 300 ms)");

    // 2. GTSM: a packet that would take the session down, but sent with TTL 64, is ignored;
    //    the same packet with TTL 255 takes it down (so the first one did reach us).
    let s = ours.session(bird4).unwrap();
    let forged = ControlPacket {
        diag: Diagnostic::None,
        state: State::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_disc: s.remote_disc,
        your_disc: s.local_disc,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    };
    send_from(&h2.ns, bird4, us4, 64, forged);
    std::thread::sleep(Duration::from_secs(1));
    let after = ours.session(bird4).unwrap();
    assert_eq!((after.state, after.downs), (State::Up, 0), "a packet with TTL 64 must not reach the session");
    send_from(&h2.ns, bird4, us4, 255, forged);
    check("the TTL 255 copy takes the session down", &|| ours.session(bird4).is_some_and(|s| s.downs == 1));
    let down = ours.changes_for(bird4).into_iter().find(|(_, c)| c.to == State::Down).unwrap().1;
    assert_eq!(down.diagnostic, Diagnostic::NeighborSignaledSessionDown);
    check("and it comes back", &|| ours.state(bird4) == Some(State::Up));

    // 3. Intervals changed while Up: a poll sequence, no flap on either side.
    ours.set(&[(bird4, peering(us4, 300)), (bird6, peering(us6, 300)), (frr4, peering(us4, 100)), (frr6, peering(us6, 300))]);
    check("bfdd uses our new 100 ms transmit interval", &|| {
        bfdd.peer(&us4.to_string()).and_then(|p| p.get("remote-transmit-interval")?.as_u64()) == Some(100)
    });
    let s = ours.session(frr4).unwrap();
    assert_eq!((s.state, s.downs), (State::Up, 0), "no flap while the interval changed: {:?}\n{}", ours.changes_for(frr4), logs());
    assert_eq!(bfdd.status(&us4.to_string()).as_deref(), Some("up"));

    // 4. BIRD's port on the bridge goes down: both sessions with it are declared down by
    //    detection time (about 3 x 300 ms); FRR's stay up.
    let cut = Instant::now();
    fabric.bridge.ip(&["link", "set", "p2", "down"]).unwrap();
    for peer in [bird4, bird6] {
        check(&format!("{peer} declared down"), &|| ours.state(peer) == Some(State::Down));
        let (at, c) = *ours.changes_for(peer).iter().rev().find(|(_, c)| c.to == State::Down).unwrap();
        assert_eq!(c.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert!(!c.peer_admin_down);
        println!("link cut -> BFD down for {peer}: {:?}", at.duration_since(cut));
    }
    assert_eq!(ours.state(frr4), Some(State::Up));
    fabric.bridge.ip(&["link", "set", "p2", "up"]).unwrap();
    for peer in [bird4, bird6] {
        check(&format!("{peer} Up again"), &|| ours.state(peer) == Some(State::Up));
    }

    // 5. Deconfigured: the peer is told AdminDown, which RFC 5882 3.2 says is no failure.
    ours.set(&[(bird4, peering(us4, 300)), (bird6, peering(us6, 300))]);
    for addr in [us4, us6] {
        check(&format!("bfdd sees {addr} administratively down"), &|| {
            bfdd.peer(&addr.to_string()).is_some_and(|p| {
                p.get("status").and_then(|v| v.as_str()) == Some("down")
                    && p.get("remote-diagnostic").and_then(|v| v.as_str()) == Some("administratively down")
            })
        });
    }
    assert!(ours.session(frr4).is_none());
}
