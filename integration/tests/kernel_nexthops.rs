//! The FIB syncer through kernel nexthop objects, in a namespace of its own (root): routes
//! through gateways name one shared group per set of gateways (of one gateway too), over one
//! object per gateway; a gateway the speaker says is gone is one delete, after which the
//! kernel has moved or removed every route through it and the speaker's route changes find
//! nothing left to do; a gateway arriving or coming back joins the group in place, and what
//! only part of a group gains moves route by route; an agent restarted adopts the
//! objects it finds; with objects turned off routes carry their gateways as before; a burst
//! larger than the FIB plans at once is installed and removed whole; the FIB's own read of the
//! kernel finds what the rtnetlink handle finds.
//!
//! ```text
//!   namespace: v0 198.18.1.1/24 ── v1     gateways 198.18.1.2 and 198.18.1.3 on v0's subnet
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use gingham_agent::fib::{self, Class, FibHandle, FibOptions, Target, WantKey};
use gingham_bgp::rib::Gateway;
use gingham_integration::netns::Netns;
use ipnetwork::IpNetwork;

const ROUTES: u32 = 1000;
/// The routes the FIB plans at once (its `PLAN_AT_MOST`): a burst larger than this is written
/// slice by slice.
const SLICE: u32 = 16 * 1024;
const A: &str = "198.18.1.2";
const B: &str = "198.18.1.3";

fn namespace() -> Netns {
    let ns = Netns::new("gnh").unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]).unwrap();
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", "v0"]).unwrap();
    ns.ip(&["link", "set", "v0", "up"]).unwrap();
    ns.ip(&["link", "set", "v1", "up"]).unwrap();
    ns
}

/// Runs `test` on a thread inside `ns`, with a runtime of its own; a new runtime per call, so a
/// FIB started in one call is gone in the next (as after an agent restart).
fn inside<T: Send + 'static>(ns: &Netns, test: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(test())
    })
    .join()
    .expect("the test thread panicked")
}

fn learned(i: u32) -> WantKey {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
    WantKey { prefix: IpNetwork::new(addr.into(), 32).unwrap(), class: Class::Learned }
}

fn via(gateways: &[&str]) -> Target {
    Target::Gateways(gateways.iter().map(|g| Gateway::new(g.parse().unwrap())).collect::<Arc<[Gateway]>>())
}

fn gateway(g: &str) -> Gateway {
    Gateway::new(g.parse::<IpAddr>().unwrap())
}

/// Sets every learned route to `target` (or withdraws it), in the speaker's batch size.
async fn set_all(fib: &FibHandle, target: Option<Target>) {
    let all: Vec<(WantKey, Option<Target>)> = (0..ROUTES).map(|i| (learned(i), target.clone())).collect();
    for chunk in all.chunks(256) {
        fib.set(chunk.to_vec()).await;
    }
}

/// A pod route set after everything before it: once the kernel has it, every earlier command
/// has been carried out (one channel, in order), and the stats read then count them all.
async fn barrier(ns: &str, fib: &FibHandle, n: u8) -> fib::FibStats {
    let prefix = format!("198.18.2.{n}/32");
    let key = WantKey { prefix: prefix.parse().unwrap(), class: Class::Endpoint };
    fib.set(vec![(key, Some(Target::Device(nix_index("v0"))))]).await;
    for _ in 0..500 {
        if !ip(ns, &["route", "show", &prefix, "proto", "80"]).is_empty() {
            return fib.stats().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the barrier route was never installed");
}

fn nix_index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

async fn wait_programmed(fib: &FibHandle, n: u64) {
    for _ in 0..1000 {
        if fib.stats().await.programmed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not all routes were installed: {:?}", fib.stats().await);
}

/// `ip -n NS ARGS`, by the namespace's name (the test's thread cannot own the namespace).
fn ip(ns: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip").arg("-n").arg(ns).args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Our learned routes in the kernel, one line each.
fn learned_lines(ns: &str) -> Vec<String> {
    ip(ns, &["-o", "route", "show", "proto", "80", "metric", "2048"]).lines().map(str::to_string).collect()
}

fn objects(ns: &str) -> Vec<String> {
    ip(ns, &["nexthop", "show", "proto", "80"]).lines().map(str::to_string).collect()
}

/// A FIB with every learned route set to `target` and installed.
async fn fib_with_all(target: Target) -> FibHandle {
    let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
    set_all(&fib, Some(target)).await;
    wait_programmed(&fib, ROUTES.into()).await;
    fib
}

/// The id of our one group object.
fn group_id(ns: &str) -> u32 {
    let objs = objects(ns);
    let group = objs.iter().find(|l| l.contains("group")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    group.unwrap_or_else(|| panic!("no group object: {objs:#?}"))
}

fn nhid(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == "nhid")?;
    words.next()?.parse().ok()
}

#[test]
fn a_gone_gateway_is_one_object_delete_not_one_change_per_route() {
    let ns = namespace();
    let probe = ns.name().to_string();
    inside(&ns, async move || {
        let ns = probe;
        let fib = fib_with_all(via(&[A, B])).await;

        // One gateway object each and one group, shared by every route.
        let objs = objects(&ns);
        assert_eq!(objs.len(), 3, "{objs:#?}");
        let group = group_id(&ns);
        let lines = learned_lines(&ns);
        assert_eq!(lines.len(), ROUTES as usize);
        assert!(lines.iter().all(|l| nhid(l) == Some(group)), "{:?}", &lines[..3]);

        // B's session ends: the speaker says so, then moves every prefix to A alone.
        fib.gateways_gone(vec![gateway(B)]).await;
        set_all(&fib, Some(via(&[A]))).await;
        let stats = barrier(&ns, &fib, 1).await;
        assert_eq!(stats.programmed, u64::from(ROUTES) + 1, "no route was written again, only the barrier: {stats:?}");
        assert_eq!(stats.removed, 0);
        let objs = objects(&ns);
        assert_eq!(objs.len(), 2, "B's object went, the group stays with A in it: {objs:#?}");
        assert!(!objs.iter().any(|l| l.contains(B)), "{objs:#?}");
        let lines = learned_lines(&ns);
        assert_eq!(lines.len(), ROUTES as usize);
        assert!(lines.iter().all(|l| nhid(l) == Some(group) && !l.contains(B)), "{:?}", &lines[..3]);
        let get = ip(&ns, &["route", "get", "198.19.0.7"]);
        assert!(get.contains(&format!("via {A}")), "{get}");

        // A static route to a peer via A: A's object must stay while it is wanted, even when
        // the speaker says no BGP path has A any more.
        let peer = WantKey { prefix: "198.18.3.1/32".parse().unwrap(), class: Class::Static };
        fib.set(vec![(peer, Some(via(&[A])))]).await;
        wait_programmed(&fib, u64::from(ROUTES) + 2).await;
        fib.gateways_gone(vec![gateway(A)]).await;
        barrier(&ns, &fib, 2).await;
        assert_eq!(learned_lines(&ns).len(), ROUTES as usize, "the object stayed, and so did the routes");
        let statics = ip(&ns, &["-o", "route", "show", "proto", "80", "metric", "2"]);
        assert!(statics.contains("198.18.3.1"), "{statics}");

        // Without it, A going is one delete: the kernel removes every route through A before
        // a single withdrawal has arrived, and the withdrawals then have nothing left to do.
        fib.set(vec![(peer, None)]).await;
        let before = barrier(&ns, &fib, 3).await;
        fib.gateways_gone(vec![gateway(A)]).await;
        let after = barrier(&ns, &fib, 4).await;
        assert!(learned_lines(&ns).is_empty(), "{:?}", learned_lines(&ns));
        assert_eq!(after.removed, before.removed + u64::from(ROUTES), "the kernel's removals are counted: {after:?}");
        assert!(objects(&ns).is_empty(), "A's object went, and the group with its last member: {:#?}", objects(&ns));
        set_all(&fib, None).await;
        let last = barrier(&ns, &fib, 5).await;
        assert_eq!(last.removed, after.removed, "the withdrawals found nothing to delete: {last:?}");
        assert_eq!(last.wanted, 5, "the five barrier routes");
    });
}

/// Every route via both A and B (in the kernel's words), or `None` and the first that is not.
fn first_not_via_both(ns: &str) -> Option<String> {
    let lines = learned_lines(ns);
    assert_eq!(lines.len(), ROUTES as usize);
    lines.into_iter().find(|l| !(l.contains(&format!("via {A} ")) && l.contains(&format!("via {B} "))))
}

/// Two ToRs, B gone and back: while it was away every route went via A through the group
/// that had held both; as it comes back the speaker moves every prefix to both again, one
/// change per prefix. The group takes B back in place: one kernel operation, no route written.
#[test]
fn a_returning_gateway_rejoins_its_group_in_place_not_one_change_per_route() {
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let ns = name;
        let fib = fib_with_all(via(&[A, B])).await;
        let group = group_id(&ns);
        fib.gateways_gone(vec![gateway(B)]).await;
        set_all(&fib, Some(via(&[A]))).await;
        let away = barrier(&ns, &fib, 1).await;
        assert!(learned_lines(&ns).iter().all(|l| !l.contains(B)));

        // B is back: the speaker's changes, in its batch size.
        set_all(&fib, Some(via(&[A, B]))).await;
        let back = barrier(&ns, &fib, 2).await;
        assert_eq!(first_not_via_both(&ns), None, "every route goes via both again");
        assert!(learned_lines(&ns).iter().all(|l| nhid(l) == Some(group)), "through the same group: {:?}", &learned_lines(&ns)[..3]);
        assert_eq!(back.programmed, away.programmed + 1, "no route was written, only the barrier: {back:?}");
        assert_eq!(back.regrouped, u64::from(ROUTES), "{back:?}");
        let objs = objects(&ns);
        assert_eq!(objs.len(), 3, "a new object for B, and the group over A's and B's: {objs:#?}");
        let get = ip(&ns, &["route", "get", "198.19.0.7"]);
        assert!(get.contains(&format!("via {A}")) || get.contains(&format!("via {B}")), "{get}");

        // B goes again: one object delete, as the first time.
        fib.gateways_gone(vec![gateway(B)]).await;
        set_all(&fib, Some(via(&[A]))).await;
        let again = barrier(&ns, &fib, 3).await;
        assert_eq!(again.programmed, back.programmed + 1, "{again:?}");
        assert!(learned_lines(&ns).iter().all(|l| nhid(l) == Some(group) && !l.contains(B)));
    });
}

/// A node's first ToR's table arrives before the second ToR's (as it does at every start):
/// the routes through A alone go through a group of one, which B then joins in place.
#[test]
fn a_second_gateway_arriving_joins_the_group_of_the_first_in_place() {
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let ns = name;
        let fib = fib_with_all(via(&[A])).await;
        let objs = objects(&ns);
        assert_eq!(objs.len(), 2, "A's object and a group of it alone: {objs:#?}");
        let group = group_id(&ns);
        let lines = learned_lines(&ns);
        assert!(lines.iter().all(|l| nhid(l) == Some(group) && l.contains(&format!("via {A} "))), "{:?}", &lines[..3]);

        set_all(&fib, Some(via(&[A, B]))).await;
        let stats = barrier(&ns, &fib, 1).await;
        assert_eq!(first_not_via_both(&ns), None, "every route goes via both");
        assert!(learned_lines(&ns).iter().all(|l| nhid(l) == Some(group)), "through the same group: {:?}", &learned_lines(&ns)[..3]);
        assert_eq!(stats.programmed, u64::from(ROUTES) + 1, "no route was written again, only the barrier: {stats:?}");
        assert_eq!(stats.regrouped, u64::from(ROUTES), "{stats:?}");
        assert_eq!(objects(&ns).len(), 3, "{:#?}", objects(&ns));
    });
}

/// B comes back with half of the table: the group's other routes still want A alone, so the
/// group cannot take B. Once the changes go quiet, the routes that gained B move one by one;
/// the others stay as they were.
#[test]
fn routes_gaining_a_gateway_their_whole_group_does_not_gain_move_one_by_one() {
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let ns = name;
        let fib = fib_with_all(via(&[A, B])).await;
        fib.gateways_gone(vec![gateway(B)]).await;
        set_all(&fib, Some(via(&[A]))).await;
        let away = barrier(&ns, &fib, 1).await;
        let group = nhid(&learned_lines(&ns)[0]).expect("through an object");

        let half: Vec<(WantKey, Option<Target>)> = (0..ROUTES / 2).map(|i| (learned(i), Some(via(&[A, B])))).collect();
        for chunk in half.chunks(256) {
            fib.set(chunk.to_vec()).await;
        }
        let mut both = 0;
        for _ in 0..1000 {
            both = learned_lines(&ns).iter().filter(|l| l.contains(B)).count();
            if both == (ROUTES / 2) as usize {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(both, (ROUTES / 2) as usize, "the routes that gained B have it");
        let done = barrier(&ns, &fib, 2).await;
        assert_eq!(done.programmed, away.programmed + u64::from(ROUTES / 2) + 1, "{done:?}");
        assert_eq!(done.regrouped, 0, "{done:?}");
        for (i, line) in learned_lines(&ns).iter().enumerate() {
            let prefix = learned(i as u32).prefix.ip().to_string();
            assert!(line.starts_with(&format!("{prefix} ")), "sorted as the test expects: {line}");
            let gained = (i as u32) < ROUTES / 2;
            assert_eq!(line.contains(B), gained, "{line}");
            assert_eq!(nhid(line) == Some(group), !gained, "{line}");
        }
    });
}

#[test]
fn a_restarted_agent_adopts_its_objects_and_makes_no_second_set() {
    let ns = namespace();
    let first = ns.name().to_string();
    inside(&ns, async move || {
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
        set_all(&fib, Some(via(&[A, B]))).await;
        wait_programmed(&fib, ROUTES.into()).await;
        assert_eq!(objects(&first).len(), 3);
    });
    let second = ns.name().to_string();
    inside(&ns, async move || {
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
        set_all(&fib, Some(via(&[A, B]))).await;
        let stats = barrier(&second, &fib, 1).await;
        assert_eq!(stats.programmed, 1, "the routes found were the ones wanted: {stats:?}");
        fib.synced().await;
        barrier(&second, &fib, 2).await;
        assert_eq!(objects(&second).len(), 3, "no second set of objects, and none deleted: {:#?}", objects(&second));
        // Everything unwanted now: the routes go, and the resync after them takes the objects.
        set_all(&fib, None).await;
        barrier(&second, &fib, 3).await;
        fib.synced().await;
        barrier(&second, &fib, 4).await;
        assert!(learned_lines(&second).is_empty());
        assert!(objects(&second).is_empty(), "objects no route uses are deleted: {:#?}", objects(&second));
    });
}

#[test]
fn without_objects_routes_carry_their_gateways() {
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let options = FibOptions { kernel_nexthops: false, ..FibOptions::default() };
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), options);
        set_all(&fib, Some(via(&[A, B]))).await;
        wait_programmed(&fib, ROUTES.into()).await;
        assert!(objects(&name).is_empty());
        let lines = learned_lines(&name);
        assert_eq!(lines.len(), ROUTES as usize);
        assert!(lines.iter().all(|l| nhid(l).is_none() && l.contains(A) && l.contains(B)), "{:?}", &lines[..3]);
        // The hint changes nothing here: the routes change one by one as the changes arrive.
        fib.gateways_gone(vec![gateway(B)]).await;
        set_all(&fib, Some(via(&[A]))).await;
        let stats = barrier(&name, &fib, 1).await;
        assert_eq!(stats.programmed, 2 * u64::from(ROUTES) + 1, "{stats:?}");
        assert!(learned_lines(&name).iter().all(|l| !l.contains(B)));
    });
}

#[test]
fn a_burst_of_more_routes_than_one_slice_is_installed_whole() {
    // One command with more routes than the FIB plans at once (a table arriving): planned and
    // written in slices, every route ends in the kernel, and every one is counted once.
    const BURST: u32 = 40_000;
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
        // Among them, three the kernel refuses (no such device): only the last request of a
        // buffer asks for an acknowledgement, so these failures are the only answers to the
        // others, and must still be found, and every route around them installed.
        let refused = |n: u32| WantKey { prefix: format!("198.18.5.{n}/32").parse().unwrap(), class: Class::Endpoint };
        let mut burst: Vec<(WantKey, Option<Target>)> = (0..BURST).map(|i| (learned(i), Some(via(&[A])))).collect();
        for n in 1..=3 {
            burst.insert((n * BURST / 4) as usize, (refused(n), Some(Target::Device(999_999))));
        }
        fib.set(burst).await;
        let stats = barrier(&name, &fib, 1).await;
        assert_eq!(stats.programmed, u64::from(BURST) + 1, "{stats:?}");
        assert_eq!(stats.wanted, u64::from(BURST) + 4);
        assert_eq!(stats.not_installed, 3, "{stats:?}");
        let mut problems: Vec<String> = stats.problems.iter().map(|p| p.prefix.clone()).collect();
        problems.sort();
        assert_eq!(problems, ["198.18.5.1/32", "198.18.5.2/32", "198.18.5.3/32"], "{stats:?}");
        assert_eq!(learned_lines(&name).len(), BURST as usize);
        fib.set((0..BURST).map(|i| (learned(i), None)).collect()).await;
        let stats = barrier(&name, &fib, 2).await;
        assert_eq!(stats.removed, u64::from(BURST), "{stats:?}");
        assert_eq!(stats.not_installed, 3, "still refused, and still reported");
        assert!(learned_lines(&name).is_empty());
    });
}

#[test]
fn a_route_set_again_while_its_slice_is_written_ends_as_set_last() {
    // A burst is planned slice by slice, each while the one before is still being written.
    // Routes of the slice in the kernel's hands set again in the same burst must wait for its
    // results: planned against the kernel as it was, they would be added a second time (the
    // kernel refuses that) instead of replaced.
    const BURST: u32 = 40_000;
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
        let mut burst: Vec<(WantKey, Option<Target>)> = (0..BURST).map(|i| (learned(i), Some(via(&[A])))).collect();
        let again = SLICE + 100..SLICE + 1100;
        burst.extend(again.clone().map(|i| (learned(i), Some(via(&[B])))));
        fib.set(burst).await;
        let stats = barrier(&name, &fib, 1).await;
        assert_eq!(stats.not_installed, 0, "{stats:?}");
        let lines = learned_lines(&name);
        assert_eq!(lines.len(), BURST as usize);
        let via_b: Vec<&String> = lines.iter().filter(|l| l.contains(B)).collect();
        assert_eq!(via_b.len(), again.len(), "{via_b:#?}");
        let first = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + again.start);
        assert!(via_b.iter().any(|l| l.starts_with(&format!("{first} "))), "{first} goes via {B}");
    });
}

#[test]
fn a_route_set_again_by_the_next_batch_while_its_slice_is_written_ends_as_set_last() {
    // A batch's last slice stays in the kernel's hands while the next batch is planned (a table
    // arrives in hundreds of batches). Routes of that slice set again by the next batch must
    // wait for its results, as within one burst. When the FIB takes the second batch depends on
    // timing: each round waits a little longer before sending it.
    const BATCH: u32 = 20_000;
    let ns = namespace();
    let name = ns.name().to_string();
    inside(&ns, async move || {
        let fib = fib::spawn(gingham_agent::netlink::connect().unwrap(), FibOptions::default());
        let again = SLICE + 100..SLICE + 1100;
        for (round, pause) in [0, 1, 3, 10].into_iter().enumerate() {
            fib.set((0..BATCH).map(|i| (learned(i), Some(via(&[A])))).collect()).await;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            fib.set(again.clone().map(|i| (learned(i), Some(via(&[B])))).collect()).await;
            let stats = barrier(&name, &fib, round as u8 + 1).await;
            assert_eq!(stats.not_installed, 0, "round {round}: {stats:?}");
            let lines = learned_lines(&name);
            assert_eq!(lines.len(), BATCH as usize, "round {round}");
            let via_b = lines.iter().filter(|l| l.contains(B)).count();
            assert_eq!(via_b, again.len(), "round {round}");
        }
    });
}

/// The FIB reads the kernel on a netlink socket of its own, decoding the dump as it arrives
/// (rtnetlink's handle queues a whole dump and keeps the queue's size). It finds what the handle
/// finds: our routes of every form, both families, other protocols' routes, the node's
/// addresses, and nothing of other tables; and a dump of thousands spans many reads.
#[test]
fn the_fib_reads_the_kernel_as_the_rtnetlink_handle_does() {
    let ns = namespace();
    let n = ns.name().to_string();
    ip(&n, &["-6", "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad"]);
    ip(&n, &["nexthop", "add", "id", "7", "via", A, "dev", "v0", "proto", "80"]);
    let ours: [&[&str]; 6] = [
        &["route", "add", "198.19.1.0/24", "via", A, "proto", "80", "metric", "1024"],
        &["route", "add", "198.19.2.0/24", "proto", "80", "nexthop", "via", A, "nexthop", "via", B],
        &["route", "add", "blackhole", "198.19.3.0/26", "proto", "80"],
        &["route", "add", "198.19.4.0/24", "dev", "v0", "scope", "link", "proto", "80"],
        &["route", "add", "198.19.5.0/24", "nhid", "7", "proto", "80"],
        &["-6", "route", "add", "2001:db8:1::/48", "via", "2001:db8::2", "proto", "80"],
    ];
    for args in ours {
        ip(&n, args);
    }
    ip(&n, &["route", "add", "198.19.6.0/24", "via", A]);
    ip(&n, &["route", "add", "198.19.7.0/24", "via", A, "proto", "80", "table", "100"]);
    let many = 3000;
    let batch: String = (0..many).map(|i| format!("route add 198.20.{}.{}/32 via {A} proto 80\n", i / 256, i % 256)).collect();
    let mut child = std::process::Command::new("ip").args(["-n", &n, "-batch", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch");

    let (dumped, handled) = inside(&ns, async move || {
        let handle = gingham_agent::netlink::connect().unwrap();
        (fib::kernel::read_table(&handle).await.unwrap(), fib::kernel::read_through_handle(&handle).await.unwrap())
    });
    let described = |t: &fib::plan::KernelTable| {
        let mut ours: Vec<String> = t.routes.our_routes().map(|(k, _)| format!("{:?}", t.our_route(&k).unwrap())).collect();
        ours.sort();
        let foreign: Vec<String> = t.foreign.values().map(|r| format!("{r:?}")).collect();
        (ours, foreign, t.local_addresses.clone())
    };
    let (ours, foreign, addresses) = described(&dumped);
    let theirs = described(&handled);
    assert!((&ours, &foreign, &addresses) == (&theirs.0, &theirs.1, &theirs.2), "the two reads differ");
    assert_eq!(ours.len(), 6 + many, "ours: every form, and all of the many: {:#?}", &ours[..6.min(ours.len())]);
    for (prefix, shape) in [
        ("198.19.1.0, prefix: 24", "metric: 1024"),
        ("198.19.2.0, prefix: 24", "198.18.1.3"),
        ("198.19.3.0, prefix: 26", "Blackhole"),
        ("198.19.4.0, prefix: 24", "oif: Some("),
        ("198.19.5.0, prefix: 24", "nh_id: Some(7)"),
        ("2001:db8:1::, prefix: 48", "2001:db8::2"),
    ] {
        assert!(ours.iter().any(|r| r.contains(prefix) && r.contains(shape)), "{prefix} with {shape} in {:#?}", &ours[..6]);
    }
    assert!(foreign.iter().any(|r| r.contains("198.19.6.0, prefix: 24")), "another protocol's route: {foreign:#?}");
    assert!(!ours.iter().chain(&foreign).any(|r| r.contains("198.19.7.0")), "nothing from table 100");
    assert!(addresses.contains(&"198.18.1.1".parse::<IpAddr>().unwrap()) && addresses.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()));
}
