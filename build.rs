//! Asks the linker to place first the functions a running gateway touches
//! (`layout/hot-symbols.txt`, made by `bench/layout.sh`): the kernel maps a binary's code
//! 64 KiB at a time, so code spread over the whole binary costs idle RSS
//! (`bench/results/footprint.md`). Only for the release binary, on x86_64 Linux with the
//! toolchain's own linker (rust-lld, the default since Rust 1.90), and not with
//! `KAIROS_LAYOUT=off`. A name the list has and the build has not is ignored. Also sets
//! `cfg(full)` when every default feature is on.

use std::path::Path;
use std::process::Command;

fn main() {
    // `cfg(full)`: every feature of the default build is on (the tests of what a smaller
    // build leaves out are compiled only then).
    println!("cargo::rustc-check-cfg=cfg(full)");
    let on = |f: &str| std::env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    if ["TLS_LISTENER", "TLS_BACKEND", "ADMIN", "JWT_ASYMMETRIC"]
        .iter()
        .all(|f| on(f))
    {
        println!("cargo::rustc-cfg=full");
    }
    println!("cargo::rerun-if-changed=layout/hot-symbols.txt");
    println!("cargo::rerun-if-env-changed=KAIROS_LAYOUT");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("layout/hot-symbols.txt");
    let wanted = env("PROFILE") == "release"
        && env("KAIROS_LAYOUT") != "off"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("linker")
        && list.is_file()
        && rust_lld_is_default(&env("RUSTC"));
    if wanted {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether `rustc` is 1.90 or later (x86_64 Linux links with rust-lld by default since then).
fn rust_lld_is_default(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
