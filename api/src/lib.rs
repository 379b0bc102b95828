//! Gingham's resource model (issue "Resources, datastore and block IPAM"). So far: the label
//! selector language that BGPPeer `nodeSelector` / `peerSelector` and IPPool `nodeSelector`
//! use, in Calico's syntax.
#![deny(rustdoc::broken_intra_doc_links)]

pub mod selector;
