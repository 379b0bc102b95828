//! Link options shared by the build scripts of the binaries that stay up (the agent, and
//! gingham-lab whose `speaker` is the device of `bench-rr`).
//!
//! Relative relocations packed (DT_RELR; glibc 2.36 and later, which the image has): the loader
//! reads a few kilobytes of them at start instead of 450 KB that then stayed mapped for the
//! process's life.
//!
//! In release builds linked by LLD, the functions listed in the crate's
//! `code-order.txt` (`scripts/code-order.sh` writes it from what a running process executed)
//! are placed first in its code. The code a running process touches is then a few contiguous
//! megabytes instead of pages spread over all of it, and the kernel maps each touched page
//! with its neighbours: that code is most of an idle agent's resident memory.
use std::path::Path;
use std::process::Command;

pub fn pack_relocations() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}

pub fn place_first_what_runs() {
    println!("cargo:rerun-if-changed=code-order.txt");
    let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("code-order.txt");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release && order.is_file() && links_with_lld() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names from an older build (another rustc, other dependencies) are simply not placed.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links this target with its own LLD: x86_64 Linux (GNU) from rustc 1.90. GNU ld
/// does not know the ordering option (and would fail the link).
fn links_with_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else { return false };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)).and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
