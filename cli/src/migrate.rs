//! `datastore migrate export|import` and `convert`: documents in and out as multi-document
//! YAML (the logic is in `gingham_api::datastore::migrate` and `convert`).

use std::process::ExitCode;

use gingham_api::datastore::migrate as m;
use gingham_api::datastore::{AnyDatastore, Store};
use serde_json::Value;

use crate::resources::read_documents;

pub fn to_yaml(docs: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(doc)?);
    }
    Ok(out)
}

pub async fn export(store: &Store<AnyDatastore>, include_secrets: bool) -> anyhow::Result<ExitCode> {
    let docs = m::export(store.backend(), &m::kinds(include_secrets)).await?;
    print!("{}", to_yaml(&docs)?);
    eprintln!("exported {} objects", docs.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn import(store: &Store<AnyDatastore>, file: &str) -> anyhow::Result<ExitCode> {
    let docs = read_documents(file)?;
    let done = m::import(store.backend(), &docs, &m::kinds(true)).await.map_err(anyhow::Error::msg)?;
    println!("imported {} objects", done.created);
    Ok(ExitCode::SUCCESS)
}

pub fn convert(file: &str) -> anyhow::Result<ExitCode> {
    let converted = crate::convert::convert(&read_documents(file)?);
    print!("{}", to_yaml(&converted.objects)?);
    for note in &converted.notes {
        eprintln!("{note}");
    }
    eprintln!(
        "converted {} resources; {} could not be converted; {} skipped (no Gingham counterpart); {} notes",
        converted.objects.len(),
        converted.refused,
        converted.skipped,
        converted.notes.len()
    );
    Ok(if converted.refused == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
