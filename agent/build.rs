//! Builds the eBPF object (`agent-ebpf`) with aya-build and places it at `$OUT_DIR/agent-ebpf`,
//! where `agent/src/ebpf` embeds it.
//!
//! # Prerequisites (what `cargo xtask setup` must install; verified on Debian bookworm, kernel 6.18)
//!
//! ```sh
//! # 1. rust-src for the pre-installed nightly (2026-05-19, LLVM 22). Never `rustup update`.
//! rustup component add rust-src --toolchain nightly
//! #    offline fallback (only for that exact nightly, see ../shared/toolchain/README.md):
//! #    dest="$(rustc +nightly --print sysroot)/lib/rustlib"
//! #    tar -xJf ../shared/toolchain/rust-src-nightly-2026-05-19.tar.xz -C "$dest"
//! #    cp ../shared/toolchain/manifest-rust-src "$dest/"
//! #    grep -qx rust-src "$dest/components" || echo rust-src >> "$dest/components"
//! # 2. LLVM 22 development libraries + bpf-linker linked against them (about 3 min on 2 cores).
//! apt-get update && apt-get install -y llvm-22-dev
//! bpf-linker --version 2>/dev/null | grep -q ' 0.13.0' || \
//!   LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 --locked \
//!     --no-default-features --features llvm-22
//! # 3. Runtime only: bpffs (the agent also mounts it itself when missing).
//! mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
//! ```
//!
//! # Behaviour
//!
//! * Toolchain present: runs `rustup run nightly cargo build -p agent-ebpf --target
//!   bpfel-unknown-none -Z build-std=core --release` (through aya-build). A failure is a build error.
//! * Toolchain missing (no nightly, no rust-src, or no bpf-linker), or `IRON_AGENT_SKIP_EBPF=1`:
//!   emits a cargo warning and writes an empty placeholder object so the rest of the workspace
//!   still builds; `Interceptor` then fails at run time with "eBPF object not built ...".
//! * `IRON_AGENT_REQUIRE_EBPF=1` (CI): a missing toolchain is a build error instead.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

const OBJECT_NAME: &str = "agent-ebpf";
const HINT: &str = "install rust-src for nightly, llvm-22-dev and bpf-linker (cargo xtask setup); see agent/build.rs";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Cargo shows build-script stderr on failure.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=IRON_AGENT_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=IRON_AGENT_SKIP_EBPF");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let object = out_dir.join(OBJECT_NAME);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");
    let common_dir = manifest_dir.join("../agent-common");
    // agent-ebpf is not a (build-)dependency of this crate, so list its inputs explicitly.
    for dir in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let require = flag("IRON_AGENT_REQUIRE_EBPF");
    if flag("IRON_AGENT_SKIP_EBPF") {
        if require {
            return Err("IRON_AGENT_SKIP_EBPF=1 contradicts IRON_AGENT_REQUIRE_EBPF=1".into());
        }
        return placeholder(&object, "IRON_AGENT_SKIP_EBPF=1");
    }

    if let Err(missing) = toolchain_present() {
        if require {
            return Err(format!(
                "IRON_AGENT_REQUIRE_EBPF=1 but the eBPF toolchain is incomplete: {missing}; {HINT}"
            ));
        }
        return placeholder(&object, &missing);
    }

    let root = ebpf_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", ebpf_dir.display()))?;
    let root = root.to_str().ok_or("agent-ebpf path is not UTF-8")?;
    // aya-build runs `cargo build --package agent-ebpf` in the current directory. agent-ebpf is
    // excluded from this workspace (it only builds for the BPF target), so run it from the crate's
    // own directory, where it is its own workspace root (with its own Cargo.lock).
    env::set_current_dir(root).map_err(|e| format!("chdir {root}: {e}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("building the eBPF object failed: {e:#}"))?;
    let len = fs::metadata(&object)
        .map_err(|e| format!("{}: {e}", object.display()))?
        .len();
    if len == 0 {
        return Err(format!("aya-build produced an empty {}", object.display()));
    }
    Ok(())
}

fn flag(name: &str) -> bool {
    env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Writes the empty placeholder the userspace loader recognises as "not built".
fn placeholder(object: &Path, why: &str) -> Result<(), String> {
    // A path that never exists makes cargo rerun this script on every build, so installing the
    // toolchain later takes effect without a `cargo clean` (the check costs ~0.1 s).
    println!(
        "cargo:rerun-if-changed={}",
        object
            .with_file_name("ebpf-toolchain-missing-sentinel")
            .display()
    );
    println!(
        "cargo:warning=eBPF object not built ({why}); eBPF interception will fail at run time. To build it: {HINT}"
    );
    fs::write(object, b"").map_err(|e| format!("{}: {e}", object.display()))
}

/// Checks the three prerequisites aya-build needs; returns what is missing.
fn toolchain_present() -> Result<(), String> {
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("rustup not runnable ({e})"))?;
    if !sysroot.status.success() {
        return Err("no nightly toolchain".into());
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let core_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.is_file() {
        return Err("rust-src is not installed for nightly".into());
    }
    if let Some(linker) = find_in_path("bpf-linker") {
        // A rebuilt linker (e.g. for a new LLVM) must rebuild the object.
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !linker_ok {
        return Err("bpf-linker not found on PATH".into());
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
