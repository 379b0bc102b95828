//! The load side of the benchmark: BGP sessions of our own on `gingham_bgp::wire`, cheap enough
//! that neither end is the bottleneck. An injector writes pre-encoded UPDATEs as fast as the
//! socket takes them; a receiver only walks the prefixes of each UPDATE and keeps, per prefix,
//! whether it is announced (a bit), with the time each slice of prefixes became wholly present
//! or wholly absent.
//!
//! Every session runs in threads of this process, so the injectors' and receivers' timestamps
//! are on one clock.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use gingham_bgp::wire::{split_frame, AsPath, Capability, Family, Message, Open, Origin, PathAttributes, SessionCodec, HEADER_LEN};
use ipnetwork::{IpNetwork, Ipv4Network};

pub const ASN: u32 = 65000;
const HOLD_TIME: u16 = 90;
/// Prefix `i` of the benchmark is the /24 at 10.0.0.0 + i * 256 (100k of them reach into 11/8;
/// they only ever live in BGP tables).
const BASE: u32 = 10 << 24;

pub fn prefix(i: usize) -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(BASE + ((i as u32) << 8)), 24).expect("valid prefix"))
}

fn codec() -> SessionCodec {
    SessionCodec::new(true, false)
}

/// One established session: the writer half behind a lock (keepalives from the reader thread
/// and bulk writes must not interleave inside a message).
pub struct Session {
    pub local: Ipv4Addr,
    writer: Arc<Mutex<TcpStream>>,
    /// The read half and what was read past the OPEN exchange, until the reader thread takes it.
    reader: Option<(TcpStream, BytesMut)>,
    /// A third of the negotiated hold time (a lab agent asks for 9 s); `None` for no hold timer.
    keepalive_every: Option<Duration>,
}

impl Session {
    /// Connects from `local` to the device's port 179 and completes the OPEN exchange,
    /// retrying until the device accepts (it may still be starting) or `timeout` passes.
    pub fn establish(local: Ipv4Addr, device: Ipv4Addr, timeout: Duration) -> Result<Session> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::try_establish(local, device) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > deadline => return Err(e.context(format!("session {local} -> {device}"))),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn try_establish(local: Ipv4Addr, device: Ipv4Addr) -> Result<Session> {
        // std cannot bind before connecting; tokio's socket can, then hands the stream over.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let connected = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((local, 0)))?;
            let stream = tokio::time::timeout(Duration::from_secs(3), socket.connect(SocketAddr::from((device, 179)))).await??;
            anyhow::Ok(stream.into_std()?)
        })?;
        let stream = connected;
        stream.set_nonblocking(false)?;
        Self::handshake(stream, local)
    }

    /// Both ends send OPEN at once; each answers the other's OPEN with a KEEPALIVE, and the
    /// session is up once the other's KEEPALIVE arrives.
    fn handshake(mut stream: TcpStream, local: Ipv4Addr) -> Result<Session> {
        stream.set_nodelay(true)?;
        let caps = vec![Capability::Multiprotocol(Family::IPV4_UNICAST), Capability::FourOctetAs(ASN), Capability::RouteRefresh];
        let open = Message::Open(Open::new(ASN, HOLD_TIME, local, caps)).to_bytes(&codec())?;
        stream.write_all(&open)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = BytesMut::new();
        let (mut got_open, mut got_keepalive) = (false, false);
        let mut hold = HOLD_TIME;
        while !got_keepalive {
            let frame = read_frame(&mut stream, &mut buf)?.context("closed during the OPEN exchange")?;
            match frame.kind {
                1 if !got_open => {
                    got_open = true;
                    // OPEN: version, my AS (2 octets), hold time (2 octets), ...
                    let theirs = frame.body.get(3..5).context("short OPEN")?;
                    hold = hold.min(u16::from_be_bytes([theirs[0], theirs[1]]));
                    stream.write_all(&Message::Keepalive.to_bytes(&codec())?)?;
                }
                4 if got_open => got_keepalive = true,
                3 => bail!("NOTIFICATION during the OPEN exchange"),
                _ => {}
            }
        }
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        // Whatever followed the KEEPALIVE in the buffer is the start of the table: keep it.
        let reader = (stream.try_clone()?, buf);
        let keepalive_every = (hold > 0).then(|| Duration::from_secs(u64::from(hold)) / 3);
        Ok(Session { local, writer: Arc::new(Mutex::new(stream)), reader: Some(reader), keepalive_every })
    }

    /// Writes `bytes` whole (one lock for all of it).
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        self.writer.lock().expect("writer lock").write_all(bytes)?;
        Ok(())
    }

    /// Starts the thread that reads everything the device sends (counting it into `tally` when
    /// given) and sends our keepalives; it ends when the session is shut down.
    pub fn spawn_reader(&mut self, tally: Option<Arc<Tally>>) -> std::thread::JoinHandle<()> {
        let (mut stream, mut buf) = self.reader.take().expect("one reader per session");
        let writer = self.writer.clone();
        let every = self.keepalive_every;
        std::thread::spawn(move || {
            let mut last_keepalive = Instant::now();
            let keepalive = Message::Keepalive.to_bytes(&codec()).expect("a keepalive encodes");
            loop {
                if every.is_some_and(|e| last_keepalive.elapsed() >= e) {
                    if writer.lock().expect("writer lock").write_all(&keepalive).is_err() {
                        return;
                    }
                    last_keepalive = Instant::now();
                }
                match read_frame(&mut stream, &mut buf) {
                    Ok(Some(frame)) => {
                        if let (2, Some(t)) = (frame.kind, &tally) {
                            t.count(&frame.body);
                        }
                    }
                    Ok(None) => return,
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
        })
    }

    pub fn shutdown(&self) {
        let _ = self.writer.lock().expect("writer lock").shutdown(Shutdown::Both);
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

struct RawFrame {
    kind: u8,
    body: Bytes,
}

/// The next whole message, reading more as needed; `None` at end of stream.
fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<RawFrame>> {
    loop {
        if let Some(frame) = split_frame(buf).map_err(|e| anyhow::anyhow!("bad frame from the device: {e:?}"))? {
            return Ok(Some(RawFrame { kind: frame.kind, body: frame.body() }));
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What one receiver holds: a bit per benchmark prefix, and when each slice of `slice`
/// prefixes became wholly present or wholly absent.
pub struct Tally {
    total: usize,
    slice: usize,
    state: Mutex<State>,
    pub present: AtomicUsize,
}

struct State {
    bits: Vec<u64>,
    per_slice: Vec<usize>,
    complete_at: Option<Instant>,
    /// (slice, now present, when)
    events: Vec<(usize, bool, Instant)>,
}

impl Tally {
    pub fn new(total: usize, slice: usize) -> Tally {
        let slices = total.div_ceil(slice);
        let state = State { bits: vec![0; total.div_ceil(64)], per_slice: vec![0; slices], complete_at: None, events: Vec::new() };
        Tally { total, slice, state: Mutex::new(state), present: AtomicUsize::new(0) }
    }

    /// When every prefix was first present at once.
    pub fn complete_at(&self) -> Option<Instant> {
        self.state.lock().expect("tally lock").complete_at
    }

    pub fn events(&self) -> Vec<(usize, bool, Instant)> {
        self.state.lock().expect("tally lock").events.clone()
    }

    /// Walks one UPDATE body: withdrawn routes, then (past the attributes) the NLRI. IPv4
    /// unicast without ADD-PATH, as every device sends it on these sessions.
    fn count(&self, body: &[u8]) {
        let now = Instant::now();
        let mut st = self.state.lock().expect("tally lock");
        let Some(wlen) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return };
        let withdrawn = body.get(2..2 + wlen).unwrap_or_default();
        let Some(alen) = body.get(2 + wlen..4 + wlen).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return };
        let nlri = body.get(4 + wlen + alen..).unwrap_or_default();
        for (bytes, on) in [(withdrawn, false), (nlri, true)] {
            let mut i = 0;
            while i < bytes.len() {
                let len = bytes[i] as usize;
                let n = len.div_ceil(8);
                let mut octets = [0u8; 4];
                octets[..n.min(4)].copy_from_slice(&bytes[i + 1..(i + 1 + n).min(bytes.len())][..n.min(4)]);
                i += 1 + n;
                let addr = u32::from_be_bytes(octets);
                if len != 24 || addr < BASE {
                    continue;
                }
                let idx = ((addr - BASE) >> 8) as usize;
                if idx < self.total {
                    self.set(&mut st, idx, on, now);
                }
            }
        }
        if st.complete_at.is_none() && self.present.load(Ordering::Relaxed) == self.total {
            st.complete_at = Some(now);
        }
    }

    fn set(&self, st: &mut State, idx: usize, on: bool, now: Instant) {
        let (word, bit) = (idx / 64, 1u64 << (idx % 64));
        if (st.bits[word] & bit != 0) == on {
            return;
        }
        st.bits[word] ^= bit;
        let slice = idx / self.slice;
        let size = self.slice.min(self.total - slice * self.slice);
        if on {
            self.present.fetch_add(1, Ordering::Relaxed);
            st.per_slice[slice] += 1;
            if st.per_slice[slice] == size {
                st.events.push((slice, true, now));
            }
        } else {
            self.present.fetch_sub(1, Ordering::Relaxed);
            st.per_slice[slice] -= 1;
            if st.per_slice[slice] == 0 {
                st.events.push((slice, false, now));
            }
        }
    }
}

/// The UPDATEs that announce (or withdraw) `prefixes` from `next_hop`, packed as full as the
/// 4096-octet limit allows and encoded once, back to back.
pub fn encode_updates(prefixes: impl Iterator<Item = usize>, next_hop: Ipv4Addr, announce: bool) -> Result<Vec<u8>> {
    let nets: Vec<IpNetwork> = prefixes.map(prefix).collect();
    let attrs = Arc::new(PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        next_hop: Some(next_hop),
        local_pref: Some(100),
        ..Default::default()
    });
    let codec = codec();
    let updates = match announce {
        true => gingham_bgp::rib::pack::pack(nets.into_iter().map(|n| (n, attrs.clone())).collect(), Vec::new(), &codec),
        false => gingham_bgp::rib::pack::pack(Vec::new(), nets, &codec),
    };
    let mut out = Vec::with_capacity(updates.len() * 4096);
    for u in updates {
        out.extend_from_slice(&Message::Update(u).to_bytes(&codec)?);
    }
    debug_assert!(out.len() >= HEADER_LEN);
    Ok(out)
}

/// A plain counting receiver in a device's place: listens on `addr` port 179, hands its tally
/// to `ready` as soon as the socket listens, takes one session and counts until it ends.
pub fn accept_one(addr: Ipv4Addr, total: usize, ready: std::sync::mpsc::Sender<Arc<Tally>>) -> Result<()> {
    let listener = std::net::TcpListener::bind((addr, 179))?;
    let tally = Arc::new(Tally::new(total, total));
    ready.send(tally.clone())?;
    let (stream, _) = listener.accept()?;
    let mut session = Session::handshake(stream, addr)?;
    session.spawn_reader(Some(tally)).join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    Ok(())
}
