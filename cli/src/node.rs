//! `node status` and `version`: what the local agent says on its status endpoint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

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
pub fn render_status(status: &Value) -> String {
    let mut out = format!(
        "Gingham agent on node {} ({}) is running; ready: {}; datastore: {}; BGP synced: {}\n",
        status["node"].as_str().unwrap_or("?"),
        status["address"].as_str().unwrap_or("?"),
        if status["ready"] == true { "yes" } else { "no" },
        status["datastore"].as_str().unwrap_or("?"),
        if status["synced"] == true { "yes" } else { "no" },
    );
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let peers: Vec<&Value> = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["address"].as_str().is_some_and(|a| a.contains(':') == v6))
            .collect();
        out.push_str(&format!("\n{family} BGP status\n"));
        if peers.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
            continue;
        }
        let headers: Vec<String> = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|p| {
                let since = p["sinceSeconds"].as_u64().map(|s| format!("{}s", s)).unwrap_or_else(|| "-".into());
                let mut info = if p["state"] == "Established" {
                    let received = p["prefixesReceived"].as_u64().unwrap_or(0);
                    match p["prefixesAccepted"].as_u64() {
                        Some(accepted) if accepted != received => format!("{received} prefixes received, {accepted} accepted"),
                        _ => format!("{received} prefixes received"),
                    }
                } else {
                    p["info"].as_str().unwrap_or_default().to_string()
                };
                for problem in p["problems"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    info.push_str("; ");
                    info.push_str(problem);
                }
                vec![
                    p["address"].as_str().unwrap_or("?").to_string(),
                    p["type"].as_str().unwrap_or("?").to_string(),
                    p["state"].as_str().unwrap_or("?").to_string(),
                    since,
                    info,
                ]
            })
            .collect();
        out.push_str(&table(&headers, &rows));
    }
    let problems: Vec<&Value> = status.pointer("/routes/problems").and_then(Value::as_array).into_iter().flatten().collect();
    if !problems.is_empty() {
        let total = status.pointer("/routes/notInstalled").and_then(Value::as_u64).unwrap_or(problems.len() as u64);
        out.push_str(&format!("\nRoutes not installed: {total}\n"));
        let headers: Vec<String> = ["PREFIX", "METRIC", "REASON"].map(String::from).to_vec();
        let rows: Vec<Vec<String>> = problems
            .iter()
            .map(|p| {
                vec![
                    p["prefix"].as_str().unwrap_or("?").to_string(),
                    p["metric"].to_string(),
                    p["message"].as_str().unwrap_or("?").to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&headers, &rows));
    }
    out
}

pub fn status(addr: &str, format: Format) -> anyhow::Result<ExitCode> {
    let body = fetch(addr, "/status")?;
    let status: Value = serde_json::from_str(&body).context("the agent's /status is not JSON")?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&status)?),
        _ => print!("{}", render_status(&status)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn version(addr: &str) -> anyhow::Result<ExitCode> {
    println!("Client Version:    {}", env!("CARGO_PKG_VERSION"));
    match fetch(addr, "/status").ok().and_then(|b| serde_json::from_str::<Value>(&b).ok()) {
        Some(s) => println!("Agent Version:     {} (node {})", s["version"].as_str().unwrap_or("?"), s["node"].as_str().unwrap_or("?")),
        None => println!("Agent Version:     unknown (no agent answered on {addr})"),
    }
    Ok(ExitCode::SUCCESS)
}
