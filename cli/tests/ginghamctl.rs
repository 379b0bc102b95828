//! ginghamctl as an operator runs it, against a sqlite datastore: every command, every output
//! format, exit codes, and golden output for the tables (`GINGHAM_UPDATE_GOLDEN=1` rewrites
//! them after a deliberate change).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{GinghamNode, GinghamNodeSpec, IPAMHandle};
use gingham_ipam::{AssignArgs, Ipam};

const CTL: &str = env!("CARGO_BIN_EXE_ginghamctl");

struct Env {
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    fn new() -> Env {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("ginghamctl-{}-{nonce:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = Env { dir };
        // A missing datastore is an error; an operator creates one explicitly.
        let err = env.fails(&["get", "pools"], None);
        assert!(err.contains("does not exist") && err.contains(env.db().to_str().unwrap()), "{err}");
        env.ok(&["--init", "get", "pools"]);
        env
    }

    fn db(&self) -> PathBuf {
        self.dir.join("gingham.db")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(CTL)
            .args(args)
            .env("GINGHAM_DATASTORE", format!("sqlite:{}", self.db().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap() + &String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("GINGHAM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing; run with GINGHAM_UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

const RESOURCES: &str = r#"
apiVersion: gingham.io/v1
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.19.0.0/16
  blockSize: 26
---
apiVersion: gingham.io/v1
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: 198.18.128.0/24
  blockSize: 28
  nodeSelector: rack == 'r2'
  disabled: true
---
apiVersion: gingham.io/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: 65000
  nodeToNodeMeshEnabled: false
---
apiVersion: gingham.io/v1
kind: BGPFilter
metadata:
  name: edge
spec:
  exportV4:
  - {action: Accept, matchOperator: In, cidr: 198.18.113.0/24, prefixLength: {min: 24, max: 28}, source: RemotePeers}
  - {action: Reject}
  importV4:
  - {action: Reject, matchOperator: Equal, cidr: 0.0.0.0/0}
---
apiVersion: gingham.io/v1
kind: BGPPeer
metadata:
  name: tor-r1
spec:
  peerIP: 198.18.0.1
  asNumber: 65001
  nodeSelector: rack == 'r1'
  filters: [edge]
"#;

#[test]
fn apply_get_patch_delete_round_trip() {
    let env = Env::new();
    let file = env.write("resources.yaml", RESOURCES);
    let applied = env.ok(&["apply", "-f", &file]);
    assert_eq!(applied.lines().count(), 5, "{applied}");
    assert!(applied.contains("IPPool \"pool-a\" created"));
    // Applying again updates in place.
    assert!(env.ok(&["apply", "-f", &file]).contains("IPPool \"pool-a\" configured"));

    golden("get-ippool.txt", &env.ok(&["get", "ippool"]));
    golden("get-ippools-wide.txt", &env.ok(&["get", "pools", "-o", "wide"]));
    golden("get-bgppeer.txt", &env.ok(&["get", "bgppeers"]));
    golden("get-bgpconfig.txt", &env.ok(&["get", "bgpconfig"]));
    golden("get-bgpfilter.txt", &env.ok(&["get", "bgpfilters"]));
    let bad = RESOURCES.replace("cidr: 0.0.0.0/0", "cidr: '2001:db8::/32'");
    let err = env.fails(&["apply", "-f", &env.write("bad.yaml", &bad)], None);
    assert!(err.contains("spec.importV4[0].cidr") && err.contains("not an IPv4 CIDR"), "{err}");
    let yaml = env.ok(&["get", "pool", "pool-a", "-o", "yaml"]);
    let parsed: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed["spec"]["cidr"], "198.19.0.0/16");
    assert!(parsed["metadata"]["resourceVersion"].is_string());
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["get", "ippools", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"].as_array().unwrap().len(), 2);

    env.ok(&["patch", "ippool", "pool-a", "-p", r#"{"spec":{"disabled":true,"blockSize":null}}"#]);
    let patched: serde_json::Value = serde_json::from_str(&env.ok(&["get", "ippool", "pool-a", "-o", "json"])).unwrap();
    assert_eq!(patched["spec"]["disabled"], true);
    assert!(patched["spec"].get("blockSize").is_none(), "null removes a field (RFC 7386)");
    let err = env.fails(&["patch", "ippool", "pool-a", "-p", r#"{"spec":{"blockSize":99}}"#], None);
    assert!(err.contains("spec.blockSize"), "{err}");

    env.ok(&["delete", "ippool", "pool-b"]);
    let err = env.fails(&["delete", "ippool", "pool-b"], None);
    assert!(err.contains("not found"), "{err}");
    env.ok(&["delete", "-f", &env.write("peer.yaml", &RESOURCES[RESOURCES.rfind("---").unwrap() + 3..])]);
    assert_eq!(env.ok(&["get", "bgppeer"]).lines().count(), 1, "only the header is left");
}

#[test]
fn an_invalid_file_is_refused_whole_naming_document_field_and_reason() {
    let env = Env::new();
    let bad = r#"{"apiVersion":"gingham.io/v1","kind":"List","items":[
        {"apiVersion":"gingham.io/v1","kind":"IPPool","metadata":{"name":"fine"},"spec":{"cidr":"198.19.0.0/16"}},
        {"apiVersion":"gingham.io/v1","kind":"IPPool","metadata":{"name":"tiny"},"spec":{"cidr":"198.19.0.0/29","blockSize":26}},
        {"apiVersion":"gingham.io/v1","kind":"BGPPeer","metadata":{"name":"p"},"spec":{"peerIP":"198.18.0.1","asNumber":0}}
    ]}"#;
    let err = env.fails(&["apply", "-f", "-"], Some(bad));
    assert!(err.contains("document 2 (IPPool \"tiny\"): spec.blockSize"), "{err}");
    assert!(err.contains("document 3 (BGPPeer \"p\"): spec.asNumber"), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert_eq!(env.ok(&["get", "ippool"]).lines().count(), 1, "the valid document was not applied either");
    let err = env.fails(&["apply", "-f", "-"], Some("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n"));
    assert!(err.contains("apiVersion"), "{err}");
    let err = env.fails(&["get", "deployments"], None);
    assert!(err.contains("unknown resource kind") && err.contains("ippools"), "{err}");
    env.ok(&["create", "-f", &env.write("one.yaml", &RESOURCES[..RESOURCES.find("---").unwrap()])]);
    let err = env.fails(&["create", "-f", &env.write("one.yaml", &RESOURCES[..RESOURCES.find("---").unwrap()])], None);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn ipam_show_check_and_release() {
    let env = Env::new();
    env.ok(&["apply", "-f", &env.write("r.yaml", &RESOURCES[..RESOURCES.find("---").unwrap()])]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = Store::new(SqliteStore::open(env.db()).unwrap());
    let ipam = Ipam::new(store.clone());
    let mut held = Vec::new();
    rt.block_on(async {
        for node in ["node-1", "node-2"] {
            store.create(&GinghamNode::new(node, GinghamNodeSpec::default())).await.unwrap();
        }
        for i in 0..3 {
            let node = if i < 2 { "node-1" } else { "node-2" };
            let attrs = BTreeMap::from([("node".to_string(), node.to_string()), ("pod".to_string(), format!("web-{i}"))]);
            let a = ipam.assign(&AssignArgs { handle: format!("c{i}"), node: node.into(), attrs, ipv4: true, ipv6: false }).await.unwrap();
            held.push(a.ipv4.unwrap());
        }
    });
    let show = env.ok(&["ipam", "show"]);
    assert!(show.contains("198.19.0.0/16") && show.contains("65536") && show.contains("3 (0%)"), "{show}");
    golden("ipam-show.txt", &show);
    let blocks = env.ok(&["ipam", "show", "--show-blocks"]);
    assert_eq!(blocks.lines().filter(|l| l.starts_with("Block")).count(), 2, "{blocks}");
    assert!(blocks.contains("host:node-1") && blocks.contains("host:node-2"));
    let who = env.ok(&["ipam", "show", "--ip", &held[0].address.to_string()]);
    assert!(who.contains("in use by handle c0") && who.contains("pod=web-0"), "{who}");
    assert!(env.ok(&["ipam", "show", "--ip", "198.19.255.255"]).contains("not assigned"));
    assert!(env.ok(&["ipam", "show", "--ip", "198.18.5.5"]).contains("not in any IPPool"));
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["ipam", "show", "-o", "json"])).unwrap();
    assert_eq!(json[0]["inUse"], "3");

    assert!(env.ok(&["ipam", "check"]).contains("Found 0 leaked"));
    // A crashed DEL leaves an allocation without a handle.
    rt.block_on(store.delete_latest::<IPAMHandle>("c1")).unwrap();
    let report = env.fails(&["ipam", "check"], None);
    assert!(report.contains(&format!("leaked: {}", held[1].address)) && report.contains("--fix"), "{report}");
    let fixed = env.ok(&["ipam", "check", "--fix"]);
    assert!(fixed.contains("released 1 addresses"), "{fixed}");
    assert!(env.ok(&["ipam", "check"]).contains("Checked 2 blocks and 2 allocations"));

    assert!(env.ok(&["ipam", "release", "--ip", &held[2].address.to_string()]).contains("released"));
    assert!(env.ok(&["ipam", "release", "--ip", &held[2].address.to_string()]).contains("was not assigned"));
    // node-2's block is empty now: deleting the node gives it back. Deleting node-1 retires it
    // as gingham-controllers does a deleted Kubernetes Node: its pod's address, then its block.
    let deleted = env.ok(&["delete", "node", "node-2"]);
    assert!(deleted.contains("released block"), "{deleted}");
    let deleted = env.ok(&["delete", "node", "node-1"]);
    assert!(deleted.contains("released 1 addresses of 1 pods") && deleted.contains("released block"), "{deleted}");
    assert_eq!(env.ok(&["get", "blocks"]).lines().count(), 1, "only the header: no block left");
    assert!(env.ok(&["ipam", "check"]).contains("Found 0 leaked"));
}

/// A stand-in agent status endpoint serving one canned document.
fn fake_agent(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let mut conn = conn.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}

const STATUS: &str = r#"{"node":"node-1","version":"0.1.0","address":"198.18.0.11/24","ready":true,"datastore":"ok","synced":true,
 "peers":[{"address":"198.18.0.12","asNumber":64512,"type":"mesh","state":"Established","sinceSeconds":42,"info":"","prefixesReceived":1,"prefixesAccepted":1,"prefixesAdvertised":1},
          {"address":"198.18.0.1","asNumber":65001,"type":"node","state":"Active","sinceSeconds":null,"info":"connect: connection refused","prefixesReceived":0,"prefixesAccepted":0,"prefixesAdvertised":0,
           "problems":["BGPFilter \"edge\" does not exist; the session runs without it"]},
          {"address":"198.18.0.2","asNumber":65002,"type":"node","state":"Established","sinceSeconds":7,"info":"","prefixesReceived":3,"prefixesAccepted":2,"prefixesAdvertised":1}],
 "exports":["198.19.0.0/26"],
 "routes":{"wanted":4,"programmed":3,"removed":0,"repaired":0,"notInstalled":1,
           "problems":[{"prefix":"198.18.114.0/24","metric":2048,"reason":"unreachable","message":"next hop 198.18.9.1 is not reachable through the node's routes"}]},
 "natOutgoing":"ok"}"#;

#[test]
fn node_status_and_version_read_the_agent() {
    let env = Env::new();
    let addr = fake_agent(STATUS);
    golden("node-status.txt", &env.ok(&["node", "status", "--status-addr", &addr]));
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["node", "status", "--status-addr", &addr, "-o", "json"])).unwrap();
    assert_eq!(json["peers"][0]["state"], "Established");
    let version = env.ok(&["version", "--status-addr", &addr]);
    assert!(version.contains("Client Version:    0.1.0") && version.contains("Agent Version:     0.1.0 (node node-1)"), "{version}");

    // Nobody listening: a clear message and a failing exit code.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let err = env.fails(&["node", "status", "--status-addr", &closed], None);
    assert!(err.contains("gingham-agent is not reachable on"), "{err}");
    assert!(env.ok(&["version", "--status-addr", &closed]).contains("unknown"));
}
