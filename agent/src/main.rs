//! `iron-agent`: parse the command line, load config, run. Errors end here as exit status 1.

use std::process::ExitCode;

use clap::Parser;
use iron_agent::cli::{Alg, Cli, Command, normalize_args};
use iron_agent::config::{self, Config};
use iron_agent::{app, check, install, telemetry, tls};

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    match cli.command {
        Some(Command::Version) => {
            println!("{}", iron_agent::VERSION);
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig(a)) => check_config(&a.config),
        Some(Command::GenerateCa(a)) => generate_ca(a),
        Some(Command::BenchMint { iterations }) => bench_mint(iterations),
        Some(Command::BenchAudit { records }) => bench_audit(records),
        Some(Command::Run(a)) if !a.cmd.is_empty() => {
            let jail = app::jail::JailOptions {
                user: a.user,
                keep_env: a.keep_env,
                cmd: a.cmd,
            };
            run(a.config.or(cli.config), Some(jail))
        }
        Some(Command::Run(a)) => run(a.config.or(cli.config), None),
        Some(Command::Install(a)) => report(install::install(&install::InstallOptions {
            config: a.config,
            allow: a.allow,
            no_start: a.no_start,
            root: a.root,
        })),
        Some(Command::Uninstall(a)) => report(install::uninstall(&install::UninstallOptions {
            purge: a.purge,
            root: a.root,
        })),
        Some(Command::Status(a)) => report(install::status(&install::StatusOptions {
            config: a.config,
            json: a.json,
            root: a.root,
        })),
        None => run(cli.config, None),
    }
}

fn report(r: Result<(), install::InstallError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            for w in config::validate::validate_warnings(&cfg) {
                eprintln!("warning: {w}");
            }
            let refused = check::unsupported(&cfg);
            if !refused.is_empty() {
                for e in refused {
                    eprintln!("error: {e}");
                }
                return ExitCode::from(1);
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("error: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn generate_ca(a: iron_agent::cli::GenerateCaArgs) -> ExitCode {
    let opts = tls::GenerateCaOptions {
        outdir: a.outdir,
        name: a.name,
        expiry_hours: a.expiry_hours,
        alg: match a.alg {
            Alg::EcdsaP256 => tls::CaAlgorithm::EcdsaP256,
            Alg::Rsa4096 => tls::CaAlgorithm::Rsa4096,
            Alg::Ed25519 => tls::CaAlgorithm::Ed25519,
        },
    };
    match tls::generate_ca(&opts) {
        Ok(written) => {
            println!("wrote {}", written.cert_path.display());
            println!("wrote {}", written.key_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench_mint(iterations: usize) -> ExitCode {
    match tls::mint_benchmark(iterations) {
        Ok(mean) => {
            println!("{{\"mean_us\":{:.1}}}", mean.as_secs_f64() * 1e6);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench_audit(records: u64) -> ExitCode {
    // Records go to stderr; run with stderr redirected to a file (cargo xtask bench does).
    let sink = match iron_agent::audit::AuditSink::stderr(config::LogLevel::Info) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: starting the audit writer: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{}",
        iron_agent::audit::bench::run(&sink, records).to_json()
    );
    ExitCode::SUCCESS
}

fn run(path: Option<std::path::PathBuf>, jail: Option<app::jail::JailOptions>) -> ExitCode {
    // Checked before loading the config: without root the default config would generate its CA
    // in the user's state directory for nothing.
    if jail.is_some() && !iron_agent::sys::is_root() {
        eprintln!("error: {}", app::jail::JailError::NotRoot);
        return ExitCode::from(1);
    }
    let env = |k: &str| std::env::var(k).ok();
    let loaded: Result<Config, String> = match &path {
        Some(p) => config::load(p).map_err(|e| e.to_string()),
        None => load_default(&env),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("error: {line}");
            }
            return ExitCode::from(1);
        }
    };
    telemetry::init(cfg.log.level);
    if path.is_none() {
        tracing::info!(
            ca_cert = %cfg.tls.ca_cert.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "no --config given: using the embedded default config (loopback listeners, deny-all allowlist)"
        );
    }
    if let Some(jail) = jail {
        return match app::jail::run(cfg, &jail) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(app::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(1)
        }
    }
}

/// The embedded default config; generates its CA into the state directory on first use.
fn load_default(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    let state = app::default::state_dir(env);
    let cert = state.join("ca.crt");
    if !cert.exists() {
        let opts = tls::GenerateCaOptions {
            outdir: state.clone(),
            name: "iron-agent CA".into(),
            expiry_hours: 2160,
            alg: tls::CaAlgorithm::EcdsaP256,
        };
        tls::generate_ca(&opts)
            .map_err(|e| format!("generating default CA in {}: {e}", state.display()))?;
    }
    app::default::default_config(&state, env).map_err(|e| e.to_string())
}
