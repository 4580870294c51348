//! The end-to-end suite as one test binary (one link instead of one per file): each module is
//! a former `tests/*.rs` file, so a test is named `module::test`, e.g.
//! `cargo test -p iron-agent-tests --test it -- proxy::http_allowed_and_denied`.

mod aws_auth;
mod cli;
mod default_deny;
mod dns;
mod docs;
mod ebpf_budget;
mod ebpf_e2e;
mod ebpf_h2ws;
mod ebpf_harden;
mod ebpf_ident;
mod ebpf_policies;
mod ebpf_precedence;
mod ebpf_protocols;
mod everywhere;
mod first_hour;
mod gcp_auth;
mod grpc;
mod grpc_transform;
mod hmac_sign;
mod http2;
mod install;
mod jail_env;
mod jail_governed;
mod judge;
mod managed;
mod mcp;
mod metrics;
mod oauth;
mod otel;
mod policy;
mod postgres;
mod postgres_ebpf;
mod proxy;
mod reliability;
mod reload;
mod secret_stores;
mod secrets;
mod shaping;
mod sni_only;
mod source_ip;
mod support;
mod tunnel;
mod upstream_proxy;
mod websocket;
