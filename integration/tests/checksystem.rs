//! `ginghamctl node checksystem` on a host that has what would fight Gingham: a route of
//! another owner inside an IPPool and another CNI configuration that runtimes would pick first.
//! Run in a fresh network namespace (the host's routes are never touched); needs root.

use std::process::Command;

use gingham_integration::lab::workspace_binary;
use gingham_integration::netns::{Netns, TempDir};

fn checksystem(ns: &Netns, db: &std::path::Path, cni: &std::path::Path) -> (bool, String) {
    let ctl = workspace_binary("ginghamctl").unwrap();
    let out = ns
        .command(ctl.to_str().unwrap())
        .args(["--datastore", &format!("sqlite:{}", db.display()), "node", "checksystem", "--cni-conf-dir", cni.to_str().unwrap()])
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_foreign_route_in_a_pool_and_a_cni_config_that_sorts_first_fail_the_check() {
    let ns = Netns::new("gck").unwrap();
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]).unwrap();
    ns.ip(&["link", "set", "eth0p", "up"]).unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"]).unwrap();
    let dir = TempDir::new("gingham-checksystem").unwrap();
    let (db, cni) = (dir.join("gingham.db"), dir.join("net.d"));
    std::fs::create_dir_all(&cni).unwrap();
    std::fs::write(cni.join("10-gingham.conflist"), "{}").unwrap();
    std::fs::write(cni.join("05-cilium.conflist"), "{}").unwrap();
    let pool = dir.join("pool.yaml");
    std::fs::write(&pool, "apiVersion: gingham.io/v1\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 198.19.0.0/16}\n").unwrap();
    let ctl = workspace_binary("ginghamctl").unwrap();
    let applied = Command::new(&ctl)
        .args(["--datastore", &format!("sqlite:{}", db.display()), "--init", "apply", "-f", pool.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    // Someone else's route into the pool, and routes of ours that must not count.
    ns.ip(&["route", "add", "198.19.7.0/24", "via", "198.18.0.1", "proto", "static"]).unwrap();
    ns.ip(&["route", "add", "blackhole", "198.19.1.0/26", "proto", "80"]).unwrap();
    ns.ip(&["route", "add", "198.19.2.0/26", "via", "198.18.0.9", "proto", "80"]).unwrap();

    let (ok, out) = checksystem(&ns, &db, &cni);
    assert!(!ok, "{out}");
    assert!(out.contains("198.19.7.0/24 dev eth0 proto static table main overlaps pool 198.19.0.0/16"), "{out}");
    assert!(!out.contains("198.19.1.0") && !out.contains("198.19.2.0"), "our own routes are not conflicts: {out}");
    assert!(out.contains("runtimes use the first file by name, 05-cilium.conflist"), "{out}");

    ns.ip(&["route", "del", "198.19.7.0/24"]).unwrap();
    std::fs::remove_file(cni.join("05-cilium.conflist")).unwrap();
    let (ok, out) = checksystem(&ns, &db, &cni);
    assert!(ok, "{out}");
    assert!(out.contains("no route of another owner in 1 pools") && out.contains("10-gingham.conflist is the one runtimes use"), "{out}");
}
