//! An example `transform.v1.TransformService` server for the `grpc` transform
//! (docs/transforms/grpc.md), used by `tests/it/grpc_transform.rs` and meant as a starting
//! point for your own: implement [`TransformService`] and serve it with tonic.
//!
//! Its policy, keyed on the request path so the tests can drive every answer:
//! * `/reject...` → REJECT with a 451 JSON body and headers; `/deny...` → REJECT without a
//!   response (the agent's default 403); `/fail...` → a gRPC error; `/slow...` → an answer after
//!   [`SLOW`]; `/rewrite...` → CONTINUE with a new method, url, headers and body;
//! * response phase: `/modify-response...` → CONTINUE with a new status, headers and body;
//!   `/reject-response...` → REJECT with a 409;
//! * everything else → CONTINUE. Every answer carries annotations (`policy.decision`,
//!   `policy.body_bytes`).
//!
//! Every call is recorded ([`TransformServer::calls`]) so tests can check what the agent sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iron_agent::transform::grpc::proto::transform_service_server::{
    TransformService, TransformServiceServer,
};
use iron_agent::transform::grpc::proto::{
    HeaderValues, HttpRequest, HttpResponse, TransformAction, TransformRequestRequest,
    TransformRequestResponse, TransformResponseRequest, TransformResponseResponse,
};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::TestCa;

/// How long a `/slow` request phase takes.
pub const SLOW: Duration = Duration::from_secs(3);

/// One call the agent made.
#[derive(Debug, Clone)]
pub enum Call {
    Request(TransformRequestRequest),
    Response(TransformResponseRequest),
}

impl Call {
    /// The request in the call (both RPCs carry it).
    pub fn request(&self) -> &HttpRequest {
        let r = match self {
            Call::Request(c) => c.request.as_ref(),
            Call::Response(c) => c.request.as_ref(),
        };
        r.expect("the agent always sends the request")
    }
}

/// The example policy. Cloned per connection by tonic; the call log is shared.
#[derive(Clone, Default)]
struct ExamplePolicy {
    calls: Arc<Mutex<Vec<Call>>>,
}

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, HeaderValues> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                HeaderValues {
                    values: vec![v.to_string()],
                },
            )
        })
        .collect()
}

fn annotations(decision: &str, body: &[u8]) -> HashMap<String, String> {
    HashMap::from([
        ("policy.decision".to_string(), decision.to_string()),
        ("policy.body_bytes".to_string(), body.len().to_string()),
    ])
}

#[tonic::async_trait]
impl TransformService for ExamplePolicy {
    async fn transform_request(
        &self,
        call: Request<TransformRequestRequest>,
    ) -> Result<Response<TransformRequestResponse>, Status> {
        let call = call.into_inner();
        self.calls.lock().unwrap().push(Call::Request(call.clone()));
        let req = call.request.unwrap_or_default();
        let path = req.url.split('?').next().unwrap_or("").to_string();
        let mut answer = TransformRequestResponse {
            action: TransformAction::Continue as i32,
            annotations: annotations("continue", &req.body),
            ..Default::default()
        };
        if path.starts_with("/reject") && !path.starts_with("/reject-response") {
            answer.action = TransformAction::Reject as i32;
            answer.annotations = annotations("reject", &req.body);
            answer.response = Some(HttpResponse {
                status_code: 451,
                headers: headers(&[
                    ("Content-Type", "application/json"),
                    ("X-Policy", "example"),
                ]),
                body: br#"{"error":"blocked by policy"}"#.to_vec(),
            });
        } else if path.starts_with("/deny") {
            answer.action = TransformAction::Reject as i32;
            answer.annotations = annotations("deny", &req.body);
        } else if path.starts_with("/fail") {
            return Err(Status::internal("policy engine exploded"));
        } else if path.starts_with("/slow") {
            tokio::time::sleep(SLOW).await;
        } else if path.starts_with("/rewrite") {
            // Headers replace all of the request's: keep the client's and add one.
            let mut h = req.headers.clone();
            h.insert(
                "X-Policy".into(),
                HeaderValues {
                    values: vec!["rewritten".into()],
                },
            );
            h.remove("Authorization");
            answer.annotations = annotations("rewrite", &req.body);
            answer.modified_request = Some(HttpRequest {
                method: "PUT".into(),
                url: "/rewritten/path?from=grpc".into(),
                headers: h,
                body: b"body from the policy".to_vec(),
                ..Default::default()
            });
        }
        Ok(Response::new(answer))
    }

    async fn transform_response(
        &self,
        call: Request<TransformResponseRequest>,
    ) -> Result<Response<TransformResponseResponse>, Status> {
        let call = call.into_inner();
        self.calls
            .lock()
            .unwrap()
            .push(Call::Response(call.clone()));
        let url = call.request.map(|r| r.url).unwrap_or_default();
        let body = call.response.map(|r| r.body).unwrap_or_default();
        let mut answer = TransformResponseResponse {
            action: TransformAction::Unspecified as i32,
            annotations: annotations("continue", &body),
            ..Default::default()
        };
        if url.starts_with("/modify-response") {
            answer.annotations = annotations("modify", &body);
            answer.modified_response = Some(HttpResponse {
                status_code: 202,
                headers: headers(&[("Content-Type", "text/plain"), ("X-Modified", "yes")]),
                body: b"replaced by the policy".to_vec(),
            });
        } else if url.starts_with("/reject-response") {
            answer.action = TransformAction::Reject as i32;
            answer.annotations = annotations("reject", &body);
            answer.modified_response = Some(HttpResponse {
                status_code: 409,
                headers: HashMap::new(),
                body: b"response blocked".to_vec(),
            });
        }
        Ok(Response::new(answer))
    }
}

/// How the server authenticates.
pub enum ServerTls<'a> {
    Plain,
    /// TLS with a certificate for `localhost` from this CA.
    Tls(&'a TestCa),
    /// TLS as above, and clients must present a certificate from `clients`.
    Mutual {
        server: &'a TestCa,
        clients: &'a TestCa,
    },
}

/// The example server on 127.0.0.1 (random port); stops when dropped.
pub struct TransformServer {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TransformServer {
    pub async fn start(tls: ServerTls<'_>) -> TransformServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, tls)
    }

    /// Serves on an already bound listener (a test that restarts the server on the same port).
    pub fn serve(listener: tokio::net::TcpListener, tls: ServerTls<'_>) -> TransformServer {
        let addr = listener.local_addr().unwrap();
        let policy = ExamplePolicy::default();
        let calls = policy.calls.clone();
        let mut builder = Server::builder();
        let identity = |ca: &TestCa| {
            let (chain, key) = ca.server_cert_pem(&["localhost"]);
            Identity::from_pem(chain, key)
        };
        builder = match tls {
            ServerTls::Plain => builder,
            ServerTls::Tls(ca) => builder
                .tls_config(ServerTlsConfig::new().identity(identity(ca)))
                .unwrap(),
            ServerTls::Mutual { server, clients } => builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(identity(server))
                        .client_ca_root(Certificate::from_pem(&clients.cert_pem)),
                )
                .unwrap(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = builder
                .serve_with_incoming_shutdown(
                    TransformServiceServer::new(policy),
                    TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        TransformServer {
            addr,
            calls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `localhost:PORT` (the name the TLS certificates are for).
    pub fn target(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Shuts down: the listener closes and open connections get GOAWAY.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TransformServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
