//! A raw sender throws malformed messages at our speaker while it also serves BIRD. Needs
//! root.
//!
//! ```text
//!   h1 gingham 198.18.0.11   h2 BIRD 198.18.0.12 (iBGP)   h3 raw sender 198.18.0.13
//! ```
//! Verifies:
//! 1. a malformed header gets NOTIFICATION 1/1, 1/2 (with the bad length) or 1/3;
//! 2. a bad OPEN gets 2/1, 2/2, 2/3 or 2/6;
//! 3. an UPDATE with a broken optional attribute is treated as withdraw: no NOTIFICATION,
//!    the session stays up and the prefix is gone;
//! 4. a truncated UPDATE resets with 3/1;
//! 5. throughout, the BIRD session never goes down and keeps its routes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use gingham_bgp::fsm::{DampingConfig, FsmConfig, State};
use gingham_bgp::session::{PeerConfig, Transport};
use gingham_bgp::wire::*;
use gingham_integration::daemons::Bird;
use gingham_integration::netns::{wait_for, Fabric};
use gingham_integration::sessions::{NsRuntime, Sessions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CODEC: SessionCodec = SessionCodec { four_octet_as: true, ebgp: false };

const BIRD_CONF: &str = r#"
router id 198.18.0.12;
protocol device {}
protocol direct { ipv4; }
protocol static { ipv4; route 198.19.2.0/24 unreachable; }
protocol bgp gingham {
  local 198.18.0.12 as 65000; neighbor 198.18.0.11 as 65000;
  hold time 9; keepalive time 3;
  ipv4 { import all; export where source = RTS_STATIC; };
}
"#;

/// Connects until our speaker accepts (it refuses while damping a failed attempt), sends
/// `first`, and returns the NOTIFICATION it answers with (None if it closes without one).
async fn exchange(first: Vec<u8>, establish_first: bool, then: Vec<u8>) -> (Option<Notification>, bool) {
    let mut stream = loop {
        let mut s = TcpStream::connect("198.18.0.11:179").await.expect("connect");
        let mut buf = BytesMut::new();
        // Our speaker sends OPEN at once when it accepts; a refused connection just closes.
        match tokio::time::timeout(Duration::from_secs(5), read_message(&mut s, &mut buf)).await {
            Ok(Some(Message::Open(_))) => break (s, buf),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let (s, buf) = &mut stream;
    if establish_first {
        let open = Open::new(65013, 90, "198.18.0.13".parse().unwrap(), vec![Capability::Multiprotocol(Family::IPV4_UNICAST)]);
        s.write_all(&Message::Open(open).to_bytes(&CODEC).unwrap()).await.unwrap();
        assert_eq!(read_message(s, buf).await, Some(Message::Keepalive));
        s.write_all(&Message::Keepalive.to_bytes(&CODEC).unwrap()).await.unwrap();
    }
    s.write_all(&first).await.unwrap();
    if !then.is_empty() {
        s.write_all(&then).await.unwrap();
    }
    let mut notification = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, read_message(s, buf)).await {
            Ok(Some(Message::Notification(n))) => notification = Some(n),
            Ok(Some(_)) => continue,
            Ok(None) => return (notification, true),
            Err(_) => return (notification, false),
        }
    }
}

async fn read_message(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
    loop {
        if let Ok(Some(f)) = split_frame(buf) {
            return decode_frame(&f, &CODEC).ok().map(|d| d.message);
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn update(prefix: &str, extra_attr: &[u8]) -> Vec<u8> {
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65013])),
            next_hop: Some("198.18.0.13".parse().unwrap()),
            ..Default::default()
        },
        nlri: vec![prefix.parse().unwrap()],
        ..Default::default()
    };
    let mut bytes = Message::Update(u).to_bytes(&CODEC).unwrap().to_vec();
    if !extra_attr.is_empty() {
        let nlri = bytes.split_off(bytes.len() - 4);
        bytes.extend_from_slice(extra_attr);
        bytes.extend_from_slice(&nlri);
        let alen = u16::from_be_bytes([bytes[21], bytes[22]]) + extra_attr.len() as u16;
        bytes[21..23].copy_from_slice(&alen.to_be_bytes());
        let len = bytes.len() as u16;
        bytes[16..18].copy_from_slice(&len.to_be_bytes());
    }
    bytes
}

fn open_with(f: impl FnOnce(&mut Open)) -> Vec<u8> {
    let mut o = Open::new(65013, 90, "198.18.0.13".parse().unwrap(), vec![]);
    f(&mut o);
    Message::Open(o).to_bytes(&CODEC).unwrap().to_vec()
}

#[test]
fn malformed_input_gets_the_right_notification_and_other_peers_are_untouched() {
    let fabric = Fabric::new(3).unwrap();
    let bird = Bird::start(&fabric.hosts[1].ns, BIRD_CONF).unwrap();
    let mut speaker = Sessions::start(&fabric.hosts[0].ns, vec!["0.0.0.0:179".parse().unwrap()]).unwrap();
    let mut fsm = FsmConfig::new(65000, "198.18.0.11".parse().unwrap(), 65000);
    fsm.hold_time = 9;
    fsm.connect_retry = Duration::from_secs(2);
    speaker.add_peer("bird", PeerConfig::new(fsm, Transport::new("198.18.0.12:179".parse().unwrap())));
    // The raw sender: passive on our side, quick damping so the cases follow each other fast.
    let mut raw = FsmConfig::new(65000, "198.18.0.11".parse().unwrap(), 65013);
    raw.passive = true;
    raw.damping = DampingConfig {
        initial_idle_hold: Duration::from_millis(100),
        max_idle_hold: Duration::from_millis(400),
        stable_period: Duration::from_secs(60),
    };
    speaker.add_peer("raw", PeerConfig::new(raw, Transport::new("198.18.0.13:179".parse().unwrap())));

    let bird_addr: SocketAddr = "198.18.0.12:179".parse().unwrap();
    wait_for("BIRD session", Duration::from_secs(30), || speaker.view().received.get(&bird_addr).filter(|t| !t.is_empty()).map(|_| ()))
        .unwrap_or_else(|e| panic!("{e}\n{}", bird.daemon.log_tail()));

    let sender = NsRuntime::new(&fabric.hosts[2].ns).unwrap();
    let code = |first: Vec<u8>, established: bool, then: Vec<u8>| {
        let (n, closed) = sender.block_on(exchange(first, established, then));
        (n.map(|n| (n.code, n.subcode, n.data.to_vec())), closed)
    };

    // 1. Header errors.
    let mut bad_marker = message(4, &[]);
    bad_marker[0] = 0;
    assert_eq!(code(bad_marker, false, vec![]), (Some((1, 1, vec![])), true));
    assert_eq!(code(message(4, &[0]), false, vec![]), (Some((1, 2, vec![0, 20])), true));
    assert_eq!(code(message(9, &[]), false, vec![]), (Some((1, 3, vec![9])), true));

    // 2. OPEN errors.
    assert_eq!(code(open_with(|o| o.version = 3), false, vec![]).0, Some((2, 1, vec![0, 4])));
    assert_eq!(
        code(
            open_with(|o| {
                o.my_as = 65099;
                o.capabilities.clear();
            }),
            false,
            vec![]
        )
        .0
        .map(|c| (c.0, c.1)),
        Some((2, 2))
    );
    let mut zero_id = open_with(|_| {});
    zero_id[24..28].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(code(zero_id, false, vec![]).0.map(|c| (c.0, c.1)), Some((2, 3)));
    let mut hold2 = open_with(|_| {});
    hold2[22..24].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(code(hold2, false, vec![]).0.map(|c| (c.0, c.1)), Some((2, 6)));

    // 3. Treat-as-withdraw: announce, then re-announce with COMMUNITIES of length 3.
    let raw_addr: SocketAddr = "198.18.0.13:179".parse().unwrap();
    let (n, closed) = sender.block_on(async {
        exchange(update("198.19.13.0/24", &[]), true, {
            // Sent after a pause so the first UPDATE is seen on its own.
            update("198.19.13.0/24", &[0xc0, 8, 3, 0, 0, 1])
        })
        .await
    });
    assert_eq!(n, None, "no NOTIFICATION for treat-as-withdraw");
    assert!(!closed, "session kept open");
    let view = speaker.view();
    assert!(view.treat_as_withdraw >= 1);
    assert!(view.received.get(&raw_addr).is_none_or(|t| !t.contains_key(&"198.19.13.0/24".parse().unwrap())), "prefix withdrawn");

    // 4. Truncated UPDATE: withdrawn-routes length runs past the message.
    assert_eq!(code(message(2, &[0, 40, 0, 0]), true, vec![]).0.map(|c| (c.0, c.1)), Some((3, 1)));

    // 5. BIRD never noticed.
    assert!(bird.established("gingham"));
    assert_eq!(speaker.snapshot("bird").unwrap().state, State::Established);
    assert!(speaker.view().downs.iter().all(|(p, _)| *p != bird_addr), "BIRD session went down: {:?}", speaker.view().downs);
    assert!(speaker.view().received[&bird_addr].contains_key(&"198.19.2.0/24".parse().unwrap()));
}
