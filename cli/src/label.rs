//! `label KIND NAME key=value [--overwrite]` and `label KIND NAME key --remove`, on any kind
//! (calicoctl's `label`). The change is a compare-and-swap on the object's current revision.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use gingham_api::datastore::{AnyDatastore, Store};
use serde_json::Value;

use crate::resources::{kind_of, update_object};

pub enum Change {
    Set { key: String, value: String, overwrite: bool },
    Remove { key: String },
}

impl Change {
    /// `key=value` sets; `key` with `--remove` removes.
    pub fn parse(arg: &str, remove: bool, overwrite: bool) -> anyhow::Result<Change> {
        match (arg.split_once('='), remove) {
            (Some(_), true) => bail!("--remove takes a label key, not {arg:?}"),
            (None, true) => Ok(Change::Remove { key: arg.to_string() }),
            (Some((k, v)), false) => Ok(Change::Set { key: k.to_string(), value: v.to_string(), overwrite }),
            (None, false) => bail!("{arg:?}: give key=value, or a key with --remove"),
        }
    }

    /// Applies the change to an object's labels; `Ok(false)` when there is nothing to do.
    fn apply(&self, object: &mut Value) -> anyhow::Result<bool> {
        let meta = object.get_mut("metadata").and_then(Value::as_object_mut).context("the object has no metadata")?;
        let labels = meta.entry("labels").or_insert_with(|| Value::Object(Default::default()));
        let labels = labels.as_object_mut().context("metadata.labels is not a map")?;
        match self {
            Change::Set { key, value, overwrite } => match labels.get(key).and_then(Value::as_str) {
                Some(old) if old == value => Ok(false),
                Some(old) if !overwrite => bail!("label {key:?} is already {old:?}; use --overwrite to change it"),
                _ => {
                    labels.insert(key.clone(), Value::String(value.clone()));
                    Ok(true)
                }
            },
            Change::Remove { key } => match labels.remove(key) {
                Some(_) => Ok(true),
                None => bail!("label {key:?} is not set"),
            },
        }
    }
}

pub async fn label(store: &Store<AnyDatastore>, kind: &str, name: &str, change: Change) -> anyhow::Result<ExitCode> {
    let kind = kind_of(kind)?;
    let wrote = update_object(store, kind, name, |value| change.apply(value)).await?;
    println!("{} {name:?} {}", kind.kind, if wrote { "labeled" } else { "unchanged" });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_refuses_to_change_without_overwrite_and_remove_needs_the_label() {
        let mut obj = serde_json::json!({"metadata": {"name": "n", "labels": {"rack": "a"}}});
        assert!(!Change::parse("rack=a", false, false).unwrap().apply(&mut obj).unwrap());
        let err = Change::parse("rack=b", false, false).unwrap().apply(&mut obj).unwrap_err();
        assert!(err.to_string().contains("--overwrite"), "{err}");
        assert!(Change::parse("rack=b", false, true).unwrap().apply(&mut obj).unwrap());
        assert_eq!(obj["metadata"]["labels"]["rack"], "b");
        assert!(Change::parse("rack", true, false).unwrap().apply(&mut obj).unwrap());
        assert!(Change::parse("rack", true, false).unwrap().apply(&mut obj).is_err());
        assert!(Change::parse("rack=b", true, false).is_err());
        assert!(Change::parse("rack", false, false).is_err());
        let mut bare = serde_json::json!({"metadata": {"name": "n"}});
        assert!(Change::parse("zone=1", false, false).unwrap().apply(&mut bare).unwrap());
        assert_eq!(bare["metadata"]["labels"]["zone"], "1");
    }
}
