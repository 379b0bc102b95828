//! gingham-lab is linked as the agent is (`../build/link_order.rs`), with its own
//! `code-order.txt`: its `speaker` is the device of `bench-rr`, measured against BIRD's memory.
#[path = "../build/link_order.rs"]
mod link_order;

fn main() {
    link_order::pack_relocations();
    link_order::place_first_what_runs();
}
