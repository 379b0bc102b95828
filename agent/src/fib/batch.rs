//! Route writes in bulk. One request per `sendmsg` and one acknowledgement per `recvmsg`, as
//! `ip -batch` and rtnetlink's handle do, spends more time in system calls than the kernel
//! spends inserting the route; here hundreds of requests go in one buffer (the kernel works
//! through a buffer message by message, in order, before `sendmsg` returns) and only the last
//! asks for an acknowledgement: the kernel answers a request without `NLM_F_ACK` only when it
//! fails, so the answers read before the last one's acknowledgement are every failure of the
//! buffer, each matched to its request by sequence number, and the rest succeeded. That saves
//! the kernel a message per route and us reading it. The messages are the ones
//! [`super::kernel`] builds, so both paths write exactly the same routes.

use std::collections::HashMap;

use gingham_bgp::rib::FastHash;

use rtnetlink::packet_core::Parseable;
use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::plan::Op;
use super::wire::{self, messages, NLMSG_DONE, NLMSG_ERROR};
use super::{kernel, nexthop};

/// Requests per `sendmsg`: a route message is 60 to 100 octets, and the answers to a batch (an
/// acknowledgement each for nexthop requests, a failure each at worst for routes) must fit the
/// socket's receive buffer.
const BATCH: usize = 512;
const RECEIVE_BUFFER: usize = 4 << 20;

/// The caller's index of each request sent, by sequence number.
type Pending = HashMap<u32, usize, FastHash>;

pub struct Batcher {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl Batcher {
    /// A netlink socket in the calling thread's network namespace (it stays there).
    pub fn new() -> std::io::Result<Batcher> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: a smaller buffer only means the default one, and BATCH fits in that.
        let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        // Failed requests are acknowledged with the error alone, not a copy of the request.
        let _ = socket.set_cap_ack(true);
        Ok(Batcher { socket, sequence: 0, buf: Vec::new() })
    }

    /// Carries out `ops`, in order; one result per op. A delete the kernel answers with "no
    /// such route" succeeded (someone removed it first).
    pub fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), String>> {
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(BATCH) {
            results.extend(self.apply_chunk(chunk));
        }
        results
    }

    fn apply_chunk(&mut self, ops: &[Op]) -> Vec<Result<(), String>> {
        let mut codes: Vec<Result<i32, String>> = vec![Err("no acknowledgement from the kernel".into()); ops.len()];
        let mut pending: Pending = HashMap::with_capacity_and_hasher(ops.len(), FastHash::default());
        self.buf.clear();
        let mut last = None;
        for (i, op) in ops.iter().enumerate() {
            let (message, flags) = match op {
                Op::Add(key, p) => (kernel::build(key, p).map(RouteNetlinkMessage::NewRoute), NLM_F_CREATE | NLM_F_EXCL),
                Op::Replace(key, p) => (kernel::build(key, p).map(RouteNetlinkMessage::NewRoute), NLM_F_CREATE | NLM_F_REPLACE),
                Op::Delete(route) => (kernel::build_delete(route).map(RouteNetlinkMessage::DelRoute), 0),
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    codes[i] = Err(e.to_string());
                    continue;
                }
            };
            self.sequence = self.sequence.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | flags;
            header.sequence_number = self.sequence;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
            packet.finalize();
            let start = self.buf.len();
            self.buf.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut self.buf[start..]);
            pending.insert(self.sequence, i);
            last = Some((start, self.sequence));
        }
        if let Some((start, sequence)) = last {
            wire::add_flags(&mut self.buf[start..], NLM_F_ACK);
            self.answered(pending, &mut codes, Some(sequence));
        }
        codes
            .into_iter()
            .zip(ops)
            .map(|(code, op)| match code {
                Ok(0) => Ok(()),
                // Someone removed it first.
                Ok(e) if matches!(op, Op::Delete(_)) && e == -libc::ESRCH => Ok(()),
                Ok(e) => Err(std::io::Error::from_raw_os_error(-e).to_string()),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Sends the requests in `self.buf` and reads the kernel's answers: for each request
    /// (`pending` maps its sequence number to the caller's index), the answer (0, or a negative
    /// errno) in `codes`. With `quiet_until`, only that request (the last) asked for an
    /// acknowledgement: once it is answered, the others that got no answer succeeded.
    /// Otherwise every request asked, and one that got no answer is left as it is.
    fn answered(&mut self, mut pending: Pending, codes: &mut [Result<i32, String>], quiet_until: Option<u32>) {
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.socket.send(&self.buf, 0) {
            for (_, i) in pending.drain() {
                codes[i] = Err(e.to_string());
            }
            return;
        }
        let mut incoming = Vec::with_capacity(64 * 1024);
        while !pending.is_empty() {
            incoming.clear();
            if let Err(e) = self.socket.recv(&mut incoming, 0) {
                for (_, i) in pending.drain() {
                    codes[i] = Err(e.to_string());
                }
                return;
            }
            for (kind, sequence, payload) in messages(&incoming) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let Some(i) = pending.remove(&sequence) else { continue };
                // struct nlmsgerr: the error code (0: done), then the request's header.
                codes[i] = match wire::u32_at(payload, 0) {
                    Some(code) => Ok(code as i32),
                    None => Err("a truncated acknowledgement".into()),
                };
                if quiet_until == Some(sequence) {
                    for (_, i) in pending.drain() {
                        codes[i] = Ok(0);
                    }
                }
            }
        }
    }

    /// Carries out nexthop object requests (`encode` appends request `i` with the sequence
    /// number given); one result per request: `Ok` or the kernel's errno.
    pub fn nexthop_requests(&mut self, n: usize, mut encode: impl FnMut(&mut Vec<u8>, u32, usize)) -> Vec<Result<(), i32>> {
        let mut codes = vec![Err("no acknowledgement from the kernel".to_string()); n];
        for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
            self.buf.clear();
            let mut pending: Pending = HashMap::with_capacity_and_hasher(chunk.len(), FastHash::default());
            for &i in chunk {
                self.sequence = self.sequence.wrapping_add(1);
                encode(&mut self.buf, self.sequence, i);
                pending.insert(self.sequence, i);
            }
            self.answered(pending, &mut codes, None);
        }
        codes
            .into_iter()
            .map(|c| match c {
                Ok(0) => Ok(()),
                Ok(e) => Err(-e),
                Err(_) => Err(libc::EIO),
            })
            .collect()
    }

    /// Every nexthop object in the namespace; an error when the kernel has none to list
    /// (before Linux 5.3: `EOPNOTSUPP` or `EINVAL`).
    pub fn dump_nexthops(&mut self) -> std::io::Result<Vec<nexthop::Listed>> {
        let mut listed = Vec::new();
        self.dump(nexthop::encode_dump, nexthop::RTM_NEWNEXTHOP, |payload| {
            listed.extend(nexthop::decode(payload));
            Ok(())
        })?;
        Ok(listed)
    }

    /// Every route in the namespace (all tables, both families), each handed to `each` as it is
    /// decoded. Read here rather than through the rtnetlink handle: its connection queues a
    /// dump's messages faster than they are taken, and the queue keeps the capacity of its
    /// longest (5.5 MB for a full table, for good).
    pub fn dump_routes(&mut self, mut each: impl FnMut(&RouteMessage)) -> std::io::Result<()> {
        self.dump(encode_route_dump, RTM_NEWROUTE, |payload| {
            let route = RouteMessage::parse(payload)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a route in the dump does not decode: {e}")))?;
            each(&route);
            Ok(())
        })
    }

    /// Sends the dump request `encode` writes and hands each answer of kind `kind` to `each`,
    /// until the kernel's `NLMSG_DONE`.
    fn dump(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, u32),
        kind: u16,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.buf.clear();
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        encode(&mut self.buf, sequence);
        self.socket.send(&self.buf, 0)?;
        let mut incoming = Vec::with_capacity(64 * 1024);
        loop {
            incoming.clear();
            self.socket.recv(&mut incoming, 0)?;
            for (answer, seq, payload) in messages(&incoming) {
                if seq != sequence {
                    continue;
                }
                match answer {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = wire::u32_at(payload, 0).map_or(libc::EIO, |c| -(c as i32));
                        return Err(std::io::Error::from_raw_os_error(code));
                    }
                    k if k == kind => each(payload)?,
                    _ => {}
                }
            }
        }
    }
}

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// `struct rtmsg`: family, lengths, tos, table, protocol, scope, type, flags.
const RTMSG: usize = 12;

/// A dump of every route: an all-zero `rtmsg` is `AF_UNSPEC`, both families at once.
fn encode_route_dump(buf: &mut Vec<u8>, sequence: u32) {
    let start = wire::push_header(buf, RTM_GETROUTE, wire::NLM_F_REQUEST | wire::NLM_F_DUMP, sequence);
    buf.extend_from_slice(&[0; RTMSG]);
    wire::finish(buf, start);
}

/// Two bulk writers, one per core. The kernel takes the routing lock per message, so one
/// writer's message building and reading of answers overlap with the other's inserts.
/// Ops are split by prefix, so every op on one prefix stays on one writer, in order.
pub struct Writers {
    writers: [Batcher; 2],
}

/// Ops with their place in the caller's list.
type Numbered = Vec<(usize, Op)>;
type Done = Vec<(usize, Op, Result<(), String>)>;

impl Writers {
    pub fn new() -> std::io::Result<Writers> {
        Ok(Writers { writers: [Batcher::new()?, Batcher::new()?] })
    }

    /// The writer used on the calling thread.
    pub fn here(&mut self) -> &mut Batcher {
        &mut self.writers[0]
    }

    /// Carries out a few ops on the calling thread: one `sendmsg` and its acknowledgements,
    /// less than a thread handoff costs (and no thread, with the memory it keeps, for a node
    /// whose routes change a few at a time).
    pub fn apply_here(&mut self, ops: Vec<Op>) -> Vec<(Op, Result<(), String>)> {
        let results = self.writers[0].apply(&ops);
        ops.into_iter().zip(results).collect()
    }

    /// Carries out `ops` on blocking threads; each op with its result, in the order given.
    pub async fn apply(self, ops: Vec<Op>) -> Result<(Writers, Vec<(Op, Result<(), String>)>), tokio::task::JoinError> {
        let [a, b] = self.writers;
        let (first, second): (Numbered, Numbered) = ops.into_iter().enumerate().partition(|(_, op)| first_half(op));
        let (ra, rb) = tokio::join!(run(a, first), run(b, second));
        let ((a, mut done), (b, more)) = (ra?, rb?);
        done.extend(more);
        done.sort_by_key(|(i, _, _)| *i);
        Ok((Writers { writers: [a, b] }, done.into_iter().map(|(_, op, r)| (op, r)).collect()))
    }
}

fn run(mut writer: Batcher, part: Numbered) -> tokio::task::JoinHandle<(Batcher, Done)> {
    tokio::task::spawn_blocking(move || {
        let (indices, ops): (Vec<usize>, Vec<Op>) = part.into_iter().unzip();
        let results = writer.apply(&ops);
        let done = indices.into_iter().zip(ops).zip(results).map(|((i, op), r)| (i, op, r)).collect();
        (writer, done)
    })
}

/// Which writer takes an op: a mix of its prefix (neighbouring prefixes differ in low address
/// bits, so the bits are mixed before one is taken).
fn first_half(op: &Op) -> bool {
    let prefix = op.key().prefix;
    let addr = match prefix.network() {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let folded = (addr as u64) ^ ((addr >> 64) as u64) ^ u64::from(prefix.prefix());
    folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 0
}
