//! `gingham-controllers`: one active replica per cluster (a Deployment; a Lease picks the
//! leader) that releases what deleted Nodes and Pods held, mirrors Node labels and runs
//! LoadBalancer IPAM.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use gingham_controllers::leader::{Elector, LeaseConfig};
use gingham_controllers::{Options, Totals};

#[derive(Parser, Debug)]
#[command(
    name = "gingham-controllers",
    version,
    about = "Gingham's cluster-wide controllers: node and pod garbage collection, Node label sync, LoadBalancer IPAM"
)]
struct Config {
    /// `kubernetes`, or `sqlite:PATH` for LoadBalancer IPAM alone (there are no Kubernetes Nodes
    /// and Pods to collect garbage after there).
    #[arg(long, env = "GINGHAM_DATASTORE", default_value = "kubernetes")]
    datastore: String,
    /// Where the Lease lives (the Deployment sets it from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "gingham-system")]
    namespace: String,
    /// This replica's name in the Lease (the pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a pod must be gone before its addresses are released (Calico's default: 15 min).
    #[arg(long, env = "GINGHAM_POD_GC_GRACE", default_value_t = 900)]
    pod_gc_grace: u64,
    #[arg(long, env = "GINGHAM_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    #[arg(long, env = "GINGHAM_RENEW_DEADLINE", default_value_t = 10)]
    renew_deadline: u64,
    #[arg(long, env = "GINGHAM_RETRY_PERIOD", default_value_t = 2)]
    retry_period: u64,
    /// Seconds between the watch cache's full re-lists.
    #[arg(long, env = "GINGHAM_CACHE_RESYNC", default_value_t = 600)]
    cache_resync: u64,
    #[arg(long, env = "GINGHAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GINGHAM_LOG").unwrap_or_else(|_| "info".into());
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    let kubernetes = config.datastore == "kubernetes";
    anyhow::ensure!(
        kubernetes || config.datastore.starts_with("sqlite:"),
        "--datastore {}: gingham-controllers runs on `kubernetes` or `sqlite:PATH`",
        config.datastore
    );
    if !kubernetes {
        tracing::info!(
            "sqlite datastore: LoadBalancer IPAM only; `ginghamctl delete node` retires a node and the agents reclaim their pods' addresses"
        );
    }
    anyhow::ensure!(config.renew_deadline < config.lease_duration, "--renew-deadline must be shorter than --lease-duration");
    let identity = match config.identity.clone() {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname").context("no --identity and no hostname")?.trim().to_string(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let store = gingham_api::datastore::open(&config.datastore).await?;
        let lease = LeaseConfig {
            namespace: config.namespace.clone(),
            name: "gingham-controllers".into(),
            identity,
            duration: Duration::from_secs(config.lease_duration),
            renew_deadline: Duration::from_secs(config.renew_deadline),
            retry: Duration::from_secs(config.retry_period),
        };
        let options = Options {
            pod_grace: Duration::from_secs(config.pod_gc_grace),
            cache: gingham_api::cache::CacheOptions { resync: Duration::from_secs(config.cache_resync), ..Default::default() },
            collect_garbage: kubernetes,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let elector = Elector::new(store.clone(), lease);
        elector
            .run(
                move || {
                    let (totals, _) = tokio::sync::watch::channel(Totals::default());
                    gingham_controllers::run(store.clone(), options, totals)
                },
                shutdown,
            )
            .await;
        anyhow::Ok(())
    })
}
