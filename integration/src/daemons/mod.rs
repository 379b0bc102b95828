//! Real BGP daemons (BIRD 2, FRR bgpd, GoBGP) run inside test namespaces, with the queries
//! tests use to see what they learned.

pub mod bird;
pub mod frr;
pub mod gobgp;

pub use bird::Bird;
pub use frr::Frr;
pub use gobgp::GoBgp;
