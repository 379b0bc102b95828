//! `node checksystem`: can this host run Gingham, and is anything here that would fight it?
//! Facts are gathered first (kernel, `ip -j route`, the CNI configuration directory, the
//! network interfaces, the datastore's pools), then judged by a pure function, so each rule is
//! unit-tested on made-up facts.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, ExitCode};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::output::table;

/// Our route protocol (`../shared/DESIGN.md`): routes with it are ours.
const RTPROT_GINGHAM: &str = "80";
/// Gingham's CNI configuration file as the install-cni step writes it.
pub const OUR_CONFLIST: &str = "10-gingham.conflist";
/// Interfaces other pod networks create; their presence means two networks on one node.
const FOREIGN_INTERFACES: &[(&str, &str)] = &[
    ("tunl0", "Calico IPIP"),
    ("vxlan.calico", "Calico VXLAN"),
    ("flannel.1", "flannel"),
    ("cni0", "flannel/bridge"),
    ("cilium_host", "Cilium"),
    ("kube-bridge", "kube-router"),
    ("weave", "Weave Net"),
];

#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// `uname -r`'s numbers.
    pub kernel: Option<(u32, u32)>,
    pub ipv4_forwarding: Option<bool>,
    pub nexthop_objects: bool,
    /// Why `nft list tables` failed, if it did (natOutgoing needs nft).
    pub nftables_error: Option<String>,
    /// Routes of every table: (destination, protocol, device, type).
    pub routes: Vec<Route>,
    pub interfaces: Vec<String>,
    /// File names in the CNI configuration directory.
    pub cni_files: Vec<String>,
    pub pools: Vec<IpNetwork>,
    pub nat_outgoing_wanted: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub dst: Option<IpNetwork>,
    pub protocol: String,
    pub dev: String,
    pub kind: String,
    pub table: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub detail: String,
}

fn finding(check: &'static str, level: Level, detail: impl Into<String>) -> Finding {
    Finding { check, level, detail: detail.into() }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// Judges the facts. Fail = Gingham will not work or will fight something; Warn = works, but
/// look.
pub fn judge(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    out.push(match f.kernel {
        Some(v) if v >= (5, 3) => finding("kernel", Level::Ok, format!("{}.{} (nexthop objects, TCP-MD5, IP_MINTTL)", v.0, v.1)),
        Some(v) if v >= (4, 19) => finding("kernel", Level::Warn, format!("{}.{}: works; 5.3 or later adds nexthop objects", v.0, v.1)),
        Some(v) => finding("kernel", Level::Fail, format!("{}.{} is older than 4.19", v.0, v.1)),
        None => finding("kernel", Level::Warn, "version unknown"),
    });
    out.push(match f.ipv4_forwarding {
        Some(true) => finding("ip_forward", Level::Ok, "net.ipv4.ip_forward = 1"),
        Some(false) => finding("ip_forward", Level::Ok, "net.ipv4.ip_forward = 0 now; gingham-agent sets it to 1 at start"),
        None => finding("ip_forward", Level::Fail, "/proc/sys/net/ipv4/ip_forward cannot be read"),
    });
    out.push(match f.nexthop_objects {
        true => finding("nexthop objects", Level::Ok, "supported: learned routes go through them (a gateway that goes is one change)"),
        false => finding(
            "nexthop objects",
            Level::Warn,
            "not supported (`ip nexthop` fails): routes carry their gateways, a gateway that goes is one change per route",
        ),
    });
    out.push(match (&f.nftables_error, f.nat_outgoing_wanted) {
        (None, _) => finding("nftables", Level::Ok, "nft works"),
        (Some(e), true) => finding("nftables", Level::Fail, format!("an IPPool has natOutgoing but nft fails: {e}")),
        (Some(e), false) => finding("nftables", Level::Warn, format!("nft fails ({e}); needed only for natOutgoing")),
    });
    let foreign: Vec<String> = f
        .interfaces
        .iter()
        .filter_map(|i| FOREIGN_INTERFACES.iter().find(|(n, _)| n == i).map(|(n, who)| format!("{n} ({who})")))
        .collect();
    out.push(match foreign.is_empty() {
        true => finding("other pod networks", Level::Ok, "no interfaces of other pod networks"),
        false => finding("other pod networks", Level::Warn, format!("interfaces of another pod network: {}", foreign.join(", "))),
    });
    let mut configs: Vec<&String> =
        f.cni_files.iter().filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json")).collect();
    configs.sort();
    out.push(match configs.first() {
        None => finding("CNI configuration", Level::Warn, format!("no CNI configuration yet (install-cni writes {OUR_CONFLIST})")),
        Some(first) if first.as_str() == OUR_CONFLIST => {
            finding("CNI configuration", Level::Ok, format!("{OUR_CONFLIST} is the one runtimes use"))
        }
        Some(first) => finding(
            "CNI configuration",
            Level::Fail,
            format!("runtimes use the first file by name, {first}, not {OUR_CONFLIST}: remove it or rename ours"),
        ),
    });
    let mut conflicts = Vec::new();
    for r in &f.routes {
        let Some(dst) = r.dst else { continue };
        let ours = r.protocol == RTPROT_GINGHAM || r.dev.starts_with("cali");
        if ours || matches!(r.kind.as_str(), "local" | "broadcast" | "multicast" | "anycast") {
            continue;
        }
        if let Some(pool) = f.pools.iter().find(|p| overlaps(**p, dst)) {
            conflicts.push(format!("{dst} dev {} proto {} table {} overlaps pool {pool}", r.dev, r.protocol, r.table));
        }
    }
    out.push(match conflicts.is_empty() {
        true if f.pools.is_empty() => finding("routes", Level::Warn, "no IPPools known (no datastore?): routes not checked"),
        true => finding("routes", Level::Ok, format!("no route of another owner in {} pools", f.pools.len())),
        false => finding("routes", Level::Fail, conflicts.join("; ")),
    });
    out
}

fn parse_routes(json: &str) -> Vec<Route> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else { return Vec::new() };
    let text = |v: &Value, k: &str| v.get(k).map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()));
    items
        .iter()
        .map(|r| {
            let dst = text(r, "dst").unwrap_or_default();
            let dst = match dst.as_str() {
                "default" => None,
                d if d.contains('/') => d.parse().ok(),
                d => d.parse::<IpAddr>().ok().map(IpNetwork::from),
            };
            Route {
                dst,
                protocol: text(r, "protocol").unwrap_or_else(|| "boot".into()),
                dev: text(r, "dev").unwrap_or_default(),
                kind: text(r, "type").unwrap_or_else(|| "unicast".into()),
                table: text(r, "table").unwrap_or_else(|| "main".into()),
            }
        })
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

pub fn gather(cni_dir: &Path, pools: Vec<IpNetwork>, nat_outgoing_wanted: bool) -> Facts {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    let kernel = numbers.next().zip(numbers.next());
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        routes.extend(run("ip", &[family, "-j", "route", "show", "table", "all"]).map(|j| parse_routes(&j)).unwrap_or_default());
    }
    Facts {
        kernel,
        ipv4_forwarding: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok().map(|v| v.trim() == "1"),
        nexthop_objects: run("ip", &["nexthop", "show"]).is_ok(),
        nftables_error: run("nft", &["list", "tables"]).err(),
        routes,
        interfaces: std::fs::read_dir("/sys/class/net")
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default(),
        cni_files: std::fs::read_dir(cni_dir)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default(),
        pools,
        nat_outgoing_wanted,
    }
}

pub fn report(findings: &[Finding]) -> ExitCode {
    let headers: Vec<String> = ["CHECK", "STATUS", "DETAIL"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> =
        findings.iter().map(|f| vec![f.check.to_string(), format!("{:?}", f.level).to_uppercase(), f.detail.clone()]).collect();
    print!("{}", table(&headers, &rows));
    match findings.iter().any(|f| f.level == Level::Fail) {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            kernel: Some((6, 1)),
            ipv4_forwarding: Some(true),
            nexthop_objects: true,
            cni_files: vec![OUR_CONFLIST.into(), "99-loopback.conf".into()],
            pools: vec!["198.18.0.0/16".parse().unwrap()],
            ..Default::default()
        }
    }

    fn level(f: &Facts, check: &str) -> Level {
        judge(f).into_iter().find(|x| x.check == check).unwrap().level
    }

    #[test]
    fn a_healthy_host_passes_every_check() {
        assert!(judge(&healthy()).iter().all(|f| f.level == Level::Ok), "{:?}", judge(&healthy()));
    }

    #[test]
    fn routes_into_a_pool_of_another_owner_fail_ours_do_not() {
        let json = r#"[{"dst":"198.18.1.0/24","dev":"eth0","protocol":"static","flags":[]},
            {"dst":"198.18.2.7","dev":"cali1234","protocol":"80","scope":"link","flags":[]},
            {"type":"blackhole","dst":"198.18.3.0/26","protocol":"80","flags":[]},
            {"dst":"198.19.0.0/24","dev":"eth0","protocol":"kernel","flags":[]},
            {"type":"local","dst":"198.18.9.9","dev":"lo","table":"local","protocol":"kernel","flags":[]}]"#;
        let mut f = healthy();
        f.routes = parse_routes(json);
        assert_eq!(f.routes.len(), 5);
        let found = judge(&f).into_iter().find(|x| x.check == "routes").unwrap();
        assert_eq!(found.level, Level::Fail);
        assert!(found.detail.contains("198.18.1.0/24 dev eth0 proto static"), "{}", found.detail);
        assert!(!found.detail.contains("198.18.2.7") && !found.detail.contains("198.19"), "{}", found.detail);
    }

    #[test]
    fn another_cni_config_that_sorts_first_fails() {
        let mut f = healthy();
        f.cni_files.push("05-cilium.conflist".into());
        assert_eq!(level(&f, "CNI configuration"), Level::Fail);
        f.cni_files = vec!["notes.txt".into()];
        assert_eq!(level(&f, "CNI configuration"), Level::Warn);
    }

    #[test]
    fn missing_nft_fails_only_when_a_pool_wants_nat() {
        let mut f = healthy();
        f.nftables_error = Some("not found".into());
        assert_eq!(level(&f, "nftables"), Level::Warn);
        f.nat_outgoing_wanted = true;
        assert_eq!(level(&f, "nftables"), Level::Fail);
        f.kernel = Some((4, 9));
        assert_eq!(level(&f, "kernel"), Level::Fail);
        f.interfaces = vec!["tunl0".into(), "eth0".into()];
        assert_eq!(level(&f, "other pod networks"), Level::Warn);
    }
}
