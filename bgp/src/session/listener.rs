//! The passive side: accepts connections and hands each to the peer configured for its
//! source address. Unknown sources are refused, or offered to the owner when they fall in a
//! configured listen range (dynamic neighbours).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::peer::PeerCommand;
use super::socket::{self, Transport};

enum ListenerCommand {
    AddPeer { transport: Transport, peer: mpsc::Sender<PeerCommand> },
    RemovePeer { addr: IpAddr },
    Listen { addrs: Vec<SocketAddr>, reply: oneshot::Sender<io::Result<Vec<SocketAddr>>> },
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
            sockets.push((*addr, socket::listen(*addr)?));
        }
        let local = sockets.iter().map(|(_, s)| s.local_addr()).collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(sockets, rx, listen_ranges, unknown));
        Ok(Listener { commands: tx, local })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Listens on `addrs` instead. Sockets of addresses that stay are kept (no moment without
    /// them, and no clash with a new socket on the same address); new ones get every peer's
    /// MD5 key before they accept. On error nothing changes.
    pub async fn listen(&mut self, addrs: Vec<SocketAddr>) -> io::Result<()> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("listener task has exited");
        self.commands.send(ListenerCommand::Listen { addrs, reply }).map_err(|_| gone())?;
        self.local = answer.await.map_err(|_| gone())??;
        Ok(())
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

/// One listening socket and the task accepting on it.
struct Bound {
    socket: std::sync::Arc<TcpListener>,
    acceptor: JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

fn accept_on(socket: TcpListener, tx: mpsc::Sender<(TcpStream, SocketAddr)>) -> Bound {
    let socket = std::sync::Arc::new(socket);
    let s = socket.clone();
    let acceptor = tokio::spawn(async move {
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
    });
    Bound { socket, acceptor }
}

/// Installs `transport`'s MD5 key on the listening socket when the families match.
fn install_md5(socket: &TcpListener, transport: &Transport) {
    let addr = transport.peer.ip();
    let same_family = socket.local_addr().map(|a| a.is_ipv6() == addr.is_ipv6()).unwrap_or(false);
    if let (true, Some(key)) = (same_family, &transport.md5_key) {
        if let Err(e) = socket::set_md5(socket, addr, Some(key)) {
            tracing::error!(peer = %addr, error = %e, "cannot install TCP MD5 key on the listening socket");
        }
    }
}

async fn run(
    sockets: Vec<(SocketAddr, TcpListener)>,
    mut commands: mpsc::UnboundedReceiver<ListenerCommand>,
    ranges: Vec<IpNetwork>,
    unknown: Option<mpsc::Sender<UnknownConnection>>,
) {
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr)>(64);
    // Keyed by the address asked for (port 0 becomes some port once bound).
    let mut bound: Vec<(SocketAddr, Bound)> = sockets.into_iter().map(|(addr, s)| (addr, accept_on(s, accepted_tx.clone()))).collect();
    let mut routes: HashMap<IpAddr, Route> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => break,
                Some(ListenerCommand::AddPeer { transport, peer }) => {
                    for (_, b) in &bound {
                        install_md5(&b.socket, &transport);
                    }
                    routes.insert(transport.peer.ip(), Route { transport, peer });
                }
                Some(ListenerCommand::RemovePeer { addr }) => {
                    if let Some(route) = routes.remove(&addr) {
                        if route.transport.md5_key.is_some() {
                            for (_, b) in &bound {
                                let _absent_is_fine = socket::set_md5(b.socket.as_ref(), addr, None);
                            }
                        }
                    }
                }
                Some(ListenerCommand::Listen { addrs, reply }) => {
                    let mut fresh = Vec::new();
                    let mut failed = None;
                    for addr in addrs.iter().filter(|a| !bound.iter().any(|(b, _)| b == *a)) {
                        match socket::listen(*addr) {
                            Ok(s) => fresh.push((*addr, s)),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        // Dropping `fresh` closes what was bound so far: all or nothing.
                        let _gone = reply.send(Err(e));
                        continue;
                    }
                    for (addr, s) in fresh {
                        for route in routes.values() {
                            install_md5(&s, &route.transport);
                        }
                        bound.push((addr, accept_on(s, accepted_tx.clone())));
                    }
                    bound.retain(|(addr, _)| addrs.contains(addr));
                    bound.sort_by_key(|(addr, _)| addrs.iter().position(|a| a == addr));
                    let local = bound.iter().map(|(_, b)| b.socket.local_addr()).collect();
                    let _gone = reply.send(local);
                }
            },
            Some((stream, remote)) = accepted.recv() => {
                let ip = remote.ip().to_canonical();
                match routes.get(&ip) {
                    Some(route) if !same_link(&route.transport, remote) => {
                        tracing::info!(peer = %remote, interface = ?route.transport.interface, "refused connection from a link-local peer's address on another link");
                    }
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
    drop(bound);
}

/// A link-local address is only that peer's on the peer's own link.
fn same_link(transport: &Transport, remote: SocketAddr) -> bool {
    match (remote, transport.scope_id()) {
        (SocketAddr::V6(r), Ok(Some(scope))) if r.ip().is_unicast_link_local() => r.scope_id() == scope,
        (_, Ok(_)) => true,
        (_, Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(interface: Option<&str>) -> Transport {
        let mut t = Transport::new("[fe80::2]:179".parse().unwrap());
        t.interface = interface.map(str::to_owned);
        t
    }

    #[test]
    fn a_link_local_peer_is_only_accepted_on_its_own_link() {
        // `lo` is interface 1 in every network namespace.
        let on = |scope: u32| SocketAddr::V6(std::net::SocketAddrV6::new("fe80::2".parse().unwrap(), 40000, 0, scope));
        assert!(same_link(&transport(Some("lo")), on(1)));
        assert!(!same_link(&transport(Some("lo")), on(2)), "the same address on another link is someone else");
        assert!(!same_link(&transport(Some("no-such-link0")), on(1)), "a link that is gone accepts nobody");
        assert!(same_link(&transport(None), "[2001:db8::2]:40000".parse().unwrap()));
    }
}
