//! The passive side: accepts connections and hands each to the peer configured for its
//! source address. Unknown sources are refused, or offered to the owner when they fall in a
//! configured listen range (dynamic neighbours).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::peer::PeerCommand;
use super::socket::{self, Transport};

enum ListenerCommand {
    AddPeer { transport: Transport, peer: mpsc::Sender<PeerCommand> },
    RemovePeer { addr: IpAddr },
}

/// A connection from an address inside a listen range that no peer is configured for.
#[derive(Debug)]
pub struct UnknownConnection {
    pub remote: SocketAddr,
    pub stream: TcpStream,
}

/// Handle to the listener task. Dropping it stops listening.
#[derive(Clone)]
pub struct Listener {
    commands: mpsc::UnboundedSender<ListenerCommand>,
    local: Vec<SocketAddr>,
}

impl Listener {
    /// Binds every address (e.g. `0.0.0.0:179` and `[::]:179`).
    ///
    /// Errors: the first address that cannot be bound.
    pub fn bind(
        addrs: &[SocketAddr],
        listen_ranges: Vec<IpNetwork>,
        unknown: Option<mpsc::Sender<UnknownConnection>>,
    ) -> io::Result<Listener> {
        let mut sockets = Vec::new();
        for addr in addrs {
            sockets.push(socket::listen(*addr)?);
        }
        let local = sockets.iter().map(TcpListener::local_addr).collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(sockets, rx, listen_ranges, unknown));
        Ok(Listener { commands: tx, local })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Routes connections from `transport.peer`'s address to `peer`, and installs its MD5 key
    /// on the listening sockets.
    pub fn add_peer(&self, transport: Transport, peer: mpsc::Sender<PeerCommand>) {
        if self.commands.send(ListenerCommand::AddPeer { transport, peer }).is_err() {
            tracing::warn!("listener task has exited; peer cannot receive connections");
        }
    }

    pub fn remove_peer(&self, addr: IpAddr) {
        if self.commands.send(ListenerCommand::RemovePeer { addr }).is_err() {
            tracing::debug!("listener task already gone");
        }
    }
}

struct Route {
    transport: Transport,
    peer: mpsc::Sender<PeerCommand>,
}

async fn run(
    sockets: Vec<TcpListener>,
    mut commands: mpsc::UnboundedReceiver<ListenerCommand>,
    ranges: Vec<IpNetwork>,
    unknown: Option<mpsc::Sender<UnknownConnection>>,
) {
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr)>(64);
    let sockets: Vec<std::sync::Arc<TcpListener>> = sockets.into_iter().map(std::sync::Arc::new).collect();
    let mut acceptors = Vec::new();
    for s in &sockets {
        let s = s.clone();
        let tx = accepted_tx.clone();
        acceptors.push(tokio::spawn(async move {
            loop {
                match s.accept().await {
                    Ok(pair) => {
                        if tx.send(pair).await.is_err() {
                            return;
                        }
                    }
                    // EMFILE and friends: back off instead of spinning.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    let mut routes: HashMap<IpAddr, Route> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => break,
                Some(ListenerCommand::AddPeer { transport, peer }) => {
                    let addr = transport.peer.ip();
                    for s in &sockets {
                        let same_family = s.local_addr().map(|a| a.is_ipv6() == addr.is_ipv6()).unwrap_or(false);
                        if let (true, Some(key)) = (same_family, &transport.md5_key) {
                            if let Err(e) = socket::set_md5(s.as_ref(), addr, Some(key)) {
                                tracing::error!(peer = %addr, error = %e, "cannot install TCP MD5 key on the listening socket");
                            }
                        }
                    }
                    routes.insert(addr, Route { transport, peer });
                }
                Some(ListenerCommand::RemovePeer { addr }) => {
                    if let Some(route) = routes.remove(&addr) {
                        if route.transport.md5_key.is_some() {
                            for s in &sockets {
                                let _absent_is_fine = socket::set_md5(s.as_ref(), addr, None);
                            }
                        }
                    }
                }
            },
            Some((stream, remote)) = accepted.recv() => {
                let ip = remote.ip().to_canonical();
                match routes.get(&ip) {
                    Some(route) => {
                        if let Err(e) = route.transport.adopt(&stream) {
                            tracing::warn!(peer = %ip, error = %e, "cannot set socket options on accepted connection");
                            continue;
                        }
                        if route.peer.send(PeerCommand::Incoming(stream)).await.is_err() {
                            tracing::debug!(peer = %ip, "peer task gone; connection dropped");
                        }
                    }
                    None if ranges.iter().any(|r| r.contains(ip)) => {
                        if let Some(tx) = &unknown {
                            if tx.send(UnknownConnection { remote, stream }).await.is_err() {
                                tracing::debug!(peer = %ip, "nobody takes dynamic neighbours");
                            }
                        }
                    }
                    None => tracing::info!(peer = %ip, "refused connection from an unconfigured address"),
                }
            }
        }
    }
    for a in acceptors {
        a.abort();
    }
}
