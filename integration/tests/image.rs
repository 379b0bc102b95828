//! The image as the DaemonSet runs it (scripts/image.sh, podman, offline): its install-cni step
//! puts the plugin and the manifest's conflist in place, the agents run from it on the host
//! network of each lab node (privileged, /run/netns and the datastore mounted), and pods added
//! with the installed plugin reach each other across nodes; nft inside the image writes the
//! natOutgoing table. Needs root and podman.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gingham_api::resources::IPPool;
use gingham_integration::lab::{workspace_binary, Cluster, LabOptions};
use gingham_integration::netns::{unique_suffix, wait_for, TempDir};

/// Removes the image when the test ends, however it ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "--force", &self.0]).output();
    }
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman").args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]).args(args).output().expect("podman runs")
}

/// The conflist the manifest's ConfigMap holds and the DaemonSet's install-cni command.
fn from_manifest() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/gingham.yaml")).unwrap();
    let (mut conflist, mut command) = (None, None);
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "ConfigMap" {
            conflist = v["data"]["10-gingham.conflist"].as_str().map(String::from).or(conflist);
        }
        if v["kind"] == "DaemonSet" {
            let init = &v["spec"]["template"]["spec"]["initContainers"][0];
            assert_eq!(init["name"], "install-cni");
            command = Some(init["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect());
        }
    }
    (conflist.expect("a conflist in the ConfigMap"), command.expect("an install-cni init container"))
}

#[test]
fn agents_from_the_image_route_pods_added_with_the_plugin_it_installed() {
    let tag = format!("localhost/gingham-test:{}", unique_suffix());
    let target: PathBuf = workspace_binary("gingham-agent").unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let built = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh"))
        .args(["--debug", &tag])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(built.status.success(), "image.sh: {}", String::from_utf8_lossy(&built.stderr));
    let image = Image(tag.clone());
    eprintln!("{}", String::from_utf8_lossy(&built.stdout).trim());

    // install-cni, as the init container runs it.
    let dir = TempDir::new("gingham-image").unwrap();
    let (bin, netd, config) = (dir.join("opt-cni-bin"), dir.join("etc-cni-net.d"), dir.join("config"));
    for d in [&bin, &netd, &config] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (conflist, command) = from_manifest();
    std::fs::write(config.join("10-gingham.conflist"), &conflist).unwrap();
    let mount = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    let mut args: Vec<&str> = vec!["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"];
    let mounts = [mount(&bin, "/host/opt/cni/bin"), mount(&netd, "/host/etc/cni/net.d"), mount(&config, "/config")];
    for m in &mounts {
        args.extend(["-v", m]);
    }
    // The manifest's command: its program as the entrypoint, the rest as arguments.
    args.extend(["--entrypoint", &command[0], &image.0]);
    args.extend(command[1..].iter().map(String::as_str));
    let install = podman(&args);
    assert!(install.status.success(), "install-cni: {}", String::from_utf8_lossy(&install.stderr));
    assert_eq!(std::fs::read_to_string(netd.join("10-gingham.conflist")).unwrap(), conflist);
    let plugin = bin.join("gingham");
    let version = Command::new(&plugin).env("CNI_COMMAND", "VERSION").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("supportedVersions"), "the installed plugin runs on the host");

    let mut options = LabOptions::new(3);
    options.image = Some(image.0.clone());
    options.cni_bin = Some(plugin);
    let mut lab = Cluster::new(options).unwrap();
    for n in 0..3 {
        for p in 0..2 {
            lab.add_pod(n, &format!("pod-{}-{}", n + 1, p + 1)).unwrap();
        }
    }
    lab.wait_established(Duration::from_secs(60)).unwrap();
    for from in &lab.pods {
        for to in &lab.pods {
            wait_for(&format!("{} -> {}", from.name, to.name), Duration::from_secs(20), || lab.ping(from, to.address).then_some(()))
                .unwrap_or_else(|e| panic!("{e}\n{}", lab.nodes[from.node].agent.as_ref().unwrap().log_tail()));
        }
    }
    // nft in the image writes the NAT table in the node's namespace.
    lab.modify::<IPPool>("default-ipv4-ippool", |p| p.spec.nat_outgoing = true).unwrap();
    wait_for("natOutgoing written from the image's nft", Duration::from_secs(20), || {
        let ok = lab.status(0).ok()?["natOutgoing"] == "ok";
        let table = lab.fabric.hosts[0].ns.exec("nft", &["list", "table", "ip", "gingham"]).ok()?;
        (ok && table.contains("masquerade")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.nodes[0].agent.as_ref().unwrap().log_tail()));
    drop(lab);
    // Every agent container went with its agent (--rm).
    let left = podman(&["ps", "-a", "--filter", &format!("ancestor={}", image.0), "--format", "{{.Names}}"]);
    wait_for("the agent containers to go", Duration::from_secs(20), || {
        let left = podman(&["ps", "-a", "--filter", &format!("ancestor={}", image.0), "--format", "{{.Names}}"]);
        String::from_utf8_lossy(&left.stdout).trim().is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&left.stdout)));
}
