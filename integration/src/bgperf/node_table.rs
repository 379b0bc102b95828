//! A node learning a full table from its ToR (`gingham-lab bench-node --only table`): our
//! injector, in the ToR's place, sends N prefixes to one lab node; timed until the node's
//! kernel has announced the last of them added (`arrivals.rs`), and until the agent has
//! removed them all after the session drops. Side by side in one run: `ip -batch` adding and
//! deleting the same routes in an empty namespace, and BIRD learning the same table over the
//! same kind of session and exporting it to its kernel table, its install timed the same way
//! (its memory is the reference for the agent's). Then the
//! failover that nexthop objects are for: the same table from two ToRs, one of them going, with
//! the agent's objects and without; and the memory of holding the table from both ToRs (a rack
//! with two), against BIRD's holding the same two tables and exporting ECMP routes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use gingham_agent::netlink::RTPROT_GINGHAM;
use gingham_api::resources::{BGPConfiguration, BGPPeer, BGPPeerSpec};

use super::arrivals::Arrivals;
use super::peers::{self, encode_updates, Session};
use super::{establish_all, in_netns, peak_rss_kib};
use crate::bench_node::{count_routes, route_ns, time_ip_batch};
use crate::daemons::bird::Bird;
use crate::lab::{metric_sample, Cluster, LabOptions};
use crate::netns::{wait_for, Netns, TempDir};
use crate::proc_stats::{cpu_seconds, status};

const TOR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 12);
const NODE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 11);
const LIMIT: Duration = Duration::from_secs(300);
const RTPROT_BIRD: u8 = 12;
/// The table's prefixes are /24s ([`peers::prefix`]).
const TABLE_LEN: u8 = 24;

struct Side {
    install: Duration,
    remove: Duration,
    /// Before the table arrived.
    empty_kib: u64,
    /// After the install and a quiet period holding the table.
    rss_kib: u64,
    /// Of that, the process's own memory (`RssAnon`): not the program's and libraries' pages,
    /// which the page cache holds and other processes share.
    anon_kib: u64,
    peak_kib: u64,
    /// CPU use while holding the table with nothing changing.
    idle_cpu_percent: f64,
}

/// How long each side holds the table untouched before its memory is read: the agent's FIB
/// re-reads the kernel every 5 s, BIRD's kernel protocol scans every 20 s.
const QUIET: Duration = Duration::from_secs(20);

/// CPU use of `pid` over [`QUIET`], in percent of one core.
fn idle_cpu(pid: i32) -> Result<f64> {
    let before = cpu_seconds(pid)?;
    std::thread::sleep(QUIET);
    Ok((cpu_seconds(pid)? - before) / QUIET.as_secs_f64() * 100.0)
}

pub fn run(prefixes: usize) -> Result<String> {
    let ours = gingham(prefixes)?;
    let reference = ip_batch(prefixes)?;
    let bird = bird(prefixes)?;
    let objects = failover(prefixes, true)?;
    let gateways = failover(prefixes, false)?;
    let bird_two = bird_two_tors(prefixes)?;
    let s = |d: Duration| d.as_secs_f64();
    let mb = |kib: u64| kib as f64 / 1024.0;
    Ok(format!(
        "A node learning {prefixes} prefixes (/24s, one next hop) from its ToR over iBGP: until the kernel has announced the last one added, until all are gone after the session drops\n\
         {:<42} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12} {:>12}\n\
         {:<42} {:>10.2} {:>10.2} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1}\n\
         {:<42} {:>10.2} {:>10.2} {:>12} {:>12} {:>12} {:>12} {:>12}\n\
         {:<42} {:>10.2} {:>10.2} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1}\n\
         {:<42} {:>9.2}x {:>9.2}x {:>11.2}x {:>11.2}x {:>11.2}x {:>11.2}x {:>11.2}x\n\
         {:<42} {:>9.2}x\n",
        "",
        "install s",
        "remove s",
        "RSS empty MB",
        "RSS MB",
        "anon MB",
        "peak RSS MB",
        "idle CPU %",
        "gingham-agent",
        s(ours.install),
        s(ours.remove),
        mb(ours.empty_kib),
        mb(ours.rss_kib),
        mb(ours.anon_kib),
        mb(ours.peak_kib),
        ours.idle_cpu_percent,
        "ip -batch (same routes)",
        s(reference.0),
        s(reference.1),
        "-",
        "-",
        "-",
        "-",
        "-",
        "BIRD (kernel export; removal polled)",
        s(bird.install),
        s(bird.remove),
        mb(bird.empty_kib),
        mb(bird.rss_kib),
        mb(bird.anon_kib),
        mb(bird.peak_kib),
        bird.idle_cpu_percent,
        "gingham / ip -batch; / BIRD",
        s(ours.install) / s(reference.0),
        s(ours.remove) / s(reference.1),
        ours.empty_kib as f64 / bird.empty_kib as f64,
        ours.rss_kib as f64 / bird.rss_kib as f64,
        ours.anon_kib as f64 / bird.anon_kib as f64,
        ours.peak_kib as f64 / bird.peak_kib as f64,
        ours.idle_cpu_percent / bird.idle_cpu_percent.max(0.01),
        "install: gingham / BIRD",
        s(ours.install) / s(bird.install),
    ) + &format!(
        "The same table from two ToRs (ECMP), ToR 1's first, then ToR 2's: the route operations for both; ToR 2's session ends: until no route in the node's kernel goes via ToR 2, and the agent's route operations for it; then ToR 2 sends its table again: until every route goes via it again, and the route operations\n\
         {:<42} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12} {:>14}\n\
         {:<42} {:>10.1} {:>10} {:>10.3} {:>12} {:>12.3} {:>12.3} {:>14}\n\
         {:<42} {:>10.1} {:>10} {:>10.3} {:>12} {:>12.3} {:>12.3} {:>14}\n\
         {:<42} {:>10.1} {:>10} {:>10} {:>12} {:>12} {:>12} {:>14}\n\
         {:<42} {:>9.2}x {:>10} {:>9.3}x {:>12} {:>12} {:>11.3}x\n",
        "",
        "RSS MB",
        "both ops",
        "time s",
        "route ops",
        "poll s",
        "back s",
        "back route ops",
        "gingham-agent, nexthop objects",
        mb(objects.rss_kib),
        objects.arrive_operations,
        s(objects.time),
        objects.operations,
        s(objects.poll),
        s(objects.back),
        objects.back_operations,
        "gingham-agent, gateways in each route",
        mb(gateways.rss_kib),
        gateways.arrive_operations,
        s(gateways.time),
        gateways.operations,
        s(gateways.poll),
        s(gateways.back),
        gateways.back_operations,
        "BIRD (merge paths; RSS only)",
        mb(bird_two),
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "objects / gateways; RSS: objects / BIRD",
        objects.rss_kib as f64 / bird_two as f64,
        "",
        s(objects.time) / s(gateways.time),
        "",
        "",
        s(objects.back) / s(gateways.back),
    ))
}

fn rss_kib(pid: i32) -> Result<u64> {
    status(pid, "VmRSS:")
}

/// The agent's kernel route operations of one kind so far (`gingham_fib_route_operations_total`).
fn fib_operations(lab: &Cluster, operation: &str) -> Result<u64> {
    let metrics = lab.http_get(0, "/metrics")?;
    Ok(metric_sample(&metrics, &format!("gingham_fib_route_operations_total{{operation=\"{operation}\"}}"))? as u64)
}

/// Waits until the agent has made `n` more route operations of one kind than `before`.
fn wait_operations(lab: &Cluster, operation: &str, before: u64, n: usize) -> Result<()> {
    wait_for(&format!("{n} route operations ({operation}) in the node's kernel"), LIMIT, || {
        std::thread::sleep(Duration::from_millis(10));
        (fib_operations(lab, operation).ok()? >= before + n as u64).then_some(())
    })
}

/// A one-node lab whose agent is in our injector's AS (iBGP with the ToRs: the injector speaks
/// AS 65000 and sends no AS_PATH of its own), the fabric hosts after it free for ToRs.
fn lab_for_tors(tors: usize, agent_flags: Vec<String>) -> Result<Cluster> {
    let mut options = LabOptions::new(1);
    options.extra_hosts = tors;
    options.agent_flags = agent_flags;
    let lab = Cluster::new(options)?;
    lab.modify::<BGPConfiguration>("default", |c| c.spec.as_number = Some(peers::ASN))?;
    Ok(lab)
}

/// Our injector as a ToR on fabric host `host` with address `addr`, peered with the node as
/// BGPPeer `name`; its session established and its reader running.
fn tor(lab: &Cluster, name: &str, addr: std::net::Ipv4Addr, host: usize) -> Result<(Session, std::thread::JoinHandle<()>)> {
    let spec = BGPPeerSpec { peer_ip: Some(addr.to_string()), as_number: Some(peers::ASN), ..Default::default() };
    lab.create(&BGPPeer::new(name, spec))?;
    let mut injector = establish_all(&lab.fabric.hosts[host].ns, vec![addr], NODE)?.pop().context("one session")?;
    let reader = injector.spawn_reader(None);
    Ok((injector, reader))
}

fn gingham(prefixes: usize) -> Result<Side> {
    let lab = lab_for_tors(1, Vec::new())?;
    let (injector, reader) = tor(&lab, "tor", TOR, 1)?;
    let table = encode_updates(0..prefixes, TOR, true)?;
    let pid = lab.nodes[0].agent.as_ref().context("agent")?.pid;
    let node_ns = &lab.fabric.hosts[0].ns;
    let empty_kib = rss_kib(pid)?;
    let (installed, removed) = (fib_operations(&lab, "install")?, fib_operations(&lab, "remove")?);
    let arrivals = Arrivals::start(node_ns, RTPROT_GINGHAM, TABLE_LEN)?;
    let start = Instant::now();
    injector.write(&table)?;
    let install = arrivals.nth(prefixes, LIMIT)?.duration_since(start);
    drop(arrivals);
    wait_operations(&lab, "install", installed, prefixes)?;
    anyhow::ensure!(count_routes(node_ns)? >= prefixes, "the agent counted installs the kernel does not hold");
    let idle_cpu_percent = idle_cpu(pid)?;
    let (rss, anon_kib) = (rss_kib(pid)?, status(pid, "RssAnon:")?);
    let start = Instant::now();
    injector.shutdown();
    wait_operations(&lab, "remove", removed, prefixes)?;
    let remove = start.elapsed();
    let left = node_ns.exec("ip", &["route", "show", "proto", "80", "via", &TOR.to_string()])?.lines().count();
    anyhow::ensure!(left == 0, "{left} routes via the ToR left in the node's kernel");
    let _ = reader.join();
    Ok(Side { install, remove, empty_kib, rss_kib: rss, anon_kib, peak_kib: peak_rss_kib(pid)?, idle_cpu_percent })
}

/// One of two ToRs going away while the node holds the same table from both (ECMP): from the
/// moment ToR 2's session ends until no route in the node's kernel goes via it, and the route
/// operations the agent made for that; then ToR 2 coming back: from the moment it starts
/// sending its table again until every route goes via it again, and the operations for that;
/// with the agent's nexthop objects, and without.
struct Failover {
    time: Duration,
    operations: u64,
    /// How long one poll of the kernel took: the resolution of `time`.
    poll: Duration,
    back: Duration,
    back_operations: u64,
    /// The route operations for ToR 1's table and then ToR 2's, before any of it.
    arrive_operations: u64,
    /// The agent's, holding both tables, after [`QUIET`].
    rss_kib: u64,
}

const TOR2: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 13);

fn failover(prefixes: usize, kernel_nexthops: bool) -> Result<Failover> {
    let lab = lab_for_tors(2, vec!["--kernel-nexthops".into(), kernel_nexthops.to_string()])?;
    let mut tors = Vec::new();
    for (name, addr, host) in [("tor-1", TOR, 1), ("tor-2", TOR2, 2)] {
        let (injector, reader) = tor(&lab, name, addr, host)?;
        tors.push((injector, reader, encode_updates(0..prefixes, addr, true)?));
    }
    // ToR 1's table first, then ToR 2's: every route gains ToR 2 (through its group with
    // objects, replaced without).
    let node_ns = &lab.fabric.hosts[0].ns;
    let before = fib_operations(&lab, "install")? + fib_operations(&lab, "remove")?;
    for (round, ((injector, _, table), addr)) in tors.iter().zip([TOR, TOR2]).enumerate() {
        injector.write(table)?;
        wait_for(&format!("round {round}: every route via {addr}"), LIMIT, || {
            std::thread::sleep(Duration::from_millis(20));
            (in_netns(node_ns, move || through(addr)).ok()? >= prefixes).then_some(())
        })?;
    }
    anyhow::ensure!(in_netns(node_ns, || through(TOR))? >= prefixes, "the routes do not go via both ToRs");
    // As below: the last changes may still be on their way. Both tables are then held for
    // [`QUIET`] before the memory is read; whatever the agent does with them meanwhile (a held
    // change released, a resync's repair) counts with their arrival, not with ToR 2's going.
    std::thread::sleep(QUIET);
    let rss_kib = rss_kib(lab.nodes[0].agent.as_ref().context("agent")?.pid)?;
    let after = fib_operations(&lab, "install")? + fib_operations(&lab, "remove")?;
    let arrive_operations = after - before;
    let before = after;
    let (injector, reader, _) = tors.pop().context("ToR 2")?;
    // Polled from inside the node's namespace with a netlink dump, counted without decoding
    // each route (`ip route show` takes a second to print the table).
    let (time, poll) = in_netns(node_ns, move || {
        let start = Instant::now();
        injector.shutdown();
        let mut polls = 1;
        while through(TOR2)? > 0 {
            anyhow::ensure!(start.elapsed() < LIMIT, "routes via ToR 2 stayed");
            polls += 1;
        }
        let time = start.elapsed();
        let t = Instant::now();
        through(TOR)?;
        Ok((time, t.elapsed().max(time / polls)))
    })?;
    anyhow::ensure!(in_netns(node_ns, || through(TOR))? >= prefixes, "routes via ToR 1 went too");
    // The speaker's changes for every prefix still arrive after the kernel is right: count
    // what the agent does with them once they are all in.
    std::thread::sleep(Duration::from_secs(3));
    let operations = fib_operations(&lab, "install")? + fib_operations(&lab, "remove")? - before;
    let _ = reader.join();

    // ToR 2 comes back with the same table.
    let mut injector = establish_all(&lab.fabric.hosts[2].ns, vec![TOR2], NODE)?.pop().context("ToR 2 again")?;
    let reader = injector.spawn_reader(None);
    let table = encode_updates(0..prefixes, TOR2, true)?;
    let before = fib_operations(&lab, "install")? + fib_operations(&lab, "remove")?;
    let back = in_netns(node_ns, move || {
        let start = Instant::now();
        injector.write(&table)?;
        while through(TOR2)? < prefixes {
            anyhow::ensure!(start.elapsed() < LIMIT, "routes did not go via ToR 2 again");
        }
        Ok((start.elapsed(), injector))
    });
    let (back, injector) = back?;
    anyhow::ensure!(in_netns(node_ns, || through(TOR))? >= prefixes, "routes via ToR 1 went");
    std::thread::sleep(Duration::from_secs(3));
    let back_operations = fib_operations(&lab, "install")? + fib_operations(&lab, "remove")? - before;
    injector.shutdown();
    let _ = reader.join();
    for (injector, reader, _) in tors {
        injector.shutdown();
        let _ = reader.join();
    }
    Ok(Failover { time, operations, poll, back, back_operations, arrive_operations, rss_kib })
}

/// Our routes in the calling thread's namespace that go via `gateway` (alone or among others).
fn through(gateway: std::net::Ipv4Addr) -> Result<usize> {
    crate::route_count::routes_via(RTPROT_GINGHAM, gateway)
}

/// `ip -batch` adding, then deleting, the same /24s via one gateway in an empty namespace.
fn ip_batch(prefixes: usize) -> Result<(Duration, Duration)> {
    let ns = route_ns()?;
    let dir = TempDir::new("gingham-table")?;
    let lines = |verb: &'static str| (0..prefixes).map(move |i| format!("route {verb} {} via 198.18.1.2 proto 80", peers::prefix(i)));
    let add = time_ip_batch(&ns, &dir, "add.batch", lines("add"))?;
    anyhow::ensure!(count_routes(&ns)? == prefixes, "ip -batch installed a different number of routes");
    let del = time_ip_batch(&ns, &dir, "del.batch", lines("del"))?;
    Ok((add, del))
}

fn bird_routes(ns: &Netns) -> Result<usize> {
    Ok(ns.exec("ip", &["route", "show", "proto", "bird"])?.lines().count())
}

/// BIRD in the node's place, learning from each of `tors` and exporting to the kernel, ECMP
/// routes over all of them when there are several (`merge paths`, as Calico configures it).
fn bird_config(tors: &[std::net::Ipv4Addr]) -> String {
    let merge = if tors.len() > 1 { " merge paths on;" } else { "" };
    let mut config = format!("router id {NODE};\nprotocol device {{}}\nprotocol kernel {{ ipv4 {{ export all; }};{merge} }}\n");
    for (n, tor) in tors.iter().enumerate() {
        config += &format!(
            "protocol bgp tor{n} {{ local {NODE} as {asn}; neighbor {tor} as {asn}; direct; ipv4 {{ import all; export none; }}; }}\n",
            asn = peers::ASN
        );
    }
    config
}

/// BIRD in the node's place. Its install is timed as the agent's is; its removal is a polled
/// kernel count (a dump of the whole table every poll), coarse and slowed by the polling.
fn bird(prefixes: usize) -> Result<Side> {
    let fabric = crate::netns::Fabric::new(2)?;
    let (node_ns, tor_ns) = (&fabric.hosts[0].ns, &fabric.hosts[1].ns);
    let bird = Bird::start(node_ns, &bird_config(&[TOR]))?;
    let mut injector = establish_all(tor_ns, vec![TOR], NODE)?.pop().context("one session")?;
    let reader = injector.spawn_reader(None);
    let table = encode_updates(0..prefixes, TOR, true)?;
    let empty_kib = rss_kib(bird.daemon.pid)?;
    let arrivals = Arrivals::start(node_ns, RTPROT_BIRD, TABLE_LEN)?;
    let start = Instant::now();
    injector.write(&table)?;
    let install = arrivals.nth(prefixes, LIMIT)?.duration_since(start);
    drop(arrivals);
    anyhow::ensure!(bird_routes(node_ns)? >= prefixes, "BIRD's announced routes are not all in its kernel table");
    let idle_cpu_percent = idle_cpu(bird.daemon.pid)?;
    let (rss, anon_kib) = (rss_kib(bird.daemon.pid)?, status(bird.daemon.pid, "RssAnon:")?);
    let start = Instant::now();
    injector.shutdown();
    wait_for("BIRD's routes gone", LIMIT, || (bird_routes(node_ns).ok()? == 0).then_some(()))?;
    let remove = start.elapsed();
    let _ = reader.join();
    Ok(Side { install, remove, empty_kib, rss_kib: rss, anon_kib, peak_kib: peak_rss_kib(bird.daemon.pid)?, idle_cpu_percent })
}

/// BIRD in the node's place under two ToRs sending the same table ([`bird_config`]): its RSS
/// holding them, after [`QUIET`].
fn bird_two_tors(prefixes: usize) -> Result<u64> {
    let fabric = crate::netns::Fabric::new(3)?;
    let node_ns = &fabric.hosts[0].ns;
    let bird = Bird::start(node_ns, &bird_config(&[TOR, TOR2]))?;
    let mut tors = Vec::new();
    for (addr, host) in [(TOR, 1), (TOR2, 2)] {
        let mut injector = establish_all(&fabric.hosts[host].ns, vec![addr], NODE)?.pop().context("one session")?;
        let reader = injector.spawn_reader(None);
        injector.write(&encode_updates(0..prefixes, addr, true)?)?;
        tors.push((injector, reader));
    }
    wait_for("every BIRD route via both ToRs", LIMIT, || {
        std::thread::sleep(Duration::from_millis(200));
        let both = in_netns(node_ns, || {
            Ok(crate::route_count::routes_via(RTPROT_BIRD, TOR)?.min(crate::route_count::routes_via(RTPROT_BIRD, TOR2)?))
        })
        .ok()?;
        (both >= prefixes).then_some(())
    })?;
    std::thread::sleep(QUIET);
    let rss = rss_kib(bird.daemon.pid)?;
    for (injector, reader) in tors {
        injector.shutdown();
        let _ = reader.join();
    }
    Ok(rss)
}
