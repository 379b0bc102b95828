//! Four real processes assign 250 addresses each, at the same time, on one sqlite file (two
//! per node, so they race both for new blocks and inside the same blocks). Then `check` must
//! find 1000 distinct allocations and nothing wrong, and releasing everything (again four
//! processes at once) must leave every block empty.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{IPAMBlock, IPAMHandle};
use gingham_ipam::{block, Ipam};

const LOAD: &str = env!("CARGO_BIN_EXE_gingham-ipam-load");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parallel(db: &Path, args: impl Fn(usize) -> Vec<String>) -> Vec<IpAddr> {
    let children: Vec<_> = (0..4)
        .map(|p| Command::new(LOAD).args(args(p)).arg("--db").arg(db).stdout(Stdio::piped()).spawn().expect("spawn load process"))
        .collect();
    let mut out = Vec::new();
    for child in children {
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "a load process failed: {done:?}");
        out.extend(String::from_utf8(done.stdout).unwrap().lines().map(|l| l.parse::<IpAddr>().unwrap()));
    }
    out
}

#[test]
fn four_processes_share_one_database_without_duplicates_or_leaks() {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!("gingham-ipam-stress-{}-{nonce:x}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("ipam.db");
    let init = Command::new(LOAD).args(["init", "--nodes", "2", "--db"]).arg(&db).status().unwrap();
    assert!(init.success());

    let assigned = parallel(&db, |p| {
        ["assign", "--node", &format!("node-{}", p % 2), "--count", "250", "--handle-prefix", &format!("p{p}-")].map(String::from).to_vec()
    });
    assert_eq!(assigned.len(), 1000);
    let distinct: HashSet<IpAddr> = assigned.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "an address was handed out twice");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ipam = Ipam::new(Store::new(SqliteStore::open(&db).unwrap()));
    let report = rt.block_on(ipam.check()).unwrap();
    assert_eq!(report.allocations, 1000);
    assert!(report.leaks.is_empty(), "{:?}", report.leaks);
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert!(report.is_clean(), "{report:?}");
    let (blocks, _) = rt.block_on(ipam.store().list::<IPAMBlock>()).unwrap();
    let stored: HashSet<IpAddr> = blocks.iter().flat_map(|b| block::allocations(&b.spec).into_iter().map(|(a, _)| a)).collect();
    assert_eq!(stored, distinct, "the store holds exactly the addresses the processes printed");

    let released = parallel(&db, |p| ["release", "--count", "250", "--handle-prefix", &format!("p{p}-")].map(String::from).to_vec());
    let released: HashSet<IpAddr> = released.into_iter().collect();
    assert_eq!(released, distinct, "every address came back exactly once");
    let (blocks, _) = rt.block_on(ipam.store().list::<IPAMBlock>()).unwrap();
    for b in &blocks {
        assert_eq!(block::in_use(&b.spec), 0, "block {} still holds addresses", b.spec.cidr);
        assert_eq!(b.spec.unallocated.len(), b.spec.allocations.len(), "block {} lost an address", b.spec.cidr);
    }
    assert!(rt.block_on(ipam.store().list::<IPAMHandle>()).unwrap().0.is_empty(), "handles left behind");
    assert!(rt.block_on(ipam.check()).unwrap().is_clean());
}
