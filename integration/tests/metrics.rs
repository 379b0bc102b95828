//! The agents' `/metrics` as Prometheus and Grafana use it, on a live 2-node lab: per-peer
//! state, uptime, prefixes, UPDATEs and NOTIFICATIONs by code, FIB operations and CNI latency;
//! `promtool check metrics` finds nothing to complain about; and every query of the Grafana
//! dashboard in `manifests/grafana/` names a metric the agent exports. Needs root; promtool
//! comes from scripts/setup.sh.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use gingham_api::resources::GinghamNode;
use gingham_integration::lab::{Cluster, LabOptions};
use gingham_integration::netns::wait_for;

/// The value of the one sample whose line starts with `prefix` (name and labels as written).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

/// Every sample name the exposition holds, and every family name its TYPE lines declare.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().unwrap_or_default().to_string());
        } else if !line.starts_with('#') {
            names.insert(line.split(['{', ' ']).next().unwrap_or_default().to_string());
        }
    }
    names
}

/// The metric names a PromQL expression uses: identifiers starting `gingham_`.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("gingham_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn promtool() -> &'static str {
    for p in ["promtool", "/usr/local/bin/promtool"] {
        if Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return p;
        }
    }
    panic!("promtool is not installed: scripts/setup.sh extracts it from Debian's prometheus package");
}

#[test]
fn per_peer_metrics_pass_promtool_and_back_every_dashboard_query() {
    let mut lab = Cluster::new(LabOptions::new(2)).unwrap();
    // BFD on the mesh, so its series are linted and backed too.
    lab.modify::<gingham_api::resources::BGPConfiguration>("default", |c| c.spec.node_to_node_mesh_bfd = Some(Default::default())).unwrap();
    lab.add_pod(0, "a").unwrap();
    lab.add_pod(1, "b").unwrap();
    lab.wait_established(Duration::from_secs(60)).unwrap();
    // A configuration change resets the session with a Cease NOTIFICATION (RFC 4486).
    lab.modify::<GinghamNode>("node-2", |n| n.spec.bgp.as_mut().unwrap().as_number = Some(64620)).unwrap();
    let peer = lab.nodes[1].address.to_string();
    let established = format!("gingham_bgp_peer_state{{peer=\"{peer}\",peer_type=\"mesh\",state=\"Established\"}}");
    let mut last = String::new();
    let metrics = wait_for("the session back and its prefix received", Duration::from_secs(60), || {
        let m = lab.http_get(0, "/metrics").ok()?;
        last = m.clone();
        let back = sample(&m, &established) == Some(1.0)
            && sample(&m, &format!("gingham_bgp_peer_prefixes_received{{peer=\"{peer}\"")).is_some_and(|v| v >= 1.0)
            && m.contains("gingham_bgp_peer_notifications_total{")
            && sample(&m, &format!("gingham_bfd_session_state{{peer=\"{peer}\",state=\"Up\"}}")) == Some(1.0);
        back.then_some(m)
    })
    .unwrap_or_else(|e| panic!("{e}; node-1's metrics:\n{last}"));
    let other = lab.http_get(1, "/metrics").unwrap();

    // One series per state, exactly one of them 1.
    let states: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("gingham_bgp_peer_state{{peer=\"{peer}\"")))
        .map(|l| sample(l, "").unwrap())
        .collect();
    assert_eq!((states.len(), states.iter().sum::<f64>()), (6, 1.0), "{metrics}");
    assert!(sample(&metrics, &format!("gingham_bgp_peer_uptime_seconds{{peer=\"{peer}\"")).is_some());
    assert!(sample(&metrics, &format!("gingham_bgp_peer_prefixes_advertised{{peer=\"{peer}\"")).is_some_and(|v| v >= 1.0), "{metrics}");
    assert!(sample(&metrics, &format!("gingham_bgp_peer_updates_received_total{{peer=\"{peer}\"")).is_some_and(|v| v >= 1.0), "{metrics}");
    let ceases: Vec<&str> = metrics
        .lines()
        .chain(other.lines())
        .filter(|l| l.starts_with("gingham_bgp_peer_notifications_total{") && l.contains("code=\"6\""))
        .collect();
    assert!(!ceases.is_empty(), "no Cease counted on either side:\n{metrics}\n{other}");
    assert!(ceases.iter().all(|l| l.contains("direction=\"sent\"") || l.contains("direction=\"received\"")));
    let bfd_states = metrics.lines().filter(|l| l.starts_with(&format!("gingham_bfd_session_state{{peer=\"{peer}\""))).count();
    assert_eq!(bfd_states, 4, "one series per BFD state: {metrics}");
    let received = format!("gingham_bfd_control_packets_total{{peer=\"{peer}\",direction=\"received\"}}");
    assert!(sample(&metrics, &received).is_some_and(|v| v >= 1.0), "{metrics}");
    assert!(sample(&metrics, &format!("gingham_bfd_session_downs_total{{peer=\"{peer}\"}}")).is_some(), "{metrics}");
    assert!(sample(&metrics, "gingham_fib_route_operations_total{operation=\"install\"}").is_some_and(|v| v >= 1.0), "{metrics}");
    assert!(sample(&metrics, "gingham_cni_request_seconds_count{command=\"ADD\",result=\"ok\"}") == Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "gingham_ipam_addresses_in_use "), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "gingham_ipam_assign_seconds_count "), Some(1.0), "the one ADD's assignment: {metrics}");

    // promtool's lint: names, units, suffixes, help. It prints one line per problem.
    for m in [&metrics, &other] {
        let mut child = Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    }

    let exported = exported_names(&metrics);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/grafana/gingham-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = names_in(expr);
            assert!(!names.is_empty(), "panel {:?}: no gingham metric in {expr}", panel["title"]);
            for name in names {
                let family = ["_total", "_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                assert!(
                    exported.contains(&name) || exported.contains(family),
                    "panel {:?} queries {name}, which the agent does not export",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "the dashboard queries {queried} metrics");
}
