//! get / apply / create / delete / patch on any kind, through the untyped datastore API.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use gingham_api::datastore::{AnyDatastore, Datastore, DatastoreError, Store};
use gingham_api::resources::{find_kind, validate_value, KindInfo};
use serde::Deserialize;
use serde_json::Value;

use crate::output::{render, Format};

pub const RETRIES: usize = 10;

pub fn kind_of(name: &str) -> anyhow::Result<KindInfo> {
    find_kind(name).with_context(|| {
        let known: Vec<&str> = gingham_api::resources::cli_kinds().map(|k| k.plural).collect();
        format!("unknown resource kind {name:?} (known: {})", known.join(", "))
    })
}

pub async fn get(store: &Store<AnyDatastore>, kind: &str, name: Option<&str>, format: Format) -> anyhow::Result<ExitCode> {
    let kind = kind_of(kind)?;
    let objects: Vec<Value> = match name {
        Some(n) => match store.backend().get(kind, n).await? {
            Some(o) => vec![o.value],
            None => bail!("{} {n:?} not found", kind.kind),
        },
        None => store.backend().list(kind).await?.items.into_iter().map(|o| o.value).collect(),
    };
    print!("{}", render(kind, &objects, format, name.is_some())?);
    Ok(ExitCode::SUCCESS)
}

/// Every document of a YAML stream or a JSON value (a List's items, an array's elements).
pub fn read_documents(path: &str) -> anyhow::Result<Vec<Value>> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {path}"))?
    };
    let mut docs = Vec::new();
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![serde_json::from_str(&text).context("the file is not valid JSON")?]
    } else {
        serde_yaml_ng::Deserializer::from_str(&text)
            .enumerate()
            .map(|(i, d)| Value::deserialize(d).with_context(|| format!("document {}: not valid YAML", i + 1)))
            .collect::<anyhow::Result<_>>()?
    };
    for v in values {
        match v {
            Value::Null => {}
            Value::Array(items) => docs.extend(items),
            Value::Object(ref o) if o.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                docs.extend(o.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default())
            }
            other => docs.push(other),
        }
    }
    Ok(docs)
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {:?}",
        doc.get("kind").and_then(|k| k.as_str()).unwrap_or("(no kind)"),
        doc.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or("(no name)")
    )
}

/// Checks every document before anything is written; the error lists each bad one.
fn validate_all(docs: &[Value]) -> Result<Vec<(KindInfo, String, Value)>, Vec<String>> {
    let mut errors = Vec::new();
    let mut ok = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        match validate_value(doc) {
            Err(e) => errors.push(format!("document {} ({}): {}: {}", i + 1, describe(doc), e.field, e.reason)),
            Ok(()) => {
                let kind = find_kind(doc["kind"].as_str().unwrap_or_default()).expect("validated kind");
                let name = kind.key_of(doc).unwrap_or_default();
                let mut doc = doc.clone();
                if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    meta.remove("resourceVersion");
                }
                ok.push((kind, name, doc));
            }
        }
    }
    match errors.is_empty() {
        true => Ok(ok),
        false => Err(errors),
    }
}

/// `validate -f`: every document checked as `apply` would, nothing written, no datastore.
pub fn validate(file: &str) -> anyhow::Result<ExitCode> {
    let docs = validate_all(&read_documents(file)?).map_err(|e| anyhow::anyhow!("{file} is not valid:\n  {}", e.join("\n  ")))?;
    if docs.is_empty() {
        bail!("{file} holds no resources");
    }
    for (kind, name, _) in &docs {
        println!("{} {name:?} is valid", kind.kind);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Create,
}

pub async fn apply(store: &Store<AnyDatastore>, file: &str, mode: Mode) -> anyhow::Result<ExitCode> {
    let docs =
        validate_all(&read_documents(file)?).map_err(|e| anyhow::anyhow!("nothing was applied; fix these first:\n  {}", e.join("\n  ")))?;
    if docs.is_empty() {
        bail!("{file} holds no resources");
    }
    let raw = store.backend();
    for (kind, name, doc) in docs {
        let mut done = None;
        for _ in 0..RETRIES {
            let result = match raw.get(kind, &name).await? {
                Some(_) if mode == Mode::Create => bail!("{} {name:?} already exists (use apply to update it)", kind.kind),
                Some(existing) => raw.update(kind, &name, doc.clone(), &existing.revision).await.map(|_| "configured"),
                None => raw.create(kind, &name, doc.clone()).await.map(|_| "created"),
            };
            match result {
                Ok(what) => {
                    done = Some(what);
                    break;
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let what = done.with_context(|| format!("{} {name:?}: still conflicting after {RETRIES} attempts", kind.kind))?;
        println!("{} {name:?} {what}", kind.kind);
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete_one(store: &Store<AnyDatastore>, kind: KindInfo, name: &str) -> anyhow::Result<()> {
    for _ in 0..RETRIES {
        let Some(obj) = store.backend().get(kind, name).await? else { bail!("{} {name:?} not found", kind.kind) };
        match store.backend().delete(kind, name, &obj.revision).await {
            Ok(()) => {
                println!("{} {name:?} deleted", kind.kind);
                if kind.kind == "GinghamNode" {
                    // The node is gone: give back its pods' addresses and its blocks, as
                    // gingham-controllers does when a Kubernetes Node is deleted.
                    let retired = gingham_ipam::Ipam::new(store.clone()).retire_node(name).await?;
                    store.delete_latest::<gingham_api::status::GinghamNodeStatus>(name).await?;
                    if !retired.handles.is_empty() {
                        println!("  released {} addresses of {} pods", retired.addresses.len(), retired.handles.len());
                    }
                    for b in &retired.blocks.released {
                        println!("  released block {b}");
                    }
                    for b in &retired.blocks.kept {
                        println!("  kept block {b}: addresses in it are still allocated (see `ginghamctl ipam check`)");
                    }
                }
                return Ok(());
            }
            Err(DatastoreError::NotFound { .. }) => bail!("{} {name:?} not found", kind.kind),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} {name:?}: still conflicting after {RETRIES} attempts", kind.kind)
}

pub async fn delete(store: &Store<AnyDatastore>, kind: Option<&str>, name: Option<&str>, file: Option<&str>) -> anyhow::Result<ExitCode> {
    match (kind, name, file) {
        (Some(kind), Some(name), None) => delete_one(store, kind_of(kind)?, name).await?,
        (None, None, Some(file)) => {
            for doc in read_documents(file)? {
                let kind = kind_of(doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default())?;
                let name = kind.key_of(&doc).with_context(|| format!("{}: no metadata.name (or namespace)", describe(&doc)))?;
                delete_one(store, kind, &name).await?;
            }
        }
        _ => bail!("use `delete KIND NAME` or `delete -f FILE`"),
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub async fn patch(store: &Store<AnyDatastore>, kind: &str, name: &str, patch: &str) -> anyhow::Result<ExitCode> {
    let kind = kind_of(kind)?;
    let patch: Value = serde_json::from_str(patch).context("the patch is not JSON")?;
    update_object(store, kind, name, |value| {
        merge_patch(value, &patch);
        if kind.key_of(value).as_deref() != Some(name) {
            bail!("a patch cannot rename {} {name:?}", kind.kind);
        }
        Ok(true)
    })
    .await?;
    println!("{} {name:?} patched", kind.kind);
    Ok(ExitCode::SUCCESS)
}

/// Reads an object, lets `change` edit its JSON (`Ok(false)`: nothing to do), validates the
/// result and writes it as a compare-and-swap on the revision read, from the top again when
/// another writer came first. Returns whether it wrote.
pub async fn update_object(
    store: &Store<AnyDatastore>,
    kind: KindInfo,
    name: &str,
    mut change: impl FnMut(&mut Value) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    for _ in 0..RETRIES {
        let Some(obj) = store.backend().get(kind, name).await? else { bail!("{} {name:?} not found", kind.kind) };
        let mut value = obj.value.clone();
        if !change(&mut value).with_context(|| format!("{} {name:?}", kind.kind))? {
            return Ok(false);
        }
        validate_value(&value).map_err(|e| anyhow::anyhow!("{} {name:?} would be invalid: {}: {}", kind.kind, e.field, e.reason))?;
        match store.backend().update(kind, name, value, &obj.revision).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} {name:?}: still conflicting after {RETRIES} attempts", kind.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut v, &serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(v, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }
}
