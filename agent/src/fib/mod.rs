//! The FIB syncer: the one owner of every kernel route carrying our protocol number (learned
//! routes, block blackholes, pod host routes). Others tell it what they want over a channel;
//! it plans the difference against its model of the kernel ([`plan`], pure) and carries it out
//! with netlink requests in bulk (`batch.rs`; the messages are [`kernel`]'s). Every few
//! seconds (less often for a large table: the pause grows with what a re-read costs), and soon
//! after another protocol's route changes, it reads the table again: drift is repaired, next
//! hops are resolved anew, and routes of other protocols are never touched.
//!
//! A route that cannot be installed (its next hop is unreachable or ours, another protocol
//! holds its slot, the kernel refuses it) is reported once, counted, shown in `/status`, and
//! retried with a growing delay; it never holds up the others.
//!
//! Routes through gateways go through kernel nexthop objects where the kernel has them
//! ([`nexthop`]): when the speaker says a session's gateways are gone, their objects are
//! deleted first and the kernel moves or deletes every route through them at once; when they
//! come back, the routes that gain them wait for the rest of their group ([`widen`]), which
//! then takes the gateways in place.

mod batch;
pub mod kernel;
pub mod nexthop;
mod objects;
pub mod plan;
pub mod resolve;
pub mod store;
pub mod widen;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::MaybeDone;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rtnetlink::Handle;
use tokio::sync::{mpsc, oneshot};

use gingham_api::status::RouteProblem;
use gingham_bgp::rib::Gateway;
pub use plan::{Class, Target, WantKey};
use plan::{Form, KernelTable, Op, Programmed, RouteKey, RouteKind, RouteMetrics, Scope};
use resolve::Refusal;

use crate::netlink::RTPROT_GINGHAM;

const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// A resync costs time in proportion to the table (a full table from the ToR is a dump of every
/// route to read and compare): the next one waits this many times as long as the last took, so
/// resyncs use about 1% of a core at most, between [`RESYNC_EVERY`] and [`RESYNC_AT_MOST_EVERY`].
const RESYNC_COST_FACTOR: u32 = 100;
const RESYNC_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Work on at least this many routes (a resync of a large table, a session's table arriving or
/// going) ends by handing freed memory back to the system.
const GIVE_BACK_ABOVE: usize = 10_000;
/// A table arrives in many batches: memory is handed back once no change came for this long
/// after them (each time during the burst would redo the work the next batch undoes).
const GIVE_BACK_WHEN_QUIET: Duration = Duration::from_secs(1);
/// A burst of changes (a full table arriving) is planned and written in slices of this many
/// routes: the plan, the requests and their results are copies of what they touch, and a
/// table's worth of them at once would be the agent's largest moment.
const PLAN_AT_MOST: usize = 16 * 1024;
/// A change to another protocol's route is followed by a resync this soon (changes come in
/// bursts: one resync for the burst).
const FOLLOW_DELAY: Duration = Duration::from_millis(200);
/// Netlink requests in flight at once (without the bulk writer).
const PIPELINE: usize = 128;
/// Route writes up to this many are made on the FIB task itself (about a millisecond of
/// work); more go to blocking threads.
const WRITE_HERE: usize = 256;
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Problems listed in `/status` (all are counted).
const PROBLEMS_SHOWN: usize = 100;
/// Learned routes' metric unless configured: above the defaults of the kernel (IPv6: 1024),
/// systemd-networkd (1024) and NetworkManager (100-800), so the node's own default and
/// connected routes win where both exist.
pub const DEFAULT_LEARNED_METRIC: u32 = 2048;

pub enum FibCommand {
    /// Want each key to go to its target, or no route of ours for it (`None`).
    Set(Vec<(WantKey, Option<Target>)>),
    /// After a restart we keep every route of ours we find until the speaker has heard every
    /// peer's End-of-RIB; this says it has, so unwanted leftovers may go now.
    Synced,
    Stats(oneshot::Sender<FibStats>),
    /// Another protocol's route changed: resolutions may have too.
    KernelChanged,
    /// No BGP path has these next hops any more (a session ended); the changes that move the
    /// routes off them follow.
    GatewaysGone(Vec<Gateway>),
}

/// What `/status` shows of the FIB.
pub type FibStats = gingham_api::status::RouteStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone)]
pub struct FibOptions {
    pub learned_metric: u32,
    /// Counts each route that could not be installed, once per new reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// Routes through gateways go through kernel nexthop objects (when the kernel has them).
    pub kernel_nexthops: bool,
}

impl Default for FibOptions {
    fn default() -> FibOptions {
        FibOptions { learned_metric: DEFAULT_LEARNED_METRIC, failures: Family::default(), kernel_nexthops: true }
    }
}

#[derive(Clone)]
pub struct FibHandle {
    tx: mpsc::Sender<FibCommand>,
}

impl FibHandle {
    pub async fn set(&self, changes: Vec<(WantKey, Option<Target>)>) {
        if !changes.is_empty() {
            let _ = self.tx.send(FibCommand::Set(changes)).await;
        }
    }

    /// Wants (or no longer wants, `None`) each prefix's route of `class`.
    pub async fn set_class(&self, class: Class, changes: impl IntoIterator<Item = (IpNetwork, Option<Target>)>) {
        self.set(changes.into_iter().map(|(prefix, t)| (WantKey { prefix, class }, t)).collect()).await
    }

    pub async fn gateways_gone(&self, gateways: Vec<Gateway>) {
        if !gateways.is_empty() {
            let _ = self.tx.send(FibCommand::GatewaysGone(gateways)).await;
        }
    }

    pub async fn synced(&self) {
        let _ = self.tx.send(FibCommand::Synced).await;
    }

    pub async fn stats(&self) -> FibStats {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(FibCommand::Stats(tx)).await;
        rx.await.unwrap_or_default()
    }
}

/// Starts the FIB owner. It reads the kernel first, so the first plan already knows which
/// slots are someone else's and how next hops resolve.
pub fn spawn(handle: Handle, options: FibOptions) -> FibHandle {
    let (mut fib, tx, rx) = Fib::new(handle, options);
    tokio::spawn(async move {
        if let Err(e) = fib.read_kernel().await {
            tracing::warn!(error = %e, "reading the kernel's routes failed; retrying at the next resync");
        }
        fib.run(rx).await
    });
    FibHandle { tx }
}

/// [`spawn`], having read the kernel before it returns; also says whether the main table held
/// routes of ours (an agent ran before: a graceful restart). One read serves both (a full
/// table is a dump of 100,000 routes).
pub async fn start(handle: Handle, options: FibOptions) -> anyhow::Result<(FibHandle, bool)> {
    let (mut fib, tx, rx) = Fib::new(handle, options);
    fib.read_kernel().await.context("reading the kernel's routes")?;
    let ours = fib.table.routes.ours_len() > 0;
    tokio::spawn(fib.run(rx));
    Ok((FibHandle { tx }, ours))
}

impl Fib {
    fn new(handle: Handle, options: FibOptions) -> (Fib, mpsc::Sender<FibCommand>, mpsc::Receiver<FibCommand>) {
        let (tx, rx) = mpsc::channel(1024);
        if let Err(e) = follow_kernel(tx.clone()) {
            tracing::warn!(error = %e, "cannot follow kernel route changes; next hops are re-resolved every {RESYNC_EVERY:?} only");
        }
        let mut batcher = match batch::Writers::new() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "no netlink socket for bulk route writes; writing one route per request");
                None
            }
        };
        // Nexthop objects need the bulk socket (their messages are ours, not rtnetlink's), and a
        // kernel that can list them.
        let probe = batcher.as_mut().filter(|_| options.kernel_nexthops).map(|b| b.here().dump_nexthops());
        let nexthops = match probe {
            Some(Ok(_)) => Some(nexthop::Nexthops::default()),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the kernel lists no nexthop objects (Linux 5.3+); routes carry their gateways");
                None
            }
            None => None,
        };
        tracing::info!(kernel_nexthops = nexthops.is_some(), "FIB syncer ready");
        let fib = Fib {
            handle,
            batcher,
            metrics: RouteMetrics { learned: options.learned_metric },
            failures: options.failures,
            table: KernelTable::default(),
            nexthops,
            adopting: true,
            widening: widen::Widening::default(),
            releasing: false,
            problems: BTreeMap::new(),
            stats: FibStats::default(),
            in_flight: None,
        };
        (fib, tx, rx)
    }
}

/// Subscribes to the kernel's route notifications and turns changes to other protocols'
/// routes into [`FibCommand::KernelChanged`].
fn follow_kernel(tx: mpsc::Sender<FibCommand>) -> std::io::Result<()> {
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::AsyncSocket;
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    let groups = rtnetlink::constants::RTMGRP_IPV4_ROUTE | rtnetlink::constants::RTMGRP_IPV6_ROUTE;
    conn.socket_mut().socket_mut().bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
    {
        use std::os::fd::AsRawFd;
        if let Err(e) = drop_our_own(conn.socket_mut().socket_mut().as_raw_fd()) {
            tracing::debug!(error = %e, "no socket filter: notifications of our own routes are read and skipped");
        }
    }
    tokio::spawn(conn);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let route = match &msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r)) => r,
                _ => continue,
            };
            let foreign = u8::from(route.header.protocol) != RTPROT_GINGHAM;
            if foreign && tx.send(FibCommand::KernelChanged).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Has the kernel drop notifications of our own routes before they reach the socket: a full
/// table written would otherwise come back as that many messages to read and throw away.
fn drop_our_own(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // The route's protocol is octet 21 of a notification: the 16-octet netlink header, then
    // rtmsg's family, dst_len, src_len, tos, table, protocol. Each notification is a datagram
    // of its own.
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let mut program = [
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 21),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, u32::from(RTPROT_GINGHAM)),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: the program outlives the call (the kernel copies it); the fd is a valid socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

struct Fib {
    handle: Handle,
    /// Taken while a bulk write runs on a blocking thread; `None` also when it could not be made.
    batcher: Option<batch::Writers>,
    metrics: RouteMetrics,
    failures: Family<ReasonLabel, Counter>,
    /// The kernel as last read, kept current with our own successful operations.
    table: KernelTable,
    /// Our nexthop objects; `None` when routes carry their gateways instead.
    nexthops: Option<nexthop::Nexthops>,
    adopting: bool,
    /// Routes through a group that only gain gateways, waiting for the rest of the group.
    widening: widen::Widening,
    /// Set while held changes are carried out one by one: nothing is held then.
    releasing: bool,
    problems: BTreeMap<RouteKey, ProblemState>,
    stats: FibStats,
    /// A slice of a burst still being written while the next one is planned. Everything that
    /// plans against the model or uses the bulk writers outside [`Fib::plan_touched`] lands it
    /// first.
    in_flight: Option<InFlight>,
}

/// A slice being written, with what its results are judged against.
struct InFlight {
    started: Started,
    /// The slots the slice looked at.
    evaluated: BTreeSet<RouteKey>,
    /// It wrote static routes, through which the next slice's next hops may resolve.
    statics: bool,
}

/// A plan's ops handed to the kernel, and what their results are judged with.
struct Started {
    now: Instant,
    refused: BTreeMap<RouteKey, (Option<WantKey>, Refusal)>,
    /// Slots not written this time: waiting for their retry, or held for their group.
    waiting: BTreeSet<RouteKey>,
    write: Write,
}

/// Ops on their way to the kernel.
enum Write {
    Done(Vec<(Op, Result<(), String>)>),
    /// On the bulk writers' blocking threads; the writers come back with the results. The ops
    /// are kept to report them if the writers die with them.
    Bulk {
        task: MaybeDone<tokio::task::JoinHandle<Result<BulkResults, tokio::task::JoinError>>>,
        sent: Vec<Op>,
    },
}

/// Resolves once the slice in flight is written (at once for one written here); its results
/// stay with it for [`Fib::land`].
async fn written(in_flight: &mut Option<InFlight>) {
    if let Some(InFlight { started: Started { write: Write::Bulk { task, .. }, .. }, .. }) = in_flight {
        task.await
    }
}

type BulkResults = (batch::Writers, Vec<(Op, Result<(), String>)>);

/// What one batch of commands did.
struct Handled {
    /// Another protocol's route changed (learned routes may resolve through it).
    other_protocol_changed: bool,
    /// Wanted routes set or removed.
    routes: usize,
    /// A resync ran and handed freed memory back.
    gave_back: bool,
}

struct ProblemState {
    want: Option<WantKey>,
    refusal: Refusal,
    /// Kernel errors only: not tried again before this.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Fib {
    async fn run(mut self, mut rx: mpsc::Receiver<FibCommand>) {
        let mut next_resync = tokio::time::Instant::now() + RESYNC_EVERY;
        // What the last resync took: follow-ups to other protocols' changes wait ten times as
        // long, so a flapping route elsewhere cannot keep a node with a full table resyncing.
        let mut last_cost = Duration::ZERO;
        let mut follow: Option<tokio::time::Instant> = None;
        // Routes changed since memory was last handed back, and when to do it.
        let mut unreturned = 0;
        let mut give_back: Option<tokio::time::Instant> = None;
        loop {
            let follow_at = follow.unwrap_or_else(|| tokio::time::Instant::now() + RESYNC_EVERY * 2);
            let widen_at = self.widening.due().map(tokio::time::Instant::from_std);
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { return };
                    // Take whatever else is queued too, so a burst becomes one pipelined pass.
                    let mut batch = vec![command];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let handled = self.handle_batch(batch).await;
                    if handled.other_protocol_changed {
                        follow.get_or_insert_with(|| tokio::time::Instant::now() + FOLLOW_DELAY.max(last_cost * 10));
                    }
                    unreturned = if handled.gave_back { 0 } else { unreturned + handled.routes };
                    give_back = (unreturned >= GIVE_BACK_ABOVE).then(|| tokio::time::Instant::now() + GIVE_BACK_WHEN_QUIET);
                }
                // The last slice of a batch stays in flight while the next batch is planned
                // (a table arrives in hundreds of batches); taken in as soon as it is written,
                // and before anything below plans against the model.
                () = written(&mut self.in_flight), if self.in_flight.is_some() => self.land().await,
                _ = tokio::time::sleep_until(give_back.unwrap_or(follow_at)), if give_back.is_some() => {
                    give_back = None;
                    unreturned = 0;
                    self.land().await;
                    self.give_back_memory();
                }
                _ = tokio::time::sleep_until(follow_at), if follow.is_some() => {
                    follow = None;
                    last_cost = self.timed_resync().await;
                }
                _ = tokio::time::sleep_until(widen_at.unwrap_or(follow_at)), if widen_at.is_some() => {
                    self.land().await;
                    self.release_widenings().await;
                }
                _ = tokio::time::sleep_until(next_resync) => {
                    last_cost = self.timed_resync().await;
                    next_resync = tokio::time::Instant::now() + (last_cost * RESYNC_COST_FACTOR).clamp(RESYNC_EVERY, RESYNC_AT_MOST_EVERY);
                }
            }
        }
    }

    async fn handle_batch(&mut self, batch: Vec<FibCommand>) -> Handled {
        let mut touched: BTreeSet<WantKey> = BTreeSet::new();
        let mut kernel_changed = false;
        let mut synced = false;
        let mut changed = 0;
        for command in batch {
            match command {
                FibCommand::Set(changes) => {
                    changed += changes.len();
                    for (key, target) in changes {
                        self.table.routes.set_want(self.metrics.key(&key), target);
                        touched.insert(key);
                        if touched.len() >= PLAN_AT_MOST {
                            kernel_changed |= self.plan_touched(&mut touched).await;
                        }
                    }
                }
                // After this batch's own changes: routes that arrived with the End-of-RIB are
                // installed as changes, not found missing (and counted as repairs) by the resync.
                FibCommand::Synced => synced = true,
                FibCommand::Stats(reply) => {
                    self.land().await;
                    let _ = reply.send(self.stats());
                }
                FibCommand::KernelChanged => kernel_changed = true,
                FibCommand::GatewaysGone(gateways) => {
                    // The changes that came before it are carried out first, in order.
                    kernel_changed |= self.plan_touched(&mut touched).await;
                    self.land().await;
                    self.gateways_gone(&gateways);
                }
            }
        }
        kernel_changed |= self.plan_touched(&mut touched).await;
        let mut gave_back = false;
        if synced {
            self.land().await;
            self.adopting = false;
            gave_back = self.resync().await;
        }
        Handled { other_protocol_changed: kernel_changed, routes: changed, gave_back }
    }

    /// Plans and carries out the wanted routes of `touched`, and empties it. Returns whether a
    /// static route was among them (learned routes may resolve through those: re-plan soon).
    async fn plan_touched(&mut self, touched: &mut BTreeSet<WantKey>) -> bool {
        if touched.is_empty() {
            return false;
        }
        let touched = std::mem::take(touched);
        // Learned routes may resolve through our static routes to peers: re-plan them soon.
        let statics = touched.iter().any(|w| w.class == Class::Static);
        let evaluated: BTreeSet<RouteKey> = touched.iter().map(|w| self.metrics.key(w)).collect();
        // The slice before may still be in the kernel's hands: this one is planned meanwhile
        // (the kernel's insertion would otherwise wait for every plan), unless it needs that
        // slice's results. A plan reads our route in each slot it looks at, and resolves next
        // hops through our static routes.
        if self.in_flight.as_ref().is_some_and(|f| f.statics || f.evaluated.intersection(&evaluated).next().is_some()) {
            self.land().await;
        }
        let plan = plan::plan(&self.table, &self.metrics, Scope::Only(&touched));
        self.land().await;
        let started = self.start(plan).await;
        self.in_flight = Some(InFlight { started, evaluated, statics });
        statics
    }

    /// Waits for the slice being written, if any, and takes in its results.
    async fn land(&mut self) {
        let Some(InFlight { started, evaluated, .. }) = self.in_flight.take() else { return };
        let done = self.finish(started, Evaluated::Only(&evaluated)).await;
        self.stats.programmed += done.installed;
        self.stats.removed += done.removed;
    }

    async fn read_kernel(&mut self) -> anyhow::Result<()> {
        // On the FIB's own thread, as its small writes are: a blocking thread would allocate
        // from an arena of its own, and keep it.
        kernel::read(&self.handle, self.batcher.as_mut().map(|w| w.here()), &mut self.table).await?;
        self.read_nexthops();
        Ok(())
    }

    /// [`Fib::resync`], returning how long it took.
    async fn timed_resync(&mut self) -> Duration {
        self.land().await;
        let started = Instant::now();
        self.resync().await;
        started.elapsed()
    }

    /// Reads the kernel and plans everything: drift repair, re-resolution, leftovers. Returns
    /// whether it handed memory back.
    async fn resync(&mut self) -> bool {
        if let Err(e) = self.read_kernel().await {
            tracing::warn!(error = %e, "route resync failed");
            return false;
        }
        let plan = plan::plan(&self.table, &self.metrics, Scope::Everything { adopting: self.adopting });
        let routes = &self.table.routes;
        self.problems.retain(|k, _| routes.want(k).is_some());
        let done = self.execute(plan, Evaluated::All).await;
        if done.installed + done.removed > 0 {
            tracing::info!(installed = done.installed, removed = done.removed, "repaired kernel routes");
            self.stats.repaired += done.installed + done.removed;
        }
        self.delete_unused_objects();
        let give_back = self.table.routes.wanted_len() + self.table.routes.ours_len() >= GIVE_BACK_ABOVE;
        if give_back {
            self.give_back_memory();
        }
        give_back
    }

    /// Hands back what work on many routes freed: the tables' spare capacity, and the heap
    /// pages the allocator kept.
    fn give_back_memory(&mut self) {
        self.table.routes.shrink_to_fit();
        give_back_freed_memory();
    }

    /// Carries out a plan and settles the problems of every key it looked at.
    async fn execute(&mut self, plan: plan::Plan, evaluated: Evaluated<'_>) -> Done {
        let started = self.start(plan).await;
        self.finish(started, evaluated).await
    }

    /// Hands a plan's ops to the kernel; [`Fib::finish`] takes in the results.
    async fn start(&mut self, plan: plan::Plan) -> Started {
        let now = Instant::now();
        let refused: BTreeMap<RouteKey, (Option<WantKey>, Refusal)> =
            plan.refused.into_iter().map(|(w, r)| (self.metrics.key(&w), (Some(w), r))).collect();
        // A slot whose last attempt the kernel refused waits for its retry time.
        let (ops, waiting): (Vec<Op>, Vec<Op>) =
            plan.ops.into_iter().partition(|op| self.problems.get(&op.key()).and_then(|p| p.retry_at).is_none_or(|t| t <= now));
        let (ops, held) = self.hold_widenings(ops, now);
        let ops = self.through_objects(ops);
        let waiting: BTreeSet<RouteKey> = waiting.iter().map(Op::key).chain(held).collect();
        let write = self.begin_write(ops).await;
        Started { now, refused, waiting, write }
    }

    async fn finish(&mut self, started: Started, evaluated: Evaluated<'_>) -> Done {
        let Started { now, mut refused, waiting, write } = started;
        let results = self.write_results(write).await;
        let mut done = Done::default();
        for (op, result) in results {
            match (result, op) {
                (Ok(()), Op::Add(key, p) | Op::Replace(key, p)) => {
                    done.installed += 1;
                    self.table.routes.set_ours(key, Some(installed_form(&p)));
                }
                (Ok(()), Op::Delete(r)) => {
                    done.removed += 1;
                    self.table.routes.set_ours(r.key(), None);
                }
                (Err(error), op) => {
                    let want = self.metrics.want_of(&op.key()).filter(|_| self.table.routes.want(&op.key()).is_some());
                    refused.insert(op.key(), (want, Refusal::Kernel { error }));
                }
            }
        }
        // Every refusal is of a key looked at; a problem of a key looked at and not refused again
        // is over, unless the key still waits for its retry.
        let over: Vec<RouteKey> =
            self.problems.keys().filter(|k| evaluated.contains(k) && !waiting.contains(k) && !refused.contains_key(k)).copied().collect();
        for key in over {
            if let Some(p) = self.problems.remove(&key) {
                tracing::info!(prefix = %key.prefix, metric = key.metric, was = %p.refusal, "route installed after all");
            }
        }
        for (key, (want, refusal)) in refused {
            if !waiting.contains(&key) {
                self.report(key, want, refusal, now);
            }
        }
        self.grow_complete_groups();
        done
    }

    /// Starts carrying out `ops`: in bulk on blocking threads when there are many (the writes
    /// are system calls), where they go on while this task plans more; a few at once here; or
    /// one request each through the rtnetlink handle when there is no bulk socket.
    async fn begin_write(&mut self, ops: Vec<Op>) -> Write {
        if ops.len() <= WRITE_HERE {
            if let Some(writers) = self.batcher.as_mut() {
                return Write::Done(writers.apply_here(ops));
            }
        }
        if let Some(writers) = self.batcher.take() {
            let sent = ops.clone();
            return Write::Bulk { task: MaybeDone::Future(tokio::spawn(writers.apply(ops))), sent };
        }
        let handle = self.handle.clone();
        let results = futures::stream::iter(ops)
            .map(|op| {
                let handle = handle.clone();
                async move {
                    let r = kernel::apply(&handle, &op).await;
                    (op, r)
                }
            })
            .buffer_unordered(PIPELINE)
            .collect()
            .await;
        Write::Done(results)
    }

    async fn write_results(&mut self, write: Write) -> Vec<(Op, Result<(), String>)> {
        let (mut task, sent) = match write {
            Write::Done(results) => return results,
            Write::Bulk { task, sent } => (task, sent),
        };
        (&mut task).await;
        let error = match Pin::new(&mut task).take_output().expect("awaited above") {
            Ok(Ok((writers, results))) => {
                self.batcher = Some(writers);
                return results;
            }
            Ok(Err(e)) | Err(e) => e,
        };
        // Only a panic in the bulk writer ends here. Its ops count as refused (reported,
        // retried with the others' delays); the next resync reads what the kernel got.
        tracing::error!(error = %error, "bulk route writer failed; writing one route per request");
        let error = format!("the bulk route writer failed: {error}");
        sent.into_iter().map(|op| (op, Err(error.clone()))).collect()
    }

    fn report(&mut self, key: RouteKey, want: Option<WantKey>, refusal: Refusal, now: Instant) {
        let kernel_error = matches!(refusal, Refusal::Kernel { .. });
        match self.problems.get_mut(&key) {
            Some(p) if p.refusal == refusal => {
                if kernel_error {
                    p.backoff = (p.backoff * 2).min(MAX_RETRY);
                    p.retry_at = Some(now + p.backoff);
                }
            }
            _ => {
                tracing::warn!(prefix = %key.prefix, metric = key.metric, reason = %refusal, "route not installed");
                self.failures.get_or_create(&ReasonLabel { reason: refusal.label().to_string() }).inc();
                let retry_at = kernel_error.then_some(now + FIRST_RETRY);
                self.problems.insert(key, ProblemState { want, refusal, retry_at, backoff: FIRST_RETRY });
            }
        }
    }

    fn stats(&self) -> FibStats {
        let problems = self
            .problems
            .iter()
            .filter(|(_, p)| p.want.is_some())
            .take(PROBLEMS_SHOWN)
            .map(|(k, p)| RouteProblem {
                prefix: k.prefix.to_string(),
                metric: k.metric,
                reason: p.refusal.label().to_string(),
                message: p.refusal.to_string(),
            })
            .collect();
        FibStats {
            wanted: self.table.routes.wanted_len() as u64,
            not_installed: self.problems.values().filter(|p| p.want.is_some()).count() as u64,
            problems,
            ..self.stats.clone()
        }
    }
}

/// Returns the pages of freed heap memory to the system. A resync of a full table builds a
/// second copy of it and reads the kernel's whole dump; glibc keeps what that freed for the
/// process (30 MB of 85 with 100k routes, measured by `gingham-lab bench-node --only table`),
/// so the agent's memory would only ever grow to its largest moment.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[derive(Default)]
struct Done {
    installed: u64,
    removed: u64,
}

/// What the kernel holds after a successful add or replace, in the model's terms.
fn installed_form(p: &Programmed) -> Form {
    let (kind, scope, oif, hops) = match p {
        Programmed::Blackhole => (RouteKind::Blackhole, 0, None, plan::Hops::from([])),
        Programmed::Device(index) => (RouteKind::Unicast, 253, Some(*index), plan::Hops::from([])),
        Programmed::Via(hops) | Programmed::Object { hops, .. } => (RouteKind::Unicast, 0, hops.first().and_then(|h| h.dev), hops.clone()),
    };
    let nh_id = match p {
        Programmed::Object { id, .. } => Some(*id),
        _ => None,
    };
    Form { kind, scope, oif, hops, nh_id }
}

/// The keys a plan looked at.
#[derive(Clone, Copy)]
enum Evaluated<'a> {
    All,
    Only(&'a BTreeSet<RouteKey>),
}

impl Evaluated<'_> {
    fn contains(&self, key: &RouteKey) -> bool {
        match self {
            Evaluated::All => true,
            Evaluated::Only(keys) => keys.contains(key),
        }
    }
}
