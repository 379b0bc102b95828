//! Gingham's resource model, shared by agent, CLI and manifests: the kinds of API group
//! `gingham.io/v1` with their validation ([`resources`]), Calico-syntax label selectors
//! ([`selector`]) and the datastore that stores them with compare-and-swap revisions
//! ([`datastore`]).
#![deny(rustdoc::broken_intra_doc_links)]

pub mod cache;
pub mod datastore;
pub mod resources;
pub mod selector;
pub mod status;
