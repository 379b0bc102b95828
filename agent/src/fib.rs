//! The FIB syncer: the one owner of every kernel route carrying our protocol number (learned
//! routes, block blackholes, pod host routes). Others tell it what they want over a channel;
//! it applies the difference with pipelined netlink requests and, every few seconds, compares
//! the main table with what it wants and repairs drift (a route deleted by hand comes back, a
//! route of ours nobody wants goes). Routes of other protocols are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder, RouteNextHopBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::netlink::{is_errno, RTPROT_GINGHAM};

const MAIN_TABLE: u32 = 254;
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Netlink requests in flight at once.
const PIPELINE: usize = 128;

/// Where a prefix should go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Via these next hops (ECMP when several).
    Gateways(Vec<IpAddr>),
    /// Dropped: the aggregate of a block whose live addresses have host routes.
    Blackhole,
    /// Straight out of a local interface (a pod's host-side veth), by index.
    Device(u32),
}

pub enum FibCommand {
    /// Want `prefix` to go to `target`, or no route of ours for it (`None`).
    Set(Vec<(IpNetwork, Option<Target>)>),
    /// After a restart we keep every route of ours we find until the speaker has heard every
    /// peer's End-of-RIB; this says it has, so unwanted leftovers may go now.
    Synced,
    /// Reports (routes wanted, routes installed by the last pass).
    Stats(oneshot::Sender<FibStats>),
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FibStats {
    pub wanted: usize,
    pub programmed: u64,
    pub removed: u64,
    pub repaired: u64,
}

#[derive(Clone)]
pub struct FibHandle {
    tx: mpsc::Sender<FibCommand>,
}

impl FibHandle {
    pub async fn set(&self, changes: Vec<(IpNetwork, Option<Target>)>) {
        if !changes.is_empty() {
            let _ = self.tx.send(FibCommand::Set(changes)).await;
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

pub fn spawn(handle: Handle) -> FibHandle {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(Fib { handle, wanted: BTreeMap::new(), adopting: true, stats: FibStats::default() }.run(rx));
    FibHandle { tx }
}

struct Fib {
    handle: Handle,
    wanted: BTreeMap<IpNetwork, Target>,
    adopting: bool,
    stats: FibStats,
}

impl Fib {
    async fn run(mut self, mut rx: mpsc::Receiver<FibCommand>) {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { return };
                    // Take whatever else is queued too, so a burst becomes one pipelined pass.
                    let mut batch = vec![command];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    self.handle_batch(batch).await;
                }
                _ = resync.tick() => {
                    if let Err(e) = self.reconcile().await {
                        tracing::warn!(error = %e, "route resync failed");
                    }
                }
            }
        }
    }

    async fn handle_batch(&mut self, batch: Vec<FibCommand>) {
        let mut touched: BTreeMap<IpNetwork, Option<Target>> = BTreeMap::new();
        for command in batch {
            match command {
                FibCommand::Set(changes) => {
                    for (prefix, target) in changes {
                        match &target {
                            Some(t) => self.wanted.insert(prefix, t.clone()),
                            None => self.wanted.remove(&prefix),
                        };
                        touched.insert(prefix, target);
                    }
                }
                FibCommand::Synced => {
                    self.adopting = false;
                    if let Err(e) = self.reconcile().await {
                        tracing::warn!(error = %e, "route resync failed");
                    }
                }
                FibCommand::Stats(reply) => {
                    let _ = reply.send(FibStats { wanted: self.wanted.len(), ..self.stats });
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(touched)
            .map(|(prefix, target)| {
                let handle = self.handle.clone();
                async move {
                    match target {
                        Some(t) => install(&handle, prefix, &t).await.map(|_| (true, prefix)),
                        None => remove(&handle, prefix).await.map(|_| (false, prefix)),
                    }
                }
            })
            .buffer_unordered(PIPELINE)
            .collect()
            .await;
        for r in results {
            match r {
                Ok((true, _)) => self.stats.programmed += 1,
                Ok((false, _)) => self.stats.removed += 1,
                Err(e) => tracing::warn!(error = %e, "route update failed; the next resync retries"),
            }
        }
    }

    /// Compares the main table's routes of our protocol with what is wanted and fixes both ways.
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let present = our_routes(&self.handle).await?;
        let mut fixes: Vec<(IpNetwork, Option<Target>)> = Vec::new();
        for (prefix, target) in &self.wanted {
            if present.get(prefix).is_none_or(|r| !matches_target(r, target)) {
                fixes.push((*prefix, Some(target.clone())));
            }
        }
        if !self.adopting {
            let unwanted: BTreeSet<IpNetwork> = present.keys().filter(|p| !self.wanted.contains_key(p)).copied().collect();
            fixes.extend(unwanted.into_iter().map(|p| (p, None)));
        }
        if !fixes.is_empty() {
            tracing::info!(count = fixes.len(), "repairing kernel routes");
            self.stats.repaired += fixes.len() as u64;
            let handle = self.handle.clone();
            futures::stream::iter(fixes)
                .for_each_concurrent(PIPELINE, |(prefix, target)| {
                    let handle = handle.clone();
                    async move {
                        let r = match &target {
                            Some(t) => install(&handle, prefix, t).await,
                            None => remove(&handle, prefix).await,
                        };
                        if let Err(e) = r {
                            tracing::warn!(%prefix, error = %e, "route repair failed");
                        }
                    }
                })
                .await;
        }
        Ok(())
    }
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(route.header.table as u32)
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn prefix_of(route: &RouteMessage) -> Option<IpNetwork> {
    let len = route.header.destination_prefix_length;
    let dst = route.attributes.iter().find_map(|a| if let RouteAttribute::Destination(d) = a { ip_of(d) } else { None });
    let dst = dst.unwrap_or(match route.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    IpNetwork::new(dst, len).ok()
}

fn gateways_of(route: &RouteMessage) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(g) => out.extend(ip_of(g)),
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    for ha in &hop.attributes {
                        if let RouteAttribute::Gateway(g) = ha {
                            out.extend(ip_of(g));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn matches_target(route: &RouteMessage, target: &Target) -> bool {
    match target {
        Target::Blackhole => route.header.kind == RouteType::BlackHole,
        Target::Device(index) => {
            route.header.kind == RouteType::Unicast && route.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if i == index))
        }
        Target::Gateways(gws) => route.header.kind == RouteType::Unicast && gateways_of(route) == gws.iter().copied().collect(),
    }
}

fn build(prefix: IpNetwork, target: &Target) -> anyhow::Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.network(), prefix.prefix())?
        .protocol(RouteProtocol::Other(RTPROT_GINGHAM))
        .table_id(MAIN_TABLE);
    b = match target {
        Target::Blackhole => b.kind(RouteType::BlackHole),
        Target::Device(index) => b.output_interface(*index).scope(RouteScope::Link),
        Target::Gateways(gws) if gws.len() == 1 => b.gateway(gws[0])?,
        Target::Gateways(gws) => {
            let family = if prefix.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
            let hops = gws.iter().map(|g| RouteNextHopBuilder::new(family).via(*g).map(|h| h.build())).collect::<Result<Vec<_>, _>>()?;
            b.multipath(hops)
        }
    };
    Ok(b.build())
}

async fn install(handle: &Handle, prefix: IpNetwork, target: &Target) -> anyhow::Result<()> {
    handle.route().add(build(prefix, target)?).replace().execute().await?;
    Ok(())
}

async fn remove(handle: &Handle, prefix: IpNetwork) -> anyhow::Result<()> {
    let msg = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.network(), prefix.prefix())?
        .protocol(RouteProtocol::Other(RTPROT_GINGHAM))
        .table_id(MAIN_TABLE)
        .build();
    match handle.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every route with our protocol in the main table, both families, by prefix.
async fn our_routes(handle: &Handle) -> anyhow::Result<BTreeMap<IpNetwork, RouteMessage>> {
    let mut present = BTreeMap::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = handle.route().get(RouteMessageBuilder::<IpAddr>::new().build());
        req.message_mut().header.address_family = family;
        let mut routes = req.execute();
        while let Some(route) = routes.try_next().await? {
            if route.header.protocol != RouteProtocol::Other(RTPROT_GINGHAM) || table_of(&route) != MAIN_TABLE {
                continue;
            }
            if let Some(prefix) = prefix_of(&route) {
                present.insert(prefix, route);
            }
        }
    }
    Ok(present)
}

/// Whether the main table holds any route with our protocol (left by an earlier agent).
pub async fn has_our_routes(handle: &Handle) -> anyhow::Result<bool> {
    Ok(!our_routes(handle).await?.is_empty())
}
