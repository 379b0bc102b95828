//! gingham-lab carries its relative relocations packed (DT_RELR; glibc 2.36 and later), as the
//! agent does: its `speaker` is the device of `bench-rr`, measured against BIRD's memory.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
