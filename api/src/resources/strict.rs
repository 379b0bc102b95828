//! Strict decoding: a field the kind does not have is refused with its path, as calicoctl does
//! and as `kubectl apply --validate=strict` does against a CRD. serde would drop it silently,
//! so a misspelt `peerIp` would apply cleanly and do something else.
//!
//! The check walks the object against the kind's own CRD schema (generated from the same
//! types): where the schema lists `properties` and allows no others, every key must be one of
//! them. Maps (`additionalProperties`), `x-kubernetes-preserve-unknown-fields` and
//! `anyOf`/`oneOf` alternatives are not second-guessed.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::ValidationError;

fn schemas() -> &'static HashMap<String, Value> {
    static SCHEMAS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        super::crds()
            .into_iter()
            .filter_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                let schema = serde_json::to_value(crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()?;
                Some((kind, schema))
            })
            .collect()
    })
}

/// The first field of `value` that its kind does not have, as a validation error.
pub fn refuse_unknown_fields(kind: &str, value: &Value) -> Result<(), ValidationError> {
    match unknown_fields(kind, value).into_iter().next() {
        Some(path) => Err(unknown(&path)),
        None => Ok(()),
    }
}

/// Every field of `value` its kind does not have, as paths (`spec.exportV4[0].interface`).
pub fn unknown_fields(kind: &str, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let (Some(schema), Some(object)) = (schemas().get(kind), value.as_object()) else { return found };
    for (key, v) in object {
        match key.as_str() {
            // The envelope every object has; metadata is Kubernetes' ObjectMeta.
            "apiVersion" | "kind" | "metadata" => {}
            _ => match schema.pointer(&format!("/properties/{}", escape(key))) {
                Some(sub) => walk(v, sub, key, &mut found),
                None => found.push(key.clone()),
            },
        }
    }
    found
}

fn walk(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || schema.get("anyOf").is_some()
        || schema.get("oneOf").is_some()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, v) in map {
                    let here = format!("{path}.{key}");
                    match props.get(key) {
                        Some(sub) => walk(v, sub, &here, found),
                        None if schema.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false)) => {}
                        None => found.push(here),
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (key, v) in map {
                    walk(v, sub, &format!("{path}.{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, sub, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn unknown(path: &str) -> ValidationError {
    ValidationError::new(path, "unknown field: this kind has no such field (misspelt?)")
}

/// JSON pointer escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::super::validate_value;
    use serde_json::json;

    #[test]
    fn misspelt_and_invented_fields_are_refused_with_their_path() {
        let ok = json!({"apiVersion": "gingham.io/v1", "kind": "BGPPeer", "metadata": {"name": "tor", "labels": {"a": "b"}},
                        "spec": {"peerIP": "198.18.0.1", "asNumber": 65001, "password": {"secretKeyRef": {"name": "s", "key": "k"}},
                                 "maxPrefixes": {"limit": 10}}});
        assert!(validate_value(&ok).is_ok(), "{:?}", validate_value(&ok));
        let mut typo = ok.clone();
        typo["spec"]["peerIp"] = json!("198.18.0.2");
        let e = validate_value(&typo).unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.contains("unknown field")), ("spec.peerIp", true), "{e:?}");
        let mut nested = ok.clone();
        nested["spec"]["password"]["secretKeyRef"]["keyName"] = json!("x");
        assert_eq!(validate_value(&nested).unwrap_err().field, "spec.password.secretKeyRef.keyName");
        let mut top = ok.clone();
        top["spce"] = json!({});
        assert_eq!(validate_value(&top).unwrap_err().field, "spce");
        let mut in_list = json!({"apiVersion": "gingham.io/v1", "kind": "BGPFilter", "metadata": {"name": "f"},
                                 "spec": {"exportV4": [{"action": "Accept", "cidr": "198.19.0.0/16", "matchOperator": "In"}]}});
        assert!(validate_value(&in_list).is_ok(), "{:?}", validate_value(&in_list));
        in_list["spec"]["exportV4"][0]["interfaces"] = json!("eth0");
        assert_eq!(validate_value(&in_list).unwrap_err().field, "spec.exportV4[0].interfaces");
    }

    #[test]
    fn maps_keep_their_free_keys() {
        let block = json!({"apiVersion": "gingham.io/v1", "kind": "IPAMHandle", "metadata": {"name": "h"},
                           "spec": {"handleID": "h", "block": {"198.19.0.0/26": 1}}});
        assert!(validate_value(&block).is_ok(), "{:?}", validate_value(&block));
    }
}
