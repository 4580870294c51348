//! The management API (`management.listen`, iron-proxy §19): bearer-authenticated JSON
//! endpoints acting on the running agent. Standalone mode: `POST /v1/reload` reloads the
//! config file; `/v1/status` and `/v1/sync` belong to managed mode and say so. Managed mode:
//! `GET /v1/status` reports the sync state, `POST /v1/sync` asks for a sync now (202), and
//! `/v1/reload` is unavailable (404).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppError;
use super::reload::{ReloadError, Reloader, Trigger};
use crate::accept::{self, accept_loop};
use crate::config::Config;
use crate::transform::{ProxyBody, body};

/// The bound management listener and its API key.
pub struct Management {
    listener: TcpListener,
    /// The bearer token (value of the `management.api_key_env` variable); never logged.
    key: Arc<str>,
}

impl Management {
    /// Standalone mode with `management.listen` needs `--config`: `/v1/reload` must have a
    /// file to re-read (iron-proxy's message). Checked before anything is built or bound.
    pub fn require_source(
        cfg: &Config,
        source: Option<&Path>,
        managed: bool,
    ) -> Result<(), AppError> {
        if cfg.management.listen.is_some() && source.is_none() && !managed {
            return Err(AppError::Unsupported(vec![
                "management.listen requires --config in standalone mode; /v1/reload has no file to re-read".into(),
            ]));
        }
        Ok(())
    }

    /// Binds `management.listen` when set.
    pub async fn bind(cfg: &Config) -> Result<Option<Self>, AppError> {
        let (Some(listen), Some(var)) = (
            &cfg.management.listen,
            cfg.management.effective_api_key_env(),
        ) else {
            return Ok(None);
        };
        // Validation already refused an unset or empty variable; checked again, fail closed.
        let key = std::env::var(var)
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                AppError::Unsupported(vec![format!(
                    "management.api_key_env: {var:?} is not set in the environment"
                )])
            })?;
        let listener = accept::bind_tcp("management", listen).await?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, "management server starting");
        }
        Ok(Some(Self {
            listener,
            key: key.into(),
        }))
    }

    /// The bound address (eBPF mode: guarded against squatting like every agent port).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub(super) async fn serve(
        self,
        reloader: Arc<Reloader>,
        managed: Option<Arc<crate::managed::State>>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let key = self.key;
        accept_loop(
            "management",
            self.listener,
            tracker,
            shutdown,
            move |stream, _peer, _shutdown| {
                let (key, reloader, managed) = (key.clone(), reloader.clone(), managed.clone());
                async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (key, reloader) = (key.clone(), reloader.clone());
                        let action = route(&req, &key, managed.as_deref());
                        async move {
                            Ok::<_, Infallible>(match action {
                                Action::Answer(r) => r,
                                Action::Reload => reload(&reloader).await,
                            })
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            },
        )
        .await;
    }
}

/// What a request asks for, decided before anything is awaited.
enum Action {
    Answer(Response<ProxyBody>),
    Reload,
}

/// iron-proxy's order: unknown path (plain 404, no auth), then auth, then method.
fn route<B>(req: &Request<B>, key: &str, managed: Option<&crate::managed::State>) -> Action {
    let allow = match req.uri().path() {
        "/v1/reload" | "/v1/sync" => Method::POST,
        "/v1/status" => Method::GET,
        _ => return Action::Answer(text(StatusCode::NOT_FOUND, "404 page not found\n")),
    };
    if !authorized(req, key) {
        return Action::Answer(json(StatusCode::UNAUTHORIZED, &error_body("unauthorized")));
    }
    if req.method() != allow {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &error_body("method not allowed"),
        );
        let allow = if allow == Method::GET { "GET" } else { "POST" };
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(allow));
        return Action::Answer(r);
    }
    Action::Answer(match (req.uri().path(), managed) {
        ("/v1/reload", None) => return Action::Reload,
        ("/v1/reload", Some(_)) => json(
            StatusCode::NOT_FOUND,
            &error_body("reload is unavailable in managed mode"),
        ),
        ("/v1/status", None) => json(
            StatusCode::NOT_FOUND,
            &error_body("status is unavailable in standalone mode"),
        ),
        ("/v1/status", Some(m)) => json(
            StatusCode::OK,
            &serde_json::to_value(m.status()).unwrap_or_default(),
        ),
        (_, None) => json(
            StatusCode::NOT_FOUND,
            &error_body("sync is unavailable in standalone mode"),
        ),
        (_, Some(m)) => {
            m.poke();
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"status": "sync requested"}),
            )
        }
    })
}

/// `Authorization: Bearer <key>` (case-sensitive scheme), compared in constant time.
fn authorized<B>(req: &Request<B>, key: &str) -> bool {
    let Some(got) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    got.ct_eq(key.as_bytes()).into()
}

async fn reload(reloader: &Arc<Reloader>) -> Response<ProxyBody> {
    // Its own task: a client that disconnects cannot abort a reload half way.
    let r = reloader.clone();
    let done = tokio::spawn(async move { r.reload(Trigger::Api).await }).await;
    match done {
        Ok(Ok(_)) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Ok(Err(ReloadError::Invalid(msg))) => {
            json(StatusCode::UNPROCESSABLE_ENTITY, &error_body(&msg))
        }
        Ok(Err(ReloadError::Internal(_))) | Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_body("internal error"),
        ),
    }
}

fn error_body(msg: &str) -> serde_json::Value {
    serde_json::json!({ "error": msg })
}

/// A JSON reply with a trailing newline, as Go's `json.Encoder` writes it.
fn json(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(format!("{v}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, s: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(s));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/v1/reload").method("POST");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn bearer_must_match_exactly() {
        assert!(authorized(&req(Some("Bearer k3y")), "k3y"));
        assert!(!authorized(&req(Some("Bearer k3")), "k3y"));
        assert!(!authorized(&req(Some("bearer k3y")), "k3y"));
        assert!(!authorized(&req(Some("k3y")), "k3y"));
        assert!(!authorized(&req(None), "k3y"));
    }
}
