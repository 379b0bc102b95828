//! `natOutgoing`: traffic from a pool's pods to destinations outside every IP pool leaves with
//! the node's address (masquerade), as Calico does, so a cluster whose pod addresses the
//! outside world has no route to can still reach it. Pod-to-pod traffic keeps its addresses.
//!
//! The rules live in nftables tables of our own (`ip gingham`, `ip6 gingham`), written whole in
//! one `nft -f` transaction each time the pools change, and deleted when no pool asks for NAT;
//! nothing else in the node's ruleset is read or touched.

use std::io::Write as _;
use std::process::{Command, Stdio};

use gingham_api::resources::IPPoolSpec;
use ipnetwork::IpNetwork;

pub const TABLE: &str = "gingham";

/// The nft script that makes our tables match `pools` (enabled or not: a disabled pool's pods
/// still exist and still need their NAT).
pub fn script(pools: &[IPPoolSpec]) -> String {
    let mut out = String::new();
    for (family, v6) in [("ip", false), ("ip6", true)] {
        let of_family: Vec<(IpNetwork, bool)> =
            pools.iter().filter_map(|p| p.network().map(|n| (n, p.nat_outgoing))).filter(|(n, _)| n.is_ipv6() == v6).collect();
        let masq: Vec<String> = of_family.iter().filter(|(_, nat)| *nat).map(|(n, _)| n.to_string()).collect();
        let all: Vec<String> = of_family.iter().map(|(n, _)| n.to_string()).collect();
        // `add` then `delete` removes the table whether or not it existed, in the same
        // transaction that writes the new one: never a moment without rules.
        out.push_str(&format!("add table {family} {TABLE}\ndelete table {family} {TABLE}\n"));
        if masq.is_empty() {
            continue;
        }
        let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        let ip = if v6 { "ip6" } else { "ip" };
        out.push_str(&format!(
            "table {family} {TABLE} {{\n  set masq-pools {{ type {addr}; flags interval; elements = {{ {} }} }}\n  set all-pools {{ type {addr}; flags interval; elements = {{ {} }} }}\n  chain nat-outgoing {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {ip} saddr @masq-pools {ip} daddr != @all-pools masquerade\n  }}\n}}\n",
            masq.join(", "),
            all.join(", ")
        ));
    }
    out
}

/// Runs the script through `nft -f -`. Without nft installed, a script that only removes our
/// tables has nothing to do (nothing could have created them).
pub fn apply(script: &str) -> anyhow::Result<()> {
    let spawned = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !script.contains(&format!(" {TABLE} {{")) => return Ok(()),
        Err(e) => anyhow::bail!("natOutgoing needs the nft command (nftables): {e}"),
    };
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "nft refused the natOutgoing rules: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, nat: bool) -> IPPoolSpec {
        IPPoolSpec { cidr: cidr.into(), nat_outgoing: nat, ..Default::default() }
    }

    #[test]
    fn masquerades_only_nat_pools_and_only_towards_the_outside() {
        let s = script(&[pool("198.19.0.0/16", true), pool("198.18.128.0/17", false), pool("2001:db8:19::/48", false)]);
        assert!(s.contains("set masq-pools { type ipv4_addr; flags interval; elements = { 198.19.0.0/16 } }"), "{s}");
        assert!(s.contains("set all-pools { type ipv4_addr; flags interval; elements = { 198.19.0.0/16, 198.18.128.0/17 } }"), "{s}");
        assert!(s.contains("ip saddr @masq-pools ip daddr != @all-pools masquerade"), "{s}");
        assert!(!s.contains("table ip6 gingham {"), "no IPv6 pool asks for NAT: {s}");
        assert!(s.contains("delete table ip6 gingham"), "and a leftover IPv6 table goes: {s}");
    }

    #[test]
    fn no_nat_pool_removes_both_tables() {
        let s = script(&[pool("198.19.0.0/16", false)]);
        assert_eq!(s, "add table ip gingham\ndelete table ip gingham\nadd table ip6 gingham\ndelete table ip6 gingham\n");
    }
}
