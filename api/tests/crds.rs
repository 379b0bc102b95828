//! The CRDs in manifests/crds/ are generated from the resource types; this fails when a type
//! changed and the files were not regenerated (`GINGHAM_UPDATE_CRDS=1` rewrites them).

use std::path::PathBuf;

use gingham_api::resources::crd_files;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

#[test]
fn checked_in_crds_match_the_types() {
    let dir = crd_dir();
    let update = std::env::var_os("GINGHAM_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    let expected: Vec<String> = crd_files().iter().map(|(f, _)| f.clone()).collect();
    for (file, yaml) in crd_files() {
        let path = dir.join(&file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
            stale.push(file);
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml") && !expected.contains(f))
        .collect();
    extra.sort();
    assert!(stale.is_empty(), "stale CRDs {stale:?}: run GINGHAM_UPDATE_CRDS=1 cargo test -p gingham-api --test crds");
    assert!(extra.is_empty(), "CRD files for no kind: {extra:?}");
}

#[test]
fn checked_in_crds_parse_as_crds() {
    for (file, _) in crd_files() {
        let text = std::fs::read_to_string(crd_dir().join(&file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(crd.spec.group, "gingham.io");
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage);
        let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a structural schema");
        assert!(schema.properties.as_ref().is_some_and(|p| p.contains_key("spec")), "{file}: no spec in the schema");
    }
}
