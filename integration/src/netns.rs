//! Network namespaces, a bridged fabric of hosts, and processes tied to them. Everything is
//! removed on drop, also when a test panics; names carry a random suffix so tests run in
//! parallel and leftovers are recognisable.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A short random-enough suffix: pid, a counter and the clock.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}", (std::process::id() << 12) ^ (n << 24) ^ (nanos >> 8) & 0xffffff)
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

pub fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

/// Namespaces, processes and directories alive right now, so a signal can still remove them: a
/// process killed by SIGTERM runs no destructors.
static LIVE: Mutex<Live> = Mutex::new(Live { namespaces: Vec::new(), pids: Vec::new(), dirs: Vec::new() });

struct Live {
    namespaces: Vec<String>,
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
}

fn live() -> std::sync::MutexGuard<'static, Live> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// For binaries: on SIGINT or SIGTERM, stop every process and delete every namespace and
/// temporary directory this process created, then exit 130.
pub fn cleanup_on_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let (pids, namespaces, dirs) = {
            let l = live();
            (l.pids.clone(), l.namespaces.clone(), l.dirs.clone())
        };
        for pid in pids {
            Daemon { name: String::new(), pid, log: None }.stop();
        }
        for ns in namespaces.iter().rev() {
            let _best_effort = ip(&["netns", "del", ns]);
        }
        for dir in dirs {
            let _best_effort = std::fs::remove_dir_all(dir);
        }
        eprintln!("interrupted: removed {} namespaces", namespaces.len());
        std::process::exit(130);
    });
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = format!("{prefix}-{}", unique_suffix());
        ip(&["netns", "add", &name])?;
        live().namespaces.push(name.clone());
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        live().namespaces.retain(|n| n != &self.name);
    }
}

/// A host on the fabric: its namespace and addresses.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// Second addresses, for daemons that need two sessions to one speaker.
    pub v4_alt: Ipv4Addr,
}

/// A bridge in its own namespace with hosts on 198.18.0.0/24 (198.18.0.0/22 beyond 100 hosts)
/// and 2001:db8:18::/64.
pub struct Fabric {
    pub hosts: Vec<Host>,
    pub bridge: Netns,
    /// The hosts' IPv4 prefix length: 24, or 22 for more than 100 hosts.
    pub prefix_len: u8,
}

impl Fabric {
    /// Hosts get 198.18.0.(11+i) (alternate 198.18.0.(111+i)) and 2001:db8:18::(11+i); beyond
    /// 100 hosts the fabric is 198.18.0.0/22, host i at 198.18.0.11 + i and its alternate 512
    /// addresses further.
    pub fn new(hosts: usize) -> Result<Fabric> {
        let bridge = Netns::new("gfab")?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        let prefix_len = if hosts > 100 { 22 } else { 24 };
        let mut fabric = Fabric { hosts: Vec::new(), bridge, prefix_len };
        for i in 0..hosts {
            let ns = Netns::new(&format!("gh{}", i + 1))?;
            let n = 11 + i as u32;
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
            let v4 = Ipv4Addr::from(base + n);
            let v4_alt = Ipv4Addr::from(base + if prefix_len == 24 { 100 + n } else { 512 + n });
            let v6: Ipv6Addr = format!("2001:db8:18::{n:x}").parse()?;
            let port = format!("p{}", i + 1);
            let tmp = format!("e{}{}", i + 1, unique_suffix());
            let tmp = &tmp[..tmp.len().min(15)];
            ip(&["link", "add", tmp, "netns", ns.name(), "type", "veth", "peer", "name", &port, "netns", fabric.bridge.name()])?;
            fabric.bridge.ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["link", "set", tmp, "name", "eth0"])?;
            // DAD would hold IPv6 addresses "tentative" for a second or two.
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0")?;
            ns.ip(&["addr", "add", &format!("{v4}/{prefix_len}"), "dev", "eth0"])?;
            ns.ip(&["addr", "add", &format!("{v4_alt}/{prefix_len}"), "dev", "eth0"])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            fabric.hosts.push(Host { ns, v4, v6, v4_alt });
        }
        // Only where it is needed: pre-resolved neighbours change the timing of the first
        // connections (both speakers' SYNs leave at once), which the collision tests depend on.
        if hosts > PIN_NEIGHBOURS_ABOVE {
            fabric.pin_neighbours()?;
        }
        Ok(fabric)
    }
}

/// Fabrics larger than this get permanent neighbour entries (see [`Fabric::pin_neighbours`]).
const PIN_NEIGHBOURS_ABOVE: usize = 20;

impl Fabric {
    /// Gives every host a permanent ARP entry for every other host's addresses. The kernel's
    /// neighbour table is one for all namespaces (gc_thresh3, 1024 entries by default); a full
    /// mesh of N hosts resolving each other would need N^2 entries and overflow it beyond ~30
    /// nodes. Permanent entries are exempt from that limit, so large labs fit without changing
    /// the host's settings. (IPv6 neighbours still resolve normally: dual-stack labs are small.)
    fn pin_neighbours(&self) -> Result<()> {
        let macs: Vec<String> = self
            .hosts
            .iter()
            .map(|h| {
                let out = h.ns.exec("cat", &["/sys/class/net/eth0/address"])?;
                Ok(out.trim().to_string())
            })
            .collect::<Result<_>>()?;
        for (i, host) in self.hosts.iter().enumerate() {
            let mut batch = String::new();
            for (j, other) in self.hosts.iter().enumerate() {
                if i != j {
                    for addr in [other.v4, other.v4_alt] {
                        batch.push_str(&format!("neigh replace {addr} lladdr {} dev eth0 nud permanent\n", macs[j]));
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let mut child = Command::new("ip")
                .args(["-n", host.ns.name(), "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, batch.as_bytes())?;
            let out = child.wait_with_output()?;
            anyhow::ensure!(out.status.success(), "pinning neighbours: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// A process started in a namespace, stopped by PID on drop.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub pid: i32,
    /// Files to read when something goes wrong (logs).
    pub log: Option<PathBuf>,
}

impl Daemon {
    /// Tracks a process we started so it is stopped on drop (and on SIGINT/SIGTERM in
    /// binaries that called [`cleanup_on_signals`]).
    pub fn new(name: &str, pid: i32, log: Option<PathBuf>) -> Daemon {
        live().pids.push(pid);
        Daemon { name: name.to_owned(), pid, log }
    }

    pub fn stop(&mut self) {
        if self.pid <= 0 {
            return;
        }
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && alive(self.pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(self.pid) {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        reap(self.pid);
        let pid = self.pid;
        live().pids.retain(|p| *p != pid);
        self.pid = 0;
    }

    /// Kills at once (SIGKILL): the process gets no chance to say goodbye, as in a crash.
    pub fn kill(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill(2) with a pid we started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.stop();
        }
    }

    pub fn log_tail(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn alive(pid: i32) -> bool {
    reap(pid);
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Collects our own zombie children; harmless for processes that are not ours.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: non-blocking waitpid on one pid.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Reads a PID file written by a daemonising program, waiting for it to appear.
pub fn read_pid_file(path: &Path, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not appear", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private scratch directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        live().dirs.push(path.clone());
        Ok(TempDir { path })
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _best_effort = std::fs::remove_dir_all(&self.path);
        live().dirs.retain(|d| d != &self.path);
    }
}
