//! Shared support for the end-to-end tests: test CAs, local origins that echo what they
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup step should abort the test loudly
//! received, a runner for the real `iron-agent` binary that captures its JSON logs, and HTTP
//! clients that control Host, SNI and trust exactly.
//!
//! Everything binds 127.0.0.1 port 0; nothing leaves loopback.

pub mod agent;
pub mod ca;
pub mod client;
pub mod curl;
pub mod dns;
pub mod ebpf_world;
pub mod mitm;
pub mod netns;
pub mod origin;
pub mod postgres;
pub mod proxies;
pub mod token_server;
pub mod ws;

pub use agent::{Agent, AgentBuilder};
pub use ca::TestCa;
pub use client::{
    Reply, connect_tunnel, echo_header, h2_handshake, http_request, https_request, tls_connect,
};
pub use origin::{Origin, OriginKind};
pub use token_server::{Recorded, TokenServer};

/// A multi-threaded runtime for tests that drive blocking helpers too.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A config for loopback tests: DNS off, ports 0, the test CA, loopback upstreams allowed
/// (`upstream_deny_cidrs: []`), and the given `transforms:` YAML block (indented list items).
pub fn loopback_config(
    ca_cert: &std::path::Path,
    ca_key: &std::path::Path,
    transforms: &str,
) -> String {
    format!(
        r#"dns:
  enabled: false
proxy:
  http_listen: "127.0.0.1:0"
  https_listen: "127.0.0.1:0"
  upstream_deny_cidrs: []
  upstream_response_header_timeout: "2s"
tls:
  ca_cert: "{}"
  ca_key: "{}"
metrics:
  listen: "127.0.0.1:0"
transforms:
{}
"#,
        ca_cert.display(),
        ca_key.display(),
        transforms
    )
}

/// [`loopback_config`] with the tunnel listener (`proxy.tunnel_listen`) on a free port too.
pub fn with_tunnel_listener(config: &str) -> String {
    config.replace(
        "  upstream_deny_cidrs: []",
        "  tunnel_listen: \"127.0.0.1:0\"\n  upstream_deny_cidrs: []",
    )
}

/// A `transforms:` block allowing `localhost` only, with a `secrets` transform that swaps the
/// placeholder `proxy_value` in `header` for the value of the environment variable `var`.
pub fn allow_localhost_with_secret(var: &str, proxy_value: &str, header: &str) -> String {
    format!(
        r#"  - name: allowlist
    config:
      domains: ["localhost"]
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: {var}}}
          replace:
            proxy_value: "{proxy_value}"
            match_headers: ["{header}"]
          rules: [{{host: localhost}}]
"#
    )
}
