//! BIRD 2: `bird -c CONF -s CTL -P PIDFILE` in a namespace, queried with `birdc`.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::netns::{read_pid_file, run, Daemon, Netns, TempDir};

pub struct Bird {
    pub daemon: Daemon,
    dir: TempDir,
}

impl Bird {
    /// Starts BIRD with `config` (a `log` line is added so failures can be read).
    pub fn start(ns: &Netns, config: &str) -> Result<Bird> {
        let dir = TempDir::new("gbird")?;
        let log = dir.join("bird.log");
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, format!("log \"{}\" all;\n{config}", log.display()))?;
        let pid_file = dir.join("bird.pid");
        let ctl = dir.join("bird.ctl");
        run(ns.command("bird").args(["-c"]).arg(&conf).arg("-s").arg(&ctl).arg("-P").arg(&pid_file))?;
        let pid = read_pid_file(&pid_file, Duration::from_secs(5))?;
        Ok(Bird { daemon: Daemon::new("bird", pid, Some(log)), dir })
    }

    pub fn cmd(&self, command: &str) -> Result<String> {
        let out = run(Command::new("birdc").arg("-s").arg(self.dir.join("bird.ctl")).args(command.split_whitespace()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The Info column of `show protocols NAME` ("Established", "Active", ...).
    pub fn protocol_info(&self, name: &str) -> Option<String> {
        let out = self.cmd(&format!("show protocols {name}")).ok()?;
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        Some(line.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
    }

    pub fn established(&self, name: &str) -> bool {
        self.protocol_info(name).is_some_and(|i| i.starts_with("Established"))
    }

    /// The "received" column of the channel's "Import updates" statistics.
    pub fn import_updates_received(&self, name: &str) -> Option<u64> {
        let out = self.cmd(&format!("show protocols all {name}")).ok()?;
        let line = out.lines().find(|l| l.trim_start().starts_with("Import updates:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    }

    /// Prefixes in BIRD's tables learned from protocol `name`.
    pub fn routes_from(&self, name: &str) -> Vec<String> {
        let out = self.cmd(&format!("show route protocol {name}")).unwrap_or_default();
        out.lines().filter_map(|l| l.split_whitespace().next()).filter(|t| t.contains('/')).map(str::to_owned).collect()
    }

    /// `show route for PREFIX all` (attributes included).
    pub fn route_all(&self, prefix: &str) -> String {
        self.cmd(&format!("show route for {prefix} all")).unwrap_or_default()
    }

    /// The State column of `show bfd sessions` for this neighbour ("Up", "Down", "Init").
    pub fn bfd_state(&self, addr: &str) -> Option<String> {
        let out = self.cmd("show bfd sessions").ok()?;
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(addr))?;
        line.split_whitespace().nth(2).map(str::to_owned)
    }
}
