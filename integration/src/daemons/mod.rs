//! Real BGP and BFD daemons (BIRD 2, FRR bgpd and bfdd, GoBGP) run inside test namespaces, with the queries
//! tests use to see what they learned.

pub mod bfdd;
pub mod bird;
pub mod frr;
pub mod gobgp;

pub use bfdd::Bfdd;
pub use bird::Bird;
pub use frr::Frr;
pub use gobgp::GoBgp;
