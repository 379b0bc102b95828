//! A Gingham cluster made of network namespaces: a fabric bridge, N nodes on 198.18.0.0/24 each
//! running the real `gingham-agent` (one sqlite datastore shared on the host filesystem), and
//! pods as namespaces wired by invoking the real `gingham-cni` binary exactly as a container
//! runtime does (environment variables + network configuration on stdin). Everything is
//! removed on drop, also on panic: pods are deleted through the plugin, then agents stopped by
//! PID, then namespaces removed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::Store;
use gingham_api::resources::{BGPConfiguration, BGPConfigurationSpec, IPPool, IPPoolSpec};

use crate::netns::{unique_suffix, wait_for, Daemon, Fabric, Netns, TempDir};

pub const POD_POOL: &str = "198.19.0.0/16";
pub const POD_POOL_V6: &str = "2001:db8:19::/48";
pub const STATUS_PORT: u16 = 9099;
/// Every lab agent also serves `/metrics` on its fabric address here (`--metrics-addr`), as
/// the DaemonSet does for Prometheus.
pub const METRICS_PORT: u16 = 9091;

/// A binary of this workspace, next to the running one (tests run from target/*/deps).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{name} is not built next to {}: run `cargo build --workspace --bins` first", exe.display())
}

/// `program` run in `ns`, under the tool `GINGHAM_LAB_WRAPPER` names if set (whitespace-
/// separated, no quoting): `scripts/code-order.sh` runs the agents and `bench-rr`'s speaker
/// under valgrind to record which functions they run.
pub fn wrapped(ns: &Netns, program: &Path) -> Result<std::process::Command> {
    let wrapper = std::env::var("GINGHAM_LAB_WRAPPER").unwrap_or_default();
    let mut argv: Vec<&str> = wrapper.split_whitespace().collect();
    argv.push(program.to_str().context("program path")?);
    let mut cmd = ns.command(argv[0]);
    cmd.args(&argv[1..]);
    Ok(cmd)
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub nodes: usize,
    pub block_size: u8,
    pub mesh: bool,
    /// Nodes (by index) that are route reflectors.
    pub reflectors: Vec<usize>,
    pub hold_time: u16,
    /// The agents' graceful-restart time (`--restart-time`); the agent's default when `None`.
    pub restart_time: Option<u16>,
    /// Per node, `k=v,...` labels.
    pub labels: Vec<String>,
    /// Fabric hosts after the nodes that run no agent (for a BIRD "top-of-rack" router).
    pub extra_hosts: usize,
    /// Dual stack: nodes get their IPv6 fabric address and an IPv6 pool exists.
    pub ipv6: bool,
    /// Run each agent from this container image with podman, as the DaemonSet does (the node's
    /// network namespace as host network, privileged, /run/netns and the lab directory
    /// mounted), instead of the workspace binary.
    pub image: Option<String>,
    /// The CNI plugin executable pods are added with (default: the workspace's gingham-cni).
    pub cni_bin: Option<PathBuf>,
    /// More flags for every agent.
    pub agent_flags: Vec<String>,
}

impl LabOptions {
    pub fn new(nodes: usize) -> LabOptions {
        LabOptions {
            nodes,
            block_size: 26,
            mesh: true,
            reflectors: Vec::new(),
            hold_time: 9,
            restart_time: None,
            labels: Vec::new(),
            extra_hosts: 0,
            ipv6: false,
            image: None,
            cni_bin: None,
            agent_flags: Vec::new(),
        }
    }
}

pub struct Pod {
    pub name: String,
    pub node: usize,
    pub container_id: String,
    pub address: Ipv4Addr,
    /// Set in a dual-stack lab.
    pub address6: Option<std::net::Ipv6Addr>,
    pub ns: Netns,
}

pub struct LabNode {
    pub name: String,
    pub address: Ipv4Addr,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub agent: Option<Daemon>,
}

/// Field order is drop order: pods (DEL through the plugin needs the agents), agents, fabric.
pub struct Cluster {
    pub pods: Vec<Pod>,
    pub nodes: Vec<LabNode>,
    pub fabric: Fabric,
    pub db: PathBuf,
    agent_bin: PathBuf,
    cni_bin: PathBuf,
    options: LabOptions,
    pub dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pod in std::mem::take(&mut self.pods) {
            let node = pod.node;
            if let Err(e) = self.cni(node, "DEL", &pod.container_id, &pod.ns, &pod.name) {
                eprintln!("cleanup: DEL {}: {e}", pod.name);
            }
        }
        for n in &mut self.nodes {
            n.agent.take();
        }
    }
}

impl Cluster {
    pub fn new(options: LabOptions) -> Result<Cluster> {
        let agent_bin = workspace_binary("gingham-agent")?;
        let cni_bin = match &options.cni_bin {
            Some(path) => path.clone(),
            None => workspace_binary("gingham-cni")?,
        };
        let dir = TempDir::new("gingham-lab")?;
        let db = dir.join("gingham.db");
        seed(&db, &options)?;
        let fabric = Fabric::new(options.nodes + options.extra_hosts)?;
        let mut cluster = Cluster { pods: Vec::new(), nodes: Vec::new(), fabric, db, agent_bin, cni_bin, options, dir };
        for i in 0..cluster.options.nodes {
            let name = format!("node-{}", i + 1);
            let socket = cluster.dir.join(&format!("{name}.sock"));
            let log = cluster.dir.join(&format!("{name}.log"));
            let address = cluster.fabric.hosts[i].v4;
            cluster.nodes.push(LabNode { name, address, socket, log, agent: None });
            cluster.start_agent(i)?;
        }
        Ok(cluster)
    }

    /// The agent's command line after the program name.
    fn agent_args(&self, i: usize) -> Vec<String> {
        let host = &self.fabric.hosts[i];
        let node = &self.nodes[i];
        let mut args: Vec<String> = vec![
            "--node-name".into(),
            node.name.clone(),
            "--ip".into(),
            format!("{}/{}", host.v4, self.fabric.prefix_len),
            "--datastore".into(),
            format!("sqlite:{}", self.db.display()),
            "--cni-socket".into(),
            node.socket.display().to_string(),
            "--status-addr".into(),
            format!("127.0.0.1:{STATUS_PORT}"),
            "--hold-time".into(),
            self.options.hold_time.to_string(),
            "--metrics-addr".into(),
            format!("{}:{METRICS_PORT}", host.v4),
        ];
        if self.options.ipv6 {
            // Detected, as on a real node: the fabric address is the only global IPv6 one.
            args.extend(["--ip6".into(), "autodetect".into()]);
        }
        if let Some(t) = self.options.restart_time {
            args.extend(["--restart-time".into(), t.to_string()]);
        }
        if let Some(labels) = self.options.labels.get(i) {
            args.extend(["--node-labels".into(), labels.clone()]);
        }
        if self.options.reflectors.contains(&i) {
            args.extend(["--route-reflector-cluster-id".into(), "224.0.0.1".into()]);
        }
        args.extend(self.options.agent_flags.iter().cloned());
        args
    }

    /// Starts (or restarts) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let args = self.agent_args(i);
        let node = &self.nodes[i];
        let pid = match &self.options.image {
            None => {
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
                let mut cmd = wrapped(&self.fabric.hosts[i].ns, &self.agent_bin)?;
                let child =
                    cmd.args(&args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().context("start gingham-agent")?;
                let pid = child.id() as i32;
                // The Child handle is not needed: the Daemon stops and reaps by PID.
                std::mem::forget(child);
                pid
            }
            Some(image) => run_in_container(image, &self.fabric.hosts[i].ns, &self.dir.path, &node.name, &node.log, &args)?,
        };
        self.nodes[i].agent = Some(Daemon::new(&node.name, pid, Some(node.log.clone())));
        let socket = self.nodes[i].socket.clone();
        wait_for(&format!("{}'s CNI socket", self.nodes[i].name), Duration::from_secs(20), || socket.exists().then_some(()))
            .with_context(|| self.nodes[i].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default())?;
        Ok(())
    }

    /// The status JSON of node `i`'s agent (fetched from inside its namespace).
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let body = http_get_in(&self.fabric.hosts[i].ns, SocketAddr::from(([127, 0, 0, 1], STATUS_PORT)), "/status")?;
        Ok(serde_json::from_str(&body)?)
    }

    pub fn http_get(&self, i: usize, path: &str) -> Result<String> {
        http_get_in(&self.fabric.hosts[i].ns, SocketAddr::from(([127, 0, 0, 1], STATUS_PORT)), path)
    }

    /// Waits until every node's peers are all Established.
    pub fn wait_established(&self, timeout: Duration) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].agent.is_none() {
                continue;
            }
            wait_for(&format!("{}'s BGP sessions", self.nodes[i].name), timeout, || {
                let s = self.status(i).ok()?;
                let peers = s["peers"].as_array()?;
                // A node alone has no mesh peers (the speaker still runs, for peers added later).
                let alone = self.nodes.len() == 1;
                ((alone || !peers.is_empty()) && peers.iter().all(|p| p["state"] == "Established")).then_some(())
            })
            .with_context(|| {
                let down: Vec<String> = self
                    .status(i)
                    .ok()
                    .and_then(|s| s["peers"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter(|p| p["state"] != "Established")
                    .map(|p| format!("{} {} {}", p["address"], p["state"], p["info"]))
                    .collect();
                // The other end's log often says more than ours.
                let other = down
                    .first()
                    .and_then(|d| self.nodes.iter().find(|n| d.starts_with(&format!("\"{}\"", n.address))))
                    .map(|n| {
                        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                        let notable: Vec<&str> =
                            log.lines().filter(|l| !l.contains("configuring BGP peer") && !l.contains("session established")).collect();
                        format!("{}'s log (without peer configuration and established sessions):\n{}", n.name, notable.join("\n"))
                    })
                    .unwrap_or_default();
                format!(
                    "peers not Established: {down:?}\n{}\n{other}",
                    self.nodes[i].agent.as_ref().map(|a| a.log_tail()).unwrap_or_default()
                )
            })?;
        }
        Ok(())
    }

    /// Runs the plugin in node `node`'s namespace as a runtime would; returns its stdout.
    pub fn cni(&self, node: usize, command: &str, container_id: &str, pod_ns: &Netns, pod: &str) -> Result<String> {
        self.cni_with(node, command, container_id, pod_ns, pod, serde_json::json!({}))
    }

    /// [`Cluster::cni`] with more keys in the network configuration (GC's attachment list).
    pub fn cni_with(
        &self,
        node: usize,
        command: &str,
        container_id: &str,
        pod_ns: &Netns,
        pod: &str,
        extra: serde_json::Value,
    ) -> Result<String> {
        let mut conf = serde_json::json!({
            "cniVersion": "1.1.0", "name": "gingham", "type": "gingham",
            "agentSocket": self.nodes[node].socket.to_str(),
        });
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        run_plugin(&self.fabric.hosts[node].ns, &self.cni_bin, command, container_id, pod_ns, pod, &conf)
    }

    /// Creates a pod on node `node` through the plugin.
    pub fn add_pod(&mut self, node: usize, name: &str) -> Result<&Pod> {
        self.add_pod_in(node, name, Netns::new("gpod")?)
    }

    /// [`Cluster::add_pod`] into a sandbox namespace made beforehand, as a runtime makes it
    /// before it calls the plugin.
    pub fn add_pod_in(&mut self, node: usize, name: &str, ns: Netns) -> Result<&Pod> {
        let container_id = format!("{:0>64}", unique_suffix());
        let out = self.cni(node, "ADD", &container_id, &ns, name)?;
        let result: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("CNI result {out:?}"))?;
        let ips: Vec<ipnetwork::IpNetwork> = result["ips"]
            .as_array()
            .context("no ips in the CNI result")?
            .iter()
            .filter_map(|i| i["address"].as_str()?.parse().ok())
            .collect();
        let address = ips.iter().find_map(|n| match n.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        let address6 = ips.iter().find_map(|n| match n.ip() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        });
        let address = address.context("no IPv4 address in the CNI result")?;
        self.pods.push(Pod { name: name.into(), node, container_id, address, address6, ns });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Deletes a pod through the plugin (DEL), then its namespace.
    pub fn delete_pod(&mut self, name: &str) -> Result<Pod> {
        let idx = self.pods.iter().position(|p| p.name == name).context("no such pod")?;
        let pod = self.pods.remove(idx);
        self.cni(pod.node, "DEL", &pod.container_id, &pod.ns, &pod.name)?;
        Ok(pod)
    }

    /// `ping -c 1` from one pod to an address; true when answered.
    pub fn ping(&self, from: &Pod, to: Ipv4Addr) -> bool {
        ping_once(from, IpAddr::V4(to))
    }

    /// `ping -6 -c 1` from one pod; true when answered.
    pub fn ping6(&self, from: &Pod, to: std::net::Ipv6Addr) -> bool {
        ping_once(from, IpAddr::V6(to))
    }

    /// Node `i`'s IPv6 routes with our protocol.
    pub fn routes6(&self, i: usize) -> Result<String> {
        self.fabric.hosts[i].ns.exec("ip", &["-6", "route", "show", "proto", "80"])
    }

    /// Node `i`'s routes with our protocol, as `ip route` prints them.
    pub fn routes(&self, i: usize) -> Result<String> {
        self.fabric.hosts[i].ns.exec("ip", &["route", "show", "proto", "80"])
    }

    /// A store on the lab's datastore, for tests that change resources.
    pub fn store(&self) -> Result<Store<SqliteStore>> {
        Ok(Store::new(SqliteStore::open(&self.db)?))
    }

    /// Every IPv4 address allocated in the datastore, on any node.
    pub fn allocated_v4(&self) -> Result<std::collections::HashSet<Ipv4Addr>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (blocks, _) = rt.block_on(self.store()?.list::<gingham_api::resources::IPAMBlock>())?;
        Ok(blocks
            .iter()
            .flat_map(|b| gingham_ipam::block::allocations(&b.spec).into_iter().map(|(a, _)| a).collect::<Vec<_>>())
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// The named object in the lab's datastore, if any.
    pub fn get<K: gingham_api::resources::Kind>(&self, name: &str) -> Result<Option<K>> {
        let store = self.store()?;
        Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(store.get::<K>(name))?)
    }

    /// Starts gingham-controllers on the lab's datastore, as one replica would run: on sqlite it
    /// does LoadBalancer IPAM (there are no Kubernetes Nodes and Pods to collect after). It runs
    /// in the root namespace (it only opens the datastore file) and stops when the Daemon drops.
    pub fn start_controllers(&self) -> Result<Daemon> {
        let bin = workspace_binary("gingham-controllers")?;
        let log_path = self.dir.join("controllers.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .args(["--datastore", &format!("sqlite:{}", self.db.display()), "--identity", "lab"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start gingham-controllers")?;
        let pid = child.id() as i32;
        // The Daemon stops and reaps it by PID.
        std::mem::forget(child);
        Ok(Daemon::new("gingham-controllers", pid, Some(log_path)))
    }

    /// Stores a new object in the lab's datastore.
    pub fn create<K: gingham_api::resources::Kind>(&self, obj: &K) -> Result<()> {
        let store = self.store()?;
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(store.create(obj))?;
        Ok(())
    }

    /// Deletes the named object from the lab's datastore; false when there was none.
    pub fn delete<K: gingham_api::resources::Kind>(&self, name: &str) -> Result<bool> {
        let store = self.store()?;
        Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(store.delete_latest::<K>(name))?)
    }

    /// Reads the named object, changes it and writes it back, retrying on conflicts.
    pub fn modify<K: gingham_api::resources::Kind>(&self, name: &str, change: impl Fn(&mut K)) -> Result<()> {
        let store = self.store()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            for _ in 0..10 {
                let mut obj = store.get::<K>(name).await?.with_context(|| format!("{} {name} not found", K::INFO.kind))?;
                change(&mut obj);
                match store.update(&obj).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            bail!("conflicting updates of {name}")
        })
    }
}

fn ping_once(from: &Pod, to: IpAddr) -> bool {
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    from.ns
        .command("ping")
        .args([family, "-c", "1", "-W", "2", &to.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn seed(db: &Path, options: &LabOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = Store::new(SqliteStore::open(db)?);
        let pool = IPPoolSpec { cidr: POD_POOL.into(), block_size: Some(options.block_size), ..Default::default() };
        store.create(&IPPool::new("default-ipv4-ippool", pool)).await?;
        if options.ipv6 {
            let pool6 = IPPoolSpec { cidr: POD_POOL_V6.into(), block_size: Some(122), ..Default::default() };
            store.create(&IPPool::new("default-ipv6-ippool", pool6)).await?;
        }
        let bgp = BGPConfigurationSpec { node_to_node_mesh_enabled: Some(options.mesh), ..Default::default() };
        store.create(&BGPConfiguration::new("default", bgp)).await?;
        Ok(())
    })
}

/// Invokes a CNI plugin the way a container runtime does: in the node's network namespace
/// (entered directly, as the runtime itself lives there), with the CNI environment variables
/// and the network configuration on stdin. Returns stdout; a failure carries the error object.
pub fn run_plugin(
    node_ns: &Netns,
    plugin: &Path,
    command: &str,
    container_id: &str,
    pod_ns: &Netns,
    pod: &str,
    conf: &serde_json::Value,
) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let ns_file = std::fs::File::open(node_ns.path())?;
    let fd = ns_file.as_raw_fd();
    let mut cmd = std::process::Command::new(plugin);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", pod_ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
        .env("CNI_PATH", plugin.parent().context("plugin dir")?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns(2) is async-signal-safe and touches only the child's own namespaces.
    unsafe {
        cmd.pre_exec(move || if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
    }
    let mut child = cmd.spawn()?;
    drop(ns_file);
    child.stdin.take().context("stdin")?.write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{} {command} for {pod} failed: {stdout}{}", plugin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

/// A GET request from inside a namespace (the agent's status endpoint is on the node's
/// loopback; nothing is routed from the root namespace, by design).
/// Runs the agent from `image` as the DaemonSet does: the node's network namespace is the
/// container's host network, privileged (netlink, sysctls, nft), pods' namespaces under
/// /run/netns and the lab directory (datastore, CNI socket) mounted. Returns the agent's PID
/// as the host sees it, so the lab stops and kills it like a process it started; `--rm` makes
/// podman remove the container when the agent exits.
fn run_in_container(image: &str, ns: &Netns, dir: &std::path::Path, node: &str, log: &std::path::Path, args: &[String]) -> Result<i32> {
    let name = format!("gingham-{node}-{}", unique_suffix());
    let dir = dir.display().to_string();
    let out = Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "-d", "--rm", "--name", &name, "--privileged"])
        .args(["--network", &format!("ns:{}", ns.path().display())])
        .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"])
        .args(["-v", "/run/netns:/run/netns:rslave", "-v", &format!("{dir}:{dir}")])
        .args(["--log-driver", "k8s-file", "--log-opt", &format!("path={}", log.display())])
        .arg(image)
        .args(args)
        .output()
        .context("podman run")?;
    if !out.status.success() {
        bail!("podman run {image}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let inspect = Command::new("podman").args(["inspect", "--format", "{{.State.Pid}}", &name]).output().context("podman inspect")?;
    let pid: i32 = String::from_utf8_lossy(&inspect.stdout)
        .trim()
        .parse()
        .with_context(|| format!("{name}: no PID ({})", String::from_utf8_lossy(&inspect.stderr).trim()))?;
    if pid <= 0 {
        bail!("{name} exited at once:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    Ok(pid)
}

/// The value of one series (name and labels exactly as the agent writes them) in a `/metrics`
/// text.
pub fn metric_sample(metrics: &str, series: &str) -> Result<f64> {
    let value = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .with_context(|| format!("no series {series} in the metrics"))?;
    Ok(value.trim().parse()?)
}

pub fn http_get_in(ns: &Netns, addr: SocketAddr, path: &str) -> Result<String> {
    let ns_path = ns.path();
    let path = path.to_string();
    std::thread::spawn(move || -> Result<String> {
        let file = std::fs::File::open(&ns_path)?;
        // SAFETY: setns on this short-lived thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{path}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_string())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("http thread panicked"))?
}

/// A ping from `pod` to `to` every `interval` seconds for `secs` seconds, in the background.
/// `-q`: only the summary, so a long run cannot fill the unread stdout pipe and stall ping.
pub fn start_pinger(pod: &Pod, to: Ipv4Addr, interval: &str, secs: u64) -> Result<std::process::Child> {
    Ok(pod
        .ns
        .command("ping")
        .args(["-q", "-i", interval, "-w", &secs.to_string(), &to.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// (sent, received) of a finished [`start_pinger`].
pub fn pinger_counts(ping: std::process::Child) -> Result<(u64, u64)> {
    let out = String::from_utf8(ping.wait_with_output()?.stdout)?;
    let summary = out.lines().find(|l| l.contains("packets transmitted")).with_context(|| format!("no ping summary in {out:?}"))?;
    let n: Vec<u64> = summary.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    Ok((n[0], n[1]))
}

/// Whether an address is one of the lab's pod addresses.
pub fn is_pod_address(a: IpAddr) -> bool {
    POD_POOL.parse::<ipnetwork::IpNetwork>().is_ok_and(|p| p.contains(a))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_sample_is_read_by_its_exact_series() {
        let text = "# TYPE x counter\nx_total{op=\"install\"} 5\nx_total{op=\"installed\"} 7\nruntime_tasks 12\n";
        assert_eq!(super::metric_sample(text, "x_total{op=\"install\"}").unwrap(), 5.0);
        assert_eq!(super::metric_sample(text, "runtime_tasks").unwrap(), 12.0);
        assert!(super::metric_sample(text, "runtime").is_err(), "a prefix of a name is not the series");
    }
}
