//! `gingham-agent`: one per node. Registers the node, serves the CNI plugin, programs pod
//! interfaces and routes, and runs the BGP speaker that tells the network where pods live.

use clap::Parser;
use gingham_agent::config::{Config, LogFormat};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GINGHAM_LOG").unwrap_or_else(|_| "info".into());
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(gingham_agent::run(config))
}
