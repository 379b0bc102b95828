//! Node address detection inside a namespace of the test's own: `autodetect` for both families
//! (the default route's interface; never a link-local IPv6 address), `kubernetes-internal-ip`
//! (the Node's InternalIP, with the prefix of the interface that holds it), and refusals that
//! say what is missing. Needs root.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use gingham_agent::autodetect::{detect, host_addresses};
use gingham_integration::netns::Netns;
use ipnetwork::IpNetwork;

#[test]
fn addresses_are_detected_per_family_and_from_the_node_object() {
    let ns = Netns::new("gad").unwrap();
    for (dev, v4, v6) in [("eth0", "198.18.0.5/24", "2001:db8:18::5/64"), ("eth1", "198.18.1.5/24", "2001:db8:19::5/64")] {
        // veth pairs (the dummy module may be missing); the peer ends carry no address.
        ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &format!("{dev}p")]).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
        ns.ip(&["link", "set", &format!("{dev}p"), "up"]).unwrap();
        ns.ip(&["addr", "add", v4, "dev", dev]).unwrap();
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]).unwrap();
    }
    // The default routes point at eth1, so autodetect must pick eth1 over the first interface.
    ns.ip(&["route", "add", "default", "via", "198.18.1.1", "dev", "eth1"]).unwrap();
    ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:19::1", "dev", "eth1"]).unwrap();
    let file = std::fs::File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = gingham_agent::netlink::connect().unwrap();
            let net = |s: &str| s.parse::<IpNetwork>().unwrap();
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            assert_eq!(detect(&h, "autodetect", &[], false, &[]).await.unwrap(), net("198.18.1.5/24"));
            assert_eq!(detect(&h, "autodetect", &[], true, &[]).await.unwrap(), net("2001:db8:19::5/64"), "global, not fe80::");
            let k8s = [ip("198.18.0.5"), ip("2001:db8:18::5")];
            assert_eq!(detect(&h, "kubernetes-internal-ip", &[], false, &k8s).await.unwrap(), net("198.18.0.5/24"));
            assert_eq!(detect(&h, "kubernetes-internal-ip", &[], true, &k8s).await.unwrap(), net("2001:db8:18::5/64"));
            let missing = detect(&h, "kubernetes-internal-ip", &[], true, &k8s[..1]).await.unwrap_err().to_string();
            assert!(missing.contains("no IPv6 InternalIP"), "{missing}");
            assert_eq!(detect(&h, "interface=eth0", &[], true, &[]).await.unwrap(), net("2001:db8:18::5/64"));
            let wrong = detect(&h, "198.18.0.5/24", &[], true, &[]).await.unwrap_err().to_string();
            assert!(wrong.contains("not an IPv6 address"), "{wrong}");
            // ignoredInterfaces: eth1 skipped, so autodetect falls back to the other one.
            assert_eq!(detect(&h, "autodetect", &["eth1".into()], false, &[]).await.unwrap(), net("198.18.0.5/24"));
            let all = host_addresses(&h).await.unwrap();
            assert_eq!(all.len(), 4, "{all:?}");
        });
    })
    .join()
    .unwrap();
}
