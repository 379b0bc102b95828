//! Our BGP sessions running inside a namespace, in this process: a thread enters the
//! namespace (setns) and drives a current-thread tokio runtime, so every socket its tasks
//! open lives in that namespace. The test talks to it through the runtime's handle.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use gingham_bgp::fsm::{DownReason, Negotiated, StopMode};
use gingham_bgp::session::{spawn_peer, Listener, PeerCommand, PeerConfig, PeerEvent, PeerHandle, PeerSnapshot};
use gingham_bgp::wire::{PathAttributes, Update};
use ipnetwork::IpNetwork;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use crate::netns::Netns;

/// A tokio runtime whose thread lives in a network namespace.
pub struct NsRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    pub fn new(ns: &Netns) -> Result<NsRuntime> {
        let file = File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _report = handle_tx.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _report = handle_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _report = handle_tx.send(Ok(rt.handle().clone()));
            rt.block_on(async {
                let _stopped = stop_rx.await;
            });
        });
        let handle = match handle_rx.recv() {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => bail!("entering namespace {}: {e}", ns.name()),
            Err(_) => bail!("namespace thread died"),
        };
        Ok(NsRuntime { handle, stop: Some(stop_tx), thread: Some(thread) })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs a future on the namespace's runtime and waits for its result.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _receiver_waits = tx.send(f.await);
        });
        rx.recv().expect("namespace runtime stopped")
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _already_stopped = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _panicked_is_reported_by_the_test = t.join();
        }
    }
}

/// What the speaker has seen, kept by one collector task and published through `watch`.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub established: HashMap<SocketAddr, Negotiated>,
    pub received: HashMap<SocketAddr, HashMap<IpNetwork, PathAttributes>>,
    pub downs: Vec<(SocketAddr, DownReason)>,
    pub treat_as_withdraw: usize,
    pub end_of_rib: HashSet<(SocketAddr, gingham_bgp::wire::Family)>,
}

/// Our BGP sessions (no RIB) in a namespace: a listener on port 179 and named peers, for
/// tests of the session layer against real daemons. The full speaker is `gingham_bgp::speaker`.
pub struct Sessions {
    rt: NsRuntime,
    listener: Listener,
    peers: HashMap<String, PeerHandle>,
    events_tx: mpsc::Sender<PeerEvent>,
    view: watch::Receiver<View>,
}

impl Sessions {
    /// Listens on `listen` (e.g. `0.0.0.0:179` and `[::]:179`) inside `ns`.
    pub fn start(ns: &Netns, listen: Vec<SocketAddr>) -> Result<Sessions> {
        let rt = NsRuntime::new(ns)?;
        let listener = rt.block_on(async move { Listener::bind(&listen, vec![], None) })?;
        let (events_tx, mut events) = mpsc::channel::<PeerEvent>(1024);
        let (view_tx, view) = watch::channel(View::default());
        rt.handle().spawn(async move {
            while let Some(ev) = events.recv().await {
                view_tx.send_modify(|v| apply(v, ev));
            }
        });
        Ok(Sessions { rt, listener, peers: HashMap::new(), events_tx, view })
    }

    pub fn add_peer(&mut self, name: &str, config: PeerConfig) {
        let transport = config.transport.clone();
        let events = self.events_tx.clone();
        let listener = self.listener.clone();
        let handle = self.rt.block_on(async move {
            let (h, _join) = spawn_peer(config, events);
            listener.add_peer(transport, h.sender());
            h.send(PeerCommand::Start).await;
            h
        });
        self.peers.insert(name.to_owned(), handle);
    }

    pub fn peer(&self, name: &str) -> &PeerHandle {
        &self.peers[name]
    }

    pub fn send(&self, name: &str, updates: Vec<Update>) {
        let h = self.peers[name].clone();
        self.rt.block_on(async move { h.send(PeerCommand::Send(updates)).await });
    }

    pub fn command(&self, name: &str, cmd: PeerCommand) {
        let h = self.peers[name].clone();
        self.rt.block_on(async move { h.send(cmd).await });
    }

    pub fn snapshot(&self, name: &str) -> Option<PeerSnapshot> {
        let h = self.peers[name].clone();
        self.rt.block_on(async move { h.snapshot().await })
    }

    pub fn snapshots(&self) -> Vec<(String, PeerSnapshot)> {
        let mut names: Vec<&String> = self.peers.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| self.snapshot(n).map(|s| (n.clone(), s))).collect()
    }

    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Stops and forgets a peer (its task ends when the handle is dropped).
    pub fn remove_peer(&mut self, name: &str) {
        if let Some(h) = self.peers.remove(name) {
            let addr = h.addr.ip();
            let listener = self.listener.clone();
            self.rt.block_on(async move {
                h.send(PeerCommand::Stop(StopMode::Cease { code: gingham_bgp::wire::ErrorCode::PeerDeconfigured, communication: None }))
                    .await;
                listener.remove_peer(addr);
            });
        }
    }
}

fn apply(v: &mut View, ev: PeerEvent) {
    match ev {
        PeerEvent::Established { peer, negotiated, .. } => {
            v.established.insert(peer, *negotiated);
        }
        PeerEvent::Down { peer, reason } => {
            v.established.remove(&peer);
            v.received.remove(&peer);
            v.downs.push((peer, reason));
        }
        PeerEvent::Update { peer, update, attr_errors } => {
            if attr_errors.iter().any(|e| e.action == gingham_bgp::wire::AttrAction::TreatAsWithdraw) {
                v.treat_as_withdraw += 1;
            }
            if let Some(f) = update.end_of_rib_family() {
                v.end_of_rib.insert((peer, f));
            }
            let table = v.received.entry(peer).or_default();
            for p in update.withdrawn_prefixes() {
                table.remove(&p);
            }
            let mut attrs = update.attributes.clone();
            attrs.mp_reach = None;
            attrs.mp_unreach = None;
            for p in update.announced() {
                let mut a = attrs.clone();
                if let (IpNetwork::V6(_), Some(mp)) = (p, &update.attributes.mp_reach) {
                    a.mp_reach = Some(gingham_bgp::wire::MpReach { family: mp.family, next_hop: mp.next_hop, nlri: vec![] });
                }
                table.insert(p, a);
            }
        }
        PeerEvent::RouteRefresh { .. } => {}
    }
}
