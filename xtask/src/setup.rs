//! `cargo xtask setup`: install what the build and the tests need on a fresh machine (Debian
//! bookworm family), following shared/design/ebpf-recipe.md. `test` and `run` call it first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, cargo, run_streamed, succeeds};

/// One thing the build or tests need. `check` must be cheap and side-effect free; `install` runs
/// only when `check` fails, and `check` is repeated afterwards so a broken install fails loudly.
struct Prereq {
    name: &'static str,
    /// Shown before installing, so the user knows why the command is downloading things.
    why: &'static str,
    check: fn() -> bool,
    install: fn() -> Result<()>,
}

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const RUST_SRC_TARBALL: &str = "toolchain/rust-src-nightly-2026-05-19.tar.xz";

/// Effective uid 0 (owner of /proc/self), without unsafe code.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn prerequisites() -> Vec<Prereq> {
    vec![
        Prereq {
            name: "cargo",
            why: "builds everything",
            check: || succeeds(cargo().arg("--version")),
            install: || bail!("cargo not found: install Rust with rustup (https://rustup.rs)"),
        },
        Prereq {
            name: "rustfmt",
            why: "`cargo fmt --check` is part of the test command",
            check: || succeeds(cargo().args(["fmt", "--version"])),
            install: || run_streamed(Command::new("rustup").args(["component", "add", "rustfmt"])),
        },
        Prereq {
            name: "clippy",
            why: "clippy with -D warnings is part of the test command",
            check: || succeeds(cargo().args(["clippy", "--version"])),
            install: || run_streamed(Command::new("rustup").args(["component", "add", "clippy"])),
        },
        Prereq {
            name: "nightly toolchain",
            why: "the eBPF programs are built with -Z build-std",
            check: || {
                succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
            },
            install: || {
                bail!(
                    "the `nightly` toolchain (2026-05-19, LLVM 22) is missing; it must be pre-installed \
                     (never `rustup update`): see shared/design/ebpf-recipe.md"
                )
            },
        },
        Prereq {
            name: "rust-src (nightly)",
            why: "-Z build-std=core compiles core for the BPF target",
            check: || nightly_rust_src().is_some_and(|p| p.join("library/core").is_dir()),
            install: install_rust_src,
        },
        Prereq {
            name: "llvm-22-dev",
            why: "bpf-linker links against LLVM 22, the nightly toolchain's LLVM",
            check: || Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file(),
            install: || apt_install(&["llvm-22-dev"]),
        },
        Prereq {
            name: "bpf-linker 0.13.0",
            why: "links the eBPF object",
            check: bpf_linker_ok,
            install: || {
                run_streamed(
                    cargo()
                        .env("LLVM_PREFIX", LLVM_PREFIX)
                        .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
                        .args(["--locked", "--no-default-features", "--features", "llvm-22"]),
                )
            },
        },
        Prereq {
            name: "cargo-fuzz",
            why: "`cargo xtask fuzz` (and `cargo xtask test --fuzz`) builds the fuzz targets",
            check: || succeeds(cargo().args(["fuzz", "--version"])),
            install: || run_streamed(cargo().args(["install", "cargo-fuzz", "--locked"])),
        },
        Prereq {
            name: "bpffs at /sys/fs/bpf",
            why: "the agent pins its programs there (only mounted when running as root)",
            check: || !is_root() || bpffs_mounted(),
            install: || {
                run_streamed(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
            },
        },
        Prereq {
            name: "curl",
            why: "the jail and install tests run curl inside the jail",
            check: || on_path("curl"),
            install: || apt_install(&["curl"]),
        },
        Prereq {
            name: "ip (iproute2)",
            why: "network tests inspect and set up addresses",
            check: || on_path("ip"),
            install: || apt_install(&["iproute2"]),
        },
        Prereq {
            name: "python3",
            why: "runs moto, the local AWS endpoint for the secret-source tests",
            check: || on_path("python3"),
            install: || apt_install(&["python3", "python3-pip"]),
        },
        Prereq {
            name: "moto[server]",
            why: "local AWS Secrets Manager/SSM endpoint for the secret-source tests",
            check: || succeeds(Command::new("python3").args(["-c", "import moto.server"])),
            install: || pip_install("moto[server]"),
        },
        Prereq {
            name: "grpcio",
            why: "a real gRPC server and client for the gRPC-through-the-agent test",
            check: || succeeds(Command::new("python3").args(["-c", "import grpc"])),
            install: || pip_install("grpcio"),
        },
        Prereq {
            name: "libclang (libclang-dev)",
            why: "the pg_query crate (PostgreSQL's SQL parser) generates its bindings with bindgen",
            check: libclang_present,
            install: || apt_install(&["libclang-dev"]),
        },
        Prereq {
            name: "psycopg",
            why: "a Python PostgreSQL driver logs in through the PostgreSQL proxy in the tests",
            check: || succeeds(Command::new("python3").args(["-c", "import psycopg"])),
            install: || pip_install("psycopg[binary]"),
        },
        Prereq {
            name: "grpcio for /usr/bin/python3",
            why: "the root-only eBPF gRPC test runs the client as a test user with the system python",
            check: || {
                !is_root() || succeeds(Command::new("/usr/bin/python3").args(["-c", "import grpc"]))
            },
            install: || {
                run_streamed(Command::new("/usr/bin/python3").args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--break-system-packages",
                    "grpcio",
                ]))
            },
        },
        Prereq {
            name: "valgrind",
            why: "`cargo xtask bench` counts instructions (callgrind) and allocations (DHAT) per audit record",
            check: || on_path("valgrind"),
            install: || apt_install(&["valgrind"]),
        },
        Prereq {
            name: "postgresql (server, psql, pgbench)",
            why: "iron-control's PostgreSQL tests, the PostgreSQL proxy tests and the benches start throwaway clusters",
            check: postgres_ok,
            install: install_postgres,
        },
    ]
}

/// Debian's server binaries (in /usr/lib/postgresql/<major>/bin) and, as root, the
/// `postgres` user the tests run clusters as.
fn postgres_ok() -> bool {
    let has_bins = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|d| {
        d.filter_map(Result::ok).any(|e| {
            let bin = e.path().join("bin");
            ["postgres", "initdb", "pg_ctl", "psql", "pgbench"]
                .iter()
                .all(|b| bin.join(b).is_file())
        })
    });
    has_bins && (!is_root() || succeeds(Command::new("id").arg("postgres")))
}

/// Installs Debian's `postgresql` without its default cluster: the tests start their own, so
/// nothing is left running on port 5432.
fn install_postgres() -> Result<()> {
    if is_root() {
        let dir = Path::new("/etc/postgresql-common/createcluster.d");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(
            dir.join("iron-agent.conf"),
            "# iron-agent tests start their own clusters\ncreate_main_cluster = false\n",
        )
        .context("disabling the default PostgreSQL cluster")?;
    }
    apt_install(&["postgresql"])
}

pub fn ensure_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    for p in prerequisites() {
        if (p.check)() {
            continue;
        }
        eprintln!(
            "==> prerequisite `{}` is missing ({}); installing it",
            p.name, p.why
        );
        let res = (p.install)().and_then(|()| {
            if (p.check)() {
                Ok(())
            } else {
                bail!("still missing after installing it")
            }
        });
        if let Err(e) = res {
            eprintln!("==> prerequisite `{}`: {e:#}", p.name);
            missing.push(p.name);
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing prerequisites: {} (see the messages above)",
            missing.join(", ")
        );
    }
    eprintln!("==> prerequisites ok");
    Ok(())
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
        })
    })
}

/// `<nightly sysroot>/lib/rustlib/src/rust`, where rust-src lives.
fn nightly_rust_src() -> Option<PathBuf> {
    Some(nightly_rustlib()?.join("src/rust"))
}

fn nightly_rustlib() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib/rustlib"))
}

/// The shared directory CI places beside the clone (`<repo>/../shared`).
fn shared_dir() -> Result<PathBuf> {
    let root = cmd::workspace_root()?;
    Ok(root.parent().unwrap_or(&root).join("shared"))
}

fn install_rust_src() -> Result<()> {
    let online = run_streamed(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]));
    let Err(online_err) = online else {
        return Ok(());
    };
    eprintln!("==> {online_err:#}; falling back to the copy in shared/toolchain");
    let tarball = shared_dir()?.join(RUST_SRC_TARBALL);
    if !tarball.is_file() {
        bail!(
            "rust-src for nightly: `rustup component add` failed and {} does not exist",
            tarball.display()
        );
    }
    let verbose = Command::new("rustup")
        .args(["run", "nightly", "rustc", "-vV"])
        .output()
        .context("running rustc +nightly -vV")?;
    let verbose = String::from_utf8_lossy(&verbose.stdout);
    if !verbose.contains("LLVM version: 22") || !verbose.contains("2026-05-19") {
        bail!(
            "the shared rust-src copy matches only nightly 2026-05-19 (LLVM 22); this nightly is:\n{verbose}"
        );
    }
    let dest = nightly_rustlib().context("locating the nightly sysroot")?;
    run_streamed(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dest),
    )?;
    let manifest = tarball.with_file_name("manifest-rust-src");
    std::fs::copy(&manifest, dest.join("manifest-rust-src"))
        .with_context(|| format!("copying {}", manifest.display()))?;
    let components = dest.join("components");
    let text = std::fs::read_to_string(&components).unwrap_or_default();
    if !text.lines().any(|l| l == "rust-src") {
        std::fs::write(&components, format!("{text}rust-src\n"))
            .with_context(|| format!("updating {}", components.display()))?;
    }
    Ok(())
}

fn libclang_present() -> bool {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ];
    let in_dir = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("libclang") && n.contains(".so") && !n.starts_with("libclang-cpp")
            })
        })
    };
    dirs.iter().map(Path::new).any(in_dir)
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "needs root to install Debian packages; run `sudo apt-get install -y {}` or rerun as root",
            packages.join(" ")
        );
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run_streamed(Command::new("apt-get").arg("update"))?;
    }
    run_streamed(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(packages),
    )
}

fn pip_install(package: &str) -> Result<()> {
    let pip = |extra: &[&str]| {
        run_streamed(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg(package),
        )
    };
    // Debian's python refuses pip installs into the system environment (PEP 668) unless told to.
    pip(&[]).or_else(|_| pip(&["--break-system-packages"]))
}
