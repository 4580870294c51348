//! Errors of the eBPF interception layer.

use std::{io, path::PathBuf};

/// Why loading, attaching, adopting or operating the interception programs failed.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The binary was built without the eBPF toolchain (agent/build.rs wrote a placeholder).
    #[error(
        "eBPF object not built: install rust-src for nightly, llvm-22-dev and bpf-linker (cargo xtask setup)"
    )]
    ObjectNotBuilt,

    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup2 mount found in /proc/self/mountinfo (mount one, e.g. at /sys/fs/cgroup)")]
    NoCgroup2,

    /// The pin directory is not on a BPF filesystem and one could not be mounted.
    #[error("{path} is not on a bpffs mount: {reason}")]
    Bpffs { path: PathBuf, reason: String },

    /// Parsing or relocating the eBPF object failed.
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),

    /// A program or map expected by this version of the agent is missing from the object.
    #[error("eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },

    /// The kernel verifier rejected a program; `log` is the verifier output.
    #[error("the verifier rejected program {program}: {source}\nverifier log:\n{log}")]
    Verifier {
        program: &'static str,
        log: String,
        #[source]
        source: io::Error,
    },

    /// Loading or attaching a program failed for another reason.
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    /// Pinning a map or link failed.
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },

    /// Opening a pinned link failed.
    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },

    /// `adopt()` found no (or an incomplete) installation under the pin directory.
    #[error("interception is not installed: {path} is missing")]
    NotInstalled { path: PathBuf },

    /// The interception config is invalid.
    #[error("invalid interception config: {0}")]
    Config(String),

    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl InterceptError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str, source: aya::maps::MapError) -> Self {
        Self::Map {
            map,
            source: Box::new(source),
        }
    }

    /// Splits out the verifier log so it is shown in full.
    pub(crate) fn program(program: &'static str, source: aya::programs::ProgramError) -> Self {
        match source {
            aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Self::Verifier {
                program,
                log: verifier_log.to_string(),
                source: io_error,
            },
            other => Self::Program {
                program,
                source: Box::new(other),
            },
        }
    }
}
