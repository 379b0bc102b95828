//! The calicoctl commands beyond get/apply/delete, run as an operator runs them against a
//! sqlite datastore: label, validate, ipam configure and split, datastore migrate, convert from
//! Calico, completions, and --kubeconfig/--context choosing the cluster.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{GinghamNode, GinghamNodeSpec};
use gingham_ipam::{AssignArgs, Ipam};

const CTL: &str = env!("CARGO_BIN_EXE_ginghamctl");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Dir {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("ginghamctl-parity-{}-{nonce:x}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Dir(dir)
}

fn run(db: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(CTL)
        .args(args)
        .env("GINGHAM_DATASTORE", format!("sqlite:{}", db.display()))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(db: &std::path::Path, args: &[&str]) -> String {
    let out = run(db, args, "");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// stderr + stdout of a command that must fail with exit code 1.
fn fails(db: &std::path::Path, args: &[&str]) -> String {
    let out = run(db, args, "");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap() + &String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Dir, name: &str, text: &str) -> String {
    let p = dir.0.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const POOL: &str = "apiVersion: gingham.io/v1\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  cidr: 198.19.0.0/24\n  blockSize: 26\n  natOutgoing: true\n";

#[test]
fn validate_checks_without_writing_and_names_every_bad_field() {
    let dir = temp_dir();
    let db = dir.0.join("gingham.db");
    let good = write(&dir, "good.yaml", POOL);
    assert!(ok(&db, &["validate", "-f", &good]).contains("IPPool \"pods\" is valid"));
    assert!(!db.exists(), "validate needs no datastore and creates none");
    let bad = POOL.replace("natOutgoing", "natOutgoin") + "---\n" + &POOL.replace("name: pods", "name: pods2\n  labels: {\"-bad\": x}");
    let err = fails(&db, &["validate", "-f", &write(&dir, "bad.yaml", &bad)]);
    assert!(err.contains("document 1 (IPPool \"pods\"): spec.natOutgoin: unknown field"), "{err}");
    assert!(err.contains("document 2 (IPPool \"pods2\"): metadata.labels[\"-bad\"]"), "{err}");
}

#[test]
fn label_sets_overwrites_and_removes() {
    let dir = temp_dir();
    let db = dir.0.join("gingham.db");
    ok(&db, &["--init", "apply", "-f", &write(&dir, "p.yaml", POOL)]);
    ok(&db, &["label", "ippool", "pods", "rack=r1"]);
    let err = fails(&db, &["label", "ippool", "pods", "rack=r2"]);
    assert!(err.contains("already \"r1\"") && err.contains("--overwrite"), "{err}");
    ok(&db, &["label", "ippool", "pods", "rack=r2", "--overwrite"]);
    let got: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ippool", "pods", "-o", "json"])).unwrap();
    assert_eq!(got["metadata"]["labels"]["rack"], "r2");
    let err = fails(&db, &["label", "ippool", "pods", "bad key=x"]);
    assert!(err.contains("metadata.labels[\"bad key\"]"), "{err}");
    ok(&db, &["label", "ippool", "pods", "rack", "--remove"]);
    let got: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ippool", "pods", "-o", "json"])).unwrap();
    assert!(got["metadata"]["labels"].get("rack").is_none(), "{got}");
    assert!(fails(&db, &["label", "ippool", "nope", "a=b"]).contains("not found"));
}

/// A datastore with a pool, two nodes and three pods' addresses.
fn populated(db: &std::path::Path, dir: &Dir) -> Vec<std::net::IpAddr> {
    ok(db, &["--init", "apply", "-f", &write(dir, "p.yaml", POOL)]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = Store::new(SqliteStore::open(db).unwrap());
    let ipam = Ipam::new(store.clone());
    rt.block_on(async {
        let mut held = Vec::new();
        for node in ["node-1", "node-2"] {
            store.create(&GinghamNode::new(node, GinghamNodeSpec::default())).await.unwrap();
        }
        for i in 0..3 {
            let node = if i < 2 { "node-1" } else { "node-2" };
            let attrs = BTreeMap::from([("node".to_string(), node.to_string())]);
            let a = ipam.assign(&AssignArgs { handle: format!("c{i}"), node: node.into(), attrs, ipv4: true, ipv6: false }).await.unwrap();
            held.push(a.ipv4.unwrap().address);
        }
        held
    })
}

#[test]
fn ipam_configure_and_split_keep_every_allocation() {
    let dir = temp_dir();
    let db = dir.0.join("gingham.db");
    let held = populated(&db, &dir);
    ok(&db, &["ipam", "configure", "--strictaffinity=true"]);
    let config: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ipamconfig", "default", "-o", "json"])).unwrap();
    assert_eq!(config["spec"]["strictAffinity"], true);
    ok(&db, &["ipam", "configure", "--strictaffinity=false"]);
    let config: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ipamconfig", "default", "-o", "json"])).unwrap();
    assert_eq!(config["spec"]["strictAffinity"], false);

    let err = fails(&db, &["ipam", "split", "3", "--name", "pods"]);
    assert!(err.contains("power of two"), "{err}");
    let err = fails(&db, &["ipam", "split", "8", "--name", "pods"]);
    assert!(err.contains("smaller than the pool's /26 blocks"), "{err}");
    ok(&db, &["ipam", "split", "4", "--cidr", "198.19.0.0/24"]);
    let pools: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ippools", "-o", "json"])).unwrap();
    let mut cidrs: Vec<(String, String, bool)> = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["metadata"]["name"].as_str().unwrap().into(), p["spec"]["cidr"].as_str().unwrap().into(), p["spec"]["natOutgoing"] == true)
        })
        .collect();
    cidrs.sort();
    let want: Vec<(String, String, bool)> =
        (0..4).map(|i| (format!("pods-split-{}", i + 1), format!("198.19.0.{}/26", i * 64), true)).collect();
    assert_eq!(cidrs, want);
    let check = ok(&db, &["ipam", "check"]);
    assert!(check.contains("and 3 allocations") && check.contains("Found 0 leaked"), "{check}");
    for ip in held {
        assert!(ok(&db, &["ipam", "show", "--ip", &ip.to_string()]).contains("in use by handle"));
    }
}

#[test]
fn an_export_imported_into_an_empty_datastore_exports_identically() {
    let dir = temp_dir();
    let (a, b) = (dir.0.join("a.db"), dir.0.join("b.db"));
    populated(&a, &dir);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bgp\n  namespace: gingham-system\nstringData:\n  password: s3cret\n";
    ok(&a, &["apply", "-f", &write(&dir, "s.yaml", secret)]);
    ok(&a, &["label", "node", "node-1", "rack=r1"]);
    let without = ok(&a, &["datastore", "migrate", "export"]);
    assert!(!without.contains("kind: Secret"), "Secrets only when asked");
    let export = ok(&a, &["datastore", "migrate", "export", "--include-secrets"]);
    for kind in ["IPPool", "GinghamNode", "IPAMBlock", "BlockAffinity", "IPAMHandle", "Secret"] {
        assert!(export.contains(&format!("kind: {kind}\n")), "{kind} missing:\n{export}");
    }
    assert!(!export.contains("resourceVersion"), "{export}");
    let file = write(&dir, "export.yaml", &export);
    let imported = ok(&b, &["--init", "datastore", "migrate", "import", "-f", &file]);
    let count = export.matches("\n---\n").count() + 1;
    assert!(imported.contains(&format!("imported {count} objects")), "{imported}");
    assert_eq!(ok(&b, &["datastore", "migrate", "export", "--include-secrets"]), export);
    assert!(ok(&b, &["ipam", "check"]).contains("and 3 allocations"));
    let again = fails(&b, &["datastore", "migrate", "import", "-f", &file]);
    assert!(again.contains("nothing was imported") && again.contains("already in the target datastore"), "{again}");
}

#[test]
fn calico_resources_convert_with_every_dropped_field_reported() {
    let dir = temp_dir();
    let db = dir.0.join("gingham.db");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/calico/example.yaml");
    let out = run(&db, &["convert", "-f", example], "");
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    // A LoadBalancer pool that masquerades means nothing Gingham can do: not converted, exit 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for note in [
        "IPPool \"my.ippool-1\": spec.ipipMode: \"CrossSubnet\" dropped: Gingham never encapsulates",
        "IPPool \"lb-nat\": not converted: spec.natOutgoing: masquerades traffic from pods' addresses",
        "BGPConfiguration \"default\": spec.nodeMeshMaxRestartTime: dropped (\"120s\"): the mesh's restart time is the agent's --restart-time flag",
        "BGPPeer \"some.name\": spec.reversePeering: dropped",
        "BGPFilter \"my-filter\": spec.exportV4[1]: rule dropped: interface matches are not supported",
        "GinghamNode \"node-hostname\": spec.bgp.ipv4IPIPTunnelAddr: dropped (\"192.168.0.1\"): Gingham never encapsulates",
        "GinghamNode \"node-hostname\": spec.addresses: dropped",
        "GinghamNode \"node-hostname\": status: dropped",
        "FelixConfiguration \"default\": skipped: Gingham has no counterpart",
        "converted 8 resources; 1 could not be converted; 1 skipped",
    ] {
        assert!(stderr.contains(note), "missing note {note:?} in:\n{stderr}");
    }
    assert!(!stdout.contains("projectcalico") && !stdout.contains("resourceVersion") && !stdout.contains("uid:"), "{stdout}");
    // What convert wrote applies as it is, and carries the fields Gingham has.
    let converted = write(&dir, "converted.yaml", &stdout);
    ok(&db, &["validate", "-f", &converted]);
    ok(&db, &["--init", "apply", "-f", &converted]);
    let pool: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ippool", "my.ippool-1", "-o", "json"])).unwrap();
    assert_eq!((pool["spec"]["cidr"].as_str(), pool["spec"]["natOutgoing"].as_bool()), (Some("10.1.0.0/16"), Some(true)));
    let lb: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ippool", "lb-pool", "-o", "json"])).unwrap();
    assert_eq!(lb["spec"]["allowedUses"], serde_json::json!(["LoadBalancer"]), "{lb}");
    let config: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "bgpconfiguration", "default", "-o", "json"])).unwrap();
    assert_eq!(config["spec"]["serviceLoadBalancerIPs"][0]["cidr"], "10.11.0.0/16", "service ranges are kept: {config}");
    assert!(!stderr.contains("serviceLoadBalancerIPs"), "{stderr}");
    let peer: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "bgppeer", "some.name", "-o", "json"])).unwrap();
    assert_eq!(peer["spec"]["password"]["secretKeyRef"]["key"], "rr-password");
    assert_eq!(peer["spec"]["filters"][0], "my-filter");
    let node: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "ginghamnode", "node-hostname", "-o", "json"])).unwrap();
    assert_eq!(node["spec"]["bgp"]["routeReflectorClusterID"], "224.0.0.1");
    assert_eq!(node["spec"]["orchRefs"][0]["nodeName"], "node-hostname");
    assert_eq!(node["metadata"]["labels"]["rack"], "r1");
    let filter: serde_json::Value = serde_json::from_str(&ok(&db, &["get", "bgpfilter", "my-filter", "-o", "json"])).unwrap();
    assert_eq!(filter["spec"]["importV6"][0]["prefixLength"]["max"], 96);
}

#[test]
fn completions_name_the_commands() {
    let dir = temp_dir();
    let script = ok(&dir.0.join("none.db"), &["completion", "bash"]);
    assert!(script.contains("ginghamctl") && script.contains("checksystem") && script.contains("migrate"), "{}", &script[..200]);
}

/// A stand-in API server that records the Authorization header of the first request.
fn recording_server() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let auth = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("authorization: ").map(String::from));
            let _ = tx.send(auth.unwrap_or_default());
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"recorded","code":403}"#;
            let _ =
                write!(conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    (url, rx)
}

#[test]
fn kubeconfig_and_context_choose_the_cluster_and_the_credentials() {
    let dir = temp_dir();
    let (right, seen) = recording_server();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: wrong\nclusters:\n- name: a\n  cluster: {{server: \"http://127.0.0.1:9\"}}\n- name: b\n  cluster: {{server: \"{right}\"}}\n\
         users:\n- name: ua\n  user: {{token: token-a}}\n- name: ub\n  user: {{token: token-b}}\n\
         contexts:\n- name: wrong\n  context: {{cluster: a, user: ua}}\n- name: lab\n  context: {{cluster: b, user: ub, namespace: gingham-system}}\n"
    );
    let path = write(&dir, "kubeconfig", &kubeconfig);
    let out = Command::new(CTL)
        .args(["--datastore", "kubernetes", "--kubeconfig", &path, "--context", "lab", "get", "ippools"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), "bearer token-b");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recorded") || err.contains("403"), "{err}");
    // The flags mean nothing to sqlite and are refused there rather than ignored.
    for flag in [["--context", "lab"], ["--kubeconfig", path.as_str()]] {
        let err = fails(&dir.0.join("x.db"), &["--init", flag[0], flag[1], "get", "ippools"]);
        assert!(err.contains("only apply to the kubernetes datastore"), "{err}");
    }
}
