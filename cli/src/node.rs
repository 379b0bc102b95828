//! `node status` and `version`: what the local agent says on its status endpoint, or what a
//! node's agent last stored in the datastore (`node status NODE`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use gingham_api::status::{NodeStatus, PeerStatus};

use crate::output::{table, Format};

pub fn fetch(addr: &str, path: &str) -> anyhow::Result<String> {
    let sock: SocketAddr = addr.to_socket_addrs().with_context(|| format!("bad status address {addr}"))?.next().context("no address")?;
    let mut conn =
        TcpStream::connect_timeout(&sock, Duration::from_secs(3)).with_context(|| format!("gingham-agent is not reachable on {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: a server may answer and close as soon as it has the request line and headers.
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("gingham-agent on {addr} answered {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// The Calico-style report for one status document.
pub fn render_status(status: &NodeStatus) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!(
        "Gingham agent on node {} ({}) is running; ready: {}; datastore: {}; BGP synced: {}\n",
        status.node,
        status.address,
        yes(status.ready),
        status.datastore,
        yes(status.synced),
    );
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let peers: Vec<&PeerStatus> = status.peers.iter().filter(|p| p.address.contains(':') == v6).collect();
        out.push_str(&format!("\n{family} BGP status\n"));
        if peers.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
            continue;
        }
        let headers: Vec<String> = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "BFD", "INFO"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|p| {
                let since = p.since_seconds.map(|s| format!("{s}s")).unwrap_or_else(|| "-".into());
                let mut info = if p.state == "Established" {
                    match (p.prefixes_received, p.prefixes_accepted) {
                        (received, accepted) if accepted != received => format!("{received} prefixes received, {accepted} accepted"),
                        (received, _) => format!("{received} prefixes received"),
                    }
                } else {
                    p.info.clone()
                };
                for problem in &p.problems {
                    info.push_str("; ");
                    info.push_str(problem);
                }
                let bfd = match &p.bfd {
                    None => "-".to_string(),
                    Some(b) if b.state == "Up" => b.state.clone(),
                    Some(b) => format!("{} ({})", b.state, b.diagnostic),
                };
                if p.bfd.as_ref().is_some_and(|b| b.holding_bgp) {
                    info.push_str("; waiting for BFD Up");
                }
                vec![p.address.clone(), p.kind.clone(), p.state.clone(), since, bfd, info]
            })
            .collect();
        out.push_str(&table(&headers, &rows));
    }
    if !status.routes.problems.is_empty() {
        out.push_str(&format!("\nRoutes not installed: {}\n", status.routes.not_installed));
        let headers: Vec<String> = ["PREFIX", "METRIC", "REASON"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> =
            status.routes.problems.iter().map(|p| vec![p.prefix.clone(), p.metric.to_string(), p.message.clone()]).collect();
        out.push_str(&table(&headers, &rows));
    }
    if status.nat_outgoing != "ok" && !status.nat_outgoing.is_empty() {
        out.push_str(&format!("\nnatOutgoing: {}\n", status.nat_outgoing));
    }
    out
}

pub fn status(addr: &str, format: Format) -> anyhow::Result<ExitCode> {
    let body = fetch(addr, "/status")?;
    let status: NodeStatus = serde_json::from_str(&body).context("the agent's /status is not a status document")?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&status)?),
        _ => print!("{}", render_status(&status)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stored_status(
    store: &gingham_api::datastore::Store<gingham_api::datastore::AnyDatastore>,
    node: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    use gingham_api::status::GinghamNodeStatus;
    let Some(report) = store.get::<GinghamNodeStatus>(node).await? else {
        bail!("no status stored for node {node:?}: is its agent running (and is {node:?} the GinghamNode's name)?");
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.spec)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&report.spec)?),
        _ => {
            let age = report.age().map_or("unknown".to_string(), |a| format!("{} s ago", a.as_secs()));
            println!("Reported by the agent at {} ({age}); ages below count from then.", report.spec.reported_at);
            print!("{}", render_status(&report.spec.status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn version(addr: &str) -> anyhow::Result<ExitCode> {
    println!("Client Version:    {}", env!("CARGO_PKG_VERSION"));
    match fetch(addr, "/status").ok().and_then(|b| serde_json::from_str::<NodeStatus>(&b).ok()) {
        Some(s) => println!("Agent Version:     {} (node {})", s.version, s.node),
        None => println!("Agent Version:     unknown (no agent answered on {addr})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `node checksystem`: the pools come from the datastore when it opens.
pub async fn checksystem(
    store: &gingham_api::datastore::Store<gingham_api::datastore::AnyDatastore>,
    cni_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (pools, _) = store.list::<gingham_api::resources::IPPool>().await?;
    let nat = pools.iter().any(|p| p.spec.nat_outgoing && !p.spec.disabled);
    let nets = pools.iter().filter_map(|p| p.spec.network()).collect();
    let facts = crate::checksystem::gather(cni_dir, nets, nat);
    Ok(crate::checksystem::report(&crate::checksystem::judge(&facts)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_api::status::PeerBfdStatus;

    #[test]
    fn the_bfd_column_shows_state_and_why_and_a_held_session_says_so() {
        let peer = |address: &str, state: &str, bfd: Option<PeerBfdStatus>| PeerStatus {
            address: address.into(),
            kind: "mesh".into(),
            state: state.into(),
            bfd,
            ..Default::default()
        };
        let bfd = |state: &str, diagnostic: &str, holding_bgp: bool| {
            Some(PeerBfdStatus { state: state.into(), diagnostic: diagnostic.into(), holding_bgp, ..Default::default() })
        };
        let status = NodeStatus {
            node: "node-1".into(),
            peers: vec![
                peer("198.18.0.12", "Established", bfd("Up", "no diagnostic", false)),
                peer("198.18.0.13", "Idle", bfd("Down", "control detection time expired", true)),
                peer("198.18.0.14", "Established", None),
            ],
            ..Default::default()
        };
        let text = render_status(&status);
        let line = |addr: &str| text.lines().find(|l| l.starts_with(addr)).unwrap_or_else(|| panic!("{addr} in\n{text}")).to_string();
        assert!(text.contains("BFD"), "{text}");
        assert!(line("198.18.0.12").contains(" Up "), "{text}");
        let down = line("198.18.0.13");
        assert!(down.contains("Down (control detection time expired)") && down.contains("waiting for BFD Up"), "{text}");
        assert!(line("198.18.0.14").split_whitespace().any(|w| w == "-"), "no BFD configured: {text}");
    }
}
