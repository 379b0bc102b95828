//! `ipam show`, `ipam check [--fix]`, `ipam release --ip`.

use std::net::IpAddr;
use std::process::ExitCode;

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{IPAMBlock, IPPool};
use gingham_ipam::{block, Ipam, LeakReason};
use ipnetwork::IpNetwork;

use crate::output::{table, Format};

fn size(net: IpNetwork) -> u128 {
    let bits = if net.is_ipv4() { 32 } else { 128 } - net.prefix() as u32;
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

pub async fn show(store: &Store<AnyDatastore>, show_blocks: bool, ip: Option<IpAddr>, format: Format) -> anyhow::Result<ExitCode> {
    let (pools, _) = store.list::<IPPool>().await?;
    let (blocks, _) = store.list::<IPAMBlock>().await?;
    if let Some(ip) = ip {
        let holder = blocks.iter().find_map(|b| block::holder(&b.spec, ip).map(|a| (b, a.clone())));
        match holder {
            Some((b, attr)) => {
                let attrs: Vec<String> = attr.secondary.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{ip} is in use by handle {} ({}) in block {}", attr.handle_id.unwrap_or_default(), attrs.join(", "), b.spec.cidr);
            }
            None => match pools.iter().find(|p| p.spec.network().is_some_and(|n| n.contains(ip))) {
                Some(p) => println!("{ip} is not assigned (pool {})", p.metadata.name.clone().unwrap_or_default()),
                None => println!("{ip} is not in any IPPool"),
            },
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    let mut json_pools = Vec::new();
    for pool in &pools {
        let Some(net) = pool.spec.network() else { continue };
        let inside: Vec<&IPAMBlock> =
            blocks.iter().filter(|b| b.spec.cidr.parse::<IpNetwork>().is_ok_and(|c| net.contains(c.network()))).collect();
        let used: u128 = inside.iter().map(|b| block::in_use(&b.spec) as u128).sum();
        let total = size(net);
        let name = pool.metadata.name.clone().unwrap_or_default();
        rows.push(vec![
            "IP Pool".to_string(),
            net.to_string(),
            total.to_string(),
            format!("{used} ({:.0}%)", used as f64 * 100.0 / total as f64),
            format!("{} ({:.0}%)", total - used, (total - used) as f64 * 100.0 / total as f64),
            inside.len().to_string(),
        ]);
        json_pools.push(serde_json::json!({"name": name, "cidr": net.to_string(), "total": total.to_string(), "inUse": used.to_string(), "blocks": inside.len()}));
        if show_blocks {
            for b in inside {
                let cidr: IpNetwork = b.spec.cidr.parse()?;
                let used = block::in_use(&b.spec) as u128;
                rows.push(vec![
                    "Block".to_string(),
                    b.spec.cidr.clone(),
                    size(cidr).to_string(),
                    format!("{used} ({:.0}%)", used as f64 * 100.0 / size(cidr) as f64),
                    format!("{} ({:.0}%)", size(cidr) - used, (size(cidr) - used) as f64 * 100.0 / size(cidr) as f64),
                    block::affine_node(&b.spec).map(|n| format!("host:{n}")).unwrap_or_else(|| "-".into()),
                ]);
            }
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json_pools)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&json_pools)?),
        _ => {
            let last = if show_blocks { "BLOCKS / AFFINITY" } else { "BLOCKS" };
            let headers: Vec<String> = ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE", last].map(String::from).to_vec();
            print!("{}", table(&headers, &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(store: &Store<AnyDatastore>, fix: bool) -> anyhow::Result<ExitCode> {
    let ipam = Ipam::new(store.clone());
    let report = ipam.check().await?;
    println!("Checked {} blocks and {} allocations.", report.blocks, report.allocations);
    for leak in &report.leaks {
        let why = match &leak.reason {
            LeakReason::HandleMissing => "its handle no longer exists".to_string(),
            LeakReason::NodeMissing(n) => format!("node {n} no longer exists"),
        };
        println!("  leaked: {} (handle {}): {why}", leak.address, leak.handle.clone().unwrap_or_default());
    }
    for d in &report.duplicates {
        println!("  allocated twice: {d}");
    }
    for b in &report.orphan_blocks {
        println!("  block {b} is affine to a node that no longer exists");
    }
    for a in &report.dangling_affinities {
        println!("  affinity {a} has no block (a claim that never finished)");
    }
    for (h, b, counted, found) in &report.handle_mismatches {
        println!("  handle {h} counts {counted} addresses in {b}, the block holds {found}");
    }
    println!(
        "Found {} leaked addresses, {} duplicates, {} orphaned blocks, {} dangling affinities, {} handle mismatches.",
        report.leaks.len(),
        report.duplicates.len(),
        report.orphan_blocks.len(),
        report.dangling_affinities.len(),
        report.handle_mismatches.len()
    );
    if report.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    if !fix {
        println!("Run `ginghamctl ipam check --fix` to repair.");
        return Ok(ExitCode::FAILURE);
    }
    let repaired = ipam.repair().await?;
    println!(
        "Repaired: released {} addresses, {} blocks, deleted {} affinities, fixed {} handles.",
        repaired.released.len(),
        repaired.blocks_released.len(),
        repaired.affinities_deleted.len(),
        repaired.handles_fixed.len()
    );
    let after = ipam.check().await?;
    Ok(if after.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn release(store: &Store<AnyDatastore>, ip: IpAddr) -> anyhow::Result<ExitCode> {
    let freed = Ipam::new(store.clone()).release_addresses(&[ip]).await?;
    if freed.is_empty() {
        println!("{ip} was not assigned; nothing to do");
    } else {
        println!("{ip} released");
    }
    Ok(ExitCode::SUCCESS)
}
