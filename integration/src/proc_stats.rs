//! What the benchmarks read of a process from `/proc`: memory lines of `status` and CPU time.

use anyhow::{Context as _, Result};

/// A line of `/proc/PID/status` as a number: the memory lines are in KiB (`VmRSS:`, `VmHWM:`,
/// `RssAnon:`), `Threads:` is a count.
pub fn status(pid: i32, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// User + system CPU seconds of a process so far.
pub fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).context("stat format")?.parse::<f64>()? + fields.get(12).context("stat format")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let pid = std::process::id() as i32;
        assert!(super::status(pid, "VmRSS:").unwrap() > 0);
        assert!(super::status(pid, "Threads:").unwrap() >= 1);
        assert!(super::cpu_seconds(pid).unwrap() >= 0.0);
        assert!(super::status(pid, "NoSuchLine:").is_err());
    }
}
