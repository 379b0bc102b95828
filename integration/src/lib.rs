//! Test and lab infrastructure: namespaces, real BGP daemons, our speaker in a namespace,
//! and the interop topology behind `gingham-lab interop`.

pub mod bench_failover;
pub mod bench_node;
pub mod bgperf;
pub mod daemons;
pub mod golden;
pub mod interop;
pub mod lab;
pub mod manifests;
pub mod netns;
pub mod proc_stats;
pub mod route_count;
pub mod sessions;
pub mod soak;
pub mod update_tap;
