//! The node agent as a library: `gingham-agent` is [`run`] behind a command line, and the lab
//! benchmarks drive [`fib`] directly.

pub mod autodetect;
pub mod bfd_link;
pub mod cluster;
pub mod cni_server;
pub mod cni_service;
pub mod config;
pub mod controller;
pub mod desired;
pub mod endpoint;
pub mod fib;
pub mod ipam_writer;
pub mod metrics;
pub mod nat;
pub mod netlink;
pub mod node;
pub mod peers;
pub mod policy;
pub mod router_adverts;
pub mod service_routes;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gingham_api::resources::{BGPConfiguration, DEFAULT_NAME};
use gingham_bgp::rib::Gateway;
use gingham_bgp::speaker::{self, SpeakerConfig};
use ipnetwork::IpNetwork;

use crate::config::Config;
use crate::fib::{Class, Target};

/// Changes the log filter (`info`, `debug`, ...) while running.
pub type LogLevelSetter = Box<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// Runs the agent until SIGTERM or Ctrl-C. `log_level` follows BGPConfiguration
/// `logSeverityScreen` when given.
pub async fn run(config: Config, log_level: Option<LogLevelSetter>) -> anyhow::Result<()> {
    let netlink = netlink::connect().context("netlink")?;
    let store = gingham_api::datastore::open(&config.datastore).await.with_context(|| format!("datastore {}", config.datastore))?;
    let bgp_config = store.get::<BGPConfiguration>(DEFAULT_NAME).await?.map(|c| c.spec).unwrap_or_default();
    let stored = store.get::<gingham_api::resources::GinghamNode>(&config.node_name).await?;
    let k8s_addresses = match [&config.ip, &config.ip6].iter().any(|m| *m == "kubernetes-internal-ip") {
        true => node::internal_ips(&store, &config.node_name).await?,
        false => Vec::new(),
    };
    let host = autodetect::host_addresses(&netlink).await.context("reading the host's addresses")?;
    let ignored = &bgp_config.ignored_interfaces;
    let address: IpNetwork =
        match node::keep_or_detect(stored.as_ref().and_then(|n| n.bgp_network(false)), &host, config.override_node_config) {
            Some(kept) => kept,
            None => autodetect::detect(&netlink, &config.ip, ignored, false, &k8s_addresses).await.context("node address (--ip)")?,
        };
    let address6: Option<IpNetwork> =
        match node::keep_or_detect(stored.as_ref().and_then(|n| n.bgp_network(true)), &host, config.override_node_config) {
            Some(kept) => Some(kept),
            None if config.ip6 == "none" => None,
            None => {
                Some(autodetect::detect(&netlink, &config.ip6, ignored, true, &k8s_addresses).await.context("node IPv6 address (--ip6)")?)
            }
        };
    tracing::info!(node = %config.node_name, %address, ?address6, "starting");
    if let Some(cidr) = &config.pool_cidr {
        ensure_default_pool(&store, cidr, config.block_size).await?;
    }
    let registration = node::Registration {
        node: config.node_name.clone(),
        address,
        address6,
        as_number: config.as_number,
        labels: config.labels()?,
        cluster_id: config.route_reflector_cluster_id.clone(),
        kubernetes: config.datastore == "kubernetes",
        override_existing: config.override_node_config,
    };
    let me = node::register_node(&store, &registration).await?;
    let local_as = me.spec.bgp.as_ref().and_then(|b| b.as_number).unwrap_or(bgp_config.effective_as_number());

    // Packets between pods and the fabric are forwarded by this node.
    netlink::write_sysctl("net/ipv4/ip_forward", "1").context("enable IPv4 forwarding")?;
    if address6.is_some() {
        netlink::write_sysctl("net/ipv6/conf/all/forwarding", "1").context("enable IPv6 forwarding")?;
    }

    let metrics = Arc::new(metrics::Metrics::new());
    let fib_options = fib::FibOptions {
        learned_metric: config.learned_route_metric,
        failures: metrics.route_failures.clone(),
        kernel_nexthops: config.kernel_nexthops,
    };
    // Routes of ours already in the kernel mean an agent ran before: a graceful restart.
    let (fib, restarting) = fib::start(netlink.clone(), fib_options).await?;
    let mut speaker_config = SpeakerConfig::new(node::router_id(address), local_as);
    speaker_config.listen = desired::listen_addresses(&bgp_config, address, address6);
    speaker_config.hostname = Some(config.node_name.clone());
    speaker_config.restarting = restarting;
    speaker_config.cluster_id = me.route_reflector_cluster_id();
    speaker_config.sync_deadline = Duration::from_secs(config.restart_time.into());
    let (speaker, mut changes) = speaker::spawn(speaker_config).context("BGP speaker")?;
    // BFD's sockets open only when the first session is configured.
    let (bfd, bfd_changes) = gingham_bfd::driver::spawn(gingham_bfd::driver::DriverConfig::default());
    tokio::spawn(bfd_link::forward(bfd_changes, speaker.clone()));
    let cache_options = gingham_api::cache::CacheOptions { resync: Duration::from_secs(config.cache_resync), ..Default::default() };
    let cache = cluster::ClusterCache::start(&store, cache_options);
    let ipam = ipam_writer::IpamWriter::start(store.clone(), &config.node_name).await.context("reading this node's allocations")?;
    let identity = desired::Identity {
        node: config.node_name.clone(),
        namespace: config.namespace.clone(),
        address,
        address6,
        hold_time: config.hold_time,
        restart_time: config.restart_time,
    };
    let controller = controller::Controller {
        id: identity,
        cache: cache.clone(),
        held: ipam.held_changes(),
        speaker: speaker.clone(),
        bfd: bfd.clone(),
        adverts: router_adverts::RouterAdverts::spawn(),
        fib: fib.clone(),
        metrics: metrics.clone(),
        log_level,
    }
    .spawn();
    let cni = cni_service::CniService::new(
        config.node_name.clone(),
        address6.is_some(),
        config.mtu,
        netlink.clone(),
        fib.clone(),
        ipam,
        cache,
        controller.clone(),
        metrics.clone(),
    );
    let adopted = cni.adopt_endpoints().await?;
    tracing::info!(restarting, adopted, "endpoints adopted");
    cni.spawn_reclaimer(Duration::from_secs(5), Duration::from_secs(config.reclaim_grace.into()));

    // Learned best paths -> kernel, and "synced" after them: the speaker says synced once it
    // has handed over every change it knew of, so what is queued then goes to the FIB first
    // (one task, one FIB channel: the order holds).
    let fib_in = fib.clone();
    let speaker_sync = speaker.clone();
    tokio::spawn(async move {
        let mut synced = false;
        loop {
            tokio::select! {
                update = changes.recv() => match update {
                    Some(update) => forward(&fib_in, update).await,
                    None => break,
                },
                r = speaker_sync.wait_synced(), if !synced => {
                    synced = true;
                    if r.is_err() {
                        continue;
                    }
                    while let Ok(update) = changes.try_recv() {
                        forward(&fib_in, update).await;
                    }
                    tracing::info!("BGP synced: routes of ours nobody wants may now be removed");
                    fib_in.synced().await;
                }
            }
        }
    });

    let socket = cni_server::bind(&config.cni_socket)?;
    tokio::spawn(cni_server::serve(socket, cni));
    let source = status::StatusSource {
        node: config.node_name.clone(),
        address,
        started: std::time::Instant::now(),
        speaker: speaker.clone(),
        bfd,
        fib: fib.clone(),
        controller,
        metrics,
    };
    let source = Arc::new(source);
    tokio::spawn(status::report(source.clone(), store.clone()));
    if let Some(addr) = config.metrics_addr {
        tokio::spawn(status::serve_metrics(addr, source.clone()));
    }
    let status = tokio::spawn(status::serve(config.status_addr, source));
    tracing::info!(socket = %config.cni_socket.display(), "ready for CNI requests");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = status => { r??; }
    }
    // Routes and pod interfaces stay: the next agent adopts them (graceful restart).
    tracing::info!("stopping; kernel routes and pod interfaces are left for the next agent");
    let _ = std::fs::remove_file(&config.cni_socket);
    Ok(())
}

/// Hands one of the speaker's updates to the FIB.
async fn forward(fib: &fib::FibHandle, update: gingham_bgp::speaker::FibUpdate) {
    use gingham_bgp::speaker::FibUpdate;
    match update {
        FibUpdate::Routes(batch) => fib.set_class(Class::Learned, learned_routes(batch)).await,
        FibUpdate::GatewaysGone(gateways) => fib.gateways_gone(gateways).await,
    }
}

/// The kernel routes best-path changes ask for. A prefix whose best path became our own (a
/// service range this node originates after learning it from another node first) has no
/// learned route any more: it is removed, not left behind. Changes with the same next hops
/// share one list of them (a table from one ToR: one list for all).
fn learned_routes(batch: Vec<gingham_bgp::speaker::RouteChange>) -> Vec<(IpNetwork, Option<Target>)> {
    let mut shared: std::collections::HashSet<Arc<[Gateway]>> = std::collections::HashSet::new();
    // Neighbouring prefixes nearly always share their next hops: compared with the last list
    // first, most routes are spared hashing theirs.
    let mut last: Option<Arc<[Gateway]>> = None;
    batch
        .into_iter()
        .map(|c| match c.best {
            Some(best) if !best.next_hops.is_empty() => {
                let hops = match &last {
                    Some(l) if **l == *best.next_hops => l.clone(),
                    _ => last.insert(fib::plan::share(&mut shared, &best.next_hops)).clone(),
                };
                (c.prefix, Some(Target::Gateways(hops)))
            }
            _ => (c.prefix, None),
        })
        .collect()
}

/// Creates the default pool from the agent's settings when the cluster has none.
async fn ensure_default_pool(
    store: &gingham_api::datastore::Store<gingham_api::datastore::AnyDatastore>,
    cidr: &str,
    block_size: Option<u8>,
) -> anyhow::Result<()> {
    use gingham_api::resources::{IPPool, IPPoolSpec};
    let (pools, _) = store.list::<IPPool>().await?;
    if !pools.is_empty() {
        return Ok(());
    }
    // Calico's default pool masquerades traffic leaving the pools; so does ours.
    let pool =
        IPPool::new("default-ipv4-ippool", IPPoolSpec { cidr: cidr.to_string(), block_size, nat_outgoing: true, ..Default::default() });
    match store.create(&pool).await {
        Ok(_) => tracing::info!(cidr, "created the default IPPool"),
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(anyhow::anyhow!("default IPPool from GINGHAM_POOL_CIDR: {e}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_bgp::rib::{BestRoute, LOCAL};
    use gingham_bgp::speaker::RouteChange;

    #[test]
    fn a_best_path_that_became_our_own_removes_the_learned_route() {
        let prefix: IpNetwork = "198.18.96.0/20".parse().unwrap();
        let via = "198.18.0.12".parse().unwrap();
        let learned = BestRoute { next_hops: vec![Gateway::new(via)], attrs: Default::default(), peer: 7 };
        let own = BestRoute { next_hops: Vec::new(), attrs: Default::default(), peer: LOCAL };
        let got = learned_routes(vec![
            RouteChange { prefix, best: Some(learned) },
            RouteChange { prefix, best: Some(own) },
            RouteChange { prefix, best: None },
        ]);
        assert_eq!(got, vec![(prefix, Some(Target::Gateways(Arc::from([Gateway::new(via)])))), (prefix, None), (prefix, None)]);
    }

    #[test]
    fn routes_with_the_same_next_hops_share_one_list() {
        let via = Gateway::new("198.18.0.12".parse().unwrap());
        let change = |p: &str, hops: Vec<Gateway>| RouteChange {
            prefix: p.parse().unwrap(),
            best: Some(BestRoute { next_hops: hops, attrs: Default::default(), peer: 7 }),
        };
        let other = Gateway::new("198.18.0.13".parse().unwrap());
        let got = learned_routes(vec![
            change("10.0.0.0/24", vec![via]),
            change("10.0.1.0/24", vec![via]),
            change("10.0.2.0/24", vec![other]),
            change("10.0.3.0/24", vec![via]),
        ]);
        let hops: Vec<Arc<[Gateway]>> = got
            .into_iter()
            .map(|(_, t)| match t {
                Some(Target::Gateways(h)) => h,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(Arc::ptr_eq(&hops[0], &hops[1]), "one allocation for both");
        assert_eq!(&*hops[2], &[other]);
        assert!(Arc::ptr_eq(&hops[0], &hops[3]), "a list seen before the last one is shared too");
    }
}
