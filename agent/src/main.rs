//! `gingham-agent`: one per node. Registers the node, serves the CNI plugin, programs pod
//! interfaces and routes, and runs the BGP speaker that tells the network where pods live.

use clap::Parser;
use gingham_agent::config::{Config, LogFormat};
use gingham_agent::LogLevelSetter;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // glibc gives every thread that allocates an arena of its own; an agent's few threads
    // (runtime workers, the sqlite poller, namespace workers) share two instead, which keeps
    // its memory flat. Blocks of 256 KiB and more (a full table's arrays and the copies made
    // while they are rebuilt) get pages of their own, given back when freed: glibc otherwise
    // raises that bound to the largest block freed so far and carves them from the arenas,
    // where what they leave stays resident (4 MB of 19 with a full table).
    // SAFETY: mallopt only sets allocator parameters, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let config = Config::parse();
    // GINGHAM_LOG, when set, is the operator's explicit choice and wins over the
    // BGPConfiguration's logSeverityScreen.
    let fixed = std::env::var_os("GINGHAM_LOG").is_some();
    let filter = EnvFilter::try_from_env("GINGHAM_LOG").unwrap_or_else(|_| "info".into());
    let setter: LogLevelSetter = match config.log_format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt().with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level| handle.reload(EnvFilter::new(level)).map_err(Into::into))
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt().json().with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level| handle.reload(EnvFilter::new(level)).map_err(Into::into))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(gingham_agent::run(config, (!fixed).then_some(setter)))
}
