//! The upstream session (iron-proxy §21.2): dial the DSN's host, TLS per `sslmode`, log in with
//! the DSN's credential, then pin the session: `set_config(name, value, false)` for each setting,
//! `standard_conforming_strings = on` when the server says otherwise, and `SET ROLE`.
//!
//! Operator-configured destinations: like token mints, these dials do not go through
//! `upstream_deny_cidrs` (iron-proxy applies no deny guard here either). Host names resolve with
//! the agent's resolver, so `dns.upstream_resolver` applies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::config::Setting;
use super::dsn::{Dsn, HostPort, SslMode};
use super::upstream_tls;
use super::wire;
use crate::resolve::Resolver;

pub type UpstreamStream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const KEEPALIVE: Duration = Duration::from_secs(30);
const SCRAM: &str = "SCRAM-SHA-256";

/// Why the upstream session could not be set up. `Display` is what the operator's log shows;
/// the client gets [`UpstreamError::client_message`]. Neither contains the DSN or a password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(String),
    #[error("upstream rejected setting {name:?}: {message}")]
    Setting { name: String, message: String },
    #[error("upstream rejected SET ROLE {role:?}: {message}")]
    Role { role: String, message: String },
}

impl UpstreamError {
    /// FATAL 08006 text for the client.
    pub fn client_message(&self) -> String {
        match self {
            Self::Connect(_) => "upstream connection failed".to_string(),
            other => other.to_string(),
        }
    }
}

fn connect_err(m: impl Into<String>) -> UpstreamError {
    UpstreamError::Connect(m.into())
}

/// A logged-in, pinned upstream session ready for relaying.
pub struct Upstream {
    pub stream: UpstreamStream,
    /// Latest value of each parameter the server reported, in first-report order.
    pub params: Vec<(String, String)>,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// What the session needs from the route.
pub struct Pinning<'a> {
    pub settings: &'a [Setting],
    pub role: Option<&'a str>,
}

/// Dials, logs in and pins. `client_params` are the client's startup parameters the proxy
/// passes on (already filtered); the DSN's own parameters win over them.
pub async fn connect(
    dsn: &Dsn,
    resolver: &Resolver,
    client_params: &[(String, String)],
    pin: &Pinning<'_>,
) -> Result<Upstream, UpstreamError> {
    let user = dsn
        .user
        .as_deref()
        .ok_or_else(|| connect_err("the upstream DSN names no user"))?;
    let tls = upstream_tls::client_config(dsn).map_err(connect_err)?;
    let mut last = connect_err("the upstream DSN names no host");
    for hp in &dsn.hosts {
        match dial_host(hp, resolver, dsn.sslmode, tls.as_ref()).await {
            Ok((stream, addr)) => {
                let is_tls = matches!(stream, Either::Right(_));
                let mut up = Upstream {
                    stream,
                    params: Vec::new(),
                    addr,
                    tls: is_tls,
                };
                let mut startup = client_params.to_vec();
                for (k, v) in &dsn.params {
                    startup.retain(|(ck, _)| ck != k);
                    startup.push((k.clone(), v.clone()));
                }
                startup.push(("user".into(), user.to_string()));
                if let Some(db) = &dsn.dbname {
                    startup.push(("database".into(), db.clone()));
                }
                up.login(&startup, dsn).await?;
                up.pin(pin).await?;
                return Ok(up);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn dial_host(
    hp: &HostPort,
    resolver: &Resolver,
    mode: SslMode,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(UpstreamStream, SocketAddr), UpstreamError> {
    let ips = resolver
        .lookup_ip(&hp.host)
        .await
        .map_err(|e| connect_err(format!("lookup {}: {e}", hp.host)))?;
    let mut last = connect_err(format!("lookup {}: no addresses", hp.host));
    for ip in ips {
        let addr = SocketAddr::new(ip, hp.port);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = connect_err(format!("dial tcp {addr}: {e}"));
                continue;
            }
            Err(_) => {
                last = connect_err(format!("dial tcp {addr}: i/o timeout"));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE));
        return negotiate_tls(tcp, hp, mode, tls).await.map(|s| (s, addr));
    }
    Err(last)
}

/// SSLRequest per sslmode: `S` → TLS; `N` → plain if the mode allows it.
async fn negotiate_tls(
    mut tcp: TcpStream,
    hp: &HostPort,
    mode: SslMode,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<UpstreamStream, UpstreamError> {
    let Some(config) = tls else {
        return Ok(Either::Left(tcp));
    };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    let io = |e: std::io::Error| connect_err(format!("{hp}: {e}"));
    tcp.write_all(&buf).await.map_err(io)?;
    match tcp.read_u8().await.map_err(io)? {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(hp.host.clone())
                .map_err(|e| connect_err(format!("{hp}: invalid server name: {e}")))?;
            let conn = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(format!("tls handshake with {}: {e}", hp.host)))?;
            Ok(Either::Right(conn))
        }
        b'N' if mode == SslMode::Prefer => Ok(Either::Left(tcp)),
        b'N' => Err(connect_err(format!(
            "{hp}: server does not support TLS, but sslmode is {}",
            mode.as_str()
        ))),
        _ => Err(connect_err(format!("{hp}: invalid answer to SSLRequest"))),
    }
}

impl Upstream {
    async fn send(&mut self, buf: &[u8]) -> Result<(), UpstreamError> {
        self.stream
            .write_all(buf)
            .await
            .map_err(|e| connect_err(format!("writing to {}: {e}", self.addr)))
    }

    async fn recv(&mut self, buf: &mut BytesMut) -> Result<Message, UpstreamError> {
        loop {
            match Message::parse(buf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(connect_err(format!("from {}: {e}", self.addr))),
            }
            let n = self
                .stream
                .read_buf(buf)
                .await
                .map_err(|e| connect_err(format!("reading from {}: {e}", self.addr)))?;
            if n == 0 {
                return Err(connect_err(format!("{} closed the connection", self.addr)));
            }
        }
    }

    fn note_param(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some(p) => p.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }

    async fn login(
        &mut self,
        startup: &[(String, String)],
        dsn: &Dsn,
    ) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            startup.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut out,
        )
        .map_err(|e| connect_err(format!("startup message: {e}")))?;
        self.send(&out).await?;
        let password = dsn.password.as_ref().map(|p| p.expose().as_bytes());
        let user = dsn.user.as_deref().unwrap_or_default();
        let need_pw = || connect_err("the server asked for a password and the DSN has none");
        let mut buf = BytesMut::new();
        let mut scram: Option<ScramSha256> = None;
        loop {
            out.clear();
            match self.recv(&mut buf).await? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password.ok_or_else(need_pw)?, &mut out)
                        .map_err(|e| connect_err(e.to_string()))?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.ok_or_else(need_pw)?,
                        b.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| connect_err(e.to_string()))?;
                }
                Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(
                        password.ok_or_else(need_pw)?,
                        ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(SCRAM, s.message(), &mut out)
                        .map_err(|e| connect_err(e.to_string()))?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| connect_err("unexpected SASL message"))?;
                    s.update(b.data())
                        .map_err(|e| connect_err(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(s.message(), &mut out)
                        .map_err(|e| connect_err(e.to_string()))?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| connect_err("unexpected SASL message"))?;
                    s.finish(b.data())
                        .map_err(|e| connect_err(format!("SCRAM: {e}")))?;
                }
                Message::ErrorResponse(e) => {
                    return Err(connect_err(format!("{}: {}", self.addr, error_message(&e))));
                }
                Message::NoticeResponse(_) => {}
                _ => return Err(connect_err("unsupported authentication method requested")),
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
        }
        self.until_ready(&mut buf)
            .await
            .map_err(|m| connect_err(format!("{}: {m}", self.addr)))
    }

    /// Reads to ReadyForQuery, recording parameters; `Err` carries the server's error message.
    async fn until_ready(&mut self, buf: &mut BytesMut) -> Result<(), String> {
        let mut error = None;
        loop {
            match self.recv(buf).await.map_err(|e| e.to_string())? {
                Message::ParameterStatus(p) => {
                    if let (Ok(n), Ok(v)) = (p.name(), p.value()) {
                        let (n, v) = (n.to_string(), v.to_string());
                        self.note_param(&n, &v);
                    }
                }
                Message::ErrorResponse(e) => {
                    error = Some(error_message(&e));
                }
                Message::ReadyForQuery(_) => return error.map_or(Ok(()), Err),
                _ => {}
            }
        }
    }

    async fn simple(&mut self, sql: &str) -> Result<(), String> {
        self.send(&wire::query(sql))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::new();
        self.until_ready(&mut buf).await
    }

    async fn pin(&mut self, pin: &Pinning<'_>) -> Result<(), UpstreamError> {
        for s in pin.settings {
            let sql = format!(
                "SELECT pg_catalog.set_config({}, {}, false)",
                escape_literal(&s.name),
                escape_literal(&s.value)
            );
            self.simple(&sql)
                .await
                .map_err(|message| UpstreamError::Setting {
                    name: s.name.clone(),
                    message,
                })?;
        }
        // The relay policy parses SQL as the server does with this on (see `sql`).
        let scs = self
            .params
            .iter()
            .find(|(k, _)| k == "standard_conforming_strings")
            .map(|(_, v)| v.as_str());
        if scs != Some("on") {
            self.simple("SET standard_conforming_strings = on")
                .await
                .map_err(|message| UpstreamError::Setting {
                    name: "standard_conforming_strings".into(),
                    message,
                })?;
        }
        if let Some(role) = pin.role {
            let sql = format!("SET ROLE {}", escape_identifier(role));
            self.simple(&sql)
                .await
                .map_err(|message| UpstreamError::Role {
                    role: role.to_string(),
                    message,
                })?;
        }
        Ok(())
    }
}

fn error_message(e: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
    use fallible_iterator::FallibleIterator as _;
    let mut fields = e.fields();
    let mut msg = String::new();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'M' {
            msg = String::from_utf8_lossy(f.value_bytes()).into_owned();
        }
    }
    msg
}

/// Everything an [`UpstreamStream`] must be for the relay.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
