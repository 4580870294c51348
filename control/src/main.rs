//! `iron-control`: serve, migrate, rotate-key, version.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use iron_control::broker::LoopOptions;
use iron_control::server::{self, Settings};

#[derive(Parser)]
#[command(
    name = "iron-control",
    about = "Control-plane server for iron-agent fleets",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (migrates the database first).
    Serve(Common),
    /// Apply database migrations and exit.
    Migrate(Common),
    /// Re-encrypt every stored secret under IRON_CONTROL_SECRET_KEY (after a key rotation).
    RotateKey(Common),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct Common {
    /// Listen address.
    #[arg(long, env = "IRON_CONTROL_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`; default: `control.db` in the state directory.
    #[arg(long = "database", env = "IRON_CONTROL_DATABASE_URL")]
    database: Option<String>,
    /// Where the SQLite database and the generated server key live.
    #[arg(
        long,
        env = "IRON_CONTROL_STATE_DIR",
        default_value = "/var/lib/iron-control"
    )]
    state_dir: PathBuf,
    /// Maximum database connections of this process.
    #[arg(long, env = "IRON_CONTROL_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: u32,
    /// How often the broker refresh loop looks for due credentials (milliseconds).
    #[arg(
        long,
        env = "IRON_CONTROL_REFRESH_TICK_MS",
        default_value_t = 1000,
        hide = true
    )]
    refresh_tick_ms: u64,
    /// Audit events kept in memory for `GET /api/v1/audit` (the oldest go first).
    #[arg(long, env = "IRON_CONTROL_AUDIT_RING_SIZE", default_value_t = iron_control::ingest::DEFAULT_RING_SIZE)]
    audit_ring_size: usize,
    /// Largest `POST /v1/logs` body accepted, in bytes (also after gunzip); larger: 413.
    #[arg(long, env = "IRON_CONTROL_AUDIT_MAX_BODY_BYTES", default_value_t = iron_control::ingest::DEFAULT_MAX_BODY)]
    audit_max_body_bytes: usize,
    /// OTLP/HTTP logs URL (e.g. http://collector:4318/v1/logs) that gets a copy of every
    /// accepted audit batch.
    #[arg(long, env = "IRON_CONTROL_AUDIT_OTLP_ENDPOINT")]
    audit_otlp_endpoint: Option<String>,
}

impl Common {
    fn settings(self) -> Result<Settings> {
        let secret_key = std::env::var("IRON_CONTROL_SECRET_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        let previous_keys = std::env::var("IRON_CONTROL_PREVIOUS_SECRET_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let database_url = match self.database {
            Some(url) => url,
            None => format!("sqlite://{}", self.state_dir.join("control.db").display()),
        };
        Ok(Settings {
            listen: self.listen,
            database_url,
            state_dir: self.state_dir,
            secret_key,
            previous_keys,
            refresh: LoopOptions {
                tick: Duration::from_millis(self.refresh_tick_ms.clamp(10, 60_000)),
                ..LoopOptions::default()
            },
            max_connections: self.db_connections.clamp(1, 1000),
            audit: iron_control::ingest::Settings {
                ring_size: self.audit_ring_size.clamp(1, 10_000_000),
                max_body: self.audit_max_body_bytes.clamp(1024, 1 << 30),
                forward_endpoint: self.audit_otlp_endpoint.filter(|u| !u.trim().is_empty()),
            },
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() {
    let cli = Cli::parse();
    iron_control::telemetry::init();
    // rustls picks the aws-lc-rs provider the whole workspace uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Err(e) = run(cli.command) {
        tracing::error!(error = %format!("{e:#}"), "iron-control failed");
        eprintln!("iron-control: {e:#}");
        std::process::exit(1);
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Version => {
            println!("iron-control {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(c) => {
            let s = c.settings()?;
            runtime()?.block_on(server::serve(s))?;
            Ok(())
        }
        Command::Migrate(c) => {
            let s = c.settings()?;
            runtime()?.block_on(server::open(&s))?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::RotateKey(c) => {
            let s = c.settings()?;
            let n = runtime()?.block_on(server::rotate(s))?;
            tracing::info!(resealed = n, "secrets re-encrypted under the current key");
            Ok(())
        }
    }
}
