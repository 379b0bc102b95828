//! An HTTP-level stand-in for the Kubernetes API server, enough of it for Gingham's CRDs and the
//! core kinds Gingham reads (Secrets, Nodes, Pods, Leases; namespaced paths, all-namespace lists,
//! PartialObjectMetadata when the client asks for it):
//! create/get/replace/delete/list/watch, with the
//! resourceVersion rules the real one enforces (a PUT or a DELETE precondition naming a stale
//! version gets 409 Conflict, a create of an existing name 409 AlreadyExists, a watch from a
//! compacted version an ERROR event with 410 Gone), and the status subresource of the kinds that
//! have one (a PUT of a Service keeps its stored status, a PUT of `services/NAME/status` changes
//! only the status). kube's real client talks to it through
//! `kube::Client::new(service)`, so everything above the TCP socket is exercised: URLs, query
//! parameters, JSON bodies, status objects and the chunked watch stream.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

#[derive(Default)]
struct State {
    revision: u64,
    /// (plural, key) -> object; the key is `namespace/name` for namespaced kinds.
    objects: BTreeMap<(String, String), Value>,
    log: Vec<(u64, String, String, &'static str, Value)>,
    compacted: u64,
    /// (verb, plural) of every request, for checking RBAC rules against what the code calls.
    requests: Vec<(String, String)>,
    /// Every request as an RBAC rule sees it, with the client that made it.
    calls: Vec<Call>,
}

#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    head: watch::Sender<u64>,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApiServer {
    pub fn new() -> Self {
        FakeApiServer { state: Arc::default(), head: watch::channel(0).0 }
    }

    pub fn client(&self) -> kube::Client {
        self.client_in("default")
    }

    /// Forgets the change history, as etcd compaction does: older watches get 410.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.revision;
        s.log.clear();
    }

    /// A client whose own namespace (where Secrets and Leases are read) is `namespace`.
    #[allow(dead_code)]
    pub fn client_in(&self, namespace: &str) -> kube::Client {
        self.client_as(namespace, "")
    }

    /// A client whose requests are recorded under `who` (see [`FakeApiServer::calls`]).
    #[allow(dead_code)]
    pub fn client_as(&self, namespace: &str, who: &str) -> kube::Client {
        let server = self.clone();
        let who = who.to_string();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let (server, who) = (server.clone(), who.clone());
            async move { Ok::<_, Infallible>(server.handle_for(&who, req).await) }
        });
        kube::Client::new(service, namespace)
    }

    /// The requests of client `who`, as RBAC sees them.
    #[allow(dead_code)]
    pub fn calls(&self, who: &str) -> Vec<Call> {
        self.state.lock().unwrap().calls.iter().filter(|c| c.who == who).cloned().collect()
    }

    /// Kubernetes verbs (get/list/watch/create/update/delete) and resources seen so far.
    #[allow(dead_code)]
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stores an object as another client (kubelet, kubectl) would: `plural` names its kind.
    #[allow(dead_code)]
    pub fn put(&self, plural: &str, mut obj: Value) {
        let key = object_key(&obj);
        let mut s = self.state.lock().unwrap();
        s.revision += 1;
        let rv = s.revision;
        let event = if s.objects.contains_key(&(plural.to_string(), key.clone())) { "MODIFIED" } else { "ADDED" };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj.pointer("/metadata/uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        s.objects.insert((plural.to_string(), key.clone()), obj.clone());
        s.log.push((rv, plural.to_string(), key, event, obj));
        drop(s);
        self.head.send_replace(rv);
    }

    /// Deletes an object as another client would (`key` = `namespace/name` when namespaced).
    #[allow(dead_code)]
    pub fn remove(&self, plural: &str, key: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(mut obj) = s.objects.remove(&(plural.to_string(), key.to_string())) else { return };
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.log.push((rv, plural.to_string(), key.to_string(), "DELETED", obj));
        drop(s);
        self.head.send_replace(rv);
    }

    /// The stored object, if any.
    #[allow(dead_code)]
    pub fn object(&self, plural: &str, key: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(&(plural.to_string(), key.to_string())).cloned()
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        self.handle_for("", req).await
    }

    async fn handle_for(&self, who: &str, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json;as=PartialObjectMetadata"));
        let path: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
        // /api/v1/... for the core group, /apis/GROUP/VERSION/... for the others; then an
        // optional namespaces/NS, the plural and an optional name.
        let rest = match path.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return status(404, "NotFound", &format!("no route for {}", parts.uri.path())),
        };
        let (rest, subresource) = match rest {
            [rest @ .., "status"] if rest.len() % 2 == 0 => (rest, true),
            rest => (rest, false),
        };
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (Some(ns.to_string()), plural.to_string(), None),
            ["namespaces", ns, plural, name] => (Some(ns.to_string()), plural.to_string(), Some(name.to_string())),
            [plural] => (None, plural.to_string(), None),
            [plural, name] => (None, plural.to_string(), Some(name.to_string())),
            _ => return status(404, "NotFound", &format!("no route for {}", parts.uri.path())),
        };
        if subresource && (!STATUS_SUBRESOURCE.contains(&plural.as_str()) || parts.method != Method::PUT) {
            return status(404, "NotFound", &format!("no status subresource for {plural} here"));
        }
        let Some(kind) = known_kinds().find(|k| k.plural == plural) else {
            return status(404, "NotFound", &format!("the server could not find the requested resource ({plural})"));
        };
        let name = name.map(|n| match &namespace {
            Some(ns) => format!("{ns}/{n}"),
            None => n,
        });
        let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let verb = match (&parts.method, &name, watching) {
            (&Method::GET, Some(_), _) => "get",
            (&Method::GET, None, false) => "list",
            (&Method::GET, None, true) => "watch",
            (&Method::POST, None, _) => "create",
            (&Method::PUT, Some(_), _) => "update",
            (&Method::DELETE, Some(_), _) => "delete",
            _ => return status(405, "MethodNotAllowed", "method not allowed"),
        };
        {
            let mut s = self.state.lock().unwrap();
            let resource = if subresource { format!("{plural}/status") } else { plural.clone() };
            s.requests.push((verb.to_string(), resource.clone()));
            let group = kind.group().to_string();
            s.calls.push(Call { who: who.to_string(), verb: verb.to_string(), group, resource, namespace: namespace.clone() });
        }
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let parsed = match (parsed, &namespace) {
            (Some(mut obj), Some(ns)) if verb == "create" => {
                obj["metadata"]["namespace"] = json!(ns);
                Some(obj)
            }
            (parsed, _) => parsed,
        };
        let view = View { metadata_only, namespace };
        match verb {
            "get" => self.get(&plural, name.as_deref().unwrap(), &view),
            "list" => self.list(&plural, kind.kind, &view),
            "watch" => self.watch(&plural, query.get("resourceVersion").cloned().unwrap_or_default(), view),
            "create" => self.create(&plural, kind.kind, parsed),
            "update" => self.replace(&plural, kind.kind, name.as_deref().unwrap(), parsed, subresource),
            _ => self.delete(&plural, kind.kind, name.as_deref().unwrap(), parsed),
        }
    }

    fn get(&self, plural: &str, name: &str, view: &View) -> Response<Body> {
        let s = self.state.lock().unwrap();
        match s.objects.get(&(plural.to_string(), name.to_string())) {
            Some(obj) => respond(200, &view.shape(obj)),
            None => status(404, "NotFound", &format!("{plural} {name:?} not found")),
        }
    }

    fn list(&self, plural: &str, kind: &str, view: &View) -> Response<Body> {
        let s = self.state.lock().unwrap();
        let items: Vec<Value> =
            s.objects.iter().filter(|((p, key), _)| p == plural && view.covers(key)).map(|(_, v)| view.shape(v)).collect();
        let (api_version, kind) = match view.metadata_only {
            true => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string()),
            false => ("v1".to_string(), format!("{kind}List")),
        };
        respond(
            200,
            &json!({"apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": s.revision.to_string()}, "items": items}),
        )
    }

    fn create(&self, plural: &str, kind: &str, body: Option<Value>) -> Response<Body> {
        let Some(mut obj) = body else { return status(400, "BadRequest", "body is not JSON") };
        let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string) else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        if obj.get("kind").and_then(Value::as_str) != Some(kind) {
            return status(400, "BadRequest", "kind does not match the URL");
        }
        let mut s = self.state.lock().unwrap();
        let key = (plural.to_string(), object_key(&obj));
        if s.objects.contains_key(&key) {
            return status(409, "AlreadyExists", &format!("{plural} {name:?} already exists"));
        }
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        s.objects.insert(key.clone(), obj.clone());
        s.log.push((rv, key.0, key.1, "ADDED", obj.clone()));
        drop(s);
        self.head.send_replace(rv);
        respond(201, &obj)
    }

    fn replace(&self, plural: &str, kind: &str, name: &str, body: Option<Value>, status_only: bool) -> Response<Body> {
        let Some(mut obj) = body else { return status(400, "BadRequest", "body is not JSON") };
        if obj.get("kind").and_then(Value::as_str) != Some(kind) {
            return status(400, "BadRequest", "kind does not match the URL");
        }
        let mut s = self.state.lock().unwrap();
        let key = (plural.to_string(), name.to_string());
        let Some(current) = s.objects.get(&key) else { return status(404, "NotFound", &format!("{plural} {name:?} not found")) };
        let have = current.pointer("/metadata/resourceVersion").cloned();
        let uid = current.pointer("/metadata/uid").cloned();
        // As the API server: a PUT with a resourceVersion is conditional on it.
        if let Some(want) = obj.pointer("/metadata/resourceVersion") {
            if Some(want) != have.as_ref() {
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        // As the API server with a status subresource: the main resource's PUT keeps the stored
        // status, the status PUT keeps everything else.
        if status_only {
            let new_status = obj.get("status").cloned();
            obj = current.clone();
            set_status(&mut obj, new_status);
        } else if STATUS_SUBRESOURCE.contains(&plural) {
            set_status(&mut obj, current.get("status").cloned());
        }
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = uid.unwrap_or(Value::Null);
        s.objects.insert(key.clone(), obj.clone());
        s.log.push((rv, key.0, key.1, "MODIFIED", obj.clone()));
        drop(s);
        self.head.send_replace(rv);
        respond(200, &obj)
    }

    fn delete(&self, plural: &str, _kind: &str, name: &str, body: Option<Value>) -> Response<Body> {
        let mut s = self.state.lock().unwrap();
        let key = (plural.to_string(), name.to_string());
        let Some(current) = s.objects.get(&key) else { return status(404, "NotFound", &format!("{plural} {name:?} not found")) };
        let precondition = body.as_ref().and_then(|b| b.pointer("/preconditions/resourceVersion")).cloned();
        if let Some(want) = precondition {
            if Some(&want) != current.pointer("/metadata/resourceVersion") {
                return status(409, "Conflict", "Precondition failed: ResourceVersion in precondition does not match");
            }
        }
        let mut obj = s.objects.remove(&key).unwrap();
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.log.push((rv, key.0, key.1, "DELETED", obj.clone()));
        drop(s);
        self.head.send_replace(rv);
        respond(200, &obj)
    }

    fn watch(&self, plural: &str, from: String, view: View) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let Ok(mut last) = from.parse::<u64>() else { return status(400, "BadRequest", "resourceVersion must be a number here") };
        let state = self.state.clone();
        let mut head = self.head.subscribe();
        let plural = plural.to_string();
        tokio::spawn(async move {
            loop {
                let (lines, gone): (Vec<Bytes>, bool) = {
                    let s = state.lock().unwrap();
                    if last < s.compacted {
                        let gone = json!({"type": "ERROR", "object": status_body(410, "Expired", &format!("too old resource version: {last} ({})", s.compacted))});
                        (vec![line(&gone)], true)
                    } else {
                        let lines = s
                            .log
                            .iter()
                            .filter(|(rv, p, key, _, _)| *rv > last && *p == plural && view.covers(key))
                            .map(|(_, _, _, t, o)| line(&json!({"type": t, "object": view.shape(o)})))
                            .collect();
                        last = s.revision;
                        (lines, false)
                    }
                };
                for l in lines {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
                if gone {
                    return;
                }
                tokio::select! {
                    r = head.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(http_body::Frame::data(b)), rx)) });
        Response::builder().status(200).header("content-type", "application/json").body(BodyExt::boxed(StreamBody::new(stream))).unwrap()
    }
}

/// One request as an RBAC rule matches it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub who: String,
    pub verb: String,
    /// The API group (`""` for the core group).
    pub group: String,
    pub resource: String,
    /// Set for a namespaced request (a Role can grant it); `None` for cluster-wide ones.
    pub namespace: Option<String>,
}

/// (API group, resource, verb), as an RBAC rule grants it.
pub type Grant = (String, String, String);

/// The grants `calls` need: (ClusterRole rules, rules of a Role in `namespace`), each as
/// (API group, resource, verb). A call in another namespace needs the ClusterRole.
#[allow(dead_code)]
pub fn needed_grants(calls: &[Call], namespace: &str) -> (BTreeSet<Grant>, BTreeSet<Grant>) {
    let mut cluster = BTreeSet::new();
    let mut namespaced = BTreeSet::new();
    for c in calls {
        let grant = (c.group.clone(), c.resource.clone(), c.verb.clone());
        match &c.namespace {
            Some(ns) if ns == namespace => {
                namespaced.insert(grant);
            }
            // Cluster-wide, or in any namespace: only a ClusterRole grants that.
            _ => {
                cluster.insert(grant);
            }
        }
    }
    (cluster, namespaced)
}

/// What one request may see: a namespace (when the path named one) and the object's full
/// form or its PartialObjectMetadata.
struct View {
    metadata_only: bool,
    namespace: Option<String>,
}

impl View {
    fn covers(&self, key: &str) -> bool {
        self.namespace.as_ref().is_none_or(|ns| key.strip_prefix(ns.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }

    fn shape(&self, obj: &Value) -> Value {
        match self.metadata_only {
            true => json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}),
            false => obj.clone(),
        }
    }
}

/// Kinds whose status only the status subresource writes.
const STATUS_SUBRESOURCE: &[&str] = &["services"];

fn set_status(obj: &mut Value, status: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match status {
            Some(st) => map.insert("status".into(), st),
            None => map.remove("status"),
        };
    }
}

fn known_kinds() -> impl Iterator<Item = gingham_api::resources::KindInfo> {
    use gingham_api::resources::core::{ENDPOINT_SLICE, LEASE, NODE, POD_METADATA, SECRET, SERVICE};
    gingham_api::resources::all_kinds().iter().copied().chain([SECRET, SERVICE, ENDPOINT_SLICE, NODE, POD_METADATA, LEASE])
}

fn object_key(obj: &Value) -> String {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    respond(code, &status_body(code, reason, message))
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}
