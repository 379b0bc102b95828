//! Workload endpoints: the veth pair, addresses, routes and neighbour entry that connect a pod
//! to its node, Calico's way. Host side `cali` + 11 hex characters, MAC ee:ee:ee:ee:ee:ee, proxy
//! ARP so the pod's gateway 169.254.1.1 answers; in the pod `eth0` with the /32 and a default
//! route via 169.254.1.1 onlink. The pod's /32 host route is the FIB syncer's to install.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context as _};
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use sha1::{Digest, Sha1};

use crate::netlink::{format_mac, in_netns, is_errno, link_by_name, link_mac, write_sysctl};

pub const HOST_MAC: [u8; 6] = [0xee; 6];
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The link-local address the kernel derives (EUI-64) from the host side's MAC.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// `cali` + the first 11 hex characters of SHA-1 of `<namespace>.<pod>` (of the container ID
/// when the runtime gives no pod name), as Calico names them: 15 characters, the kernel's limit.
pub fn host_veth_name(namespace: Option<&str>, pod: Option<&str>, container_id: &str) -> String {
    let key = match (namespace, pod) {
        (Some(ns), Some(pod)) => format!("{ns}.{pod}"),
        _ => container_id.to_string(),
    };
    let digest = Sha1::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// What ADD built.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host_ifname: String,
    pub host_index: u32,
    pub pod_mac: String,
}

/// Creates the pair with the pod end directly in the pod's namespace, then configures both.
pub async fn create(
    handle: &Handle,
    host_ifname: &str,
    netns: &Path,
    ifname: &str,
    addresses: &[IpAddr],
    mtu: u32,
) -> anyhow::Result<Endpoint> {
    // A leftover of an earlier, failed ADD for the same pod would make the create fail.
    if let Some(old) = link_by_name(handle, host_ifname).await? {
        handle.link().del(old.header.index).execute().await.ok();
    }
    let ns_file = File::open(netns).with_context(|| format!("open pod namespace {}", netns.display()))?;
    // One queue each way, said up front. Without it the kernel gives each end a queue per CPU
    // and then cuts them to one (a veth uses one unless told otherwise), and that cut waits for
    // an RCU grace period while holding the RTNL lock: every concurrent ADD (and every other
    // netlink writer on the node) queued behind each one.
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ifname.to_string())
        .mtu(mtu)
        .append_extra_attribute(LinkAttribute::NetNsFd(ns_file.as_raw_fd()))
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    let mut veth = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(host_ifname.to_string())
        .mtu(mtu)
        .address(HOST_MAC.to_vec())
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    set_veth_peer(&mut veth, peer);
    handle.link().add(veth).execute().await.with_context(|| format!("create veth {host_ifname}"))?;
    drop(ns_file);
    let host = link_by_name(handle, host_ifname).await?.context("the new veth vanished")?;
    let host_index = host.header.index;

    // Proxy ARP answers the pod's ARP for 169.254.1.1 with our MAC; no delay, the pod waits.
    if addresses.iter().any(|a| a.is_ipv4()) {
        write_sysctl(&format!("net/ipv4/conf/{host_ifname}/proxy_arp"), "1")?;
        write_sysctl(&format!("net/ipv4/neigh/{host_ifname}/proxy_delay"), "0")?;
        write_sysctl(&format!("net/ipv4/conf/{host_ifname}/forwarding"), "1")?;
    }
    handle.link().set(LinkUnspec::new_with_index(host_index).up().build()).execute().await?;

    let ifname_owned = ifname.to_string();
    let pod_addresses = addresses.to_vec();
    let pod_mac = in_netns(netns, move |pod| async move {
        let link = link_by_name(&pod, &ifname_owned).await?.context("pod interface missing in the pod namespace")?;
        let index = link.header.index;
        pod.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
        for address in pod_addresses {
            let mut add = pod.address().add(index, address, crate::netlink::host_prefix(address));
            // No duplicate address detection: the address is ours alone (IPAM says so), and a
            // tentative address could not be used for the first second or two.
            add.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            add.execute().await?;
            configure_gateway(&pod, index, address).await?;
        }
        Ok(format_mac(&link_mac(&link).unwrap_or_default()))
    })
    .await?;

    // Permanent neighbour entries: the host never has to ARP (or solicit) for the pod.
    let mac: Vec<u8> = pod_mac.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    for address in addresses {
        handle.neighbours().add(host_index, *address).link_layer_address(&mac).state(NeighbourState::Permanent).replace().execute().await?;
    }
    Ok(Endpoint { host_ifname: host_ifname.to_string(), host_index, pod_mac })
}

/// The pod's way out: a default route via the gateway (169.254.1.1, or the host side's
/// link-local fe80::ecee:eeff:feee:eeee for IPv6) with a permanent neighbour entry for it.
async fn configure_gateway(pod: &Handle, index: u32, address: IpAddr) -> anyhow::Result<()> {
    // Permanent neighbour entries for the gateway: the pod never has to ARP or solicit, so it
    // works even where the node has no route to 169.254.1.1 (proxy ARP needs one).
    let gateway = if address.is_ipv4() { IpAddr::V4(GATEWAY_V4) } else { IpAddr::V6(GATEWAY_V6) };
    pod.neighbours().add(index, gateway).link_layer_address(&HOST_MAC).state(NeighbourState::Permanent).replace().execute().await?;
    if address.is_ipv6() {
        let default = RouteMessageBuilder::<Ipv6Addr>::new().gateway(GATEWAY_V6).output_interface(index).build();
        pod.route().add(default).execute().await?;
        return Ok(());
    }
    let gw =
        RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(GATEWAY_V4, 32).output_interface(index).scope(RouteScope::Link).build();
    pod.route().add(gw).execute().await?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new().gateway(GATEWAY_V4).output_interface(index).build();
    pod.route().add(default).execute().await?;
    Ok(())
}

fn set_veth_peer(veth: &mut LinkMessage, peer: LinkMessage) {
    for attr in &mut veth.attributes {
        if let LinkAttribute::LinkInfo(infos) = attr {
            infos.retain(|i| !matches!(i, LinkInfo::Data(_)));
            infos.push(LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))));
            return;
        }
    }
}

/// Removes the pair (the kernel drops its routes and neighbours with it). Missing is fine.
pub async fn delete(handle: &Handle, host_ifname: &str) -> anyhow::Result<bool> {
    let Some(link) = link_by_name(handle, host_ifname).await? else { return Ok(false) };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// CHECK: the host side exists and is up, and the pod side has the address and the default
/// route. Each miss is an error naming it.
pub async fn check(handle: &Handle, host_ifname: &str, netns: &Path, ifname: &str, address: IpAddr) -> anyhow::Result<()> {
    let Some(host) = link_by_name(handle, host_ifname).await? else { bail!("host interface {host_ifname} is missing") };
    if link_mac(&host).as_deref() != Some(&HOST_MAC[..]) {
        bail!("host interface {host_ifname} does not have MAC ee:ee:ee:ee:ee:ee");
    }
    let ifname = ifname.to_string();
    in_netns(netns, move |pod| async move {
        use futures::TryStreamExt;
        let link = link_by_name(&pod, &ifname).await?.with_context(|| format!("pod interface {ifname} is missing"))?;
        let mut addrs = pod.address().get().set_link_index_filter(link.header.index).execute();
        let mut found = false;
        while let Some(a) = addrs.try_next().await? {
            found |= a.attributes.iter().any(|attr| matches!(attr, rtnetlink::packet_route::address::AddressAttribute::Address(x) if *x == address));
        }
        if !found {
            bail!("pod interface {ifname} does not have {address}");
        }
        let mut routes = pod.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut default = false;
        while let Some(r) = routes.try_next().await? {
            default |= r.header.destination_prefix_length == 0
                && r.attributes.iter().any(|a| matches!(a, rtnetlink::packet_route::route::RouteAttribute::Gateway(rtnetlink::packet_route::route::RouteAddress::Inet(g)) if *g == GATEWAY_V4));
        }
        if address.is_ipv4() && !default {
            bail!("the pod has no default route via {GATEWAY_V4}");
        }
        Ok(())
    })
    .await
}

/// The address as a host route prefix.
pub fn host_route(address: IpAddr) -> IpNetwork {
    IpNetwork::new(address, crate::netlink::host_prefix(address)).expect("host prefix length is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_calico_compatible() {
        // Calico's own example: namespace "default", pod "nginx" -> cali + sha1("default.nginx")[:11].
        let name = host_veth_name(Some("default"), Some("nginx"), "abc");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("cali"));
        let digest: String = Sha1::digest(b"default.nginx").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&name[4..], &digest[..11]);
        assert_ne!(host_veth_name(None, None, "abc"), name);
    }
}
