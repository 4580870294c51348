//! A local OAuth token endpoint for the broker tests.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// What the local token endpoint answers next.
#[derive(Clone, Debug)]
pub enum TokenReply {
    Ok {
        access_token: String,
        expires_in: i64,
        refresh_token: Option<String>,
    },
    Status(u16, Value),
}

/// One request the token endpoint saw: form body and headers.
pub type Recorded = (String, Vec<(String, String)>);

/// A local OAuth token endpoint: records each form body, answers from a script (the last
/// reply repeats).
pub struct TokenServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Vec<TokenReply>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(script: Vec<TokenReply>) -> TokenServer {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (rq, sc) = (requests.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rq, sc) = (rq.clone(), sc.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (rq, sc) = (rq.clone(), sc.clone());
                        async move {
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            rq.lock()
                                .expect("requests")
                                .push((String::from_utf8_lossy(&body).into_owned(), headers));
                            let reply = {
                                let mut s = sc.lock().expect("script");
                                if s.len() > 1 {
                                    s.remove(0)
                                } else {
                                    s[0].clone()
                                }
                            };
                            let (status, body) = match reply {
                                TokenReply::Ok {
                                    access_token,
                                    expires_in,
                                    refresh_token,
                                } => (
                                    200,
                                    serde_json::json!({
                                        "access_token": access_token,
                                        "token_type": "Bearer",
                                        "expires_in": expires_in,
                                        "refresh_token": refresh_token,
                                    }),
                                ),
                                TokenReply::Status(s, b) => (s, b),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .expect("response"),
                            )
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        TokenServer {
            url: format!("http://{addr}/token"),
            requests,
            script,
            task,
        }
    }

    pub fn set_script(&self, s: Vec<TokenReply>) {
        *self.script.lock().expect("script") = s;
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }

    /// Form fields of request `i`.
    pub fn form(&self, i: usize) -> Vec<(String, String)> {
        let body = self.requests.lock().expect("requests")[i].0.clone();
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
