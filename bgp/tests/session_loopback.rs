//! The tokio driver against a hand-driven peer on 127.0.0.1: the session comes up, stays up
//! through several hold periods, delivers UPDATEs both ways, and answers broken input with
//! the right NOTIFICATION; and the whole speaker's FIB stream when that peer goes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use gingham_bgp::fsm::{DownReason, FsmConfig, State};
use gingham_bgp::session::{spawn_peer, Listener, PeerCommand, PeerConfig, PeerEvent, PeerHandle, Transport};
use gingham_bgp::wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use gingham_bgp::rib::Gateway;
use gingham_bgp::speaker::{FibUpdate, NeighborConfig, RouteChange, SpeakerConfig};
use ipnetwork::Ipv4Network;
use std::net::Ipv4Addr;

const CODEC: SessionCodec = SessionCodec { four_octet_as: true, ebgp: false };

struct Speaker {
    peer: PeerHandle,
    events: mpsc::Receiver<PeerEvent>,
    port: u16,
    _listener: Listener,
}

/// Our speaker, passive, expecting its peer at 127.0.0.1 (the raw client's address).
async fn speaker(hold: u16) -> Speaker {
    let listener = Listener::bind(&["127.0.0.1:0".parse().unwrap()], vec![], None).unwrap();
    let port = listener.local_addrs()[0].port();
    let mut fsm = FsmConfig::new(65000, "198.18.0.1".parse().unwrap(), 65000);
    fsm.passive = true;
    fsm.hold_time = hold;
    let transport = Transport::new(SocketAddr::new("127.0.0.1".parse().unwrap(), 179));
    let (tx, events) = mpsc::channel(64);
    let (peer, _join) = spawn_peer(PeerConfig::new(fsm, transport.clone()), tx);
    listener.add_peer(transport, peer.sender());
    assert!(peer.send(PeerCommand::Start).await);
    Speaker { peer, events, port, _listener: listener }
}

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        Raw { stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(), buf: BytesMut::new() }
    }
    async fn send(&mut self, m: &Message) {
        self.stream.write_all(&m.to_bytes(&CODEC).unwrap()).await.unwrap();
    }
    async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }
    /// The next message, or None at EOF.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(f) = split_frame(&mut self.buf).unwrap() {
                return Some(decode_frame(&f, &CODEC).unwrap().message);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
                .expect("peer silent for 10 s")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }
    async fn establish(port: u16, hold: u16) -> Raw {
        let raw = Raw::connect(port).await;
        raw.open(hold).await
    }
    /// Takes the connection of a speaker that connects to us.
    async fn accept(listener: &TcpListener, hold: u16) -> Raw {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.expect("no connection in 10 s").unwrap();
        Raw { stream, buf: BytesMut::new() }.open(hold).await
    }
    async fn open(mut self, hold: u16) -> Raw {
        let open = Open::new(65000, hold, "198.18.0.2".parse().unwrap(), vec![Capability::Multiprotocol(Family::IPV4_UNICAST)]);
        self.send(&Message::Open(open)).await;
        assert!(matches!(self.recv().await, Some(Message::Open(_))));
        assert_eq!(self.recv().await, Some(Message::Keepalive));
        self.send(&Message::Keepalive).await;
        self
    }
    /// Reads until a NOTIFICATION, then expects the connection to close.
    async fn notification(&mut self) -> Notification {
        loop {
            match self.recv().await {
                Some(Message::Notification(n)) => {
                    assert_eq!(self.recv().await, None, "connection closed after NOTIFICATION");
                    return n;
                }
                Some(_) => continue,
                None => panic!("closed without NOTIFICATION"),
            }
        }
    }
}

async fn next_event(events: &mut mpsc::Receiver<PeerEvent>) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("no event in 10 s").expect("peer task alive")
}

fn route(prefix: &str) -> Update {
    Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            next_hop: Some("198.18.0.2".parse().unwrap()),
            local_pref: Some(100),
            ..Default::default()
        },
        nlri: vec![prefix.parse().unwrap()],
        ..Default::default()
    }
}

#[tokio::test]
async fn session_stays_up_through_hold_periods_and_carries_updates_both_ways() {
    let mut s = speaker(3).await;
    let mut raw = Raw::establish(s.port, 3).await;
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Established { .. }));

    raw.send(&Message::Update(route("198.19.7.0/24"))).await;
    match next_event(&mut s.events).await {
        PeerEvent::Update { update, attr_errors, .. } => {
            assert!(attr_errors.is_empty());
            assert_eq!(update.nlri, vec!["198.19.7.0/24".parse().unwrap()]);
        }
        other => panic!("{other:?}"),
    }
    s.peer.send(PeerCommand::Send(vec![route("198.19.8.0/24")])).await;
    // Keep answering keepalives for three hold periods, collecting what arrives.
    let mut got_update = false;
    let mut keepalives = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, raw.recv()).await {
            Ok(Some(Message::Keepalive)) => {
                keepalives += 1;
                raw.send(&Message::Keepalive).await;
            }
            Ok(Some(Message::Update(u))) => got_update |= u.nlri == vec!["198.19.8.0/24".parse().unwrap()],
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert!(got_update, "our UPDATE reached the peer");
    assert!(keepalives >= 9, "keepalives every second with hold 3, got {keepalives}");
    let snap = s.peer.snapshot().await.unwrap();
    assert_eq!(snap.state, State::Established);
    assert_eq!(snap.prefixes_received, 1);
}

#[tokio::test]
async fn silent_peer_is_dropped_by_the_hold_timer_with_4_0() {
    let mut s = speaker(3).await;
    let mut raw = Raw::establish(s.port, 3).await;
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Established { .. }));
    let n = raw.notification().await;
    assert_eq!((n.code, n.subcode), (4, 0));
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Down { reason: DownReason::HoldTimerExpired, .. }));
}

#[tokio::test]
async fn bad_marker_gets_1_1() {
    let s = speaker(90).await;
    let mut raw = Raw::connect(s.port).await;
    raw.send_raw(&[0u8; 19]).await;
    let n = raw.notification().await;
    assert_eq!((n.code, n.subcode), (1, 1));
}

#[tokio::test]
async fn bad_open_version_gets_2_1_with_supported_version() {
    let s = speaker(90).await;
    let mut raw = Raw::connect(s.port).await;
    let mut open = Open::new(65000, 90, "198.18.0.2".parse().unwrap(), vec![]);
    open.version = 3;
    raw.send(&Message::Open(open)).await;
    let n = raw.notification().await;
    assert_eq!((n.code, n.subcode, n.data.to_vec()), (2, 1, vec![0, 4]));
}

#[tokio::test]
async fn broken_optional_attribute_is_treat_as_withdraw_without_reset() {
    let mut s = speaker(90).await;
    let mut raw = Raw::establish(s.port, 90).await;
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Established { .. }));
    raw.send(&Message::Update(route("198.19.9.0/24"))).await;
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Update { .. }));
    // Same prefix again with COMMUNITIES of length 3 (RFC 7606 7.8: treat-as-withdraw).
    let mut bytes = Message::Update(route("198.19.9.0/24")).to_bytes(&CODEC).unwrap().to_vec();
    let nlri = bytes.split_off(bytes.len() - 4);
    bytes.extend_from_slice(&[0xc0, 8, 3, 0, 0, 1]);
    bytes.extend_from_slice(&nlri);
    let len = bytes.len() as u16;
    bytes[16..18].copy_from_slice(&len.to_be_bytes());
    let alen = u16::from_be_bytes([bytes[21], bytes[22]]) + 6;
    bytes[21..23].copy_from_slice(&alen.to_be_bytes());
    raw.send_raw(&bytes).await;
    match next_event(&mut s.events).await {
        PeerEvent::Update { update, attr_errors, .. } => {
            assert_eq!(attr_errors[0].action, AttrAction::TreatAsWithdraw);
            assert_eq!(update.withdrawn, vec!["198.19.9.0/24".parse().unwrap()]);
            assert!(update.nlri.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let snap = s.peer.snapshot().await.unwrap();
    assert_eq!(snap.state, State::Established, "no reset for treat-as-withdraw");
    assert_eq!(snap.prefixes_received, 0);
}

#[tokio::test]
async fn truncated_nlri_resets_with_3_10() {
    let mut s = speaker(90).await;
    let mut raw = Raw::establish(s.port, 90).await;
    assert!(matches!(next_event(&mut s.events).await, PeerEvent::Established { .. }));
    let mut bytes = Message::Update(route("198.19.9.0/24")).to_bytes(&CODEC).unwrap().to_vec();
    bytes.truncate(bytes.len() - 2); // NLRI says /24 but carries one octet
    let len = bytes.len() as u16;
    bytes[16..18].copy_from_slice(&len.to_be_bytes());
    raw.send_raw(&bytes).await;
    let n = raw.notification().await;
    assert_eq!((n.code, n.subcode), (3, 10));
}

#[tokio::test]
async fn connections_from_unconfigured_addresses_are_refused() {
    // No peer is configured for 127.0.0.1, so the listener closes without an OPEN.
    let listener = Listener::bind(&["127.0.0.1:0".parse().unwrap()], vec![], None).unwrap();
    let mut raw = Raw::connect(listener.local_addrs()[0].port()).await;
    assert_eq!(raw.recv().await, None);
}

#[tokio::test]
async fn connections_inside_a_listen_range_are_offered_to_the_owner() {
    let (tx, mut rx) = mpsc::channel(1);
    let listener = Listener::bind(&["127.0.0.1:0".parse().unwrap()], vec!["127.0.0.0/8".parse().unwrap()], Some(tx)).unwrap();
    let _raw = Raw::connect(listener.local_addrs()[0].port()).await;
    let unknown = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(unknown.remote.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
}

/// The whole speaker (no listener), connected to a raw iBGP peer at 127.0.0.1 without
/// graceful restart; the FIB stream is the caller's to read or drop.
async fn speaker_with_raw_peer(mut config: SpeakerConfig) -> (gingham_bgp::speaker::SpeakerHandle, mpsc::Receiver<FibUpdate>, Raw) {
    let port_for_us = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.listen = Vec::new();
    let (handle, fib) = gingham_bgp::speaker::spawn(config).unwrap();
    let mut neighbor = NeighborConfig::new("127.0.0.1".parse().unwrap(), 65000);
    neighbor.port = port_for_us.local_addr().unwrap().port();
    neighbor.connect_retry = Duration::from_millis(100);
    neighbor.graceful_restart = None;
    handle.add_peer(neighbor).await.unwrap();
    let raw = Raw::accept(&port_for_us, 90).await;
    (handle, fib, raw)
}

/// `n` /32s from the raw peer, 700 to an UPDATE.
async fn send_table(raw: &mut Raw, n: u32) -> Vec<Ipv4Network> {
    let prefixes: Vec<Ipv4Network> = (0..n).map(|i| Ipv4Network::new(Ipv4Addr::from(0xc613_0000 + i), 32).unwrap()).collect();
    for chunk in prefixes.chunks(700) {
        let mut update = route("198.19.0.0/16");
        update.nlri = chunk.to_vec();
        raw.send(&Message::Update(update)).await;
    }
    prefixes
}

#[tokio::test]
async fn a_gone_gateway_hint_waits_for_a_full_fib_stream_and_goes_first() {
    // The FIB stream is not read while a peer's 3,000 routes arrive, so it fills (4 batches of
    // 256) and the rest wait in the RIB. The peer then goes: the hint that its next hop is gone
    // must still reach the FIB, before any withdrawal, or the FIB moves every route one by one.
    let (handle, mut fib, mut raw) = speaker_with_raw_peer(SpeakerConfig::new("198.18.0.1".parse().unwrap(), 65000)).await;
    let prefixes = send_table(&mut raw, 3000).await;
    let routes = || async { handle.routes(Family::IPV4_UNICAST).await.unwrap().len() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while routes().await < prefixes.len() {
        assert!(tokio::time::Instant::now() < deadline, "the speaker did not take the routes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(raw);
    while routes().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the peer's routes stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let gateway = Gateway::new("198.18.0.2".parse().unwrap());
    let (mut hint_seen, mut present) = (false, std::collections::HashSet::new());
    while !hint_seen || !present.is_empty() {
        let update =
            tokio::time::timeout(Duration::from_secs(10), fib.recv()).await.expect("FIB stream silent for 10 s").expect("speaker alive");
        match update {
            FibUpdate::GatewaysGone(gone) => {
                assert_eq!(gone, [gateway]);
                hint_seen = true;
            }
            FibUpdate::Routes(batch) => {
                for RouteChange { prefix, best } in batch {
                    if best.is_some() {
                        present.insert(prefix);
                    } else {
                        assert!(hint_seen, "a withdrawal of {prefix} came before the gone-gateway hint");
                        present.remove(&prefix);
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn a_speaker_whose_fib_stream_is_dropped_takes_routes_and_syncs() {
    // A route reflector out of the forwarding path drops the stream: route changes must not
    // pile up for it, and "synced" (which waits for every change to reach the stream) must
    // still come once the peer's table is in.
    let mut config = SpeakerConfig::new("198.18.0.1".parse().unwrap(), 65000);
    config.sync_deadline = Duration::from_millis(500);
    let (handle, fib, mut raw) = speaker_with_raw_peer(config).await;
    drop(fib);
    let prefixes = send_table(&mut raw, 3000).await;
    raw.send(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))).await;
    tokio::time::timeout(Duration::from_secs(10), handle.wait_synced()).await.expect("synced within 10 s").unwrap();
    assert_eq!(handle.routes(Family::IPV4_UNICAST).await.unwrap().len(), prefixes.len());
}
