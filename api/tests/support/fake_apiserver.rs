//! An HTTP-level stand-in for the Kubernetes API server, enough of it for Gingham's CRDs:
//! create/get/replace/delete/list/watch on cluster-scoped custom resources, with the
//! resourceVersion rules the real one enforces (a PUT or a DELETE precondition naming a stale
//! version gets 409 Conflict, a create of an existing name 409 AlreadyExists, a watch from a
//! compacted version an ERROR event with 410 Gone). kube's real client talks to it through
//! `kube::Client::new(service)`, so everything above the TCP socket is exercised: URLs, query
//! parameters, JSON bodies, status objects and the chunked watch stream.

use std::collections::BTreeMap;
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
    objects: BTreeMap<(String, String), Value>,
    log: Vec<(u64, String, &'static str, Value)>,
    compacted: u64,
    /// (verb, plural) of every request, for checking RBAC rules against what the code calls.
    requests: Vec<(String, String)>,
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
        let server = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Forgets the change history, as etcd compaction does: older watches get 410.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.revision;
        s.log.clear();
    }

    /// Kubernetes verbs (get/list/watch/create/update/delete) and resources seen so far.
    #[allow(dead_code)]
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let path: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
        let (plural, name) = match path.as_slice() {
            ["apis", "gingham.io", "v1", plural] => (plural.to_string(), None),
            ["apis", "gingham.io", "v1", plural, name] => (plural.to_string(), Some(name.to_string())),
            _ => return status(404, "NotFound", &format!("no route for {}", parts.uri.path())),
        };
        let Some(kind) = gingham_api::resources::all_kinds().iter().find(|k| k.plural == plural) else {
            return status(404, "NotFound", &format!("the server could not find the requested resource ({plural})"));
        };
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
        self.state.lock().unwrap().requests.push((verb.to_string(), plural.clone()));
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        match verb {
            "get" => self.get(&plural, name.as_deref().unwrap()),
            "list" => self.list(&plural, kind.kind),
            "watch" => self.watch(&plural, kind.kind, query.get("resourceVersion").cloned().unwrap_or_default()),
            "create" => self.create(&plural, kind.kind, parsed),
            "update" => self.replace(&plural, kind.kind, name.as_deref().unwrap(), parsed),
            _ => self.delete(&plural, kind.kind, name.as_deref().unwrap(), parsed),
        }
    }

    fn get(&self, plural: &str, name: &str) -> Response<Body> {
        let s = self.state.lock().unwrap();
        match s.objects.get(&(plural.to_string(), name.to_string())) {
            Some(obj) => respond(200, obj),
            None => status(404, "NotFound", &format!("{plural} {name:?} not found")),
        }
    }

    fn list(&self, plural: &str, kind: &str) -> Response<Body> {
        let s = self.state.lock().unwrap();
        let items: Vec<&Value> = s.objects.iter().filter(|((p, _), _)| p == plural).map(|(_, v)| v).collect();
        respond(
            200,
            &json!({"apiVersion": "gingham.io/v1", "kind": format!("{kind}List"),
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
        let key = (plural.to_string(), name.clone());
        if s.objects.contains_key(&key) {
            return status(409, "AlreadyExists", &format!("{plural}.gingham.io {name:?} already exists"));
        }
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        s.objects.insert(key, obj.clone());
        s.log.push((rv, plural.to_string(), "ADDED", obj.clone()));
        drop(s);
        self.head.send_replace(rv);
        respond(201, &obj)
    }

    fn replace(&self, plural: &str, kind: &str, name: &str, body: Option<Value>) -> Response<Body> {
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
        s.revision += 1;
        let rv = s.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = uid.unwrap_or(Value::Null);
        s.objects.insert(key, obj.clone());
        s.log.push((rv, plural.to_string(), "MODIFIED", obj.clone()));
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
        s.log.push((rv, plural.to_string(), "DELETED", obj.clone()));
        drop(s);
        self.head.send_replace(rv);
        respond(200, &obj)
    }

    fn watch(&self, plural: &str, _kind: &str, from: String) -> Response<Body> {
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
                            .filter(|(rv, p, _, _)| *rv > last && *p == plural)
                            .map(|(_, _, t, o)| line(&json!({"type": t, "object": o})))
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
