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
//! * A built object is kept in `target/<profile>/ebpf-object-cache/` under a digest of its inputs,
//!   so `cargo clippy` and `cargo build` (which run this script separately) build it once.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

#[path = "build/docs.rs"]
mod docs;
#[path = "build/proto.rs"]
mod proto;

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
    proto::generate(&manifest_dir)?;
    docs::generate(&manifest_dir, &out_dir)?;
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
    let cached = cache_entry(&out_dir, &[&ebpf_dir, &common_dir]);
    if let Some(hit) = cached.as_ref().filter(|p| p.is_file()) {
        // What aya-build would have asked for, so the reruns stay the same.
        println!("cargo:rerun-if-changed={root}");
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::copy(hit, &object).map_err(|e| format!("{}: {e}", hit.display()))?;
        return Ok(());
    }
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
    if let Some(entry) = cached {
        store(&object, &entry);
    }
    Ok(())
}

/// Every build-script run has its own `OUT_DIR`, and `cargo clippy` and `cargo build` run this
/// script separately, so a fresh checkout would build the object (and `core`, with
/// `-Z build-std`) twice. A copy is kept in `<target>/<profile>/ebpf-object-cache/<key>/`, the
/// key a digest of everything the object is made from: the sources and manifests of agent-ebpf
/// and agent-common, the workspace's Cargo.lock (aya-build's version), the nightly compiler, the
/// linker and the target. `None` when the key cannot be computed (then no cache).
fn cache_entry(out_dir: &Path, crates: &[&Path]) -> Option<PathBuf> {
    let mut key = Fnv::default();
    for dir in crates {
        let mut files = Vec::new();
        list_files(dir, &mut files);
        files.sort();
        for f in files {
            key.add(f.strip_prefix(dir).ok()?.to_string_lossy().as_bytes());
            key.add(&fs::read(&f).ok()?);
        }
    }
    key.add(&fs::read(crates[0].join("../Cargo.lock")).ok()?);
    for cmd in [
        &["rustup", "run", "nightly", "rustc", "-vV"][..],
        &["bpf-linker", "--version"],
    ] {
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .ok()?;
        key.add(&out.stdout);
    }
    let linker = fs::metadata(find_in_path("bpf-linker")?).ok()?;
    key.add(format!("{:?} {}", linker.modified().ok(), linker.len()).as_bytes());
    for var in [
        "CARGO_CFG_TARGET_ARCH",
        "CARGO_CFG_TARGET_ENDIAN",
        "RUSTC_BOOTSTRAP",
    ] {
        key.add(env::var(var).unwrap_or_default().as_bytes());
    }
    // OUT_DIR is <target>/<profile>/build/<package-hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .find(|a| a.ends_with("build"))?
        .parent()?;
    Some(
        profile_dir
            .join("ebpf-object-cache")
            .join(format!("{:016x}", key.0))
            .join(OBJECT_NAME),
    )
}

/// Best effort: a failure to cache only costs a rebuild next time.
fn store(object: &Path, entry: &Path) {
    let Some(dir) = entry.parent() else { return };
    let tmp = entry.with_extension("tmp");
    let stored = fs::create_dir_all(dir)
        .and_then(|()| fs::copy(object, &tmp))
        .and_then(|_| fs::rename(&tmp, entry));
    if let Err(e) = stored {
        println!(
            "cargo:warning=could not cache the eBPF object in {}: {e}",
            dir.display()
        );
    }
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        // The nested build's own output, if any, is not an input.
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if p.is_dir() {
            list_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// FNV-1a: a stable digest for the cache key (not for security).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&[0xff]) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
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
