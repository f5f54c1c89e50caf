//! Lays out the `strait` executable so an idle sidecar keeps few of its pages resident.
//!
//! Every proxy on a machine maps the same executable, and the kernel maps its code in 64 KiB
//! windows around each page the proxy touches. In the default layout the functions a proxy runs
//! are spread over the whole 16 MB of code (the binary is also the control plane, the CA and the
//! CLI), so an idle sidecar had 13.6 MiB of it resident. `link/proxy-symbol-order.txt` lists the
//! functions a sidecar ran while it started, took its configuration and certificate and idled,
//! then those a sidecar ran only to take a large mesh's configuration, then those it ran serving
//! HTTP/1.1, HTTP/2, TCP and the admin API (each part hottest first;
//! `scripts/symbol-order` regenerates it with valgrind); the linker (LLD, Rust's default on
//! x86-64 Linux) places them first, in that order. Names it no longer finds after code changes are
//! skipped: the layout degrades, the build does not break. (The release profile's single codegen
//! unit per crate keeps the names stable: with several, LLVM renames the functions it shares
//! between units with a hash of their unit's code, so most edits renamed hundreds of them.)
//!
//! Relative relocations are packed (`-z pack-relative-relocs`, glibc 2.36 or later): the
//! position-independent executable's 30 000 pointer fix-ups take 9 KB instead of a 745 KB table
//! the loader reads, and keeps resident, in every process.
//!
//! Release builds for x86-64 Linux only; `STRAIT_NO_SYMBOL_ORDER=1` turns both off (for a linker
//! other than LLD, or an older C library).

#![allow(clippy::print_stdout)] // Cargo reads a build script's instructions from its standard output.

fn main() {
    println!("cargo:rerun-if-changed=link/proxy-symbol-order.txt");
    println!("cargo:rerun-if-env-changed=STRAIT_NO_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let off = std::env::var_os("STRAIT_NO_SYMBOL_ORDER").is_some_and(|v| v != "0");
    if !release || target != "x86_64-unknown-linux-gnu" || off {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = std::path::Path::new(&dir).join("link/proxy-symbol-order.txt");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
