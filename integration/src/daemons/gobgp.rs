//! GoBGP: `gobgpd` in a namespace with its gRPC API on the namespace's loopback, driven with
//! the `gobgp` CLI run in the same namespace.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns::{run, wait_for, Daemon, Netns, TempDir};

pub struct GoBgp {
    pub daemon: Daemon,
    ns: String,
    _dir: TempDir,
}

const API: &str = "50051";

impl GoBgp {
    pub fn start(ns: &Netns, toml: &str) -> Result<GoBgp> {
        let dir = TempDir::new("ggobgp")?;
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, toml)?;
        let log = dir.join("gobgpd.log");
        let logf = std::fs::File::create(&log)?;
        let child = ns
            .command("gobgpd")
            .arg("-f")
            .arg(&conf)
            .args(["--api-hosts", &format!("127.0.0.1:{API}"), "-l", "debug"])
            .stdout(Stdio::from(logf.try_clone()?))
            .stderr(Stdio::from(logf))
            .spawn()
            .context("starting gobgpd")?;
        // `ip netns exec` execs the program, so the child's pid is gobgpd's.
        let g = GoBgp { daemon: Daemon::new("gobgpd", child.id() as i32, Some(log)), ns: ns.name().to_owned(), _dir: dir };
        wait_for("gobgpd API", Duration::from_secs(15), || g.cli(&["neighbor"]).ok())?;
        Ok(g)
    }

    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = run(std::process::Command::new("ip").args(["netns", "exec", &self.ns, "gobgp", "-p", API]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.push("-j");
        let text = self.cli(&a)?;
        serde_json::from_str(&text).with_context(|| format!("parsing gobgp {args:?}: {text}"))
    }

    pub fn established(&self, addr: &str) -> bool {
        self.json(&["neighbor", addr])
            .ok()
            .and_then(|v| v.pointer("/state/session_state").cloned())
            .is_some_and(|s| s == 6 || s.as_str().is_some_and(|s| s.eq_ignore_ascii_case("established")))
    }

    /// NOTIFICATIONs GoBGP has received from the neighbour at `addr` (0 when it cannot tell).
    pub fn notifications_received(&self, addr: &str) -> u64 {
        self.json(&["neighbor", addr])
            .ok()
            .and_then(|v| v.pointer("/state/messages/received/notification").and_then(|v| v.as_u64()))
            .unwrap_or(0)
    }

    /// Prefixes in the global RIB of `family` ("ipv4" / "ipv6").
    pub fn rib_prefixes(&self, family: &str) -> Vec<String> {
        let Ok(v) = self.json(&["global", "rib", "-a", family]) else {
            return Vec::new();
        };
        v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// The paths GoBGP holds for `prefix`.
    pub fn paths(&self, family: &str, prefix: &str) -> Vec<Value> {
        self.json(&["global", "rib", "-a", family]).ok().and_then(|v| v.get(prefix).and_then(Value::as_array).cloned()).unwrap_or_default()
    }
}
