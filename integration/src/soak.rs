//! The soak benchmark (`gingham-lab soak`): a 3-node lab with one long-lived pod per node
//! pinging every other one every 200 ms, pod churn (an ADD and a DEL at a steady rate, spread
//! over the nodes) and a peer flap every few minutes (node-3's agent restarted with SIGTERM: its
//! peers see the session go and come back, graceful restart keeps forwarding). Every minute it
//! samples each agent's RSS, open file descriptors, threads and runtime tasks. At the end:
//! the samples as a table, each agent's growth after the warm-up, lost pings per pair and
//! `ginghamctl ipam check`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::lab::{pinger_counts, start_pinger, workspace_binary, Cluster, LabOptions};
use crate::proc_stats;

pub struct SoakOptions {
    pub duration: Duration,
    /// One ADD and one DEL this often.
    pub churn_every: Duration,
    /// Churn pods alive at once.
    pub churn_pods: usize,
    pub flap_every: Duration,
    pub sample_every: Duration,
    /// Growth is measured from the first sample after this.
    pub warm_up: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
}

fn sample(lab: &Cluster, i: usize) -> Option<Sample> {
    let pid = lab.nodes[i].agent.as_ref()?.pid;
    let metrics = lab.http_get(i, "/metrics").ok()?;
    let tasks = crate::lab::metric_sample(&metrics, "gingham_runtime_tasks").ok()? as u64;
    Some(Sample {
        rss_kib: proc_stats::status(pid, "VmRSS:").ok()?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64,
        threads: proc_stats::status(pid, "Threads:").ok()?,
        tasks,
    })
}

pub fn run(o: &SoakOptions) -> Result<String> {
    const NODES: usize = 3;
    let mut lab = Cluster::new(LabOptions::new(NODES))?;
    for i in 0..NODES {
        lab.add_pod(i, &format!("steady-{i}"))?;
    }
    lab.wait_established(Duration::from_secs(60))?;
    for from in 0..NODES {
        for to in 0..NODES {
            let addr = lab.pods[to].address;
            crate::netns::wait_for("initial reachability", Duration::from_secs(30), || lab.ping(&lab.pods[from], addr).then_some(()))?;
        }
    }
    let ping_secs = o.duration.as_secs() + 30;
    let mut pings = Vec::new();
    for from in 0..NODES {
        for to in 0..NODES {
            if from != to {
                pings.push((from, to, start_pinger(&lab.pods[from], lab.pods[to].address, "0.2", ping_secs)?));
            }
        }
    }
    let start = Instant::now();
    let mut samples: Vec<(Duration, Vec<Option<Sample>>)> = vec![(Duration::ZERO, (0..NODES).map(|i| sample(&lab, i)).collect())];
    let (mut next_churn, mut next_flap, mut next_sample) = (o.churn_every, o.flap_every, o.sample_every);
    let (mut added, mut deleted, mut flaps, mut serial) = (0u64, 0u64, 0u64, 0u64);
    let mut churn: std::collections::VecDeque<String> = Default::default();
    while start.elapsed() < o.duration {
        let now = start.elapsed();
        if now >= next_churn {
            next_churn += o.churn_every;
            let name = format!("churn-{serial}");
            lab.add_pod((serial % NODES as u64) as usize, &name).with_context(|| format!("ADD {name}"))?;
            serial += 1;
            added += 1;
            churn.push_back(name);
            if churn.len() > o.churn_pods {
                let old = churn.pop_front().expect("not empty");
                lab.delete_pod(&old).with_context(|| format!("DEL {old}"))?;
                deleted += 1;
            }
        }
        if now >= next_flap {
            next_flap += o.flap_every;
            lab.nodes[NODES - 1].agent.as_mut().context("node-3's agent")?.stop();
            std::thread::sleep(Duration::from_secs(1));
            lab.start_agent(NODES - 1)?;
            flaps += 1;
        }
        if now >= next_sample {
            next_sample += o.sample_every;
            samples.push((now, (0..NODES).map(|i| sample(&lab, i)).collect()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    samples.push((start.elapsed(), (0..NODES).map(|i| sample(&lab, i)).collect()));
    let mut lost = Vec::new();
    let mut sent_total = 0;
    for (from, to, ping) in pings {
        let (sent, received) = pinger_counts(ping)?;
        sent_total += sent;
        lost.push((from, to, sent - received));
    }
    let check = std::process::Command::new(workspace_binary("ginghamctl")?)
        .args(["--datastore", &format!("sqlite:{}", lab.db.display()), "ipam", "check"])
        .output()?;
    let check_text = String::from_utf8_lossy(&check.stdout).trim().to_string();

    let mut out = String::new();
    writeln!(out, "soak: {:.0} min, 3 nodes, ADD+DEL every {:?} ({added} ADDs, {deleted} DELs, {} churn pods alive), node-3's agent restarted every {:?} ({flaps} flaps)", o.duration.as_secs_f64() / 60.0, o.churn_every, o.churn_pods, o.flap_every)?;
    writeln!(out, "\n| minute | node-1 RSS MB / fds / threads / tasks | node-2 | node-3 (restarted at each flap) |")?;
    writeln!(out, "|---|---|---|---|")?;
    let cell = |s: &Option<Sample>| {
        s.map_or("-".to_string(), |s| format!("{:.1} / {} / {} / {}", s.rss_kib as f64 / 1024.0, s.fds, s.threads, s.tasks))
    };
    for (t, row) in &samples {
        writeln!(out, "| {:.0} | {} | {} | {} |", t.as_secs_f64() / 60.0, cell(&row[0]), cell(&row[1]), cell(&row[2]))?;
    }
    // Growth after the warm-up, for the agents that ran the whole time.
    let after: Vec<&(Duration, Vec<Option<Sample>>)> = samples.iter().filter(|(t, _)| *t >= o.warm_up).collect();
    writeln!(out)?;
    for i in 0..NODES - 1 {
        let first = after.first().and_then(|(_, r)| r[i]);
        let last = after.last().and_then(|(_, r)| r[i]);
        let max_rss = after.iter().filter_map(|(_, r)| r[i]).map(|s| s.rss_kib).max().unwrap_or(0);
        if let (Some(a), Some(b)) = (first, last) {
            writeln!(
                out,
                "node-{}: from minute {:.0} to the end: RSS {:+.1} MB (max {:.1} MB), fds {:+}, threads {:+}, tasks {:+}",
                i + 1,
                o.warm_up.as_secs_f64() / 60.0,
                (b.rss_kib as f64 - a.rss_kib as f64) / 1024.0,
                max_rss as f64 / 1024.0,
                b.fds as i64 - a.fds as i64,
                b.threads as i64 - a.threads as i64,
                b.tasks as i64 - a.tasks as i64
            )?;
        }
    }
    let lost_total: u64 = lost.iter().map(|l| l.2).sum();
    writeln!(
        out,
        "pings between the long-lived pods: {sent_total} sent, {lost_total} lost {:?}",
        lost.iter().filter(|l| l.2 > 0).collect::<Vec<_>>()
    )?;
    writeln!(
        out,
        "ginghamctl ipam check: {} ({})",
        if check.status.success() { "clean" } else { "NOT CLEAN" },
        check_text.lines().last().unwrap_or_default()
    )?;
    Ok(out)
}
