//! A benchmark that measures the device under test, not its neighbours (in the manner of
//! bgperf): our own injectors and counting receivers ([`peers`]) around one BGP speaker,
//! Gingham, BIRD, FRR or GoBGP, acting as a route reflector. All iBGP AS 65000; injectors are
//! non-clients (their routes go to clients only), receivers are clients.
//!
//! ```text
//!   load host 198.18.0.11 (injector), .150.. (receivers), .200.. (fan-in injectors)
//!        └── fabric ── device 198.18.0.12 (route reflector, cluster id 10.255.0.1)
//! ```
//!
//! Scenarios: fan-out (one injector, N prefixes, M clients: time until every client holds
//! every prefix), fan-in (many injectors, one client), churn (a slice of the table withdrawn
//! and the previous slice announced again every second: how far the clients lag behind the
//! injector). Each reports the device's CPU seconds and peak RSS. A baseline runs the same
//! injector straight into a counting receiver: it must be much faster than any device, or the
//! figures would measure the load instead.

mod arrivals;
pub mod node_table;
pub mod peers;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::daemons::{Bird, Frr, GoBgp};
use crate::netns::{wait_for, Daemon, Fabric, Netns};
use crate::proc_stats::cpu_seconds;
use peers::{encode_updates, Session, Tally};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Gingham,
    Bird,
    Frr,
    GoBgp,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Gingham => "Gingham",
            Device::Bird => "BIRD",
            Device::Frr => "FRR",
            Device::GoBgp => "GoBGP",
        }
    }

    pub fn parse(name: &str) -> Result<Device> {
        Ok(match name.trim() {
            "gingham" => Device::Gingham,
            "bird" => Device::Bird,
            "frr" => Device::Frr,
            "gobgp" => Device::GoBgp,
            other => bail!("unknown device {other} (gingham, bird, frr, gobgp)"),
        })
    }
}

const DEVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const INJECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const SETUP: Duration = Duration::from_secs(180);
const RUN: Duration = Duration::from_secs(600);

fn receiver_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 150 + i as u8)
}

fn injector_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 200 + i as u8)
}

/// The device's peers: injectors are iBGP non-clients, receivers are clients.
struct Neighbours {
    injectors: Vec<Ipv4Addr>,
    clients: Vec<Ipv4Addr>,
}

fn bird_config(n: &Neighbours) -> String {
    let mut c = format!(
        "router id {DEVICE};\nprotocol device {{}}\n\
         template bgp tnonclient {{ local {DEVICE} as 65000; error wait time 1, 5; ipv4 {{ import all; export all; }}; }}\n\
         template bgp tclient from tnonclient {{ rr client; rr cluster id 10.255.0.1; }}\n"
    );
    for (i, a) in n.injectors.iter().enumerate() {
        let _infallible = writeln!(c, "protocol bgp inj{i} from tnonclient {{ neighbor {a} as 65000; }}");
    }
    for (i, a) in n.clients.iter().enumerate() {
        let _infallible = writeln!(c, "protocol bgp rcv{i} from tclient {{ neighbor {a} as 65000; }}");
    }
    c
}

fn frr_config(n: &Neighbours) -> String {
    let mut c = format!(
        "router bgp 65000\n bgp router-id {DEVICE}\n bgp cluster-id 10.255.0.1\n no bgp default ipv4-unicast\n\
         \x20neighbor INJ peer-group\n neighbor INJ remote-as 65000\n neighbor RCV peer-group\n neighbor RCV remote-as 65000\n"
    );
    for a in &n.injectors {
        let _infallible = writeln!(c, " neighbor {a} peer-group INJ");
    }
    for a in &n.clients {
        let _infallible = writeln!(c, " neighbor {a} peer-group RCV");
    }
    c.push_str(" address-family ipv4 unicast\n  neighbor INJ activate\n  neighbor RCV activate\n  neighbor RCV route-reflector-client\n exit-address-family\n");
    c
}

fn gobgp_config(n: &Neighbours) -> String {
    let mut c = format!("[global.config]\n  as = 65000\n  router-id = \"{DEVICE}\"\n");
    for a in &n.injectors {
        let _infallible = write!(c, "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{a}\"\n    peer-as = 65000\n");
    }
    for a in &n.clients {
        let _infallible = write!(
            c,
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{a}\"\n    peer-as = 65000\n  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"10.255.0.1\"\n"
        );
    }
    c
}

/// The device running, and its PID (the process whose CPU and memory count).
struct Running {
    pid: i32,
    _keep: Box<dyn std::any::Any>,
}

fn start_device(device: Device, ns: &Netns, n: &Neighbours, gingham_lab: &std::path::Path) -> Result<Running> {
    Ok(match device {
        Device::Gingham => {
            let mut cmd = crate::lab::wrapped(ns, gingham_lab)?;
            cmd.args(["speaker", "--router-id", &DEVICE.to_string(), "--asn", "65000", "--cluster-id", "10.255.0.1"]);
            for a in &n.injectors {
                cmd.args(["--peer", &format!("{a}:65000")]);
            }
            for a in &n.clients {
                cmd.args(["--peer", &format!("{a}:65000:client")]);
            }
            let child = cmd.stdout(Stdio::null()).spawn().context("starting the Gingham speaker")?;
            let d = Daemon::new("gingham-lab speaker", child.id() as i32, None);
            Running { pid: d.pid, _keep: Box::new(d) }
        }
        Device::Bird => {
            let b = Bird::start(ns, &bird_config(n))?;
            Running { pid: b.daemon.pid, _keep: Box::new(b) }
        }
        Device::Frr => {
            let f = Frr::start(ns, &frr_config(n))?;
            Running { pid: f.daemon.pid, _keep: Box::new(f) }
        }
        Device::GoBgp => {
            let g = GoBgp::start(ns, &gobgp_config(n))?;
            Running { pid: g.daemon.pid, _keep: Box::new(g) }
        }
    })
}

fn peak_rss_kib(pid: i32) -> Result<u64> {
    crate::proc_stats::status(pid, "VmHWM:")
}

/// Runs `f` on a new thread inside `ns` (sockets it opens live there; threads it starts too).
fn spawn_in<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<std::thread::JoinHandle<Result<T>>> {
    let file = std::fs::File::open(ns.path())?;
    Ok(std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only; the fd is valid for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    }))
}

fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    spawn_in(ns, f)?.join().map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// Sessions from `locals` to the device, established in parallel (a device may take a while
/// to accept fifty).
fn establish_all(ns: &Netns, locals: Vec<Ipv4Addr>, device: Ipv4Addr) -> Result<Vec<Session>> {
    in_netns(ns, move || {
        let handles: Vec<_> = locals.into_iter().map(|l| std::thread::spawn(move || Session::establish(l, device, SETUP))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("session thread panicked"))?).collect()
    })
}

/// The lab: a load host and the device's host, the load host with every address the
/// scenario's sessions come from.
struct Bench {
    fabric: Fabric,
}

impl Bench {
    fn new(extra: &[Ipv4Addr]) -> Result<Bench> {
        let fabric = Fabric::new(2)?;
        for a in extra {
            fabric.hosts[0].ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        Ok(Bench { fabric })
    }

    fn load(&self) -> &Netns {
        &self.fabric.hosts[0].ns
    }

    fn device_ns(&self) -> &Netns {
        &self.fabric.hosts[1].ns
    }
}

/// One scenario's figures for one device.
#[derive(Clone, Debug)]
pub struct Figures {
    pub device: Device,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

/// Waits until every tally holds every prefix; the time from `start` to the last of them.
fn wait_complete(tallies: &[Arc<Tally>], start: Instant, what: &str) -> Result<f64> {
    let deadline = start + RUN;
    loop {
        if tallies.iter().all(|t| t.complete_at().is_some()) {
            let last = tallies.iter().filter_map(|t| t.complete_at()).max().expect("at least one receiver");
            return Ok(last.duration_since(start).as_secs_f64());
        }
        if Instant::now() > deadline {
            let have: Vec<usize> = tallies.iter().map(|t| t.present.load(std::sync::atomic::Ordering::Relaxed)).collect();
            bail!("{what}: not every receiver holds every prefix after {RUN:?} (they have {have:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fan-out: one injector with `prefixes` routes, `clients` receivers.
/// The device as route reflector between one injector and `clients` counting receivers, every
/// session up, nothing sent yet. Dropping it ends the sessions, then the device.
struct Reflection {
    injector: Session,
    tallies: Vec<Arc<Tally>>,
    sessions: Vec<Session>,
    readers: Vec<std::thread::JoinHandle<()>>,
    running: Running,
    _bench: Bench,
}

impl Reflection {
    /// Receivers count `prefixes` prefixes in slices of `slice`.
    fn start(device: Device, clients: usize, prefixes: usize, slice: usize, gingham_lab: &std::path::Path) -> Result<Reflection> {
        let receivers: Vec<Ipv4Addr> = (0..clients).map(receiver_address).collect();
        let bench = Bench::new(&receivers)?;
        let n = Neighbours { injectors: vec![INJECTOR], clients: receivers.clone() };
        let running = start_device(device, bench.device_ns(), &n, gingham_lab)?;
        let mut sessions = establish_all(bench.load(), receivers, DEVICE)?;
        let tallies: Vec<Arc<Tally>> = (0..clients).map(|_| Arc::new(Tally::new(prefixes, slice))).collect();
        let mut readers: Vec<_> = sessions.iter_mut().zip(&tallies).map(|(s, t)| s.spawn_reader(Some(t.clone()))).collect();
        let mut injector = establish_all(bench.load(), vec![INJECTOR], DEVICE)?.pop().expect("one injector");
        readers.push(injector.spawn_reader(None));
        Ok(Reflection { injector, tallies, sessions, readers, running, _bench: bench })
    }
}

impl Drop for Reflection {
    fn drop(&mut self) {
        for s in self.sessions.iter().chain([&self.injector]) {
            s.shutdown();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

pub fn fan_out(device: Device, prefixes: usize, clients: usize, gingham_lab: &std::path::Path) -> Result<Figures> {
    let r = Reflection::start(device, clients, prefixes, prefixes, gingham_lab)?;
    let table = encode_updates(0..prefixes, INJECTOR, true)?;
    let cpu_before = cpu_seconds(r.running.pid)?;
    let start = Instant::now();
    r.injector.write(&table)?;
    let seconds = wait_complete(&r.tallies, start, device.name())?;
    Ok(Figures { device, seconds, cpu_seconds: cpu_seconds(r.running.pid)? - cpu_before, peak_rss_kib: peak_rss_kib(r.running.pid)? })
}

/// Fan-in: `injectors` injectors with `each` routes of their own, one receiver.
pub fn fan_in(device: Device, injectors: usize, each: usize, gingham_lab: &std::path::Path) -> Result<Figures> {
    let sources: Vec<Ipv4Addr> = (0..injectors).map(injector_address).collect();
    let receiver = receiver_address(0);
    let mut addresses = sources.clone();
    addresses.push(receiver);
    let bench = Bench::new(&addresses)?;
    let n = Neighbours { injectors: sources.clone(), clients: vec![receiver] };
    let running = start_device(device, bench.device_ns(), &n, gingham_lab)?;
    let total = injectors * each;
    let tally = Arc::new(Tally::new(total, total));
    let mut receiving = establish_all(bench.load(), vec![receiver], DEVICE)?.pop().expect("one receiver");
    let mut readers = vec![receiving.spawn_reader(Some(tally.clone()))];
    let mut sending = establish_all(bench.load(), sources.clone(), DEVICE)?;
    readers.extend(sending.iter_mut().map(|s| s.spawn_reader(None)));
    let tables: Vec<Vec<u8>> =
        sources.iter().enumerate().map(|(j, a)| encode_updates(j * each..(j + 1) * each, *a, true)).collect::<Result<_>>()?;
    let cpu_before = cpu_seconds(running.pid)?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let writes: Vec<_> = sending.iter().zip(&tables).map(|(session, table)| s.spawn(move || session.write(table))).collect();
        writes.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("writer panicked"))?)
    })?;
    let seconds = wait_complete(std::slice::from_ref(&tally), start, device.name())?;
    let figures =
        Figures { device, seconds, cpu_seconds: cpu_seconds(running.pid)? - cpu_before, peak_rss_kib: peak_rss_kib(running.pid)? };
    for s in sending.iter().chain([&receiving]) {
        s.shutdown();
    }
    for r in readers {
        let _ = r.join();
    }
    Ok(figures)
}

/// Churn figures: CPU over the churn, and how long after the injector sent a change the last
/// receiver had it (per slice event).
#[derive(Clone, Debug)]
pub struct Churn {
    pub device: Device,
    pub cpu_seconds: f64,
    pub lag_p50_ms: f64,
    pub lag_max_ms: f64,
    pub peak_rss_kib: u64,
}

/// Churn: the table of `prefixes` in place at `clients` receivers, then every second for
/// `seconds` s one slice of `slice` prefixes is withdrawn and the slice withdrawn the second
/// before is announced again.
pub fn churn(
    device: Device,
    prefixes: usize,
    slice: usize,
    seconds: usize,
    clients: usize,
    gingham_lab: &std::path::Path,
) -> Result<Churn> {
    let r = Reflection::start(device, clients, prefixes, slice, gingham_lab)?;
    let (injector, tallies, running) = (&r.injector, &r.tallies, &r.running);
    injector.write(&encode_updates(0..prefixes, INJECTOR, true)?)?;
    wait_complete(tallies, Instant::now(), device.name())?;
    let slices = prefixes / slice;
    // Round r withdraws slice r and announces slice r-1 again, in one write.
    let rounds: Vec<Vec<u8>> = (0..seconds)
        .map(|r| {
            let mut bytes = encode_updates((r % slices) * slice..(r % slices + 1) * slice, INJECTOR, false)?;
            if r > 0 {
                let back = (r - 1) % slices;
                bytes.extend(encode_updates(back * slice..(back + 1) * slice, INJECTOR, true)?);
            }
            Ok(bytes)
        })
        .collect::<Result<_>>()?;
    let before: Vec<usize> = tallies.iter().map(|t| t.events().len()).collect();
    let cpu_before = cpu_seconds(running.pid)?;
    let start = Instant::now();
    let mut sent = Vec::new();
    for (r, bytes) in rounds.iter().enumerate() {
        let due = start + Duration::from_secs(r as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let at = Instant::now();
        injector.write(bytes)?;
        sent.push(((r % slices), false, at));
        if r > 0 {
            sent.push(((r - 1) % slices, true, at));
        }
    }
    // The last change reaches every receiver (or the run fails).
    let last = *sent.last().expect("at least one round");
    wait_for("the last churn round at every receiver", RUN, || {
        tallies.iter().all(|t| t.events().iter().any(|(s, on, at)| (*s, *on) == (last.0, last.1) && *at >= last.2)).then_some(())
    })?;
    let cpu = cpu_seconds(running.pid)? - cpu_before;
    // Each injector change against the first matching event after it at each receiver.
    let mut lags = Vec::new();
    for (t, skip) in tallies.iter().zip(before) {
        let events = t.events();
        let events = &events[skip..];
        for (s, on, at) in &sent {
            if let Some((_, _, seen)) = events.iter().find(|(es, eon, eat)| es == s && eon == on && eat >= at) {
                lags.push(seen.duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    anyhow::ensure!(!lags.is_empty(), "no churn event was seen");
    lags.sort_by(f64::total_cmp);
    let figures = Churn {
        device,
        cpu_seconds: cpu,
        lag_p50_ms: lags[lags.len() / 2],
        lag_max_ms: *lags.last().expect("not empty"),
        peak_rss_kib: peak_rss_kib(running.pid)?,
    };
    Ok(figures)
}

/// The load alone: the injector's table straight into a counting receiver, to show the load is
/// not what the device figures measure.
pub fn baseline(prefixes: usize) -> Result<f64> {
    let fabric = Fabric::new(2)?;
    let (tx, rx) = std::sync::mpsc::channel();
    // A listening counting receiver in the device's place.
    let listener = spawn_in(&fabric.hosts[1].ns, move || peers::accept_one(DEVICE, prefixes, tx))?;
    let ready = rx.recv_timeout(SETUP).context("the counting receiver did not start")?;
    let injector = establish_all(&fabric.hosts[0].ns, vec![INJECTOR], DEVICE)?.pop().expect("one injector");
    let table = encode_updates(0..prefixes, INJECTOR, true)?;
    let start = Instant::now();
    injector.write(&table)?;
    let seconds = wait_complete(std::slice::from_ref(&ready), start, "baseline")?;
    injector.shutdown();
    let _ = listener.join();
    Ok(seconds)
}

fn ratio(x: f64, ours: Option<f64>) -> String {
    match ours {
        Some(o) if o > 0.0 => format!("{:.2}x", x / o),
        _ => "-".into(),
    }
}

/// Fan-out and fan-in rows: (scenario, M) per figure.
pub fn table(title: &str, rows: &[(String, Figures)]) -> String {
    let mut out = vec![
        title.to_string(),
        "| scenario | device | time (s) | device CPU (s) | peak RSS (MB) | time vs Gingham | RSS vs Gingham |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for (scenario, f) in rows {
        let ours = rows.iter().find(|(s, o)| s == scenario && o.device == Device::Gingham).map(|(_, o)| o);
        out.push(format!(
            "| {scenario} | {} | {:.3} | {:.2} | {:.1} | {} | {} |",
            f.device.name(),
            f.seconds,
            f.cpu_seconds,
            f.peak_rss_kib as f64 / 1024.0,
            ratio(f.seconds, ours.map(|o| o.seconds)),
            ratio(f.peak_rss_kib as f64, ours.map(|o| o.peak_rss_kib as f64)),
        ));
    }
    out.push(String::new());
    out.join("\n")
}

pub fn churn_table(title: &str, rows: &[Churn]) -> String {
    let ours = rows.iter().find(|c| c.device == Device::Gingham);
    let mut out = vec![
        title.to_string(),
        "| device | device CPU (s) | lag p50 (ms) | lag max (ms) | peak RSS (MB) | CPU vs Gingham | lag p50 vs Gingham |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for c in rows {
        out.push(format!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} |",
            c.device.name(),
            c.cpu_seconds,
            c.lag_p50_ms,
            c.lag_max_ms,
            c.peak_rss_kib as f64 / 1024.0,
            ratio(c.cpu_seconds, ours.map(|o| o.cpu_seconds)),
            ratio(c.lag_p50_ms, ours.map(|o| o.lag_p50_ms)),
        ));
    }
    out.push(String::new());
    out.join("\n")
}

/// What `gingham-lab bench-rr` runs.
pub struct Options {
    pub prefixes: usize,
    pub clients: Vec<usize>,
    pub scenarios: Vec<String>,
    pub devices: Vec<Device>,
    pub churn_seconds: usize,
    pub churn_rate: usize,
}

/// Every scenario asked for, each device in turn, tables on stdout as they complete.
pub fn run_all(o: &Options, gingham_lab: &std::path::Path) -> Result<()> {
    let want = |s: &str| o.scenarios.iter().any(|x| x == s);
    if want("baseline") {
        let s = baseline(o.prefixes)?;
        println!("load alone: injector -> counting receiver, {} prefixes: {:.3} s\n", o.prefixes, s);
    }
    if want("fanout") {
        let mut rows = Vec::new();
        for &m in &o.clients {
            for &d in &o.devices {
                eprintln!("fan-out, {} clients: {} ...", m, d.name());
                let f = fan_out(d, o.prefixes, m, gingham_lab)?;
                eprintln!("  {:.3} s, {:.2} CPU s, {:.1} MB", f.seconds, f.cpu_seconds, f.peak_rss_kib as f64 / 1024.0);
                rows.push((format!("M = {m}"), f));
            }
        }
        let title = format!(
            "fan-out: {} IPv4 prefixes, 1 injector -> device (route reflector) -> M clients; time until every client holds every prefix",
            o.prefixes
        );
        println!("{}", table(&title, &rows));
    }
    if want("fanin") {
        let (injectors, each) = (50, o.prefixes / 50);
        let mut rows = Vec::new();
        for &d in &o.devices {
            eprintln!("fan-in: {} ...", d.name());
            let f = fan_in(d, injectors, each, gingham_lab)?;
            eprintln!("  {:.3} s, {:.2} CPU s", f.seconds, f.cpu_seconds);
            rows.push((format!("{injectors} x {each}"), f));
        }
        println!("{}", table(&format!("fan-in: {injectors} injectors x {each} prefixes -> device -> 1 client"), &rows));
    }
    if want("churn") {
        let clients = 10;
        let mut rows = Vec::new();
        for &d in &o.devices {
            eprintln!("churn: {} ...", d.name());
            let c = churn(d, o.prefixes, o.churn_rate, o.churn_seconds, clients, gingham_lab)?;
            eprintln!("  {:.2} CPU s, lag p50 {:.1} ms, max {:.1} ms", c.cpu_seconds, c.lag_p50_ms, c.lag_max_ms);
            rows.push(c);
        }
        let title = format!(
            "churn: {} prefixes at {clients} clients; every second for {} s, {} withdrawn and the {} withdrawn a second before announced again; lag = injector write to the last prefix of the batch at a client",
            o.prefixes, o.churn_seconds, o.churn_rate, o.churn_rate
        );
        println!("{}", churn_table(&title, &rows));
    }
    Ok(())
}
