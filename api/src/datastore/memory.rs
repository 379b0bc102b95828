//! An in-process backend for unit tests: the same revision and watch semantics as sqlite,
//! kept in memory and lost with the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::{strip_revision, with_revision, Datastore, DatastoreError, RawList, RawObject, Result, Revision, WatchEvent, WatchStream};
use crate::resources::KindInfo;

/// How many past events a watch can start behind the head before it gets [`WatchEvent::Resync`].
const HISTORY: usize = 10_000;

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<(&'static str, String), (u64, serde_json::Value)>,
    history: VecDeque<(u64, &'static str, WatchEvent)>,
    /// Watches from before this revision have lost events.
    compacted: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore { state: Arc::new(Mutex::new(State::default())), head: watch::channel(0).0 }
    }

    /// Forgets the change history, as a long-running store eventually does: watches from an
    /// older revision get [`WatchEvent::Resync`].
    pub fn compact(&self) {
        let mut state = self.state.lock().expect("memory store lock");
        state.compacted = state.revision;
        state.history.clear();
    }

    fn write(&self, f: impl FnOnce(&mut State) -> Result<RawObject>) -> Result<RawObject> {
        let (result, revision) = {
            let mut state = self.state.lock().expect("memory store lock");
            let result = f(&mut state);
            while state.history.len() > HISTORY {
                if let Some((rev, _, _)) = state.history.pop_front() {
                    state.compacted = rev;
                }
            }
            (result, state.revision)
        };
        self.head.send_replace(revision);
        result
    }
}

/// The CAS of update and delete: the object exists and is still at `revision`.
fn check_revision(state: &State, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
    let current =
        state.objects.get(&(kind.kind, name.to_string())).ok_or_else(|| DatastoreError::NotFound { kind: kind.kind, name: name.into() })?.0;
    if Some(current) != revision.as_u64() {
        return Err(DatastoreError::Conflict { kind: kind.kind, name: name.into() });
    }
    Ok(())
}

fn record(state: &mut State, kind: KindInfo, event: impl FnOnce(RawObject) -> WatchEvent, obj: &RawObject) {
    state.history.push_back((state.revision, kind.kind, event(obj.clone())));
}

impl Datastore for MemoryStore {
    async fn get(&self, kind: KindInfo, name: &str) -> Result<Option<RawObject>> {
        let state = self.state.lock().expect("memory store lock");
        Ok(state.objects.get(&(kind.kind, name.to_string())).map(|(rev, v)| with_revision(name, Revision::from(*rev), v.clone())))
    }

    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        let state = self.state.lock().expect("memory store lock");
        let items = state
            .objects
            .range((kind.kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind.kind)
            .map(|((_, name), (rev, v))| with_revision(name, Revision::from(*rev), v.clone()))
            .collect();
        Ok(RawList { items, revision: Revision::from(state.revision) })
    }

    async fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> Result<RawObject> {
        self.write(|state| {
            let key = (kind.kind, name.to_string());
            if state.objects.contains_key(&key) {
                return Err(DatastoreError::AlreadyExists { kind: kind.kind, name: name.into() });
            }
            state.revision += 1;
            let value = strip_revision(value);
            state.objects.insert(key, (state.revision, value.clone()));
            let obj = with_revision(name, Revision::from(state.revision), value);
            record(state, kind, WatchEvent::Added, &obj);
            Ok(obj)
        })
    }

    async fn update(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        self.write(|state| {
            let key = (kind.kind, name.to_string());
            check_revision(state, kind, name, revision)?;
            state.revision += 1;
            let value = strip_revision(value);
            state.objects.insert(key, (state.revision, value.clone()));
            let obj = with_revision(name, Revision::from(state.revision), value);
            record(state, kind, WatchEvent::Modified, &obj);
            Ok(obj)
        })
    }

    async fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
        self.write(|state| {
            let key = (kind.kind, name.to_string());
            check_revision(state, kind, name, revision)?;
            let (_, value) = state.objects.remove(&key).expect("checked above");
            state.revision += 1;
            let obj = with_revision(name, Revision::from(state.revision), value);
            record(state, kind, WatchEvent::Deleted, &obj);
            Ok(obj)
        })
        .map(|_| ())
    }

    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        let from = from.as_u64().ok_or_else(|| DatastoreError::Backend(format!("revision {from:?} is not a memory revision")))?;
        let (tx, rx) = mpsc::channel(256);
        let state = self.state.clone();
        let mut head = self.head.subscribe();
        tokio::spawn(async move {
            let mut last = from;
            loop {
                let batch: Vec<WatchEvent> = {
                    let state = state.lock().expect("memory store lock");
                    if last < state.compacted {
                        last = state.revision;
                        vec![WatchEvent::Resync]
                    } else {
                        let batch =
                            state.history.iter().filter(|(r, k, _)| *r > last && *k == kind.kind).map(|(_, _, e)| e.clone()).collect();
                        last = state.revision;
                        batch
                    }
                };
                for event in batch {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}
