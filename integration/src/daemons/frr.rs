//! FRR bgpd without zebra (`-Z`) in a namespace, queried with `vtysh --vty_socket`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns::{read_pid_file, run, Daemon, Netns, TempDir};

pub struct Frr {
    pub daemon: Daemon,
    /// zebra and bfdd when bgpd uses BFD (its BFD sessions go through zebra to bfdd).
    helpers: Vec<Daemon>,
    dir: TempDir,
}

impl Frr {
    pub fn start(ns: &Netns, config: &str) -> Result<Frr> {
        let dir = TempDir::new("gfrr")?;
        let log = dir.join("bgpd.log");
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, format!("log file {} debugging\n{config}", log.display()))?;
        // bgpd drops to user frr and must write its pid, socket and log here.
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir.path))?;
        let pid_file = dir.join("bgpd.pid");
        run(ns
            .command("/usr/lib/frr/bgpd")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pid_file)
            .arg("--vty_socket")
            .arg(&dir.path)
            .args(["-Z", "-d"]))?;
        let pid = read_pid_file(&pid_file, Duration::from_secs(10))?;
        Ok(Frr { daemon: Daemon::new("bgpd", pid, Some(log)), helpers: Vec::new(), dir })
    }

    /// bgpd with zebra and bfdd beside it, so `neighbor X bfd` works. zebra installs what
    /// bgpd selects into the namespace's kernel.
    pub fn start_with_bfd(ns: &Netns, config: &str) -> Result<Frr> {
        let dir = TempDir::new("gfrr")?;
        let zserv = dir.join("zserv.api");
        for (name, conf) in [("zebra", ""), ("bfdd", "bfd\n!\n"), ("bgpd", config)] {
            let log = dir.join(&format!("{name}.log"));
            std::fs::write(dir.join(&format!("{name}.conf")), format!("log file {} debugging\n{conf}", log.display()))?;
        }
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir.path))?;
        let mut started = Vec::new();
        for name in ["zebra", "bfdd", "bgpd"] {
            let pid_file = dir.join(&format!("{name}.pid"));
            run(ns
                .command(&format!("/usr/lib/frr/{name}"))
                .arg("-f")
                .arg(dir.join(&format!("{name}.conf")))
                .arg("-i")
                .arg(&pid_file)
                .arg("-z")
                .arg(&zserv)
                .arg("--vty_socket")
                .arg(&dir.path)
                .arg("-d"))?;
            let pid = read_pid_file(&pid_file, Duration::from_secs(10))?;
            started.push(Daemon::new(name, pid, Some(dir.join(&format!("{name}.log")))));
            if name == "zebra" {
                // The others connect to zebra's socket at start.
                crate::netns::wait_for("zebra's socket", Duration::from_secs(10), || zserv.exists().then_some(()))?;
            }
        }
        let daemon = started.pop().expect("bgpd");
        Ok(Frr { daemon, helpers: started, dir })
    }

    /// The end of bgpd's log, and of zebra's and bfdd's when they run.
    pub fn logs(&self) -> String {
        std::iter::once(&self.daemon).chain(&self.helpers).map(Daemon::log_tail).collect::<Vec<_>>().join("\n---\n")
    }

    pub fn vtysh(&self, command: &str) -> Result<String> {
        let out = run(Command::new("vtysh").arg("--vty_socket").arg(&self.dir.path).args(["-d", "bgpd", "-c", command]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn json(&self, command: &str) -> Result<Value> {
        let text = self.vtysh(command)?;
        serde_json::from_str(&text).with_context(|| format!("parsing `{command}` output: {text}"))
    }

    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        let v = self.json(&format!("show bgp neighbors {addr} json")).ok()?;
        v.get(addr)?.get("bgpState")?.as_str().map(str::to_owned)
    }

    pub fn established(&self, addr: &str) -> bool {
        self.neighbor_state(addr).as_deref() == Some("Established")
    }

    /// One route's JSON from `show bgp {afi} unicast PREFIX json`.
    pub fn route(&self, afi: &str, prefix: &str) -> Option<Value> {
        let v = self.json(&format!("show bgp {afi} unicast {prefix} json")).ok()?;
        let has_paths = v.get("paths").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        has_paths.then_some(v)
    }
}

impl Frr {
    /// Runs configuration commands in order, as `configure terminal` would.
    pub fn configure(&self, commands: &[&str]) -> Result<()> {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket").arg(&self.dir.path).args(["-d", "bgpd", "-c", "configure terminal"]);
        for c in commands {
            cmd.args(["-c", c]);
        }
        run(&mut cmd)?;
        Ok(())
    }
}
