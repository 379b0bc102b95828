//! The Kubernetes backend: Gingham's CRDs through the API server, `resourceVersion` as the
//! revision. Updates are PUTs carrying the resourceVersion read, deletes carry it as a
//! precondition, so the API server's 409 is our [`DatastoreError::Conflict`]. Watches are plain
//! watch requests from a resourceVersion, re-issued from the last version seen when the server
//! ends them; a 410 Gone becomes [`WatchEvent::Resync`].
//!
//! The Kubernetes kinds Gingham reads ([`crate::resources::core`]) go through the same code:
//! namespaced objects are keyed `namespace/name`, lists and watches of a kind marked
//! [`Watched::OwnNamespace`] stay in the client's namespace (the service account's, in a pod),
//! and kinds marked `metadata_only` are listed and watched as PartialObjectMetadata.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions, WatchParams};
use kube::core::WatchEvent as KubeEvent;
use tokio::sync::mpsc;

use super::{Datastore, DatastoreError, RawList, RawObject, Result, Revision, WatchEvent, WatchStream};
use crate::resources::{KindInfo, Scope, Watched};

/// Seconds the server keeps one watch request open before we re-issue it.
const WATCH_TIMEOUT: u32 = 290;

#[derive(Clone)]
pub struct KubeStore {
    client: kube::Client,
}

impl KubeStore {
    /// In-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
    pub async fn from_environment() -> Result<Self> {
        let client = kube::Client::try_default().await.map_err(|e| DatastoreError::Backend(format!("kubernetes client: {e}")))?;
        Ok(KubeStore { client })
    }

    /// A client from a kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`) and one
    /// of its contexts (default: its current context), as kubectl's `--kubeconfig`/`--context`.
    pub async fn from_kubeconfig(path: Option<&std::path::Path>, context: Option<&str>) -> Result<Self> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let options = KubeConfigOptions { context: context.map(String::from), ..Default::default() };
        let backend = |e: &dyn std::fmt::Display| DatastoreError::Backend(format!("kubeconfig: {e}"));
        let config = match path {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| backend(&format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &options).await.map_err(|e| backend(&e))?
            }
            None => kube::Config::from_kubeconfig(&options).await.map_err(|e| backend(&e))?,
        };
        let client = kube::Client::try_from(config).map_err(|e| DatastoreError::Backend(format!("kubernetes client: {e}")))?;
        Ok(KubeStore { client })
    }

    /// Namespaced kinds marked [`Watched::OwnNamespace`] are listed in the client's default
    /// namespace.
    pub fn new(client: kube::Client) -> Self {
        KubeStore { client }
    }

    /// The namespace this process lives in (its service account's, or the kubeconfig context's).
    pub fn namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// The API for one object (`key` = `namespace/name` for namespaced kinds) and its name.
    fn object_api<'a>(&self, kind: KindInfo, key: &'a str) -> (Api<DynamicObject>, &'a str) {
        match kind.split_key(key) {
            (Some(ns), name) => (Api::namespaced_with(self.client.clone(), ns, &resource(kind)), name),
            (None, name) => (Api::all_with(self.client.clone(), &resource(kind)), name),
        }
    }

    /// The API a list or watch of `kind` goes to.
    fn collection_api(&self, kind: KindInfo) -> Api<DynamicObject> {
        match kind.scope {
            Scope::Namespaced(Watched::OwnNamespace) => Api::namespaced_with(self.client.clone(), self.namespace(), &resource(kind)),
            Scope::Namespaced(Watched::AllNamespaces) | Scope::Cluster => Api::all_with(self.client.clone(), &resource(kind)),
        }
    }
}

fn resource(kind: KindInfo) -> ApiResource {
    ApiResource {
        group: kind.group().into(),
        version: kind.version().into(),
        api_version: kind.api_version.into(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    }
}

fn map_error(kind: KindInfo, name: &str, e: kube::Error) -> DatastoreError {
    let name = name.to_string();
    match e {
        kube::Error::Api(resp) if resp.code == 404 => DatastoreError::NotFound { kind: kind.kind, name },
        kube::Error::Api(resp) if resp.code == 409 && resp.reason == "AlreadyExists" => {
            DatastoreError::AlreadyExists { kind: kind.kind, name }
        }
        kube::Error::Api(resp) if resp.code == 409 => DatastoreError::Conflict { kind: kind.kind, name },
        kube::Error::Api(resp) => {
            DatastoreError::Backend(format!("{} {name:?}: API server said {} {}: {}", kind.kind, resp.code, resp.reason, resp.message))
        }
        other => DatastoreError::Backend(format!("{} {name:?}: {other}", kind.kind)),
    }
}

/// Any object the API server returned (a full object or PartialObjectMetadata) as ours.
fn to_raw(kind: KindInfo, obj: impl kube::Resource + serde::Serialize) -> Result<RawObject> {
    let meta = obj.meta();
    let name = match (&meta.namespace, kind.is_namespaced()) {
        (Some(ns), true) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        _ => meta.name.clone().unwrap_or_default(),
    };
    let revision = Revision(meta.resource_version.clone().unwrap_or_default());
    let mut value =
        serde_json::to_value(&obj).map_err(|e| DatastoreError::Decode { kind: kind.kind, name: name.clone(), reason: e.to_string() })?;
    // A watch's DELETED object and some list items come without apiVersion/kind, and metadata
    // comes as meta.k8s.io's PartialObjectMetadata: the datastore speaks of the kind itself.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), kind.api_version.into());
        map.insert("kind".into(), kind.kind.into());
    }
    Ok(RawObject { name, revision, value })
}

fn from_value(kind: KindInfo, key: &str, value: serde_json::Value, revision: Option<&Revision>) -> Result<DynamicObject> {
    if kind.metadata_only {
        return Err(DatastoreError::Backend(format!(
            "{} {key:?}: Gingham reads only the metadata of this kind and never writes it",
            kind.kind
        )));
    }
    let mut obj: DynamicObject =
        serde_json::from_value(value).map_err(|e| DatastoreError::Decode { kind: kind.kind, name: key.into(), reason: e.to_string() })?;
    let (namespace, name) = kind.split_key(key);
    obj.metadata.name = Some(name.to_string());
    obj.metadata.namespace = namespace.map(str::to_string);
    obj.metadata.resource_version = revision.map(|r| r.0.clone());
    Ok(obj)
}

impl Datastore for KubeStore {
    async fn get(&self, kind: KindInfo, key: &str) -> Result<Option<RawObject>> {
        let (api, name) = self.object_api(kind, key);
        if kind.metadata_only {
            let obj = api.get_metadata_opt(name).await.map_err(|e| map_error(kind, key, e))?;
            return obj.map(|o| to_raw(kind, o)).transpose();
        }
        let obj = api.get_opt(name).await.map_err(|e| map_error(kind, key, e))?;
        obj.map(|o| to_raw(kind, o)).transpose()
    }

    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        let api = self.collection_api(kind);
        let (items, revision) = if kind.metadata_only {
            let list = api.list_metadata(&ListParams::default()).await.map_err(|e| map_error(kind, "", e))?;
            (list.items.into_iter().map(|o| to_raw(kind, o)).collect::<Result<Vec<_>>>()?, list.metadata.resource_version)
        } else {
            let list = api.list(&ListParams::default()).await.map_err(|e| map_error(kind, "", e))?;
            (list.items.into_iter().map(|o| to_raw(kind, o)).collect::<Result<Vec<_>>>()?, list.metadata.resource_version)
        };
        Ok(RawList { items, revision: Revision(revision.unwrap_or_default()) })
    }

    async fn create(&self, kind: KindInfo, key: &str, value: serde_json::Value) -> Result<RawObject> {
        let obj = from_value(kind, key, value, None)?;
        let (api, _) = self.object_api(kind, key);
        let created = api.create(&PostParams::default(), &obj).await.map_err(|e| map_error(kind, key, e))?;
        to_raw(kind, created)
    }

    async fn update(&self, kind: KindInfo, key: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        let obj = from_value(kind, key, value, Some(revision))?;
        let (api, name) = self.object_api(kind, key);
        let replaced = api.replace(name, &PostParams::default(), &obj).await.map_err(|e| map_error(kind, key, e))?;
        to_raw(kind, replaced)
    }

    async fn update_status(&self, kind: KindInfo, key: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        let obj = from_value(kind, key, value, Some(revision))?;
        let (api, name) = self.object_api(kind, key);
        let replaced = api.replace_status(name, &PostParams::default(), &obj).await.map_err(|e| map_error(kind, key, e))?;
        to_raw(kind, replaced)
    }

    async fn delete(&self, kind: KindInfo, key: &str, revision: &Revision) -> Result<()> {
        if kind.metadata_only {
            return Err(DatastoreError::Backend(format!("{} {key:?}: Gingham never deletes this kind", kind.kind)));
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(revision.0.clone()), uid: None }),
            ..DeleteParams::default()
        };
        let (api, name) = self.object_api(kind, key);
        api.delete(name, &params).await.map_err(|e| map_error(kind, key, e))?;
        Ok(())
    }

    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        let api = self.collection_api(kind);
        let (tx, rx) = mpsc::channel(256);
        if kind.metadata_only {
            // The first request is made here so that an unreachable server is the caller's error.
            let params = WatchParams::default().timeout(WATCH_TIMEOUT);
            let first = api.watch_metadata(&params, &from.0).await.map_err(|e| map_error(kind, "", e))?;
            tokio::spawn(follow(kind, api.clone(), from.0.clone(), first.boxed(), tx, move |api, rv| {
                async move { api.watch_metadata(&WatchParams::default().timeout(WATCH_TIMEOUT), &rv).await.map(|s| s.boxed()) }.boxed()
            }));
        } else {
            let first = api.watch(&WatchParams::default().timeout(WATCH_TIMEOUT), &from.0).await.map_err(|e| map_error(kind, "", e))?;
            tokio::spawn(follow(kind, api.clone(), from.0.clone(), first.boxed(), tx, move |api, rv| {
                async move { api.watch(&WatchParams::default().timeout(WATCH_TIMEOUT), &rv).await.map(|s| s.boxed()) }.boxed()
            }));
        }
        Ok(rx)
    }
}

type EventStream<T> = BoxStream<'static, kube::Result<KubeEvent<T>>>;

/// Forwards one watch's events, re-issuing the watch from the last version seen whenever the
/// server ends it, until the receiver goes away.
async fn follow<T, W>(
    kind: KindInfo,
    api: Api<DynamicObject>,
    mut last: String,
    first: EventStream<T>,
    tx: mpsc::Sender<WatchEvent>,
    rewatch: W,
) where
    T: kube::Resource + serde::Serialize,
    W: Fn(Api<DynamicObject>, String) -> BoxFuture<'static, kube::Result<EventStream<T>>>,
{
    let mut stream = first;
    loop {
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(KubeEvent::Added(o)) => raw_event(kind, &mut last, o, WatchEvent::Added),
                Ok(KubeEvent::Modified(o)) => raw_event(kind, &mut last, o, WatchEvent::Modified),
                Ok(KubeEvent::Deleted(o)) => raw_event(kind, &mut last, o, WatchEvent::Deleted),
                Ok(KubeEvent::Bookmark(b)) => {
                    last = b.metadata.resource_version;
                    continue;
                }
                Ok(KubeEvent::Error(e)) if e.code == 410 => {
                    // Too old: say so, then carry on from the present.
                    match api.list_metadata(&ListParams::default().limit(1)).await {
                        Ok(list) => last = list.metadata.resource_version.unwrap_or_default(),
                        Err(e) => tracing::warn!(error = %e, "kubernetes list after 410 failed"),
                    }
                    Some(WatchEvent::Resync)
                }
                Ok(KubeEvent::Error(e)) => {
                    tracing::warn!(code = e.code, message = %e.message, "kubernetes watch error");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes watch stream broke; re-watching");
                    break;
                }
            };
            if let Some(event) = event {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        stream = loop {
            match rewatch(api.clone(), last.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes re-watch failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        };
    }
}

fn raw_event<T: kube::Resource + serde::Serialize>(
    kind: KindInfo,
    last: &mut String,
    obj: T,
    make: fn(RawObject) -> WatchEvent,
) -> Option<WatchEvent> {
    match to_raw(kind, obj) {
        Ok(raw) => {
            *last = raw.revision.0.clone();
            Some(make(raw))
        }
        Err(e) => {
            tracing::warn!(error = %e, "undecodable object in kubernetes watch");
            None
        }
    }
}
