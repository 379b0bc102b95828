//! `ginghamctl`: calicoctl's comfort for Gingham. Resources and IPAM go straight to the
//! datastore (`--datastore` / `GINGHAM_DATASTORE`); `node status` asks the local agent.

mod checksystem;
mod convert;
mod ipam;
mod label;
mod migrate;
mod node;
mod output;
mod resources;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser)]
#[command(name = "ginghamctl", version, about = "Manage Gingham resources, IPAM and nodes", after_help = EXIT_CODES)]
struct Cli {
    /// `sqlite:PATH` or `kubernetes`.
    #[arg(long, global = true, env = "GINGHAM_DATASTORE", default_value = "sqlite:/var/lib/gingham/gingham.db")]
    datastore: String,
    /// Create the sqlite datastore if it does not exist (otherwise a missing file is an error:
    /// normally the agent creates it).
    #[arg(long, global = true)]
    init: bool,
    /// The kubeconfig file for the kubernetes datastore (default: $KUBECONFIG, ~/.kube/config;
    /// in a pod its service account).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context for the kubernetes datastore (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
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
    /// Check every resource in a file as `apply` would (fields, values, unknown fields), writing
    /// nothing.
    Validate {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Set (`key=value`) or remove (`key --remove`) a label on any resource.
    Label {
        kind: String,
        name: String,
        /// `key=value`, or `key` with --remove.
        label: String,
        #[arg(long)]
        remove: bool,
        /// Change a label that already has another value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Calico resources (projectcalico.org/v3) to Gingham ones, on stdout; what cannot be
    /// carried over is listed on stderr with the reason.
    Convert {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Datastore maintenance.
    Datastore {
        #[command(subcommand)]
        command: DatastoreCmd,
    },
    /// Shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completion { shell: clap_complete::Shell },
    /// Client version, and the agent's when it answers.
    Version {
        #[arg(long, default_value = "127.0.0.1:9099")]
        status_addr: String,
    },
}

#[derive(Subcommand)]
enum DatastoreCmd {
    /// Move every Gingham object between datastores.
    Migrate {
        #[command(subcommand)]
        command: MigrateCmd,
    },
}

#[derive(Subcommand)]
enum MigrateCmd {
    /// Every Gingham object as multi-document YAML on stdout (not node status reports; not
    /// Secrets unless asked).
    Export {
        #[arg(long)]
        include_secrets: bool,
    },
    /// Creates every object of an export; refuses (writing nothing) if one is invalid or exists.
    Import {
        #[arg(short = 'f', long = "filename")]
        file: String,
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
    /// Can this host run Gingham: kernel, forwarding, nftables, other pod networks, another
    /// CNI configuration that runtimes would pick first, routes of other owners in our pools.
    Checksystem {
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: std::path::PathBuf,
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
    /// IPAM settings (IPAMConfiguration "default").
    Configure {
        /// true: a node never borrows addresses from another node's block.
        #[arg(long = "strictaffinity", action = clap::ArgAction::Set)]
        strict_affinity: bool,
    },
    /// Replace a pool by NUMBER (a power of two) equal pools named NAME-split-I with the same
    /// settings; existing blocks and allocations stay as they are.
    Split {
        number: u32,
        #[arg(long)]
        cidr: Option<ipnetwork::IpNetwork>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Frees an address whoever holds it.
    Release {
        #[arg(long)]
        ip: std::net::IpAddr,
    },
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (the error names the object, the field and the reason), \
an `ipam check` that found problems, a `node checksystem` with a failed check, a `convert` that could not convert \
every document; 2 usage error.";

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
        Cmd::Node { command: NodeCmd::Status { node: None, status_addr } } => return node::status(&status_addr, format),
        Cmd::Version { status_addr } => return node::version(&status_addr),
        Cmd::Validate { file } => return resources::validate(&file),
        Cmd::Convert { file } => return migrate::convert(&file),
        Cmd::Completion { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "ginghamctl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Some(path) = cli.datastore.strip_prefix("sqlite:") {
        if !cli.init && !std::path::Path::new(path).exists() {
            anyhow::bail!(
                "datastore {path} does not exist: is --datastore / GINGHAM_DATASTORE right? (gingham-agent creates it; --init creates an empty one)"
            );
        }
    }
    // Without --kubeconfig the kube client reads $KUBECONFIG itself, as every Kubernetes tool
    // does; the flags with sqlite are refused by `open_with`, not ignored.
    let kubeconfig = gingham_api::datastore::KubeconfigChoice { path: cli.kubeconfig, context: cli.context };
    let store = gingham_api::datastore::open_with(&cli.datastore, &kubeconfig).await?;
    match cli.command {
        Cmd::Get { kind, name } => resources::get(&store, &kind, name.as_deref(), format).await,
        Cmd::Apply { file } => resources::apply(&store, &file, resources::Mode::Apply).await,
        Cmd::Create { file } => resources::apply(&store, &file, resources::Mode::Create).await,
        Cmd::Delete { kind, name, file } => resources::delete(&store, kind.as_deref(), name.as_deref(), file.as_deref()).await,
        Cmd::Patch { kind, name, patch } => resources::patch(&store, &kind, &name, &patch).await,
        Cmd::Label { kind, name, label, remove, overwrite } => {
            label::label(&store, &kind, &name, label::Change::parse(&label, remove, overwrite)?).await
        }
        Cmd::Datastore { command: DatastoreCmd::Migrate { command: MigrateCmd::Export { include_secrets } } } => {
            migrate::export(&store, include_secrets).await
        }
        Cmd::Datastore { command: DatastoreCmd::Migrate { command: MigrateCmd::Import { file } } } => migrate::import(&store, &file).await,
        Cmd::Node { command: NodeCmd::Status { node: Some(name), .. } } => node::stored_status(&store, &name, format).await,
        Cmd::Node { command: NodeCmd::Checksystem { cni_conf_dir } } => node::checksystem(&store, &cni_conf_dir).await,
        Cmd::Ipam { command: IpamCmd::Show { show_blocks, ip } } => ipam::show(&store, show_blocks, ip, format).await,
        Cmd::Ipam { command: IpamCmd::Check { fix } } => ipam::check(&store, fix).await,
        Cmd::Ipam { command: IpamCmd::Release { ip } } => ipam::release(&store, ip).await,
        Cmd::Ipam { command: IpamCmd::Configure { strict_affinity } } => ipam::configure(&store, strict_affinity).await,
        Cmd::Ipam { command: IpamCmd::Split { number, cidr, name } } => ipam::split(&store, number, cidr, name.as_deref()).await,
        Cmd::Node { command: NodeCmd::Status { node: None, .. } }
        | Cmd::Version { .. }
        | Cmd::Validate { .. }
        | Cmd::Convert { .. }
        | Cmd::Completion { .. } => unreachable!("handled above"),
    }
}
