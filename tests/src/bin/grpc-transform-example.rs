//! A minimal `transform.v1.TransformService` server for the `grpc` transform, to start your own
//! from (docs/transforms/grpc.md):
//!
//! ```text
//! cargo run -p iron-agent-tests --bin grpc-transform-example -- 127.0.0.1:9500 --reject-prefix /admin
//! ```
//!
//! Policy: a request whose path starts with the prefix (default `/admin`) is rejected with a 403
//! JSON body; everything else continues unchanged, and responses pass untouched. Every answer
//! carries the annotation `example.decision`. It prints `listening on ADDR` once it accepts
//! (so `127.0.0.1:0` picks a free port), serves plaintext HTTP/2 and stops on Ctrl-C.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use iron_agent::transform::grpc::proto::transform_service_server::{
    TransformService, TransformServiceServer,
};
use iron_agent::transform::grpc::proto::{
    HeaderValues, HttpResponse, TransformAction, TransformRequestRequest, TransformRequestResponse,
    TransformResponseRequest, TransformResponseResponse,
};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct Policy {
    reject_prefix: String,
}

fn decision(d: &str) -> HashMap<String, String> {
    HashMap::from([("example.decision".to_string(), d.to_string())])
}

#[tonic::async_trait]
impl TransformService for Policy {
    async fn transform_request(
        &self,
        call: Request<TransformRequestRequest>,
    ) -> Result<Response<TransformRequestResponse>, Status> {
        let req = call.into_inner().request.unwrap_or_default();
        // `url` is the path and query as the client sent them.
        let path = req.url.split('?').next().unwrap_or_default();
        if !path.starts_with(&self.reject_prefix) {
            return Ok(Response::new(TransformRequestResponse {
                action: TransformAction::Continue as i32,
                annotations: decision("continue"),
                ..Default::default()
            }));
        }
        let content_type = HeaderValues {
            values: vec!["application/json".into()],
        };
        Ok(Response::new(TransformRequestResponse {
            action: TransformAction::Reject as i32,
            response: Some(HttpResponse {
                status_code: 403,
                headers: HashMap::from([("Content-Type".to_string(), content_type)]),
                body: br#"{"error":"blocked by the example policy"}"#.to_vec(),
            }),
            annotations: decision("reject"),
            ..Default::default()
        }))
    }

    async fn transform_response(
        &self,
        _call: Request<TransformResponseRequest>,
    ) -> Result<Response<TransformResponseResponse>, Status> {
        Ok(Response::new(TransformResponseResponse {
            action: TransformAction::Continue as i32,
            annotations: decision("continue"),
            ..Default::default()
        }))
    }
}

fn parse_args() -> Result<(SocketAddr, String)> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 9500).into();
    let mut prefix = "/admin".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--reject-prefix" => prefix = it.next().context("--reject-prefix needs a value")?,
            a if a.starts_with('-') => bail!("unknown flag {a}"),
            a => listen = a.parse().with_context(|| format!("listen address {a:?}"))?,
        }
    }
    Ok((listen, prefix))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (listen, reject_prefix) = parse_args()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    Server::builder()
        .add_service(TransformServiceServer::new(Policy { reject_prefix }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}
