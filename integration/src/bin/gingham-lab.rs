//! gingham-lab: builds topologies out of network namespaces on this machine (root).
//!
//! `gingham-lab interop`: our speaker against BIRD, FRR and GoBGP; prints the session table
//! and the routes exchanged, then tears everything down (unless `--keep`).

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gingham_integration::interop::{self, InteropLab, OUR_PREFIX_V4, OUR_PREFIX_V6};

#[derive(Parser)]
#[command(
    name = "gingham-lab",
    version,
    about = "Gingham labs built from network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Peer our speaker with BIRD, FRR and GoBGP (iBGP/eBGP, IPv4/IPv6, 2/4-octet ASNs).
    Interop {
        /// Keep the lab running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Record golden BGP vectors from BIRD, FRR and GoBGP talking to each other (tshark).
    CaptureGolden {
        /// Fixture file to write.
        #[arg(long, default_value = "bgp/tests/golden/daemons.txt")]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Namespaces and daemons must not outlive an interrupted lab.
    gingham_integration::netns::cleanup_on_signals();
    match Cli::parse().command {
        Command::Interop { keep } => run_interop(keep),
        Command::CaptureGolden { out } => {
            gingham_integration::golden::capture(&out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn run_interop(keep: bool) -> Result<()> {
    println!("building fabric: gingham (h1), BIRD (h2), FRR (h3), GoBGP (h4) ...");
    let lab = InteropLab::up()?;
    if let Err(e) = lab.converge(Duration::from_secs(60)) {
        eprintln!("{}", lab.logs());
        return Err(e);
    }
    // Let the peers take our routes in and a few keepalives pass.
    std::thread::sleep(Duration::from_secs(4));

    println!(
        "\nGingham sessions (speaker in h1, router id {}):",
        interop::OUR_V4
    );
    println!(
        "{:<12} {:<16} {:>11} {:>11} {:<12} {:>6} {:>5} {:>9}  FAMILIES / LAST ERROR",
        "PEER", "ADDRESS", "LOCAL AS", "PEER AS", "STATE", "HOLD", "4-OCT", "PFX RCVD"
    );
    for (name, s) in lab.speaker.snapshots() {
        let (hold, four, caps) = match &s.negotiated {
            Some(n) => (
                n.hold_time.to_string(),
                if n.four_octet_as { "yes" } else { "no" },
                n.families
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => ("-".into(), "-", s.last_error.clone().unwrap_or_default()),
        };
        println!(
            "{:<12} {:<16} {:>11} {:>11} {:<12} {:>6} {:>5} {:>9}  {}",
            name,
            s.peer.ip(),
            s.local_as,
            s.peer_as,
            s.state,
            hold,
            four,
            s.prefixes_received,
            caps
        );
    }

    println!("\nRoutes our speaker received:");
    let view = lab.speaker.view();
    let mut rows: Vec<String> = view
        .received
        .iter()
        .flat_map(|(peer, table)| {
            table.iter().map(move |(p, a)| {
                format!(
                    "  {:<18} from {:<16} as-path [{}]",
                    p.to_string(),
                    peer.ip(),
                    a.as_path
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                )
            })
        })
        .collect();
    rows.sort();
    rows.iter().for_each(|r| println!("{r}"));

    println!("\nOur routes as the peers see them:");
    for (who, prefix, seen) in [
        (
            "BIRD (bird_ibgp)",
            OUR_PREFIX_V4,
            lab.bird
                .routes_from("bird_ibgp")
                .contains(&OUR_PREFIX_V4.to_string()),
        ),
        (
            "BIRD (bird_ebgp)",
            OUR_PREFIX_V6,
            lab.bird
                .routes_from("bird_ebgp")
                .contains(&OUR_PREFIX_V6.to_string()),
        ),
        (
            "FRR  ipv4",
            OUR_PREFIX_V4,
            lab.frr.route("ipv4", OUR_PREFIX_V4).is_some(),
        ),
        (
            "FRR  ipv6",
            OUR_PREFIX_V6,
            lab.frr.route("ipv6", OUR_PREFIX_V6).is_some(),
        ),
        (
            "GoBGP ipv4",
            OUR_PREFIX_V4,
            !lab.gobgp.paths("ipv4", OUR_PREFIX_V4).is_empty(),
        ),
        (
            "GoBGP ipv6",
            OUR_PREFIX_V6,
            !lab.gobgp.paths("ipv6", OUR_PREFIX_V6).is_empty(),
        ),
    ] {
        println!(
            "  {who:<18} {prefix:<18} {}",
            if seen { "present" } else { "MISSING" }
        );
    }
    if keep {
        println!(
            "\nlab kept; namespaces: {}",
            lab.fabric
                .hosts
                .iter()
                .map(|h| h.ns.name().to_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("press Ctrl-C to tear down");
        wait_for_ctrl_c();
    }
    println!("\ntearing down");
    Ok(())
}

fn wait_for_ctrl_c() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(rt) = rt {
        rt.block_on(async {
            let _either_way_we_tear_down = tokio::signal::ctrl_c().await;
        });
    }
}
