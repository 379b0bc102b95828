//! Which address is the node's: the `--ip` / `GINGHAM_IP` and `--ip6` / `GINGHAM_IP6` methods.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context as _};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

/// An interface's global addresses of the family asked for.
struct Iface {
    index: u32,
    name: String,
    addrs: Vec<IpNetwork>,
}

/// Shell-style glob (`*`, `?`), as Calico's `ignoredInterfaces` take them.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Global unicast: not loopback, not link-local (IPv6 link-local needs an interface to mean
/// anything, and the kernel derives one per link).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Every global address of the host with its prefix, both families (cali* interfaces excluded).
pub async fn host_addresses(handle: &Handle) -> anyhow::Result<Vec<IpNetwork>> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        out.extend(interfaces(handle, &[], v6).await?.into_iter().flat_map(|i| i.addrs));
    }
    Ok(out)
}

async fn interfaces(handle: &Handle, ignored: &[String], v6: bool) -> anyhow::Result<Vec<Iface>> {
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        let name =
            link.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None }).unwrap_or_default();
        out.push(Iface { index: link.header.index, name, addrs: Vec::new() });
    }
    let mut addrs = handle.address().get().execute();
    while let Some(a) = addrs.try_next().await? {
        let Some(ip) = a.attributes.iter().find_map(|x| if let AddressAttribute::Address(ip) = x { Some(*ip) } else { None }) else {
            continue;
        };
        let global = ip.is_ipv6() == v6 && is_global(ip);
        if let (true, Some(iface)) = (global, out.iter_mut().find(|i| i.index == a.header.index)) {
            iface.addrs.push(IpNetwork::new(ip, a.header.prefix_len)?);
        }
    }
    out.retain(|i| !i.addrs.is_empty() && i.name != "lo" && !i.name.starts_with("cali") && !ignored.iter().any(|g| glob_match(g, &i.name)));
    Ok(out)
}

async fn default_route_interface(handle: &Handle, v6: bool) -> anyhow::Result<Option<u32>> {
    let query = match v6 {
        false => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        true => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let mut routes = handle.route().get(query).execute();
    while let Some(r) = routes.try_next().await? {
        if r.header.destination_prefix_length == 0 {
            if let Some(oif) = oif(&r) {
                return Ok(Some(oif));
            }
        }
    }
    Ok(None)
}

fn oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None })
}

/// The node's address of one family (`v6`) with its subnet; interfaces matching `ignored` are
/// never picked. `k8s_addresses` are the Kubernetes Node's InternalIPs, for
/// `kubernetes-internal-ip`.
pub async fn detect(handle: &Handle, method: &str, ignored: &[String], v6: bool, k8s_addresses: &[IpAddr]) -> anyhow::Result<IpNetwork> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    if let Ok(net) = method.parse::<IpNetwork>() {
        anyhow::ensure!(net.is_ipv6() == v6, "{method} is not an {family} address");
        return Ok(net);
    }
    let ifaces = interfaces(handle, ignored, v6).await?;
    let first = |i: &Iface| i.addrs[0];
    if method == "autodetect" {
        if let Some(idx) = default_route_interface(handle, v6).await? {
            if let Some(i) = ifaces.iter().find(|i| i.index == idx) {
                return Ok(first(i));
            }
        }
        return ifaces.first().map(first).with_context(|| format!("autodetect: no interface has a global {family} address"));
    }
    if method == "kubernetes-internal-ip" {
        let ip = k8s_addresses
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .with_context(|| format!("kubernetes-internal-ip: the Node has no {family} InternalIP"))?;
        // The Node names the address; the interface that holds it gives the subnet.
        let on_host = ifaces.iter().flat_map(|i| i.addrs.iter()).find(|n| n.ip() == *ip);
        return Ok(match on_host {
            Some(net) => *net,
            None => IpNetwork::from(*ip),
        });
    }
    if let Some(re) = method.strip_prefix("interface=") {
        let re =
            regex_lite::Regex::new(&format!("^(?:{re})$")).with_context(|| format!("--ip interface={re}: not a regular expression"))?;
        return ifaces
            .iter()
            .find(|i| re.is_match(&i.name))
            .map(first)
            .with_context(|| format!("no interface matching {re} has a global {family} address"));
    }
    if let Some(target) = method.strip_prefix("can-reach=") {
        let target: IpAddr = target.parse().with_context(|| format!("can-reach={target}: not an address"))?;
        // The address on the subnet that reaches it directly, else the default route's.
        if let Some(net) = ifaces.iter().flat_map(|i| i.addrs.iter()).find(|n| n.contains(target)) {
            return Ok(*net);
        }
        if let Some(idx) = default_route_interface(handle, v6).await? {
            if let Some(i) = ifaces.iter().find(|i| i.index == idx) {
                return Ok(first(i));
            }
        }
        bail!("no address reaches {target}");
    }
    bail!("{method:?}: use autodetect, kubernetes-internal-ip, ADDRESS[/PREFIX], interface=REGEX or can-reach=ADDRESS")
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("kube-ipvs*", "kube-ipvs0"));
        assert!(glob_match("eth?", "eth1"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("docker*", "eth0"));
    }
}
