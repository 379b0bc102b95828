//! The FIB's netlink side: reads the main table into a [`KernelTable`] and carries out [`Op`]s.
//! Every route it writes carries our protocol number and the metric of its class; every
//! delete names the route exactly (metric, type, scope, device), so the kernel can only match
//! the route we mean, and "no such route" then really means it is gone.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType, RouteVia};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder, RouteNextHopBuilder};

use super::batch::Batcher;
use super::plan::{Hop, KernelRoute, KernelTable, Op, Programmed, RouteKey, RouteKind, MAIN_TABLE};
use crate::netlink::{is_errno, RTPROT_GINGHAM};

/// The main table (both families) and the node's addresses, the routes read on a socket of
/// their own (through the handle when none can be made).
pub async fn read_table(handle: &Handle) -> anyhow::Result<KernelTable> {
    let mut dumper = Batcher::new().ok();
    let mut table = KernelTable::default();
    read(handle, dumper.as_mut(), &mut table).await?;
    Ok(table)
}

/// The same, every route read through the handle (the fallback of [`read_table`]).
pub async fn read_through_handle(handle: &Handle) -> anyhow::Result<KernelTable> {
    let mut table = KernelTable::default();
    read(handle, None, &mut table).await?;
    Ok(table)
}

/// Reads the main table (both families) and the node's addresses into `table`, in place of
/// what it held of them (what is wanted stays). The routes come through `dumper`'s socket when
/// there is one (decoded as they arrive), else through the handle. After a failure the table
/// holds part of the kernel: what it lacks of ours is added again (and refused as there
/// already), what it lacks of others' is still never touched (adds are exclusive), and the
/// next read completes it.
pub(super) async fn read(handle: &Handle, dumper: Option<&mut Batcher>, table: &mut KernelTable) -> anyhow::Result<()> {
    table.routes.forget_ours();
    table.foreign.clear();
    table.local_addresses.clear();
    match dumper {
        Some(dumper) => dumper.dump_routes(|route| {
            if let Some(r) = parse(route) {
                table.insert(r, RTPROT_GINGHAM);
            }
        })?,
        None => {
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut req = handle.route().get(RouteMessageBuilder::<IpAddr>::new().build());
                req.message_mut().header.address_family = family;
                let mut routes = req.execute();
                while let Some(route) = routes.try_next().await? {
                    if let Some(r) = parse(&route) {
                        table.insert(r, RTPROT_GINGHAM);
                    }
                }
            }
        }
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await? {
        for a in &msg.attributes {
            if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = a {
                table.local_addresses.insert(*ip);
            }
        }
    }
    Ok(())
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

/// A main-table route in the plan's terms; `None` for other tables and unknown families.
pub fn parse(route: &RouteMessage) -> Option<KernelRoute> {
    if table_of(route) != MAIN_TABLE {
        return None;
    }
    let unspecified = match route.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut metric = 0;
    let mut oif = None;
    let mut hops = Vec::new();
    let mut nh_id = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip_of(d).unwrap_or(unspecified),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::NhId(id) => nh_id = Some(*id),
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => hops.extend(gateway_of(a).map(|via| Hop { via, dev: None })),
            RouteAttribute::MultiPath(paths) => {
                for p in paths {
                    let dev = (p.interface_index != 0).then_some(p.interface_index);
                    hops.extend(p.attributes.iter().filter_map(gateway_of).map(|via| Hop { via, dev }));
                }
            }
            _ => {}
        }
    }
    for h in &mut hops {
        h.dev = h.dev.or(oif);
    }
    let kind = match route.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        other => RouteKind::Other(other.into()),
    };
    Some(KernelRoute {
        prefix: IpNetwork::new(dst, route.header.destination_prefix_length).ok()?,
        metric,
        protocol: route.header.protocol.into(),
        kind,
        scope: route.header.scope.into(),
        oif,
        hops: hops.into(),
        nh_id,
    })
}

/// A gateway: RTA_GATEWAY, or RTA_VIA for an IPv4 route through an IPv6 next hop (RFC 8950,
/// `ip route ... via inet6 ADDR`).
fn gateway_of(a: &RouteAttribute) -> Option<IpAddr> {
    match a {
        RouteAttribute::Gateway(g) => ip_of(g),
        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        _ => None,
    }
}

fn base(key: &RouteKey) -> anyhow::Result<RouteMessageBuilder<IpAddr>> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(key.prefix.network(), key.prefix.prefix())?
        .protocol(RouteProtocol::Other(RTPROT_GINGHAM))
        .table_id(MAIN_TABLE)
        .priority(key.metric))
}

/// The message that installs `programmed` at `key`.
pub fn build(key: &RouteKey, programmed: &Programmed) -> anyhow::Result<RouteMessage> {
    let b = base(key)?;
    let b = match programmed {
        Programmed::Blackhole => b.kind(RouteType::BlackHole),
        Programmed::Device(index) => b.output_interface(*index).scope(RouteScope::Link),
        Programmed::Object { id, .. } => {
            let mut message = b.build();
            message.attributes.push(RouteAttribute::NhId(*id));
            return Ok(message);
        }
        Programmed::Via(hops) if hops.len() == 1 => {
            let b = b.gateway(hops[0].via)?;
            match hops[0].dev {
                Some(dev) => b.output_interface(dev),
                None => b,
            }
        }
        Programmed::Via(hops) => {
            let family = if key.prefix.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
            let built = hops
                .iter()
                .map(|h| {
                    let nh = RouteNextHopBuilder::new(family).via(h.via).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    Ok(match h.dev {
                        Some(dev) => nh.interface(dev),
                        None => nh,
                    }
                    .build())
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            b.multipath(built)
        }
    };
    Ok(b.build())
}

/// The message that deletes exactly `route`: without type and scope the kernel would compare
/// against unicast/universe and find nothing for a blackhole or a device route.
pub fn build_delete(route: &KernelRoute) -> anyhow::Result<RouteMessage> {
    let kind = match route.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Other(k) => RouteType::from(k),
    };
    let mut b = base(&route.key())?.kind(kind).scope(RouteScope::from(route.scope));
    if route.hops.is_empty() {
        if let Some(oif) = route.oif {
            b = b.output_interface(oif);
        }
    }
    Ok(b.build())
}

/// Carries out one operation. A delete the kernel answers with "no such route" succeeded
/// (someone removed it first); every other error is the caller's to report.
pub async fn apply(handle: &Handle, op: &Op) -> Result<(), String> {
    let result = match op {
        Op::Add(key, p) => match build(key, p) {
            Ok(msg) => handle.route().add(msg).execute().await,
            Err(e) => return Err(e.to_string()),
        },
        Op::Replace(key, p) => match build(key, p) {
            Ok(msg) => handle.route().add(msg).replace().execute().await,
            Err(e) => return Err(e.to_string()),
        },
        Op::Delete(route) => match build_delete(route) {
            Ok(msg) => match handle.route().del(msg).execute().await {
                Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
                other => other,
            },
            Err(e) => return Err(e.to_string()),
        },
    };
    result.map_err(|e| match e {
        rtnetlink::Error::NetlinkError(m) => std::io::Error::from_raw_os_error(-m.raw_code()).to_string(),
        other => other.to_string(),
    })
}
