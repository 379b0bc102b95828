//! The agent's view of the cluster: one watch-cache reflector per kind it reads, shared by the
//! controller and the CNI service. After the first list nothing here lists again except on a
//! resync (see `gingham_api::cache`).

use std::sync::Arc;

use gingham_api::cache::{CacheOptions, Reflector, Snapshot};
use gingham_api::datastore::{Datastore, Store};
use gingham_api::resources::core::{EndpointSlice, Secret, Service};
use gingham_api::resources::{BGPConfiguration, BGPFilter, BGPPeer, BlockAffinity, GinghamNode, IPPool};

#[derive(Clone)]
pub struct ClusterCache {
    pub nodes: Reflector<GinghamNode>,
    pub peers: Reflector<BGPPeer>,
    pub configs: Reflector<BGPConfiguration>,
    pub filters: Reflector<BGPFilter>,
    pub pools: Reflector<IPPool>,
    pub affinities: Reflector<BlockAffinity>,
    /// BGPPeer passwords; on kubernetes only the agent's namespace is listed and watched.
    pub secrets: Reflector<Secret>,
    /// Which Service addresses this node advertises on its own (`externalTrafficPolicy: Local`).
    pub services: Reflector<Service>,
    pub endpoint_slices: Reflector<EndpointSlice>,
}

/// Every kind at one moment (each kind consistent in itself).
pub struct ClusterSnapshot {
    pub nodes: Arc<Snapshot<GinghamNode>>,
    pub peers: Arc<Snapshot<BGPPeer>>,
    pub configs: Arc<Snapshot<BGPConfiguration>>,
    pub filters: Arc<Snapshot<BGPFilter>>,
    pub pools: Arc<Snapshot<IPPool>>,
    pub affinities: Arc<Snapshot<BlockAffinity>>,
    /// Keyed `namespace/name`, as are the next two.
    pub secrets: Arc<Snapshot<Secret>>,
    pub services: Arc<Snapshot<Service>>,
    pub endpoint_slices: Arc<Snapshot<EndpointSlice>>,
}

impl ClusterCache {
    pub fn start<D: Datastore>(store: &Store<D>, options: CacheOptions) -> ClusterCache {
        ClusterCache {
            nodes: Reflector::start(store.clone(), options),
            peers: Reflector::start(store.clone(), options),
            configs: Reflector::start(store.clone(), options),
            filters: Reflector::start(store.clone(), options),
            pools: Reflector::start(store.clone(), options),
            affinities: Reflector::start(store.clone(), options),
            secrets: Reflector::start(store.clone(), options),
            services: Reflector::start(store.clone(), options),
            endpoint_slices: Reflector::start(store.clone(), options),
        }
    }

    /// Waits until every kind has been listed once.
    pub async fn synced(&self) {
        self.nodes.synced().await;
        self.peers.synced().await;
        self.configs.synced().await;
        self.filters.synced().await;
        self.pools.synced().await;
        self.affinities.synced().await;
        self.secrets.synced().await;
        self.services.synced().await;
        self.endpoint_slices.synced().await;
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            nodes: self.nodes.snapshot(),
            peers: self.peers.snapshot(),
            configs: self.configs.snapshot(),
            filters: self.filters.snapshot(),
            pools: self.pools.snapshot(),
            affinities: self.affinities.snapshot(),
            secrets: self.secrets.snapshot(),
            services: self.services.snapshot(),
            endpoint_slices: self.endpoint_slices.snapshot(),
        }
    }

    /// A waiter that completes when any kind changes after it was made.
    pub fn changes(&self) -> Changes {
        Changes {
            nodes: self.nodes.changed(),
            peers: self.peers.changed(),
            configs: self.configs.changed(),
            filters: self.filters.changed(),
            pools: self.pools.changed(),
            affinities: self.affinities.changed(),
            secrets: self.secrets.changed(),
            services: self.services.changed(),
            endpoint_slices: self.endpoint_slices.changed(),
        }
    }
}

pub struct Changes {
    nodes: tokio::sync::watch::Receiver<Arc<Snapshot<GinghamNode>>>,
    peers: tokio::sync::watch::Receiver<Arc<Snapshot<BGPPeer>>>,
    configs: tokio::sync::watch::Receiver<Arc<Snapshot<BGPConfiguration>>>,
    filters: tokio::sync::watch::Receiver<Arc<Snapshot<BGPFilter>>>,
    pools: tokio::sync::watch::Receiver<Arc<Snapshot<IPPool>>>,
    affinities: tokio::sync::watch::Receiver<Arc<Snapshot<BlockAffinity>>>,
    secrets: tokio::sync::watch::Receiver<Arc<Snapshot<Secret>>>,
    services: tokio::sync::watch::Receiver<Arc<Snapshot<Service>>>,
    endpoint_slices: tokio::sync::watch::Receiver<Arc<Snapshot<EndpointSlice>>>,
}

impl Changes {
    /// Completes at the next change of any kind (marking every kind seen); `false` when the
    /// cache has stopped.
    pub async fn next(&mut self) -> bool {
        let ok = tokio::select! {
            r = self.nodes.changed() => r.is_ok(),
            r = self.peers.changed() => r.is_ok(),
            r = self.configs.changed() => r.is_ok(),
            r = self.filters.changed() => r.is_ok(),
            r = self.pools.changed() => r.is_ok(),
            r = self.affinities.changed() => r.is_ok(),
            r = self.secrets.changed() => r.is_ok(),
            r = self.services.changed() => r.is_ok(),
            r = self.endpoint_slices.changed() => r.is_ok(),
        };
        // Everything up to now is taken into account by the reader's next snapshot.
        self.nodes.mark_unchanged();
        self.peers.mark_unchanged();
        self.configs.mark_unchanged();
        self.filters.mark_unchanged();
        self.pools.mark_unchanged();
        self.affinities.mark_unchanged();
        self.secrets.mark_unchanged();
        self.services.mark_unchanged();
        self.endpoint_slices.mark_unchanged();
        ok
    }
}
