//! The agent crate's integration tests as one test binary (one link instead of one per file):
//! each module is a former `tests/*.rs` file, so a test is named `module::test`, e.g.
//! `cargo test -p iron-agent --test it -- dns::`.

mod dns;
mod ebpf;
mod secrets_aws;
mod secrets_onepassword;
mod tls;
