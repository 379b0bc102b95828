//! `ipam show`, `ipam check [--fix]`, `ipam release --ip`.

use std::net::IpAddr;
use std::process::ExitCode;

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{IPAMBlock, IPPool, IPPoolSpec};
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
                    b.spec.affinity.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json_pools)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&json_pools)?),
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

/// Sets IPAMConfiguration `default`'s strictAffinity, creating it when absent.
pub async fn configure(store: &Store<AnyDatastore>, strict_affinity: bool) -> anyhow::Result<ExitCode> {
    use gingham_api::resources::{IPAMConfiguration, IPAMConfigurationSpec, DEFAULT_NAME};
    for _ in 0..10 {
        let result = match store.get::<IPAMConfiguration>(DEFAULT_NAME).await? {
            Some(mut config) => {
                if config.spec.strict_affinity == strict_affinity {
                    println!("strictAffinity is already {strict_affinity}");
                    return Ok(ExitCode::SUCCESS);
                }
                config.spec.strict_affinity = strict_affinity;
                store.update(&config).await.map(drop)
            }
            None => {
                let spec = IPAMConfigurationSpec { strict_affinity, ..Default::default() };
                store.create(&IPAMConfiguration::new(DEFAULT_NAME, spec)).await.map(drop)
            }
        };
        match result {
            Ok(()) => {
                println!("IPAMConfiguration \"default\": strictAffinity set to {strict_affinity}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("IPAMConfiguration \"default\": still conflicting after 10 attempts")
}

/// The `parts` equal child ranges of `net` (a power of two), refused when a child could not
/// hold whole blocks of `block_size` (existing blocks must each fall into exactly one child).
pub fn split_ranges(net: IpNetwork, parts: u32, block_size: u8) -> anyhow::Result<Vec<IpNetwork>> {
    if parts < 2 || !parts.is_power_of_two() {
        anyhow::bail!("NUMBER: {parts} is not a power of two of at least 2");
    }
    let child_prefix = net.prefix() as u32 + parts.trailing_zeros();
    if child_prefix > block_size as u32 {
        anyhow::bail!("NUMBER: {parts} pools of {net} would be /{child_prefix}, smaller than the pool's /{block_size} blocks");
    }
    let step = size(net) / parts as u128;
    (0..parts as u128)
        .map(|i| {
            let base = match net.network() {
                IpAddr::V4(a) => IpAddr::V4(u32::try_from(u32::from(a) as u128 + i * step)?.into()),
                IpAddr::V6(a) => IpAddr::V6((u128::from(a) + i * step).into()),
            };
            Ok(IpNetwork::new(base, child_prefix as u8)?)
        })
        .collect()
}

/// Replaces a pool by `parts` pools of equal size (`NAME-split-I`), same settings otherwise.
/// The children are created before the parent goes, so every allocated block stays inside some
/// pool throughout; blocks and allocations are untouched.
pub async fn split(store: &Store<AnyDatastore>, parts: u32, cidr: Option<IpNetwork>, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let (pools, _) = store.list::<IPPool>().await?;
    let parent = match (cidr, name) {
        (Some(c), None) => pools.iter().find(|p| p.spec.network() == Some(c)),
        (None, Some(n)) => pools.iter().find(|p| p.metadata.name.as_deref() == Some(n)),
        _ => anyhow::bail!("give exactly one of --cidr and --name"),
    }
    .ok_or_else(|| anyhow::anyhow!("no IPPool with that {}", if cidr.is_some() { "CIDR" } else { "name" }))?
    .clone();
    let parent_name = parent.metadata.name.clone().unwrap_or_default();
    let net = parent.spec.network().ok_or_else(|| anyhow::anyhow!("IPPool {parent_name:?} has an invalid cidr"))?;
    let ranges = split_ranges(net, parts, parent.spec.effective_block_size())?;
    let mut children = Vec::new();
    for (i, range) in ranges.iter().enumerate() {
        let mut child =
            IPPool::new(&format!("{parent_name}-split-{}", i + 1), IPPoolSpec { cidr: range.to_string(), ..parent.spec.clone() });
        child.metadata.labels = parent.metadata.labels.clone();
        child.metadata.annotations = parent.metadata.annotations.clone();
        gingham_api::resources::Kind::validate(&child).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
        children.push(child);
    }
    for child in &children {
        store.create(child).await?;
        println!("IPPool {:?} created ({})", child.metadata.name.as_deref().unwrap_or_default(), child.spec.cidr);
    }
    store.delete_latest::<IPPool>(&parent_name).await?;
    println!("IPPool {parent_name:?} ({net}) deleted");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_cover_the_pool_in_equal_parts() {
        let net: IpNetwork = "198.18.0.0/16".parse().unwrap();
        let parts = split_ranges(net, 4, 26).unwrap();
        let want: Vec<IpNetwork> =
            ["198.18.0.0/18", "198.18.64.0/18", "198.18.128.0/18", "198.18.192.0/18"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(parts, want);
        let v6: IpNetwork = "fd00::/64".parse().unwrap();
        assert_eq!(split_ranges(v6, 2, 122).unwrap()[1], "fd00::8000:0:0:0/65".parse::<IpNetwork>().unwrap());
    }

    #[test]
    fn split_refuses_odd_counts_and_children_smaller_than_a_block() {
        let net: IpNetwork = "198.18.0.0/24".parse().unwrap();
        assert!(split_ranges(net, 3, 26).unwrap_err().to_string().contains("power of two"));
        assert!(split_ranges(net, 1, 26).is_err());
        assert!(split_ranges(net, 8, 26).unwrap_err().to_string().contains("smaller than the pool's /26 blocks"));
        assert_eq!(split_ranges(net, 4, 26).unwrap().len(), 4);
    }
}
