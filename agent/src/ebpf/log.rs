//! Log lines from the eBPF programs (aya-log), forwarded to our log under the target
//! [`TARGET`]. Off unless `RUST_LOG` enables that target (e.g.
//! `RUST_LOG=iron_agent::ebpf=debug`): the level is frozen into the programs' read-only
//! `AYA_LOG_LEVEL` at load time, and at 0 the verifier drops the logging code, so it costs
//! nothing per call. Only programs this process loads log; adopted pinned programs keep the
//! level they were loaded with (and, without a reader, their records are discarded).

use std::os::fd::AsRawFd as _;

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing_subscriber::filter::{LevelFilter, Targets};

/// Log target of the programs' lines.
pub const TARGET: &str = "iron_agent::ebpf";
/// The global the programs read (aya-log's name for it).
pub const LEVEL_GLOBAL: &str = aya_log::LEVEL;

/// aya-log's level number (0 = off, 1 = error … 5 = trace) that `rust_log` enables for
/// [`TARGET`]. Without `RUST_LOG`, or when it does not mention us, logging is off.
pub fn level_from(rust_log: Option<&str>) -> u8 {
    let Some(targets) = rust_log.and_then(|s| s.parse::<Targets>().ok()) else {
        return 0;
    };
    // Only explicit directives count: a bare `RUST_LOG=debug` is about the userspace log.
    let mentioned = targets
        .iter()
        .any(|(t, _)| TARGET.starts_with(t) && !t.is_empty());
    if !mentioned {
        return 0;
    }
    [
        (LevelFilter::TRACE, 5),
        (LevelFilter::DEBUG, 4),
        (LevelFilter::INFO, 3),
        (LevelFilter::WARN, 2),
        (LevelFilter::ERROR, 1),
    ]
    .into_iter()
    .find(|(l, _)| {
        l.into_level()
            .is_some_and(|level| targets.would_enable(TARGET, &level))
    })
    .map_or(0, |(_, n)| n)
}

/// The level from the process environment.
pub fn level_from_env() -> u8 {
    level_from(std::env::var("RUST_LOG").ok().as_deref())
}

/// Forwards aya-log records to tracing.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, "{msg}"),
            log::Level::Warn => tracing::warn!(target: TARGET, "{msg}"),
            log::Level::Info => tracing::info!(target: TARGET, "{msg}"),
            log::Level::Debug => tracing::debug!(target: TARGET, "{msg}"),
            log::Level::Trace => tracing::trace!(target: TARGET, "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Starts reading the programs' log ring buffer on the current tokio runtime. Call after load,
/// before the loader is dropped (it takes the `AYA_LOGS` map). No-op outside a runtime.
pub fn spawn_reader(ebpf: &mut Ebpf) -> Result<(), String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("no tokio runtime to read eBPF logs on".into());
    }
    let logger = EbpfLogger::init_with_logger(ebpf, Forward).map_err(|e| e.to_string())?;
    let fd = logger.as_raw_fd();
    // SAFETY: the logger owns the ring buffer's map fd for its whole life and `as_raw_fd`
    // always returns that same fd; the AsyncFd owns the logger, so the fd outlives the
    // registration.
    #[allow(unsafe_code)]
    let afd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| format!("registering eBPF log fd {fd}: {e}"))?;
    tokio::spawn(read_forever(afd));
    Ok(())
}

async fn read_forever(mut afd: AsyncFd<EbpfLogger<Forward>>) {
    loop {
        let Ok(mut guard) = afd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::level_from;

    /// Loads every program (verifier included, nothing attached) with logging at `level`;
    /// returns the kernel's translated size per program.
    fn load_all(level: u8) -> Vec<(&'static str, u32)> {
        use agent_common::{PROGRAMS, ProgKind};
        use aya::programs::{CgroupSock, CgroupSockAddr, SockOps};
        let mut ebpf = aya::EbpfLoader::new()
            .override_global(super::LEVEL_GLOBAL, &level, true)
            .load(super::super::interceptor::OBJECT)
            .unwrap();
        let mut out = Vec::new();
        for (name, kind) in PROGRAMS {
            let prog = ebpf.program_mut(name).unwrap();
            let info = match kind {
                ProgKind::SockCreate => {
                    let p: &mut CgroupSock = prog.try_into().unwrap();
                    p.load()
                        .unwrap_or_else(|e| panic!("{name} at level {level}: {e:?}"));
                    p.info().unwrap()
                }
                ProgKind::SockAddr => {
                    let p: &mut CgroupSockAddr = prog.try_into().unwrap();
                    p.load()
                        .unwrap_or_else(|e| panic!("{name} at level {level}: {e:?}"));
                    p.info().unwrap()
                }
                ProgKind::SockOps => {
                    let p: &mut SockOps = prog.try_into().unwrap();
                    p.load()
                        .unwrap_or_else(|e| panic!("{name} at level {level}: {e:?}"));
                    p.info().unwrap()
                }
            };
            out.push((name, info.size_translated().unwrap_or(0)));
        }
        out
    }

    /// The programs pass the verifier with logging off and on, and with it off the kernel keeps
    /// none of the logging code (so a connect costs what it did without aya-log).
    #[test]
    fn programs_load_with_logging_off_and_on_and_off_costs_nothing() {
        if !crate::sys::is_root() || !super::super::object_built() {
            eprintln!("SKIPPED ebpf::log load test: needs root and the built eBPF object");
            return;
        }
        let off = load_all(0);
        let on = load_all(4);
        eprintln!("translated bytes per program, logging off / debug: ");
        for ((name, a), (_, b)) in off.iter().zip(&on) {
            eprintln!("  {name:<24} {a:>6} / {b:>6}");
        }
        let logging = [
            "iron_connect4",
            "iron_connect6",
            "iron_sendmsg4",
            "iron_sendmsg6",
        ];
        for ((name, a), (_, b)) in off.iter().zip(&on) {
            assert!(a <= b, "{name}: {a} > {b}");
            if logging.contains(name) {
                assert!(
                    a < b,
                    "{name}: logging code was not removed when off ({a} vs {b})"
                );
            }
        }
    }

    #[test]
    fn off_unless_rust_log_names_the_target() {
        assert_eq!(level_from(None), 0);
        assert_eq!(level_from(Some("debug")), 0);
        assert_eq!(level_from(Some("hyper=trace")), 0);
        assert_eq!(level_from(Some("iron_agent::ebpf=debug")), 4);
        assert_eq!(level_from(Some("iron_agent=trace")), 5);
        assert_eq!(level_from(Some("info,iron_agent::ebpf=warn")), 2);
        assert_eq!(level_from(Some("iron_agent::ebpf=off")), 0);
        assert_eq!(level_from(Some("not a directive ===")), 0);
    }
}
