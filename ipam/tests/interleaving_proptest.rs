//! Property: whatever the interleaving of concurrent assigns (one at a time or in batches, as
//! a node's IPAM writer makes them) and releases across nodes, no address is ever held by two
//! handles and none is lost.
//!
//! Three simulated nodes run their operation lists as concurrent tasks against one shared
//! store. Every datastore call first yields to the scheduler a number of times drawn from the
//! test's seed, so each case runs a different interleaving of reads and CAS writes (and
//! proptest shrinks a failure to a small one). The pool is tiny so claims race, blocks fill and
//! nodes borrow from each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gingham_api::datastore::memory::MemoryStore;
use gingham_api::datastore::{Datastore, RawList, RawObject, Result, Revision, Store, WatchStream};
use gingham_api::resources::{GinghamNode, GinghamNodeSpec, IPAMBlock, IPPool, IPPoolSpec, KindInfo};
use gingham_ipam::{block, AssignArgs, Ipam, IpamError};
use proptest::prelude::*;

/// A store that lets other tasks run before each call, as a busy datastore would.
struct Interleaving {
    inner: MemoryStore,
    rng: Arc<AtomicU64>,
}

impl Interleaving {
    async fn shuffle(&self) {
        // xorshift: cheap, and the same seed gives the same schedule.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        for _ in 0..(x % 4) {
            tokio::task::yield_now().await;
        }
    }
}

impl Datastore for Interleaving {
    async fn get(&self, kind: KindInfo, name: &str) -> Result<Option<RawObject>> {
        self.shuffle().await;
        self.inner.get(kind, name).await
    }
    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        self.shuffle().await;
        self.inner.list(kind).await
    }
    async fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> Result<RawObject> {
        self.shuffle().await;
        self.inner.create(kind, name, value).await
    }
    async fn update(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        self.shuffle().await;
        self.inner.update(kind, name, value, revision).await
    }
    async fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
        self.shuffle().await;
        self.inner.delete(kind, name, revision).await
    }
    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        self.inner.watch(kind, from).await
    }
}

#[derive(Clone, Debug)]
enum Op {
    Assign,
    /// Several assignments at once; `true`: the last repeats the first's handle (a runtime
    /// retrying an ADD that is still queued).
    AssignBatch(usize, bool),
    /// Release the n-th handle this node assigned (mod how many it has), by handle.
    ReleaseHandle(usize),
    /// Same, by address.
    ReleaseAddress(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Assign),
        2 => (2usize..6, any::<bool>()).prop_map(|(n, retry)| Op::AssignBatch(n, retry)),
        1 => (0usize..8).prop_map(Op::ReleaseHandle),
        1 => (0usize..8).prop_map(Op::ReleaseAddress)
    ]
}

const NODES: [&str; 3] = ["n0", "n1", "n2"];
/// 16 addresses in eight /31 blocks: a node can hold more blocks than the IPAM reads one by
/// one, so both ways of finding room in its own blocks (reads, one list) are interleaved.
const POOL: &str = "198.19.0.0/28";
const BLOCK_SIZE: u8 = 31;

async fn run_node(ipam: Ipam<Interleaving>, node: &'static str, ops: Vec<Op>) -> Vec<(String, IpAddr)> {
    let mut live: Vec<(String, IpAddr)> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Assign => {
                let handle = format!("{node}-{i}");
                let args = AssignArgs { handle: handle.clone(), node: node.into(), attrs: BTreeMap::new(), ipv4: true, ipv6: false };
                match ipam.assign(&args).await {
                    Ok(a) => live.push((handle, a.ipv4.unwrap().address)),
                    Err(IpamError::Exhausted { .. }) => {}
                    Err(e) => panic!("{node}: {e}"),
                }
            }
            Op::AssignBatch(n, retry) => {
                let mut batch: Vec<AssignArgs> = (0..n)
                    .map(|k| AssignArgs {
                        handle: format!("{node}-{i}-{k}"),
                        node: node.into(),
                        attrs: BTreeMap::new(),
                        ipv4: true,
                        ipv6: false,
                    })
                    .collect();
                if retry {
                    batch.push(batch[0].clone());
                }
                let results = ipam.assign_many(&batch).await;
                assert_eq!(results.len(), batch.len());
                let mut first = None;
                for (k, (args, result)) in batch.iter().zip(results).enumerate() {
                    match result {
                        // The first may have found no room that others freed since.
                        Ok(a) if k == n && first.is_some() => {
                            assert_eq!(Some(a.ipv4.unwrap().address), first, "{node}: a repeated handle got a second address")
                        }
                        Ok(a) => {
                            let address = a.ipv4.unwrap().address;
                            if k == 0 {
                                first = Some(address);
                            }
                            live.push((args.handle.clone(), address));
                        }
                        Err(IpamError::Exhausted { .. }) => {}
                        Err(e) => panic!("{node}: {e}"),
                    }
                }
            }
            Op::ReleaseHandle(n) if !live.is_empty() => {
                let (handle, addr) = live.remove(n % live.len());
                assert_eq!(ipam.release_handle(&handle).await.unwrap(), vec![addr], "{handle} did not get back exactly its address");
            }
            Op::ReleaseAddress(n) if !live.is_empty() => {
                let (_, addr) = live.remove(n % live.len());
                assert_eq!(ipam.release_addresses(&[addr]).await.unwrap(), vec![addr]);
            }
            _ => {}
        }
    }
    live
}

fn scenario(seed: u64, ops: Vec<Vec<Op>>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async move {
        let store = Store::new(Interleaving { inner: MemoryStore::new(), rng: Arc::new(AtomicU64::new(seed | 1)) });
        store
            .create(&IPPool::new("pool", IPPoolSpec { cidr: POOL.into(), block_size: Some(BLOCK_SIZE), ..Default::default() }))
            .await
            .unwrap();
        for n in NODES {
            store.create(&GinghamNode::new(n, GinghamNodeSpec::default())).await.unwrap();
        }
        let ipam = Ipam::new(store.clone());
        let tasks: Vec<_> = NODES.iter().zip(ops).map(|(node, ops)| tokio::spawn(run_node(ipam.clone(), node, ops))).collect();
        let mut live: Vec<(String, IpAddr)> = Vec::new();
        for t in tasks {
            live.extend(t.await.unwrap());
        }

        // No address in two hands, from the callers' view...
        let mut seen = HashSet::new();
        for (handle, addr) in &live {
            assert!(seen.insert(*addr), "{addr} handed to two live handles (second: {handle})");
        }
        // ...and the store agrees with the callers exactly: nothing lost, nothing extra.
        let (blocks, _) = store.list::<IPAMBlock>().await.unwrap();
        let stored: HashMap<IpAddr, String> = blocks
            .iter()
            .flat_map(|b| block::allocations(&b.spec).into_iter().map(|(a, attr)| (a, attr.handle_id.clone().unwrap())).collect::<Vec<_>>())
            .collect();
        let expected: HashMap<IpAddr, String> = live.iter().map(|(h, a)| (*a, h.clone())).collect();
        assert_eq!(stored, expected);
        let report = ipam.check().await.unwrap();
        assert!(report.is_clean(), "{report:?}");

        // Releasing everything leaves every block whole.
        for (handle, _) in &live {
            ipam.release_handle(handle).await.unwrap();
        }
        let (blocks, _) = store.list::<IPAMBlock>().await.unwrap();
        for b in &blocks {
            assert_eq!(block::in_use(&b.spec), 0);
            assert_eq!(b.spec.unallocated.len(), 2, "block {} lost an address", b.spec.cidr);
        }
        assert!(blocks.len() <= 8);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_assign_release_never_duplicates_or_loses(
        seed in any::<u64>(),
        ops in proptest::collection::vec(proptest::collection::vec(op(), 0..14), 3),
    ) {
        scenario(seed, ops);
    }
}
