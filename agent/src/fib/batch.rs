//! Route writes in bulk. One request per `sendmsg` and one acknowledgement per `recvmsg`, as
//! `ip -batch` and rtnetlink's handle do, spends more time in system calls than the kernel
//! spends inserting the route; here hundreds of requests go in one buffer (the kernel works
//! through a buffer message by message) and their acknowledgements are read back in bulk, each
//! matched to its request by sequence number. The messages are the ones [`super::kernel`]
//! builds, so both paths write exactly the same routes.

use std::collections::HashMap;

use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::kernel;
use super::plan::Op;

/// Requests per `sendmsg`: a route message is 60 to 100 octets, and the acknowledgements of a
/// batch must fit the socket's receive buffer.
const BATCH: usize = 512;
const RECEIVE_BUFFER: usize = 4 << 20;

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
        let mut results: Vec<Result<(), String>> = vec![Err("no acknowledgement from the kernel".into()); ops.len()];
        let mut pending: HashMap<u32, usize> = HashMap::with_capacity(ops.len());
        self.buf.clear();
        for (i, op) in ops.iter().enumerate() {
            let (message, flags) = match op {
                Op::Add(key, p) => (kernel::build(key, p).map(RouteNetlinkMessage::NewRoute), NLM_F_CREATE | NLM_F_EXCL),
                Op::Replace(key, p) => (kernel::build(key, p).map(RouteNetlinkMessage::NewRoute), NLM_F_CREATE | NLM_F_REPLACE),
                Op::Delete(route) => (kernel::build_delete(route).map(RouteNetlinkMessage::DelRoute), 0),
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    results[i] = Err(e.to_string());
                    continue;
                }
            };
            self.sequence = self.sequence.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = self.sequence;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
            packet.finalize();
            let start = self.buf.len();
            self.buf.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut self.buf[start..]);
            pending.insert(self.sequence, i);
        }
        if pending.is_empty() {
            return results;
        }
        if let Err(e) = self.socket.send(&self.buf, 0) {
            let e = e.to_string();
            return results
                .into_iter()
                .enumerate()
                .map(|(i, r)| if pending.values().any(|&p| p == i) { Err(e.clone()) } else { r })
                .collect();
        }
        let mut incoming = Vec::with_capacity(64 * 1024);
        while !pending.is_empty() {
            incoming.clear();
            if let Err(e) = self.socket.recv(&mut incoming, 0) {
                let e = e.to_string();
                for (_, i) in pending.drain() {
                    results[i] = Err(e.clone());
                }
                break;
            }
            let mut at = 0;
            while at < incoming.len() {
                let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&incoming[at..]) else { break };
                let len = message.header.length as usize;
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
                let Some(i) = pending.remove(&message.header.sequence_number) else { continue };
                results[i] = match message.payload {
                    NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
                    NetlinkPayload::Error(e) if matches!(ops[i], Op::Delete(_)) && e.raw_code() == -libc::ESRCH => Ok(()),
                    NetlinkPayload::Error(e) => Err(std::io::Error::from_raw_os_error(-e.raw_code()).to_string()),
                    _ => Ok(()),
                };
            }
        }
        results
    }
}

/// Two bulk writers, one per core. The kernel takes the routing lock per message, so one
/// writer's message building and acknowledgement reading overlap with the other's inserts.
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
