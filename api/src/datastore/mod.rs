//! The datastore: every Gingham object, with a revision that makes writes compare-and-swap.
//!
//! [`Datastore`] is the backend contract, on untyped JSON so one implementation serves every
//! kind; [`Store`] is the typed face the rest of Gingham uses. Backends:
//! [`memory`] (unit tests), [`sqlite`] (the embedded default, shared by processes on one host)
//! and [`kubernetes`] (the CRDs, resourceVersion as the revision). [`open`] picks one from the
//! `--datastore` URL.

pub mod kubernetes;
pub mod memory;
pub mod migrate;
pub mod sqlite;
mod typed;

use std::fmt;
use std::future::Future;

use thiserror::Error;
use tokio::sync::mpsc;

use crate::resources::{KindInfo, ValidationError};

pub use typed::{Store, TypedEvent, TypedWatch};

/// An opaque object or collection revision. Backends define the order; callers only hand back
/// what they were given (to CAS a write, or to watch from where a list left off).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<u64> for Revision {
    fn from(n: u64) -> Self {
        Revision(n.to_string())
    }
}

impl Revision {
    /// The numeric revisions the memory and sqlite backends use.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

/// One stored object: its name, its revision and its full JSON (apiVersion, kind, metadata with
/// `resourceVersion` = the revision, spec).
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    pub name: String,
    pub revision: Revision,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RawList {
    pub items: Vec<RawObject>,
    /// Watch from here to see every change after this list.
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    Added(RawObject),
    Modified(RawObject),
    /// The object as it was, with the revision of its deletion.
    Deleted(RawObject),
    /// Events were lost (the revision is older than the backend keeps, or the backend restarted
    /// the stream): list again and watch from the new list's revision.
    Resync,
}

/// Events arrive in revision order; the stream ends when the store goes away.
pub type WatchStream = mpsc::Receiver<WatchEvent>;

#[derive(Debug, Error)]
pub enum DatastoreError {
    #[error("{kind} {name:?} was changed by someone else since it was read (revision conflict); read it again and retry")]
    Conflict { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} is invalid: {source}")]
    Invalid {
        kind: &'static str,
        name: String,
        #[source]
        source: ValidationError,
    },
    #[error("{kind} {name:?} has no resourceVersion: read it before updating or deleting it")]
    NoRevision { kind: &'static str, name: String },
    #[error("datastore {url:?}: {reason} (use `sqlite:PATH`, `kubernetes` or `memory`)")]
    Url { url: String, reason: String },
    #[error("stored {kind} {name:?} does not decode: {reason}")]
    Decode { kind: &'static str, name: String, reason: String },
    #[error("datastore backend: {0}")]
    Backend(String),
}

impl DatastoreError {
    /// Whether retrying the read-modify-write can succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. })
    }
}

pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;

/// The backend contract. Every write is atomic; `update` and `delete` succeed only when the
/// stored revision equals the one given, else [`DatastoreError::Conflict`].
pub trait Datastore: Send + Sync + 'static {
    fn get(&self, kind: KindInfo, name: &str) -> impl Future<Output = Result<Option<RawObject>>> + Send;
    fn list(&self, kind: KindInfo) -> impl Future<Output = Result<RawList>> + Send;
    /// Fails with [`DatastoreError::AlreadyExists`] when the name is taken.
    fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> impl Future<Output = Result<RawObject>> + Send;
    fn update(
        &self,
        kind: KindInfo,
        name: &str,
        value: serde_json::Value,
        revision: &Revision,
    ) -> impl Future<Output = Result<RawObject>> + Send;
    /// Writes the object's `status` for kinds whose status is a subresource on the API server
    /// (Service): there a plain update leaves the status as it was. Backends that keep whole
    /// objects write it like any update; the revision check makes that the same thing.
    fn update_status(
        &self,
        kind: KindInfo,
        name: &str,
        value: serde_json::Value,
        revision: &Revision,
    ) -> impl Future<Output = Result<RawObject>> + Send {
        self.update(kind, name, value, revision)
    }
    fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> impl Future<Output = Result<()>> + Send;
    /// Changes of `kind` after `from` (exclusive), in order.
    fn watch(&self, kind: KindInfo, from: &Revision) -> impl Future<Output = Result<WatchStream>> + Send;
}

/// Any backend, chosen at run time from a URL.
pub enum AnyDatastore {
    Memory(memory::MemoryStore),
    Sqlite(sqlite::SqliteStore),
    Kubernetes(kubernetes::KubeStore),
}

/// Opens the datastore a `--datastore` / `GINGHAM_DATASTORE` URL names:
/// `sqlite:PATH`, `kubernetes` (in-cluster config or `KUBECONFIG`) or `memory`.
pub async fn open(url: &str) -> Result<Store<AnyDatastore>> {
    open_with(url, &KubeconfigChoice::default()).await
}

/// Which kubeconfig and context the kubernetes datastore uses when not in a pod; both unset
/// means the in-cluster service account, then the default kubeconfig.
#[derive(Clone, Debug, Default)]
pub struct KubeconfigChoice {
    pub path: Option<std::path::PathBuf>,
    pub context: Option<String>,
}

pub async fn open_with(url: &str, kubeconfig: &KubeconfigChoice) -> Result<Store<AnyDatastore>> {
    let chosen = kubeconfig.path.is_some() || kubeconfig.context.is_some();
    let backend = if let Some(path) = url.strip_prefix("sqlite:") {
        if chosen {
            return Err(DatastoreError::Url {
                url: url.into(),
                reason: "--kubeconfig and --context only apply to the kubernetes datastore".into(),
            });
        }
        if path.is_empty() {
            return Err(DatastoreError::Url { url: url.into(), reason: "no path after sqlite:".into() });
        }
        AnyDatastore::Sqlite(sqlite::SqliteStore::open(path)?)
    } else if url == "kubernetes" && chosen {
        AnyDatastore::Kubernetes(kubernetes::KubeStore::from_kubeconfig(kubeconfig.path.as_deref(), kubeconfig.context.as_deref()).await?)
    } else if url == "kubernetes" {
        AnyDatastore::Kubernetes(kubernetes::KubeStore::from_environment().await?)
    } else if url == "memory" {
        AnyDatastore::Memory(memory::MemoryStore::new())
    } else {
        return Err(DatastoreError::Url { url: url.into(), reason: "unknown scheme".into() });
    };
    Ok(Store::new(backend))
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyDatastore::Memory($b) => $e,
            AnyDatastore::Sqlite($b) => $e,
            AnyDatastore::Kubernetes($b) => $e,
        }
    };
}

impl Datastore for AnyDatastore {
    async fn get(&self, kind: KindInfo, name: &str) -> Result<Option<RawObject>> {
        dispatch!(self, b => b.get(kind, name).await)
    }
    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        dispatch!(self, b => b.list(kind).await)
    }
    async fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> Result<RawObject> {
        dispatch!(self, b => b.create(kind, name, value).await)
    }
    async fn update(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        dispatch!(self, b => b.update(kind, name, value, revision).await)
    }
    async fn update_status(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        dispatch!(self, b => b.update_status(kind, name, value, revision).await)
    }
    async fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
        dispatch!(self, b => b.delete(kind, name, revision).await)
    }
    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        dispatch!(self, b => b.watch(kind, from).await)
    }
}

/// The JSON a backend keeps: the object without its revision (the backend owns that field).
pub(crate) fn strip_revision(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
    }
    value
}

/// The JSON a caller sees: the stored object with `metadata.resourceVersion` set.
pub(crate) fn with_revision(name: &str, revision: Revision, mut value: serde_json::Value) -> RawObject {
    if let Some(obj) = value.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), serde_json::Value::String(revision.0.clone()));
        }
    }
    RawObject { name: name.to_string(), revision, value }
}
