//! `convert -f calico.yaml`: Calico `projectcalico.org/v3` (or `crd.projectcalico.org/v1`)
//! resources to `gingham.io/v1`. Gingham's kinds took Calico's field names, so most fields carry
//! over as they are; what does not is dropped and reported with the reason, never silently.
//! Every converted object passes the same validation as `apply`.

use serde_json::Value;

use gingham_api::resources::{unknown_fields, validate_value, API_VERSION};

const CALICO_VERSIONS: &[&str] = &["projectcalico.org/v3", "crd.projectcalico.org/v1"];

/// Calico kinds Gingham has, and the Gingham kind each becomes.
const KINDS: &[(&str, &str)] = &[
    ("IPPool", "IPPool"),
    ("BGPConfiguration", "BGPConfiguration"),
    ("BGPPeer", "BGPPeer"),
    ("BGPFilter", "BGPFilter"),
    ("Node", "GinghamNode"),
    ("IPReservation", "IPReservation"),
    ("IPAMConfiguration", "IPAMConfiguration"),
];

/// Fields whose absence in Gingham has a reason worth more than "no such field".
const REASONS: &[(&str, &str, &str)] = &[
    ("IPPool", "spec.vxlanMode", "Gingham never encapsulates: pods are routed natively, so the fabric must carry the pool's routes"),
    ("IPPool", "spec.ipipMode", "Gingham never encapsulates: pods are routed natively, so the fabric must carry the pool's routes"),
    ("IPPool", "spec.disableBGPExport", "Gingham always advertises a pool's blocks; keep them from peers with a BGPFilter export rule"),
    ("IPPool", "spec.assignmentMode", "Gingham assigns from every enabled pool automatically (Calico's Automatic)"),
    ("IPPool", "spec.ipip", "the old IPIP settings: Gingham never encapsulates"),
    ("BGPConfiguration", "spec.nodeMeshPassword", "the node mesh has no password in Gingham"),
    ("BGPConfiguration", "spec.nodeMeshMaxRestartTime", "the mesh's restart time is the agent's --restart-time flag"),
    ("BGPConfiguration", "spec.localWorkloadPeeringIPV4", "peering with workloads is not supported"),
    ("BGPConfiguration", "spec.localWorkloadPeeringIPV6", "peering with workloads is not supported"),
    ("BGPPeer", "spec.localWorkloadSelector", "peering with workloads is not supported"),
    ("BGPPeer", "spec.reversePeering", "Gingham peers from the selected nodes only"),
    ("GinghamNode", "spec.ipv4VXLANTunnelAddr", "Gingham never encapsulates"),
    ("GinghamNode", "spec.ipv6VXLANTunnelAddr", "Gingham never encapsulates"),
    ("GinghamNode", "spec.vxlanTunnelMACAddr", "Gingham never encapsulates"),
    ("GinghamNode", "spec.vxlanTunnelMACAddrV6", "Gingham never encapsulates"),
    ("GinghamNode", "spec.bgp.ipv4IPIPTunnelAddr", "Gingham never encapsulates"),
    ("GinghamNode", "spec.wireguard", "Gingham does not encrypt pod traffic"),
    ("GinghamNode", "spec.addresses", "the agent detects the node's addresses itself (--ip, --ip6)"),
    ("GinghamNode", "spec.interfaceName", "not used by Gingham"),
    ("GinghamNode", "status", "written by the agent (GinghamNodeStatus)"),
];

#[derive(Debug, Default)]
pub struct Converted {
    pub objects: Vec<Value>,
    /// `Kind name: field: why`, one per thing that did not carry over.
    pub notes: Vec<String>,
    /// Documents of a kind Gingham has that could not be converted.
    pub refused: usize,
    /// Documents that are not Calico's or of a kind Gingham has no counterpart of.
    pub skipped: usize,
}

fn describe(kind: &str, doc: &Value) -> String {
    format!("{kind} {:?}", doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(no name)"))
}

/// Removes the field at a path as `unknown_fields` writes it (`spec.a[2].b`).
fn remove_path(value: &mut Value, path: &str) -> Option<Value> {
    let mut steps: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            steps.push(rest[..i].to_string());
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                steps.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else {
            steps.push(rest.to_string());
        }
    }
    let (last, parents) = steps.split_last()?;
    let mut here = value;
    for step in parents {
        here = match step.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => here.get_mut(i.parse::<usize>().ok()?)?,
            None => here.get_mut(step.as_str())?,
        };
    }
    here.as_object_mut()?.remove(last)
}

/// Kind-specific changes before the generic field check: values Gingham does not have inside
/// fields it does.
fn adapt(kind: &str, doc: &mut Value, note: &mut dyn FnMut(String, String)) -> Result<(), String> {
    match kind {
        "IPPool" => {
            for mode in ["ipipMode", "vxlanMode"] {
                if let Some(v) = doc.pointer(&format!("/spec/{mode}")).and_then(Value::as_str).map(String::from) {
                    remove_path(doc, &format!("spec.{mode}"));
                    if v != "Never" {
                        note(format!("spec.{mode}"), format!("{v:?} dropped: Gingham never encapsulates; pods are routed natively, so the fabric must carry the pool's routes"));
                    }
                }
            }
            if doc.pointer("/spec/assignmentMode").and_then(Value::as_str) == Some("Automatic") {
                remove_path(doc, "spec.assignmentMode");
            }
            if let Some(uses) = doc.pointer_mut("/spec/allowedUses").and_then(Value::as_array_mut) {
                let before = uses.clone();
                uses.retain(|u| matches!(u.as_str(), Some("Workload" | "Tunnel" | "LoadBalancer")));
                for gone in before.iter().filter(|u| !uses.contains(u)) {
                    note("spec.allowedUses".into(), format!("{gone} dropped: Gingham pools serve Workload, Tunnel and LoadBalancer only"));
                }
                if uses.is_empty() {
                    return Err("spec.allowedUses: nothing Gingham can use is left".into());
                }
            }
        }
        "BGPFilter" => {
            for list in ["exportV4", "importV4", "exportV6", "importV6"] {
                if let Some(rules) = doc.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) {
                    let mut i = 0;
                    rules.retain(|r| {
                        i += 1;
                        let keep = r.get("interface").is_none();
                        if !keep {
                            note(
                                format!("spec.{list}[{}]", i - 1),
                                "rule dropped: interface matches are not supported by Gingham (without its interface the rule would match more)".into(),
                            );
                        }
                        keep
                    });
                }
            }
        }
        "GinghamNode" => {
            let status = doc.as_object_mut().and_then(|o| o.remove("status"));
            if status.is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty())) {
                note("status".into(), "dropped: written by the agent (GinghamNodeStatus)".into());
            }
        }
        _ => {}
    }
    Ok(())
}

pub fn convert(docs: &[Value]) -> Converted {
    let mut out = Converted::default();
    for doc in docs {
        let calico_kind = doc.get("kind").and_then(Value::as_str).unwrap_or("(no kind)");
        let version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if !CALICO_VERSIONS.contains(&version) {
            out.notes.push(format!("{}: skipped: apiVersion {version:?} is not Calico's", describe(calico_kind, doc)));
            out.skipped += 1;
            continue;
        }
        let Some(&(_, kind)) = KINDS.iter().find(|(c, _)| *c == calico_kind) else {
            out.notes.push(format!("{}: skipped: Gingham has no counterpart of this kind", describe(calico_kind, doc)));
            out.skipped += 1;
            continue;
        };
        let mut obj = doc.clone();
        obj["apiVersion"] = Value::String(API_VERSION.into());
        obj["kind"] = Value::String(kind.into());
        // Annotations kubectl and Calico keep for themselves describe the old object.
        if let Some(a) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| !k.starts_with("kubectl.kubernetes.io/") && !k.starts_with("projectcalico.org/"));
        }
        // A converted object starts without what its old datastore assigned.
        let mut obj = gingham_api::datastore::migrate::strip_assigned(obj);
        let who = describe(kind, &obj);
        let mut notes = Vec::new();
        let adapted = adapt(kind, &mut obj, &mut |field, why| notes.push(format!("{who}: {field}: {why}")));
        out.notes.append(&mut notes);
        if let Err(e) = adapted {
            out.notes.push(format!("{who}: not converted: {e}"));
            out.refused += 1;
            continue;
        }
        for path in unknown_fields(kind, &obj) {
            let value = remove_path(&mut obj, &path);
            let why = REASONS.iter().find(|(k, p, _)| *k == kind && *p == path).map_or("Gingham has no such field", |r| r.2);
            let shown = value.map(|v| v.to_string()).unwrap_or_default();
            out.notes.push(format!("{who}: {path}: dropped ({shown}): {why}"));
        }
        match validate_value(&obj) {
            Ok(()) => out.objects.push(obj),
            Err(e) => {
                out.notes.push(format!("{who}: not converted: {}: {}", e.field, e.reason));
                out.refused += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_with_indices_are_removed() {
        let mut v = json!({"spec": {"a": [{"b": 1, "c": 2}], "d": 3}});
        assert_eq!(remove_path(&mut v, "spec.a[0].b"), Some(json!(1)));
        assert_eq!(remove_path(&mut v, "spec.d"), Some(json!(3)));
        assert_eq!(v, json!({"spec": {"a": [{"c": 2}]}}));
        assert_eq!(remove_path(&mut v, "spec.x[3].y"), None);
    }

    #[test]
    fn an_interface_rule_is_dropped_whole_never_widened() {
        let filter = json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter", "metadata": {"name": "f"},
            "spec": {"exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": "198.19.0.0/16", "interface": "eth0"},
                                  {"action": "Accept", "matchOperator": "In", "cidr": "198.18.0.0/16"}]}});
        let c = convert(&[filter]);
        assert_eq!(c.objects.len(), 1);
        assert_eq!(c.objects[0]["spec"]["exportV4"].as_array().unwrap().len(), 1);
        assert_eq!(c.objects[0]["spec"]["exportV4"][0]["action"], "Accept");
        assert!(c.notes[0].contains("spec.exportV4[0]") && c.notes[0].contains("interface"), "{:?}", c.notes);
    }
}
