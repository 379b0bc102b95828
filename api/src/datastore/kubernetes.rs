//! The Kubernetes backend: Gingham's CRDs through the API server, `resourceVersion` as the
//! revision. Updates are PUTs carrying the resourceVersion read, deletes carry it as a
//! precondition, so the API server's 409 is our [`DatastoreError::Conflict`]. Watches are plain
//! watch requests from a resourceVersion, re-issued from the last version seen when the server
//! ends them; a 410 Gone becomes [`WatchEvent::Resync`].

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions, WatchParams};
use kube::core::WatchEvent as KubeEvent;
use tokio::sync::mpsc;

use super::{Datastore, DatastoreError, RawList, RawObject, Result, Revision, WatchEvent, WatchStream};
use crate::resources::{KindInfo, API_VERSION, GROUP, VERSION};

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

    pub fn new(client: kube::Client) -> Self {
        KubeStore { client }
    }

    fn api(&self, kind: KindInfo) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: API_VERSION.into(),
            kind: kind.kind.into(),
            plural: kind.plural.into(),
        };
        Api::all_with(self.client.clone(), &resource)
    }
}

/// The HTTP verbs this backend uses, per resource: what the agent's ClusterRole must grant.
pub const VERBS_USED: &[&str] = &["get", "list", "watch", "create", "update", "delete"];

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

fn to_raw(kind: KindInfo, obj: DynamicObject) -> Result<RawObject> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let revision = Revision(obj.metadata.resource_version.clone().unwrap_or_default());
    let mut value =
        serde_json::to_value(&obj).map_err(|e| DatastoreError::Decode { kind: kind.kind, name: name.clone(), reason: e.to_string() })?;
    // A watch's DELETED object and some list items come without apiVersion/kind.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), API_VERSION.into());
        map.insert("kind".into(), kind.kind.into());
    }
    Ok(RawObject { name, revision, value })
}

fn from_value(kind: KindInfo, name: &str, value: serde_json::Value, revision: Option<&Revision>) -> Result<DynamicObject> {
    let mut obj: DynamicObject =
        serde_json::from_value(value).map_err(|e| DatastoreError::Decode { kind: kind.kind, name: name.into(), reason: e.to_string() })?;
    obj.metadata.name = Some(name.to_string());
    obj.metadata.resource_version = revision.map(|r| r.0.clone());
    Ok(obj)
}

impl Datastore for KubeStore {
    async fn get(&self, kind: KindInfo, name: &str) -> Result<Option<RawObject>> {
        let obj = self.api(kind).get_opt(name).await.map_err(|e| map_error(kind, name, e))?;
        obj.map(|o| to_raw(kind, o)).transpose()
    }

    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        let list = self.api(kind).list(&ListParams::default()).await.map_err(|e| map_error(kind, "", e))?;
        let revision = Revision(list.metadata.resource_version.clone().unwrap_or_default());
        let items = list.items.into_iter().map(|o| to_raw(kind, o)).collect::<Result<Vec<_>>>()?;
        Ok(RawList { items, revision })
    }

    async fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> Result<RawObject> {
        let obj = from_value(kind, name, value, None)?;
        let created = self.api(kind).create(&PostParams::default(), &obj).await.map_err(|e| map_error(kind, name, e))?;
        to_raw(kind, created)
    }

    async fn update(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        let obj = from_value(kind, name, value, Some(revision))?;
        let replaced = self.api(kind).replace(name, &PostParams::default(), &obj).await.map_err(|e| map_error(kind, name, e))?;
        to_raw(kind, replaced)
    }

    async fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(revision.0.clone()), uid: None }),
            ..DeleteParams::default()
        };
        self.api(kind).delete(name, &params).await.map_err(|e| map_error(kind, name, e))?;
        Ok(())
    }

    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        let api = self.api(kind);
        // The first request is made here so that an unreachable server is the caller's error.
        let first = api.watch(&WatchParams::default().timeout(WATCH_TIMEOUT), &from.0).await.map_err(|e| map_error(kind, "", e))?;
        let (tx, rx) = mpsc::channel(256);
        let mut last = from.0.clone();
        tokio::spawn(async move {
            let mut stream = first.boxed();
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
                            match api.list(&ListParams::default().limit(1)).await {
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
                    match api.watch(&WatchParams::default().timeout(WATCH_TIMEOUT), &last).await {
                        Ok(s) => break s.boxed(),
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
        });
        Ok(rx)
    }
}

fn raw_event(kind: KindInfo, last: &mut String, obj: DynamicObject, make: fn(RawObject) -> WatchEvent) -> Option<WatchEvent> {
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
