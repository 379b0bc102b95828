//! A real container runtime: podman (CNI backend) calls gingham-cni on a lab node, the container
//! gets its address from the agent and pings a pod on another node; removing the container
//! makes podman call DEL, which leaves nothing behind. The recipe that works on this machine
//! (../shared/PEERS.md): runc, podman entered into the node's network namespace with nsenter,
//! a busybox root filesystem, nothing pulled.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gingham_integration::lab::{workspace_binary, Cluster, LabOptions};
use gingham_integration::netns::{wait_for, TempDir};

fn podman(lab_dir: &Path, node_ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{node_ns}"))
        .args(["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .env("CONTAINERS_CONF", lab_dir.join("containers.conf"))
        .output()
        .expect("podman runs")
}

#[test]
fn podman_containers_get_gingham_addresses_and_leave_nothing_behind() {
    if Command::new("podman").arg("--version").output().is_err() {
        panic!("podman is not installed: scripts/setup.sh installs podman, runc and busybox-static");
    }
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    let target = lab.add_pod(1, "target").unwrap().address;
    lab.wait_established(Duration::from_secs(60)).unwrap();

    // Podman's configuration: our plugin under the name the conflist uses, a busybox rootfs.
    let conf = TempDir::new("gingham-podman").unwrap();
    let plugins = conf.join("plugins");
    let netconf = conf.join("net.d");
    let rootfs = conf.join("rootfs");
    for d in [&plugins, &netconf, &rootfs.join("bin")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(workspace_binary("gingham-cni").unwrap(), plugins.join("gingham")).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "gingham",
        "plugins": [{"type": "gingham", "agentSocket": lab.nodes[0].socket.to_str().unwrap()}],
    });
    std::fs::write(netconf.join("10-gingham.conflist"), conflist.to_string()).unwrap();
    std::fs::write(
        conf.join("containers.conf"),
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n",
            plugins.display(),
            netconf.display()
        ),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "ip", "ping", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    let node_ns = lab.fabric.hosts[0].ns.name().to_string();
    let name = format!("gingham-{}", gingham_integration::netns::unique_suffix());
    let script = format!("ip -4 -o addr show eth0; ping -c 3 -W 2 {target}");
    let run = podman(
        &conf.path,
        &node_ns,
        &[
            "run",
            "--rm",
            "--name",
            &name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1000:1000",
            "--network",
            "gingham",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "podman run failed:\n{stdout}\n{stderr}\nagent:\n{}", lab.nodes[0].agent.as_ref().unwrap().log_tail());
    assert!(stdout.contains("inet 198.19."), "the container's eth0 has a pool address: {stdout}");
    assert!(stdout.contains("3 packets received"), "the container reached the pod on the other node: {stdout}");

    // --rm removed the container: podman called DEL. Nothing of it may remain.
    wait_for("the container's veth to go", Duration::from_secs(10), || {
        let links = lab.fabric.hosts[0].ns.exec("ip", &["-o", "link", "show"]).ok()?;
        (!links.contains("cali")).then_some(())
    })
    .unwrap();
    let routes = lab.routes(0).unwrap();
    assert!(!routes.lines().any(|l| l.contains("dev cali")), "a host route outlived the container: {routes}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ipam = gingham_ipam::Ipam::new(lab.store().unwrap());
    let report = rt.block_on(ipam.check()).unwrap();
    assert_eq!(report.allocations, 1, "only the target pod still holds an address: {report:?}");
}
