//! The node's single IPAM writer: every assignment and release of this node goes through this
//! one task, so concurrent CNI requests never race each other's compare-and-swap on the same
//! block (and never claim two blocks where one would do). Assignments and releases that queue
//! up while it works go out together, with one write of each block they touch (and the reads
//! every assignment makes, made once). It also owns the node's view of its own allocations
//! ([`HeldMap`]), published for the controller (exports) and the CNI service (CHECK, GC).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::IPAMBlock;
use gingham_ipam::{block, AssignArgs, Assigned, Ipam, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD};
use tokio::sync::{mpsc, oneshot, watch};

use crate::desired::{Held, HeldMap};

type Freed = oneshot::Sender<Result<Vec<IpAddr>, String>>;

enum IpamCommand {
    Assign(AssignArgs, oneshot::Sender<Result<Assigned, String>>),
    Release(String, Freed),
}

#[derive(Clone)]
pub struct IpamWriter {
    tx: mpsc::UnboundedSender<IpamCommand>,
    held: watch::Receiver<Arc<HeldMap>>,
}

impl IpamWriter {
    /// Reads this node's allocations once (the only IPAMBlock list the agent makes) and
    /// starts the writer.
    pub async fn start(store: Store<AnyDatastore>, node: &str) -> anyhow::Result<IpamWriter> {
        let (blocks, _) = store.list::<IPAMBlock>().await?;
        let held = node_allocations(&blocks, node);
        let (publish, held_rx) = watch::channel(Arc::new(held.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Ipam::new(store), node.to_string(), held, publish, rx));
        Ok(IpamWriter { tx, held: held_rx })
    }

    pub async fn assign(&self, args: AssignArgs) -> Result<Assigned, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(IpamCommand::Assign(args, reply)).map_err(|_| "the IPAM writer stopped".to_string())?;
        rx.await.map_err(|_| "the IPAM writer stopped".to_string())?
    }

    /// Releases what `handle` holds; returns the freed addresses (none when it held nothing).
    pub async fn release(&self, handle: &str) -> Result<Vec<IpAddr>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(IpamCommand::Release(handle.to_string(), reply)).map_err(|_| "the IPAM writer stopped".to_string())?;
        rx.await.map_err(|_| "the IPAM writer stopped".to_string())?
    }

    pub fn held(&self) -> Arc<HeldMap> {
        self.held.borrow().clone()
    }

    pub fn held_changes(&self) -> watch::Receiver<Arc<HeldMap>> {
        self.held.clone()
    }
}

/// Every allocation made for a pod on `node`, with its block.
pub fn node_allocations(blocks: &[IPAMBlock], node: &str) -> HeldMap {
    let mut out = BTreeMap::new();
    for b in blocks {
        let Ok(cidr) = b.spec.cidr.parse() else { continue };
        let borrowed = block::affine_node(&b.spec) != Some(node);
        for (addr, attr) in block::allocations(&b.spec) {
            if attr.secondary.get(ATTR_NODE).map(String::as_str) == Some(node) {
                let held = Held {
                    handle: attr.handle_id.clone().unwrap_or_default(),
                    block: cidr,
                    borrowed,
                    namespace: attr.secondary.get(ATTR_NAMESPACE).cloned(),
                    pod: attr.secondary.get(ATTR_POD).cloned(),
                };
                out.insert(addr, held);
            }
        }
    }
    out
}

async fn run(
    ipam: Ipam<AnyDatastore>,
    node: String,
    mut held: HeldMap,
    publish: watch::Sender<Arc<HeldMap>>,
    mut rx: mpsc::UnboundedReceiver<IpamCommand>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut releases: Vec<(String, Freed)> = Vec::new();
        let mut assigns: Vec<AssignArgs> = Vec::new();
        let mut replies = Vec::new();
        for command in batch {
            match command {
                IpamCommand::Assign(args, reply) => {
                    assigns.push(args);
                    replies.push(reply);
                }
                IpamCommand::Release(handle, reply) => releases.push((handle, reply)),
            }
        }
        // Pods that start together share the reads and the block writes of their assignments.
        let results = ipam.assign_many(&assigns).await;
        for ((args, reply), result) in assigns.iter().zip(replies).zip(results) {
            let result = result.map_err(|e| e.to_string());
            if let Ok(assigned) = &result {
                for a in [&assigned.ipv4, &assigned.ipv6].into_iter().flatten() {
                    let h = Held {
                        handle: args.handle.clone(),
                        block: a.block,
                        borrowed: a.borrowed,
                        namespace: args.attrs.get(ATTR_NAMESPACE).cloned(),
                        pod: args.attrs.get(ATTR_POD).cloned(),
                    };
                    held.insert(a.address, h);
                }
            }
            let _ = reply.send(result);
        }
        if !releases.is_empty() {
            let handles: Vec<String> = releases.iter().map(|(h, _)| h.clone()).collect();
            match ipam.release_handles(&handles).await {
                Ok(freed) => {
                    for ((_, reply), addrs) in releases.into_iter().zip(freed) {
                        for a in &addrs {
                            held.remove(a);
                        }
                        let _ = reply.send(Ok(addrs));
                    }
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "releasing addresses failed");
                    for (_, reply) in releases {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        publish.send_replace(Arc::new(held.clone()));
    }
}
