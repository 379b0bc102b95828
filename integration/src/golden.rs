//! Captures golden BGP vectors from real daemons talking to each other (no Gingham code on
//! the wire): BIRD, FRR and GoBGP peer in namespaces while tshark records the fabric; the
//! TCP streams are reassembled and cut into messages, one fixture line each.
//!
//! ```text
//!   h1 BIRD  AS 65001  198.18.0.11 / 2001:db8:18::b
//!   h2 FRR   AS 65002  198.18.0.12 / 2001:db8:18::c
//!   h3 GoBGP AS 65001  198.18.0.13
//!   BIRD-FRR eBGP over IPv4 (ipv4) and IPv6 (ipv6); BIRD-GoBGP iBGP; FRR-GoBGP eBGP.
//! ```
//! Fixture line: `from=<daemon> to=<daemon> ebgp=<0|1> hex=<message>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemons::{Bird, Frr, GoBgp};
use crate::netns::{run, wait_for, Daemon, Fabric};

const BIRD: &str = r#"
router id 198.18.0.11;
protocol device {}
protocol direct { ipv4; ipv6; }
protocol static s4 { ipv4; route 198.19.10.0/24 unreachable { bgp_community.add((65001,100)); bgp_large_community.add((65001,1,2)); bgp_med = 50; }; }
protocol static s6 { ipv6; route 2001:db8:10::/48 unreachable { bgp_community.add((65001,600)); }; }
protocol bgp frr4 { local 198.18.0.11 as 65001; neighbor 198.18.0.12 as 65002; ipv4 { import all; export where source = RTS_STATIC; }; }
protocol bgp frr6 { local 2001:db8:18::b as 65001; neighbor 2001:db8:18::c as 65002; ipv6 { import all; export where source = RTS_STATIC; }; }
protocol bgp gobgp { local 198.18.0.11 as 65001; neighbor 198.18.0.13 as 65001; ipv4 { import all; export where source = RTS_STATIC; }; }
"#;

const FRR: &str = r#"
route-map TAG permit 10
 set community 65002:200
 set large-community 65002:3:4
 set metric 20
router bgp 65002
 bgp router-id 198.18.0.12
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 198.18.0.11 remote-as 65001
 neighbor 2001:db8:18::b remote-as 65001
 neighbor 198.18.0.13 remote-as 65001
 address-family ipv4 unicast
  network 198.19.20.0/24 route-map TAG
  neighbor 198.18.0.11 activate
  neighbor 198.18.0.13 activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:20::/48 route-map TAG
  neighbor 2001:db8:18::b activate
 exit-address-family
"#;

const GOBGP: &str = r#"
[global.config]
  as = 65001
  router-id = "198.18.0.13"
  local-address-list = ["198.18.0.13"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.11"
    peer-as = 65001
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.12"
    peer-as = 65002
"#;

fn daemon_of(addr: &str) -> &'static str {
    match addr {
        "198.18.0.11" | "2001:db8:18::b" => "bird",
        "198.18.0.12" | "2001:db8:18::c" => "frr",
        "198.18.0.13" => "gobgp",
        _ => "unknown",
    }
}

/// Runs the capture and writes `out` (a fixture file).
pub fn capture(out: &Path) -> Result<()> {
    let fabric = Fabric::new(3)?;
    let pcap = std::env::temp_dir().join(format!("gingham-golden-{}.pcap", crate::netns::unique_suffix()));
    let child = fabric
        .bridge
        .command("tshark")
        .args(["-q", "-i", "br0", "-f", "tcp port 179", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tshark")?;
    let mut tshark = Daemon::new("tshark", child.id() as i32, None);
    wait_for("tshark capturing", Duration::from_secs(15), || pcap.exists().then_some(()))?;
    std::thread::sleep(Duration::from_secs(1));

    let bird = Bird::start(&fabric.hosts[0].ns, BIRD)?;
    let frr = Frr::start(&fabric.hosts[1].ns, FRR)?;
    let gobgp = GoBgp::start(&fabric.hosts[2].ns, GOBGP)?;
    gobgp.cli(&["global", "rib", "add", "-a", "ipv4", "198.19.30.0/24", "community", "65001:300", "med", "10", "local-pref", "200"])?;
    let all_up = || bird.established("frr4") && bird.established("frr6") && bird.established("gobgp") && frr.established("198.18.0.13");
    wait_for("sessions up", Duration::from_secs(60), || all_up().then_some(()))?;
    std::thread::sleep(Duration::from_secs(3));
    // ROUTE-REFRESH from FRR and GoBGP, a withdrawal, then a Cease with a shutdown message.
    frr.vtysh("clear bgp ipv4 unicast 198.18.0.11 soft in")?;
    gobgp.cli(&["neighbor", "198.18.0.11", "softresetin"])?;
    gobgp.cli(&["global", "rib", "del", "-a", "ipv4", "198.19.30.0/24"])?;
    std::thread::sleep(Duration::from_secs(2));
    bird.cmd("disable frr4 \"maintenance window\"")?;
    std::thread::sleep(Duration::from_secs(2));
    tshark.stop();

    let fields = run(std::process::Command::new("tshark").arg("-r").arg(&pcap).args([
        "-Y",
        "tcp.len > 0",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.payload",
    ]))?;
    let _removed = std::fs::remove_file(&pcap);
    let mut streams: BTreeMap<(String, String, String, String), Vec<u8>> = BTreeMap::new();
    let mut order = Vec::new();
    for line in String::from_utf8_lossy(&fields.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 {
            continue;
        }
        let src = if f[0].is_empty() { f[1] } else { f[0] };
        let dst = if f[2].is_empty() { f[3] } else { f[2] };
        let key = (src.to_owned(), f[4].to_owned(), dst.to_owned(), f[5].to_owned());
        let bytes = hex_decode(f[6].replace(':', "").trim())?;
        if !streams.contains_key(&key) {
            order.push(key.clone());
        }
        streams.entry(key).or_default().extend(bytes);
    }
    let mut text = String::from(
        "# Golden BGP messages captured by `gingham-lab capture-golden` (tshark on the fabric bridge)\n\
         # from sessions between BIRD 2.0.12, FRR 8.4.4 and GoBGP 3.10.0 on Debian 12; no Gingham code\n\
         # produced these bytes. BIRD AS 65001 198.18.0.11, FRR AS 65002 198.18.0.12, GoBGP AS 65001\n\
         # 198.18.0.13. Includes OPENs, UPDATEs (communities, large communities, MED, LOCAL_PREF,\n\
         # MP_REACH/MP_UNREACH for IPv6, End-of-RIB), KEEPALIVEs, ROUTE-REFRESH and a Cease with an\n\
         # RFC 9003 shutdown communication.\n",
    );
    for key in order {
        let data = &streams[&key];
        let (from, to) = (daemon_of(&key.0), daemon_of(&key.2));
        let ebgp = u8::from(!(from == "bird" && to == "gobgp" || from == "gobgp" && to == "bird"));
        let mut pos = 0;
        while pos + 19 <= data.len() {
            let len = usize::from(u16::from_be_bytes([data[pos + 16], data[pos + 17]]));
            if len < 19 || pos + len > data.len() {
                break;
            }
            let hex: String = data[pos..pos + len].iter().map(|b| format!("{b:02x}")).collect();
            writeln!(text, "from={from} to={to} ebgp={ebgp} hex={hex}")?;
            pos += len;
        }
    }
    std::fs::write(out, text)?;
    drop((bird, frr, gobgp));
    Ok(())
}

pub fn hex_decode(s: &str) -> Result<Vec<u8>> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("bad hex")).collect()
}
