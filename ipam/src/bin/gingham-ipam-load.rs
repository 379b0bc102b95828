//! Load generator for block IPAM on a real datastore, used by the multi-process stress test and
//! as the benchmark (`cargo run --release -p gingham-ipam --bin gingham-ipam-load -- bench`).
//!
//! `assign` and `release` act as one CNI-like client: they assign (or release) N handles one
//! after the other and print each address on its own line. `bench` sets up a fresh sqlite file,
//! runs 1 and then 4 `assign` processes of itself in parallel, checks the result and prints a
//! table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{GinghamNode, GinghamNodeSpec, IPPool, IPPoolSpec};
use gingham_ipam::{AssignArgs, Ipam, ATTR_NODE, ATTR_POD};

#[derive(Parser)]
#[command(about = "Block IPAM load generator and benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the pool and nodes the load runs against.
    Init {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value = "198.19.0.0/16")]
        pool: String,
        #[arg(long, default_value_t = 26)]
        block_size: u8,
        #[arg(long, default_value_t = 4)]
        nodes: usize,
    },
    /// Assign `count` addresses to handles PREFIX0..PREFIXn on NODE, printing each address.
    Assign {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        handle_prefix: String,
    },
    /// Release handles PREFIX0..PREFIXn, printing each freed address.
    Release {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        handle_prefix: String,
    },
    /// Assignments per second on sqlite with 1 and with 4 processes.
    Bench {
        #[arg(long, default_value_t = 1000)]
        assignments: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    match cli.command {
        Cmd::Init { db, pool, block_size, nodes } => rt.block_on(init(&db, &pool, block_size, nodes)),
        Cmd::Assign { db, node, count, handle_prefix } => rt.block_on(assign(&db, &node, count, &handle_prefix)),
        Cmd::Release { db, count, handle_prefix } => rt.block_on(release(&db, count, &handle_prefix)),
        Cmd::Bench { assignments } => bench(assignments),
    }
}

fn open(db: &PathBuf) -> Result<Ipam<SqliteStore>> {
    Ok(Ipam::new(Store::new(SqliteStore::open(db)?)))
}

async fn init(db: &PathBuf, pool: &str, block_size: u8, nodes: usize) -> Result<()> {
    let ipam = open(db)?;
    let spec = IPPoolSpec { cidr: pool.into(), block_size: Some(block_size), ..Default::default() };
    ipam.store().create(&IPPool::new("load", spec)).await?;
    for i in 0..nodes {
        ipam.store().create(&GinghamNode::new(&format!("node-{i}"), GinghamNodeSpec::default())).await?;
    }
    Ok(())
}

async fn assign(db: &PathBuf, node: &str, count: usize, prefix: &str) -> Result<()> {
    let ipam = open(db)?;
    let mut out = String::new();
    for i in 0..count {
        let handle = format!("{prefix}{i}");
        let attrs = BTreeMap::from([(ATTR_NODE.to_string(), node.to_string()), (ATTR_POD.to_string(), handle.clone())]);
        let args = AssignArgs { handle, node: node.into(), attrs, ipv4: true, ipv6: false };
        let got = ipam.assign(&args).await.with_context(|| format!("assignment {i} on {node}"))?;
        out.push_str(&format!("{}\n", got.ipv4.context("no IPv4 address")?.address));
    }
    print!("{out}");
    Ok(())
}

async fn release(db: &PathBuf, count: usize, prefix: &str) -> Result<()> {
    let ipam = open(db)?;
    for i in 0..count {
        for addr in ipam.release_handle(&format!("{prefix}{i}")).await? {
            println!("{addr}");
        }
    }
    Ok(())
}

/// Runs `processes` assign processes in parallel, each with `per_process` assignments, on a
/// fresh database; returns the elapsed seconds after checking that every address is distinct.
fn run_parallel(processes: usize, per_process: usize) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("gingham-ipam-bench-{}-{processes}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("ipam.db");
    let _ = std::fs::remove_file(&db);
    let me = std::env::current_exe()?;
    let status = Command::new(&me).args(["init", "--db"]).arg(&db).status()?;
    if !status.success() {
        bail!("init failed");
    }
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            Command::new(&me)
                .args(["assign", "--db"])
                .arg(&db)
                .args(["--node", &format!("node-{}", p % 2), "--count", &per_process.to_string(), "--handle-prefix", &format!("p{p}-")])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut all = std::collections::HashSet::new();
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("an assign process failed");
        }
        all.extend(String::from_utf8(out.stdout)?.lines().map(str::to_string));
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    if all.len() != processes * per_process {
        bail!("{} distinct addresses for {} assignments", all.len(), processes * per_process);
    }
    Ok(secs)
}

fn bench(assignments: usize) -> Result<()> {
    println!("Block IPAM on sqlite (WAL, one file): {assignments} assignments, /26 blocks, 2 nodes");
    println!("{:<26} {:>10} {:>14} {:>14}", "clients", "seconds", "assign/s", "vs 1 process");
    let one = run_parallel(1, assignments)?;
    let four = run_parallel(4, assignments / 4)?;
    let rate = |s: f64| assignments as f64 / s;
    println!("{:<26} {:>10.2} {:>14.0} {:>13.2}x", "1 process", one, rate(one), 1.0);
    println!("{:<26} {:>10.2} {:>14.0} {:>13.2}x", "4 processes in parallel", four, rate(four), rate(four) / rate(one));
    Ok(())
}
