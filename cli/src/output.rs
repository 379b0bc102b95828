//! Rendering objects as tables (per-kind columns, `wide` adds more), YAML or JSON.

use gingham_api::resources::KindInfo;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Yaml,
    Json,
}

/// (header, JSON pointer, shown only in wide).
fn columns(kind: &str) -> Vec<(&'static str, &'static str, bool)> {
    let mut cols = vec![("NAME", "/metadata/name", false)];
    cols.extend(match kind {
        // Never the values in a table: only YAML and JSON show a Secret's data.
        "Secret" => vec![("NAMESPACE", "/metadata/namespace", false), ("TYPE", "/type", false)],
        "Service" => vec![
            ("NAMESPACE", "/metadata/namespace", false),
            ("TYPE", "/spec/type", false),
            ("CLUSTERIP", "/spec/clusterIP", false),
            ("LOADBALANCERIP", "/status/loadBalancer/ingress/0/ip", false),
            ("EXTERNALTRAFFICPOLICY", "/spec/externalTrafficPolicy", false),
            ("INTERNALTRAFFICPOLICY", "/spec/internalTrafficPolicy", true),
        ],
        "EndpointSlice" => vec![
            ("NAMESPACE", "/metadata/namespace", false),
            ("SERVICE", "/metadata/labels/kubernetes.io~1service-name", false),
            ("ADDRESSTYPE", "/addressType", false),
        ],
        "IPPool" => vec![
            ("CIDR", "/spec/cidr", false),
            ("BLOCKSIZE", "/spec/blockSize", false),
            ("SELECTOR", "/spec/nodeSelector", false),
            ("ALLOWEDUSES", "/spec/allowedUses", true),
            ("DISABLED", "/spec/disabled", true),
            ("STRICTAFFINITY", "/spec/strictAffinity", true),
        ],
        "BGPConfiguration" => vec![
            ("ASN", "/spec/asNumber", false),
            ("MESH", "/spec/nodeToNodeMeshEnabled", false),
            ("LISTENPORT", "/spec/listenPort", true),
            ("LOGSEVERITY", "/spec/logSeverityScreen", true),
        ],
        "BGPPeer" => vec![
            ("PEERIP", "/spec/peerIP", false),
            ("NODE", "/spec/node", false),
            ("ASN", "/spec/asNumber", false),
            ("NODESELECTOR", "/spec/nodeSelector", true),
            ("PEERSELECTOR", "/spec/peerSelector", true),
        ],
        "BGPFilter" => vec![
            ("EXPORTV4", "/spec/exportV4", false),
            ("IMPORTV4", "/spec/importV4", false),
            ("EXPORTV6", "/spec/exportV6", true),
            ("IMPORTV6", "/spec/importV6", true),
        ],
        "GinghamNode" => vec![
            ("ASN", "/spec/bgp/asNumber", false),
            ("IPV4", "/spec/bgp/ipv4Address", false),
            ("IPV6", "/spec/bgp/ipv6Address", true),
            ("RRCLUSTERID", "/spec/bgp/routeReflectorClusterID", true),
        ],
        "IPAMBlock" => vec![("CIDR", "/spec/cidr", false), ("AFFINITY", "/spec/affinity", false)],
        "BlockAffinity" => vec![("NODE", "/spec/node", false), ("CIDR", "/spec/cidr", false), ("STATE", "/spec/state", false)],
        "IPAMHandle" => vec![("HANDLE", "/spec/handleID", false)],
        "IPReservation" => vec![("CIDRS", "/spec/reservedCIDRs", false)],
        "IPAMConfiguration" => {
            vec![("STRICTAFFINITY", "/spec/strictAffinity", false), ("MAXBLOCKSPERHOST", "/spec/maxBlocksPerHost", true)]
        }
        _ => vec![],
    });
    cols
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().map(|x| cell(Some(x))).collect::<Vec<_>>().join(","),
        Some(rule @ Value::Object(o)) if o.contains_key("action") => filter_rule(rule),
        Some(other) => other.to_string(),
    }
}

/// A BGPFilter rule on one line: `Accept In 77.0.0.0/16{24,32} RemotePeers`.
fn filter_rule(rule: &Value) -> String {
    let text = |p: &str| rule.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut parts = vec![text("/action"), text("/matchOperator")];
    let lengths = rule.get("prefixLength").map(|l| {
        let n = |k: &str| l.get(k).map(|v| v.to_string()).unwrap_or_default();
        format!("{{{},{}}}", n("min"), n("max"))
    });
    parts.push(format!("{}{}", text("/cidr"), lengths.unwrap_or_default()));
    parts.push(text("/source"));
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

/// Left-aligned columns separated by three spaces, calicoctl's look.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s: String = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("   ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

pub fn render(kind: KindInfo, objects: &[Value], format: Format, single: bool) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table | Format::Wide => {
            let cols: Vec<_> = columns(kind.kind).into_iter().filter(|(_, _, wide)| format == Format::Wide || !wide).collect();
            let headers: Vec<String> = cols.iter().map(|(h, _, _)| h.to_string()).collect();
            let rows: Vec<Vec<String>> = objects.iter().map(|o| cols.iter().map(|(_, p, _)| cell(o.pointer(p))).collect()).collect();
            table(&headers, &rows)
        }
        Format::Json if single => format!("{}\n", serde_json::to_string_pretty(&objects[0])?),
        Format::Yaml if single => serde_yaml_ng::to_string(&objects[0])?,
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&list(objects))?),
        Format::Yaml => serde_yaml_ng::to_string(&list(objects))?,
    })
}

fn list(objects: &[Value]) -> Value {
    serde_json::json!({"apiVersion": "gingham.io/v1", "kind": "List", "items": objects})
}
