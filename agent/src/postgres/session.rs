//! One client connection (iron-proxy §21.2): startup preludes, routing by database, client
//! authentication, the upstream session, then the relay. Every connection that sends a startup
//! message leaves exactly one session record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::audit::{Outcome, SessionAudit};
use super::auth::{AuthError, random_bytes};
use super::dsn::Dsn;
use super::listener::{Generation, Route};
use super::relay::{Relay, Stats};
use super::sql::{Refusal, encoding_is_safe};
use super::upstream::{self, KEEPALIVE, Pinning, Upstream};
use super::wire::{self, Severity, Startup, WireError};

use crate::identify::{ClientAddr, ConnIdentifier, LocalAddr, PeerRefusal};

pub type ClientStream = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// SSLRequest/GSSENCRequest packets accepted before the StartupMessage.
const MAX_PRELUDES: usize = 3;

/// Startup parameters a client may pass on to the upstream session. Everything else (notably
/// `options`, `role`, and pinned or parser-relevant settings) is dropped.
const FORWARDED_PARAMS: [&str; 11] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "bytea_output",
];

/// Why login stopped: what the client is told (FATAL), and what the record says.
struct Stop {
    fatal: Option<(&'static str, String)>,
    outcome: Outcome,
}

fn refuse(reason: &'static str, sqlstate: &'static str, message: String) -> Stop {
    tracing::info!(reason, sqlstate, "postgres: login refused");
    Stop {
        fatal: Some((sqlstate, message)),
        outcome: Outcome::Refused { reason, sqlstate },
    }
}

/// eBPF mode: a peer without a kernel record, or a `deny` identity.
fn refuse_peer(r: PeerRefusal) -> Stop {
    let message = match r {
        PeerRefusal::Unidentified => {
            "iron-agent: connection refused: the kernel recorded no identity for this client"
        }
        PeerRefusal::DeniedIdentity => {
            "iron-agent: connection refused: this identity is denied network access"
        }
        // The listener's identifier gives only the two above; these are for exhaustiveness.
        PeerRefusal::UnknownPolicy => {
            "iron-agent: connection refused: the connection's policy is no longer configured"
        }
        PeerRefusal::NotReady => {
            "iron-agent: connection refused: no config has been synced from the control plane yet"
        }
    };
    refuse(r.reason(), "28000", message.into())
}

fn fail(sqlstate: &'static str, client: String, error: String) -> Stop {
    tracing::error!(error = %error, "postgres: session setup failed");
    Stop {
        fatal: Some((sqlstate, client)),
        outcome: Outcome::Failed {
            sqlstate: Some(sqlstate),
            error,
        },
    }
}

fn wire_stop(e: WireError) -> Stop {
    let outcome = match &e {
        WireError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Outcome::ClientGone,
        _ => Outcome::Failed {
            sqlstate: None,
            error: e.to_string(),
        },
    };
    Stop {
        fatal: None,
        outcome,
    }
}

/// Serves one accepted connection to the end.
pub async fn serve(
    shared: Arc<Generation>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let _ = socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE));
    // eBPF mode: the kernel's record of who connected, redirected to a database destination
    // or direct. Without one (or for a `deny` identity) the session is refused at login: the
    // agent-held database credentials are only for the workloads the policy covers.
    let (origin, refused) = match &shared.deps.origins {
        Some(o) => {
            let local = tcp.local_addr().ok().map(LocalAddr);
            let id = ConnIdentifier::ebpf(o.clone()).redirected(ClientAddr(peer), local);
            (id.task().cloned(), id.refused)
        }
        None => (None, None),
    };
    let user = origin
        .as_ref()
        .and_then(|o| (shared.deps.user_names)(o.uid.0));
    let mut audit = SessionAudit::new(shared.deps.audit.clone(), peer, origin.as_ref(), user);
    let stats = Stats::default();
    let login = login(&shared, tcp, refused, &mut audit);
    let login = tokio::time::timeout(HANDSHAKE_TIMEOUT, login).await;
    let (client, up, route) = match login {
        Ok(Ok(Some(established))) => established,
        Ok(Ok(None)) => return, // CancelRequest or a bare prelude: not a session
        Ok(Err(stop)) => return audit.finish(stop.outcome, &stats),
        Err(_) => {
            let outcome = Outcome::Failed {
                sqlstate: None,
                error: "handshake timeout".into(),
            };
            return audit.finish(outcome, &stats);
        }
    };
    let marker = match random_bytes::<8>() {
        Ok(b) => format!("iron_proxy_refused_{}_", hex::encode(b)),
        Err(e) => {
            let outcome = Outcome::Failed {
                sqlstate: None,
                error: e.to_string(),
            };
            return audit.finish(outcome, &stats);
        }
    };
    let on_refusal = |r: Refusal, sql: &str| audit.refused_statement(r, sql);
    let relay = Relay {
        policy: &route.policy,
        marker,
        stats: &stats,
        on_refusal: &on_refusal,
    };
    let result = tokio::select! {
        r = async {
            match (client, up.stream) {
                (Either::Left(c), Either::Left(u)) => relay.run_tcp(c, u).await,
                (c, u) => relay.run(c, u).await,
            }
        } => r,
        _ = shutdown.cancelled() => Ok(()),
    };
    let outcome = match result {
        Err(WireError::Protocol(e)) => Outcome::Failed {
            sqlstate: None,
            error: e,
        },
        // A reset connection is how many clients end a session.
        _ => Outcome::Relayed,
    };
    audit.finish(outcome, &stats);
}

type Established = (ClientStream, Upstream, Arc<Route>);

async fn login(
    shared: &Generation,
    tcp: TcpStream,
    refused: Option<PeerRefusal>,
    audit: &mut SessionAudit,
) -> Result<Option<Established>, Stop> {
    let Some((mut io, version, params)) = preludes(shared, tcp).await? else {
        return Ok(None);
    };
    audit.pg.client_tls = Some(matches!(io, Either::Right(_)));
    // Refused after the startup message, so the client shows the reason (a reply to its
    // SSLRequest could only be a yes or no).
    let login = match refused {
        Some(r) => Err(refuse_peer(r)),
        None => authenticate_and_connect(shared, &mut io, version, &params, audit).await,
    };
    match login {
        Ok((up, route)) => Ok(Some((io, up, route))),
        Err(stop) => {
            if let Some((code, msg)) = &stop.fatal {
                let mut out = BytesMut::new();
                wire::error_response(&mut out, Severity::Fatal, code, msg);
                let _ = io.write_all(&out).await;
                let _ = io.shutdown().await;
            }
            Err(stop)
        }
    }
}

/// SSLRequest → `S` and TLS when `postgres.tls` is on (once), else `N`; GSSENCRequest → `N`;
/// CancelRequest → close (cancellation is not supported).
async fn preludes(
    shared: &Generation,
    tcp: TcpStream,
) -> Result<Option<(ClientStream, i32, Vec<(String, String)>)>, Stop> {
    let mut io: ClientStream = Either::Left(tcp);
    for _ in 0..=MAX_PRELUDES {
        match wire::read_startup(&mut io).await {
            Ok(Startup::Message { version, params }) => return Ok(Some((io, version, params))),
            Ok(Startup::Cancel) => return Ok(None),
            Ok(Startup::Ssl) => {
                io = match (io, &shared.tls) {
                    (Either::Left(mut tcp), Some(cache)) => {
                        tcp.write_all(b"S").await.map_err(|e| wire_stop(e.into()))?;
                        Either::Right(tls_accept(cache, tcp).await?)
                    }
                    (mut other, _) => {
                        other
                            .write_all(b"N")
                            .await
                            .map_err(|e| wire_stop(e.into()))?;
                        other
                    }
                };
            }
            Ok(Startup::GssEnc) => io.write_all(b"N").await.map_err(|e| wire_stop(e.into()))?,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None);
            }
            Err(e) => return Err(wire_stop(e)),
        }
    }
    Err(wire_stop(WireError::Protocol(
        "too many startup preludes".into(),
    )))
}

async fn tls_accept(
    cache: &crate::tls::LeafCache,
    tcp: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Stop> {
    let local = tcp.local_addr().ok().map(|a| a.ip().to_string());
    let tls_fail = |e: String| Stop {
        fatal: None,
        outcome: Outcome::Failed {
            sqlstate: None,
            error: format!("client TLS: {e}"),
        },
    };
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
        .await
        .map_err(|e| tls_fail(e.to_string()))?;
    // psql connecting by IP sends no SNI: serve a certificate for the address it dialled.
    let name = start
        .client_hello()
        .server_name()
        .map(str::to_string)
        .or(local)
        .ok_or_else(|| tls_fail("no server name".into()))?;
    let config = cache
        .server_config(&name)
        .await
        .map_err(|e| tls_fail(e.to_string()))?;
    start
        .into_stream(config)
        .await
        .map_err(|e| tls_fail(e.to_string()))
}

async fn authenticate_and_connect(
    shared: &Generation,
    io: &mut ClientStream,
    version: i32,
    params: &[(String, String)],
    audit: &mut SessionAudit,
) -> Result<(Upstream, Arc<Route>), Stop> {
    negotiate_version(io, version, params).await?;
    let database = Startup::param(params, "database").filter(|d| !d.is_empty());
    let Some(database) = database else {
        return Err(refuse(
            "no_database",
            "3D000",
            "no database specified in startup message".into(),
        ));
    };
    audit.pg.database = database.clone();
    let Some(route) = shared.routes.get(&database).cloned() else {
        return Err(refuse(
            "unknown_database",
            "3D000",
            format!("no upstream for database {database:?}"),
        ));
    };
    audit.pg.role = route.role.clone();
    let user = Startup::param(params, "user").filter(|u| !u.is_empty());
    let Some(user) = user else {
        return Err(refuse(
            "no_user",
            "28000",
            "no user provided in startup message".into(),
        ));
    };
    if !shared.credential.user_matches(&user) {
        return Err(refuse(
            "unknown_user",
            "28000",
            format!("unknown user {user:?}"),
        ));
    }
    audit.pg.user = user;
    match shared.credential.authenticate(io).await {
        Ok(()) => {}
        Err(AuthError::Failed) => {
            tracing::info!("postgres: client auth failed");
            return Err(refuse(
                "auth_failed",
                "28P01",
                "password authentication failed".into(),
            ));
        }
        Err(AuthError::Wire(e)) => return Err(wire_stop(e)),
        Err(e) => return Err(fail("08006", "authentication failed".into(), e.to_string())),
    }
    let forwarded = client_params(params)?;
    let up = connect_upstream(shared, &route, &forwarded, audit).await?;
    send_ready(io, &up).await?;
    Ok((up, route))
}

/// Protocol 3.x with a newer minor version or `_pq_.` options: answer what we speak (3.0).
async fn negotiate_version(
    io: &mut ClientStream,
    version: i32,
    params: &[(String, String)],
) -> Result<(), Stop> {
    let options: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if version & 0xffff == 0 && options.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    wire::negotiate_protocol(&mut out, 0, &options);
    io.write_all(&out).await.map_err(|e| wire_stop(e.into()))
}

/// The client's startup parameters that reach the upstream.
fn client_params(params: &[(String, String)]) -> Result<Vec<(String, String)>, Stop> {
    if let Some(r) = Startup::param(params, "replication")
        && !matches!(
            r.to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        )
    {
        return Err(refuse(
            "replication",
            "0A000",
            "replication connections are not supported by the proxy".into(),
        ));
    }
    let mut out = Vec::new();
    for (k, v) in params {
        let key = k.to_ascii_lowercase();
        if !FORWARDED_PARAMS.contains(&key.as_str()) {
            continue;
        }
        if key == "client_encoding" && !encoding_is_safe(v) {
            let r = Refusal::ClientEncoding;
            return Err(refuse("client_encoding", r.sqlstate(), r.message()));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

async fn connect_upstream(
    shared: &Generation,
    route: &Route,
    forwarded: &[(String, String)],
    audit: &mut SessionAudit,
) -> Result<Upstream, Stop> {
    let failed = || "upstream connection failed".to_string();
    let raw = route.dsn.current().map_err(|e| {
        fail(
            "08006",
            failed(),
            format!("dsn secret {}: {e}", route.dsn.display_name()),
        )
    })?;
    let dsn = Dsn::parse(raw.expose()).map_err(|e| fail("08006", failed(), e.to_string()))?;
    audit.set_upstream(dsn.describe_hosts());
    let database = &route.database;
    let Some(dsn_db) = dsn.dbname.as_deref() else {
        let m = format!(
            "upstream DSN for database {database:?} does not name a database; add dbname to the DSN"
        );
        return Err(fail("3D000", m.clone(), m));
    };
    if dsn_db != database {
        let m = format!(
            "upstream database mismatch: client connected to database {database:?} but its DSN connects to {dsn_db:?}; the route database and DSN database must match"
        );
        return Err(fail("3D000", m.clone(), m));
    }
    let pin = Pinning {
        settings: &route.settings,
        role: route.role.as_deref(),
    };
    let up = upstream::connect(&dsn, &shared.deps.resolver, forwarded, &pin)
        .await
        .map_err(|e| {
            tracing::error!(database = %database, upstream = %dsn.describe_hosts(), error = %e, "postgres: upstream connect failed");
            fail("08006", e.client_message(), e.to_string())
        })?;
    audit.pg.upstream_tls = Some(up.tls);
    Ok(up)
}

/// AuthenticationOk, the upstream's parameters, a random BackendKeyData, ReadyForQuery.
async fn send_ready(io: &mut ClientStream, up: &Upstream) -> Result<(), Stop> {
    let mut out = BytesMut::new();
    wire::auth_ok(&mut out);
    for (k, v) in &up.params {
        wire::parameter_status(&mut out, k, v);
    }
    let key =
        random_bytes::<8>().map_err(|e| fail("08006", "internal error".into(), e.to_string()))?;
    let pid = i32::from_be_bytes([key[0] & 0x7f, key[1], key[2], key[3]]);
    let secret = i32::from_be_bytes([key[4], key[5], key[6], key[7]]);
    wire::backend_key_data(&mut out, pid, secret);
    wire::ready_for_query(&mut out, b'I');
    io.write_all(&out).await.map_err(|e| wire_stop(e.into()))
}
