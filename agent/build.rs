//! The agent's link options (`../build/link_order.rs` says why): packed relative relocations,
//! and in release builds the functions a running agent uses first in its code
//! (`code-order.txt`; `gingham-lab bench-node --only rss` shows what they save).
#[path = "../build/link_order.rs"]
mod link_order;

fn main() {
    link_order::pack_relocations();
    link_order::place_first_what_runs();
}
