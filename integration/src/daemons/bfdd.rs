//! FRR's bfdd on its own in a namespace (it needs no zebra for single-hop IP peers), queried
//! with `vtysh --vty_socket DIR -d bfdd`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns::{read_pid_file, run, Daemon, Netns, TempDir};

pub struct Bfdd {
    pub daemon: Daemon,
    dir: TempDir,
}

impl Bfdd {
    pub fn start(ns: &Netns, config: &str) -> Result<Bfdd> {
        let dir = TempDir::new("gbfdd")?;
        let log = dir.join("bfdd.log");
        let conf = dir.join("bfdd.conf");
        std::fs::write(&conf, format!("log file {} debugging\n{config}", log.display()))?;
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir.path))?;
        let pid_file = dir.join("bfdd.pid");
        run(ns.command("/usr/lib/frr/bfdd").arg("-f").arg(&conf).arg("-i").arg(&pid_file).arg("--vty_socket").arg(&dir.path).arg("-d"))?;
        let pid = read_pid_file(&pid_file, Duration::from_secs(10))?;
        Ok(Bfdd { daemon: Daemon::new("bfdd", pid, Some(log)), dir })
    }

    /// `show bfd peers json`: one object per peer.
    pub fn peers(&self) -> Result<Vec<Value>> {
        let out = run(Command::new("vtysh").arg("--vty_socket").arg(&self.dir.path).args(["-d", "bfdd", "-c", "show bfd peers json"]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing bfdd's peers: {text}"))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The peer's entry (`status`, `diagnostic`, `remote-diagnostic`, intervals, ...).
    pub fn peer(&self, addr: &str) -> Option<Value> {
        self.peers().ok()?.into_iter().find(|p| p.get("peer").and_then(Value::as_str) == Some(addr))
    }

    pub fn status(&self, addr: &str) -> Option<String> {
        self.peer(addr)?.get("status")?.as_str().map(str::to_owned)
    }
}
