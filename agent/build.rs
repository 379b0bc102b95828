//! The agent's binary carries its relative relocations packed (DT_RELR; glibc 2.36 and later,
//! which the image has): the loader reads a few kilobytes of them at start instead of 450 KB
//! that then stayed mapped for the agent's life (`gingham-lab bench-node --only rss`).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
