//! `ginghamctl`: calicoctl's comfort for Gingham. Resources and IPAM go straight to the
//! datastore (`--datastore` / `GINGHAM_DATASTORE`); `node status` asks the local agent.

mod ipam;
mod node;
mod output;
mod resources;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser)]
#[command(name = "ginghamctl", version, about = "Manage Gingham resources, IPAM and nodes")]
struct Cli {
    /// `sqlite:PATH` or `kubernetes`.
    #[arg(long, global = true, env = "GINGHAM_DATASTORE", default_value = "sqlite:/var/lib/gingham/gingham.db")]
    datastore: String,
    /// Create the sqlite datastore if it does not exist (otherwise a missing file is an error:
    /// normally the agent creates it).
    #[arg(long, global = true)]
    init: bool,
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show resources of a kind (ippool, bgppeer, node, block, ...), or one by name.
    Get { kind: String, name: Option<String> },
    /// Create or update every resource in a file (`-` for stdin), YAML or JSON, all or nothing.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Create every resource in a file; fails if one exists.
    Create {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Delete a resource by kind and name, or every resource in a file.
    Delete {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
    },
    /// Change a resource with a JSON merge patch.
    Patch {
        kind: String,
        name: String,
        #[arg(short = 'p', long = "patch")]
        patch: String,
    },
    /// The local agent's view of this node.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Address management.
    Ipam {
        #[command(subcommand)]
        command: IpamCmd,
    },
    /// Client version, and the agent's when it answers.
    Version {
        #[arg(long, default_value = "127.0.0.1:9099")]
        status_addr: String,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// BGP peers and agent health: without NODE from the local agent's status endpoint; with
    /// NODE the report that node's agent last stored in the datastore (from any machine).
    Status {
        node: Option<String>,
        #[arg(long, env = "GINGHAM_STATUS_ADDR", default_value = "127.0.0.1:9099")]
        status_addr: String,
    },
}

#[derive(Subcommand)]
enum IpamCmd {
    /// Pool utilisation; `--show-blocks` per block; `--ip` who holds an address.
    Show {
        #[arg(long)]
        show_blocks: bool,
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
    /// Finds leaks, duplicates and orphaned blocks; `--fix` repairs them.
    Check {
        #[arg(long)]
        fix: bool,
    },
    /// Frees an address whoever holds it.
    Release {
        #[arg(long)]
        ip: std::net::IpAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let format = cli.output;
    match cli.command {
        Cmd::Node { command: NodeCmd::Status { node: None, status_addr } } => node::status(&status_addr, format),
        Cmd::Version { status_addr } => node::version(&status_addr),
        command => {
            if let Some(path) = cli.datastore.strip_prefix("sqlite:") {
                if !cli.init && !std::path::Path::new(path).exists() {
                    anyhow::bail!(
                        "datastore {path} does not exist: is --datastore / GINGHAM_DATASTORE right? (gingham-agent creates it; --init creates an empty one)"
                    );
                }
            }
            let store = gingham_api::datastore::open(&cli.datastore).await?;
            match command {
                Cmd::Get { kind, name } => resources::get(&store, &kind, name.as_deref(), format).await,
                Cmd::Apply { file } => resources::apply(&store, &file, resources::Mode::Apply).await,
                Cmd::Create { file } => resources::apply(&store, &file, resources::Mode::Create).await,
                Cmd::Delete { kind, name, file } => resources::delete(&store, kind.as_deref(), name.as_deref(), file.as_deref()).await,
                Cmd::Patch { kind, name, patch } => resources::patch(&store, &kind, &name, &patch).await,
                Cmd::Node { command: NodeCmd::Status { node: Some(name), .. } } => node::stored_status(&store, &name, format).await,
                Cmd::Ipam { command: IpamCmd::Show { show_blocks, ip } } => ipam::show(&store, show_blocks, ip, format).await,
                Cmd::Ipam { command: IpamCmd::Check { fix } } => ipam::check(&store, fix).await,
                Cmd::Ipam { command: IpamCmd::Release { ip } } => ipam::release(&store, ip).await,
                Cmd::Node { .. } | Cmd::Version { .. } => unreachable!("handled above"),
            }
        }
    }
}
