//! `iron-agent`: parse the command line, load config, run. Errors end here as exit status 1.

use std::process::ExitCode;

use clap::Parser;
use iron_agent::cli::{Alg, Cli, Command, normalize_args};
use iron_agent::config::{self, Config};
use iron_agent::{app, check, enroll, install, telemetry, tls};

fn main() -> ExitCode {
    let args = normalize_args(std::env::args_os());
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => return iron_agent::cli::usage_error(e, &args),
    };
    match cli.command {
        Some(Command::Version) => {
            println!("{}", iron_agent::cli::version_line());
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig(a)) => check_config(&a.config, a.no_host_checks),
        Some(Command::Detach(a)) => report(install::detach_command(a.config, a.pin_dir)),
        Some(Command::GenerateCa(a)) => generate_ca(a),
        Some(Command::Policy(a)) => iron_agent::ops::policy_command(a),
        Some(Command::Summary(a)) => iron_agent::ops::summary_command(a),
        Some(Command::BenchMint { iterations }) => bench_mint(iterations),
        Some(Command::BenchAudit { records, mode }) => bench_audit(records, mode),
        Some(Command::Run(a)) if !a.cmd.is_empty() => {
            if a.token.is_some() || cli.token.is_some() {
                eprintln!("error: --token (managed mode) cannot be combined with `run -- CMD`");
                return ExitCode::from(2);
            }
            jail(a, cli.config)
        }
        Some(Command::Run(a)) => run(a.config.or(cli.config), None, a.token.or(cli.token)),
        Some(Command::Init(a)) => init(init_options(a)),
        Some(Command::Install(a)) if a.enrollment_token.is_some() => init(install_enroll(a)),
        Some(Command::Install(a)) => report(install::install(
            &install::InstallOptions {
                config: a.config,
                allow: a.allow,
                govern_users: a.govern_user,
                govern_cgroups: a.govern_cgroup,
                no_start: a.no_start,
                root: a.root,
            },
            &app::preflight::install_host_check,
        )),
        Some(Command::Uninstall(a)) => report(install::uninstall(&install::UninstallOptions {
            purge: a.purge,
            root: a.root,
        })),
        Some(Command::Status(a)) => report(install::status(&install::StatusOptions {
            config: a.config,
            json: a.json,
            root: a.root,
        })),
        None => run(cli.config, None, cli.token),
    }
}

/// `run -- CMD`; with `--summary FILE` the run's job summary is appended to FILE at the end,
/// whatever CMD's status (what a failed job needs most).
fn jail(a: iron_agent::cli::RunArgs, global_config: Option<std::path::PathBuf>) -> ExitCode {
    use iron_agent::ops::job_summary::AuditCopy;
    let copy = a.summary.as_ref().map(|_| AuditCopy::fresh());
    let opts = app::jail::JailOptions {
        user: a.user,
        keep_env: a.keep_env,
        cmd: a.cmd,
        learn: a.learn,
        audit_copy: copy.as_ref().map(|c| c.path.clone()),
    };
    let code = run(a.config.or(global_config), Some(opts), None);
    if let (Some(copy), Some(out)) = (&copy, &a.summary)
        && let Err(e) = copy.append_summary(out)
    {
        eprintln!("warning: --summary: {e}");
    }
    code
}

/// The host checks of `check-config` and `run`, for `install` (which cannot import `app`).
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

fn init(opts: enroll::InitOptions) -> ExitCode {
    match enroll::init(&opts, &|k| std::env::var(k).ok()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(1)
        }
    }
}

fn init_options(a: iron_agent::cli::InitArgs) -> enroll::InitOptions {
    enroll::InitOptions {
        command: "init",
        enrollment_token: iron_agent::secrets::SecretValue::new(a.enrollment_token),
        control_plane: a.control_plane,
        allow_insecure: a.allow_insecure,
        state_dir: Some(a.state_dir),
        no_service: a.no_service,
        force: a.force,
        name: a.name,
        config: a.config,
        govern_users: a.govern_user,
        govern_cgroups: a.govern_cgroup,
        no_start: a.no_start,
        root: a.root,
    }
}

/// `install --enrollment-token`: init's service path with install's options.
fn install_enroll(a: iron_agent::cli::InstallArgs) -> enroll::InitOptions {
    enroll::InitOptions {
        command: "install",
        enrollment_token: iron_agent::secrets::SecretValue::new(
            a.enrollment_token.unwrap_or_default(),
        ),
        control_plane: a.control_plane,
        allow_insecure: false,
        state_dir: None,
        no_service: false,
        force: a.force,
        name: None,
        config: a.config,
        govern_users: a.govern_user,
        govern_cgroups: a.govern_cgroup,
        no_start: a.no_start,
        root: a.root,
    }
}

fn check_config(path: &std::path::Path, no_host_checks: bool) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            for w in config::validate::validate_warnings(&cfg) {
                eprintln!("warning: {w}");
            }
            let mut refused = check::unsupported(&cfg);
            if !no_host_checks {
                let host = app::preflight::check(&cfg, Some(path));
                for w in host.warnings {
                    eprintln!("warning: {w}");
                }
                refused.extend(host.errors);
                refused.extend(host.secret_files);
            }
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

fn bench_audit(records: u64, mode: iron_agent::audit::bench::Mode) -> ExitCode {
    use iron_agent::audit::bench;
    // Records go to stderr; run with stderr redirected to a file (cargo xtask bench does).
    let sink = match bench::sink(mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: starting the audit writer: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", bench::run(mode, sink.as_ref(), records).to_json());
    ExitCode::SUCCESS
}

fn run(
    path: Option<std::path::PathBuf>,
    jail: Option<app::jail::JailOptions>,
    token: Option<String>,
) -> ExitCode {
    // Checked before loading the config: without root the default config would generate its CA
    // in the user's state directory for nothing.
    if jail.is_some() && !iron_agent::sys::is_root() {
        eprintln!("error: {}", app::jail::JailError::NotRoot);
        return ExitCode::from(1);
    }
    let env = |k: &str| std::env::var(k).ok();
    let generated_ca = std::cell::Cell::new(false);
    let loaded: Result<Config, String> = match &path {
        Some(p) => config::load(p).map_err(|e| e.to_string()),
        None => load_default(&env, &generated_ca),
    };
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("error: {line}");
            }
            return ExitCode::from(1);
        }
    };
    // The jail's audit copy is part of what the host checks look at.
    cfg.log.audit_copy = jail.as_ref().and_then(|j| j.audit_copy.clone());
    let managed = match managed_settings(jail.is_some(), token, &cfg, &env) {
        Ok(m) => m,
        Err(code) => return code,
    };
    telemetry::init(cfg.log.level);
    if path.is_none() {
        tracing::info!(
            "no --config given: using the embedded default config (loopback listeners, deny-all allowlist)"
        );
    }
    // Everything the host must provide, before anything is bound or attached.
    let host = app::preflight::check(&cfg, path.as_deref());
    for w in host.warnings.iter().chain(&host.secret_files) {
        tracing::warn!("{w}");
    }
    if !host.errors.is_empty() {
        for e in &host.errors {
            eprintln!("error: {e}");
        }
        return ExitCode::from(1);
    }
    log_ca(&cfg, generated_ca.get());
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
    match rt.block_on(app::run(cfg, path, managed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One plain line per error (not also a JSON log line): this is the last thing said.
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(1)
        }
    }
}

/// Managed mode (a token): control-plane settings are checked before anything starts. A
/// jailed run reads no token from the environment: its private agent is standalone.
fn managed_settings(
    jailed: bool,
    token: Option<String>,
    cfg: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<iron_agent::managed::Settings>, ExitCode> {
    if jailed {
        return Ok(None);
    }
    iron_agent::managed::Settings::resolve(token, &cfg.control_plane, env).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// The embedded default config; generates its CA into the state directory on first use.
fn load_default(
    env: &dyn Fn(&str) -> Option<String>,
    generated: &std::cell::Cell<bool>,
) -> Result<Config, String> {
    let state = app::default::state_dir(env);
    let cert = state.join("ca.crt");
    if !cert.exists() {
        generated.set(true);
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

/// The startup line about the MITM CA: generated or reused, and that clients must trust it.
fn log_ca(cfg: &Config, generated: bool) {
    if cfg.tls.mode != config::TlsMode::Mitm {
        return;
    }
    let Some(cert) = &cfg.tls.ca_cert else { return };
    let how = if generated { "generated" } else { "reusing" };
    tracing::info!(
        ca_cert = %cert.display(),
        "MITM CA: {how} {}; HTTPS clients must trust this certificate (system trust store, NODE_EXTRA_CA_CERTS, curl --cacert; see docs/getting-started.md)",
        cert.display()
    );
}
